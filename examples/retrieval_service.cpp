// A retrieval service in miniature: a long-lived Retriever keeps an embedding matrix resident in
// GPU memory (host memory when there is no GPU), answers batches of queries with top-k cosine
// similarity, and is still alive as a static object when the program exits. The gpusafe parts:
//   - is_cuda_available() / get_device_info() to describe where it runs;
//   - safe_tensor_cleanup() in the Retriever's destructor: frees the matrix while the runtime is
//     alive, leaks it on purpose when the process is already exiting (no crash at exit);
//   - a SafeCudaCleanup around each query batch that releases the batch's scratch memory.
// Scoring runs on the CPU from a host mirror (this example has no kernels; the LibTorch variant,
// torch_retrieval.cpp, scores on the GPU).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "gpusafe/guards.hpp"
#include "gpusafe/runtime.hpp"

namespace gs = gpusafe;

/// One allocation from the default runtime; reset() frees it.
class RuntimeBuffer {
 public:
  RuntimeBuffer(std::size_t bytes, gs::MemoryKind wanted) : bytes_(bytes) {
    bool fell_back = false;
    kind_ = gs::resolve_memory_kind<gs::DefaultRuntime>(wanted, gs::Fallback::host, &fell_back,
                                                        "RuntimeBuffer");
    gs::throw_on_failure(gs::DefaultRuntime::allocate(kind_, 0, bytes, &data_), "RuntimeBuffer");
  }
  RuntimeBuffer(RuntimeBuffer&& o) noexcept
      : bytes_(o.bytes_), kind_(o.kind_), data_(std::exchange(o.data_, nullptr)) {}
  RuntimeBuffer& operator=(RuntimeBuffer&&) = delete;
  ~RuntimeBuffer() { reset(); }

  void reset() noexcept {
    if (data_) (void)gs::DefaultRuntime::deallocate(kind_, 0, std::exchange(data_, nullptr));
  }
  explicit operator bool() const noexcept { return data_ != nullptr; }

  /// Copies `bytes` from host memory into the buffer.
  void upload(const void* src, std::size_t bytes) {
#if GPUSAFE_WITH_CUDA
    if (kind_ == gs::MemoryKind::device) {
      gs::throw_on_failure(
          {static_cast<int>(cudaMemcpy(data_, src, bytes, cudaMemcpyHostToDevice))},
          "RuntimeBuffer::upload");
      return;
    }
#endif
    std::memcpy(data_, src, bytes);
  }
  gs::MemoryKind kind() const noexcept { return kind_; }
  std::size_t bytes() const noexcept { return bytes_; }

 private:
  std::size_t bytes_;
  gs::MemoryKind kind_ = gs::MemoryKind::host;
  void* data_ = nullptr;
};

struct Hit {
  int doc;
  float score;
};

class Retriever {
 public:
  Retriever(std::vector<float> embeddings, int dim)
      : dim_(dim), docs_(static_cast<int>(embeddings.size()) / dim), host_(std::move(embeddings)) {
    normalize(host_);
    resident_.emplace(host_.size() * sizeof(float), gs::MemoryKind::device);
    resident_->upload(host_.data(), resident_->bytes());
  }

  ~Retriever() {
    // Safe at any time, including from a static destructor after the runtime has gone away.
    gs::safe_tensor_cleanup(resident_);
  }

  /// Top-k documents for each query (queries: rows of `dim` floats).
  std::vector<std::vector<Hit>> search(std::vector<float> queries, int k) {
    std::optional<RuntimeBuffer> scratch;
    gs::SafeCudaCleanup batch_scope({/*synchronize=*/true, /*empty_cache=*/false, /*device=*/-1});
    batch_scope.defer([&] { gs::safe_tensor_cleanup(scratch); });

    normalize(queries);
    scratch.emplace(queries.size() * sizeof(float), gs::MemoryKind::device);
    scratch->upload(queries.data(), scratch->bytes());  // what a GPU scorer would read

    std::vector<std::vector<Hit>> results;
    const int n = static_cast<int>(queries.size()) / dim_;
    for (int q = 0; q < n; ++q) {
      std::vector<Hit> hits(static_cast<std::size_t>(docs_));
      for (int d = 0; d < docs_; ++d) {
        float dot = 0;
        for (int i = 0; i < dim_; ++i)
          dot += queries[static_cast<std::size_t>(q * dim_ + i)] *
                 host_[static_cast<std::size_t>(d * dim_ + i)];
        hits[static_cast<std::size_t>(d)] = {d, dot};
      }
      const auto top = hits.begin() + std::min(k, docs_);
      std::partial_sort(hits.begin(), top, hits.end(),
                        [](const Hit& a, const Hit& b) { return a.score > b.score; });
      hits.erase(top, hits.end());
      results.push_back(std::move(hits));
    }
    ++batches_;
    answered_ += n;
    return results;
  }

  const char* memory() const noexcept { return gs::to_string(resident_->kind()); }
  int documents() const noexcept { return docs_; }
  int answered() const noexcept { return answered_; }
  int batches() const noexcept { return batches_; }

 private:
  void normalize(std::vector<float>& rows) const {
    for (std::size_t r = 0; r + static_cast<std::size_t>(dim_) <= rows.size(); r += dim_) {
      float norm = 0;
      for (int i = 0; i < dim_; ++i) norm += rows[r + i] * rows[r + i];
      norm = std::sqrt(norm) + 1e-12f;
      for (int i = 0; i < dim_; ++i) rows[r + i] /= norm;
    }
  }

  int dim_;
  int docs_;
  std::vector<float> host_;
  std::optional<RuntimeBuffer> resident_;
  int answered_ = 0;
  int batches_ = 0;
};

int main() {
  constexpr int kDocs = 2000, kDim = 64, kTopK = 3;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> corpus(static_cast<std::size_t>(kDocs) * kDim);
  for (auto& x : corpus) x = normal(rng);

  const gs::DeviceInfo info = gs::get_device_info(0);
  std::printf("CUDA available: %s (%s)\n", gs::is_cuda_available() ? "yes" : "no",
              gs::to_string(gs::cuda_status()));
  std::printf("device 0: %s%s, %d %s, %.1f GiB total, %.1f GiB free\n", info.name.c_str(),
              info.is_gpu ? "" : " (host CPU)", info.multiprocessors,
              info.is_gpu ? "multiprocessors" : "hardware threads",
              static_cast<double>(info.total_memory) / (1u << 30),
              static_cast<double>(info.free_memory) / (1u << 30));

  // The service's index lives as long as the program: destroyed at exit, after main returns.
  static Retriever retriever(corpus, kDim);
  std::printf("index: %d documents x %d dims in %s memory\n", retriever.documents(), kDim,
              retriever.memory());

  // Each query is a noisy copy of a known document, which must come first.
  const int targets[][3] = {{17, 423, 1999}, {5, 1000, 1500}};
  bool all_found = true;
  for (const auto& batch : targets) {
    std::vector<float> queries;
    for (const int doc : batch)
      for (int i = 0; i < kDim; ++i)
        queries.push_back(corpus[static_cast<std::size_t>(doc * kDim + i)] + 0.3f * normal(rng));
    const auto results = retriever.search(queries, kTopK);
    for (std::size_t q = 0; q < results.size(); ++q) {
      std::printf("query (near doc %4d): ", batch[q]);
      for (const Hit& h : results[q]) std::printf(" doc %4d (%.3f)", h.doc, h.score);
      std::printf("\n");
      all_found = all_found && results[q].front().doc == batch[q];
    }
  }
  std::printf("answered %d queries in %d batches; %s\n", retriever.answered(), retriever.batches(),
              all_found ? "every target ranked first" : "MISSED a target");
  return all_found ? 0 : 1;
}
