// The retrieval service with LibTorch, end to end:
//   - an embedding model (a small torch::nn::Linear) is written to a temporary file with
//     torch::save, then loaded through a ModelCache with torch_module_loader (a primary model);
//   - a Retriever keeps the embedded, normalised document matrix as a tensor over a pooled buffer
//     (as_tensor: zero copy, the buffer returns to the pool when the tensor dies), on the GPU when
//     LibTorch has one, on the CPU otherwise;
//   - queries are answered with top-k cosine similarity;
//   - the Retriever's destructor calls safe_tensor_cleanup, and one Retriever is a static object
//     still alive when the program exits: at that point CUDA tensors are leaked on purpose
//     instead of freed into a runtime that may be gone, so the exit is clean.
#include <torch/nn/modules/linear.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gpusafe/buffer_pool.hpp"
#include "gpusafe/guards.hpp"
#include "gpusafe/model_cache.hpp"
#include "gpusafe/torch.hpp"

namespace gs = gpusafe;

namespace {

constexpr int kFeatures = 32;   // raw document features
constexpr int kEmbedding = 16;  // embedding width
constexpr int kDocuments = 200;

using Encoder = torch::nn::LinearImpl;
using Cache = gs::ModelCache<std::string, Encoder>;

/// Where the tensors live: the GPU when both gpusafe and LibTorch can use one.
c10::Device compute_device() { return gs::torch_device(); }

class Retriever {
 public:
  Retriever(std::shared_ptr<Encoder> encoder, const at::Tensor& documents)
      : encoder_(std::move(encoder)), pool_(pool_options(documents.size(0))) {
    torch::NoGradGuard no_grad;
    const std::int64_t n = documents.size(0);
    // The matrix lives in a pooled buffer; the tensor is a zero-copy view of it.
    matrix_ = gs::as_tensor(pool_.acquire(static_cast<std::size_t>(n) * kEmbedding * sizeof(float)),
                            {n, kEmbedding}, at::kFloat);
    matrix_.copy_(embed(documents));
  }

  ~Retriever() {
    // Frees the matrix (the buffer goes back to the pool) and drops the model handle; when the
    // process is already exiting, CUDA tensors are leaked instead of freed.
    const bool exiting = gs::process_is_exiting();
    const bool released = gs::safe_tensor_cleanup(matrix_, encoder_);
    std::printf("Retriever destroyed (process exiting: %s): safe_tensor_cleanup released %s\n",
                exiting ? "yes" : "no", released ? "the matrix and the model handle" : "nothing");
  }

  Retriever(const Retriever&) = delete;
  Retriever& operator=(const Retriever&) = delete;

  /// Indices and scores of the k documents most similar to each query row.
  std::pair<at::Tensor, at::Tensor> top_k(const at::Tensor& queries, int k) const {
    torch::NoGradGuard no_grad;
    at::Tensor scores = embed(queries).matmul(matrix_.t());
    auto [values, indices] = scores.topk(k, /*dim=*/1);
    return {indices.cpu(), values.cpu()};
  }

  const at::Tensor& matrix() const { return matrix_; }
  const gs::BufferPool& pool() const { return pool_; }

 private:
  static gs::BufferPoolOptions pool_options(std::int64_t documents) {
    // Device memory when the model runs on a GPU, host memory otherwise.
    return gs::pool_options_for(
        compute_device(), {{static_cast<std::size_t>(documents) * kEmbedding * sizeof(float), 1}},
        "embeddings");
  }

  at::Tensor embed(const at::Tensor& x) const {
    at::Tensor e = encoder_->forward(x.to(matrix_device()));
    return e / e.norm(2, /*dim=*/1, /*keepdim=*/true).clamp_min(1e-12);
  }
  c10::Device matrix_device() const { return encoder_->weight.device(); }

  std::shared_ptr<Encoder> encoder_;
  gs::BufferPool pool_;  // declared before matrix_: outlives it (a lease may outlive it anyway)
  at::Tensor matrix_;
};

std::string temp_model_path() {
  const char* base = std::getenv("TMPDIR");
  return std::string(base && *base ? base : "/tmp") + "/gpusafe_torch_retrieval_" +
         std::to_string(::getpid()) + ".pt";
}

/// Documents and queries: queries are noisy copies of known documents, so the answer is known.
struct Corpus {
  at::Tensor documents;
  at::Tensor queries;
  std::vector<std::int64_t> expected;
};

Corpus make_corpus() {
  Corpus c;
  c.documents = torch::randn({kDocuments, kFeatures});
  c.expected = {3, 42, 117, 199};
  std::vector<at::Tensor> rows;
  for (auto i : c.expected) rows.push_back(c.documents[i] + 0.05 * torch::randn({kFeatures}));
  c.queries = torch::stack(rows);
  return c;
}

int check_answers(const char* who, const Retriever& r, const Corpus& c) {
  auto [indices, scores] = r.top_k(c.queries, 3);
  int wrong = 0;
  for (std::size_t q = 0; q < c.expected.size(); ++q) {
    const auto i = static_cast<std::int64_t>(q);
    const std::int64_t best = indices[i][0].item<std::int64_t>();
    std::printf(
        "  %s query %zu: top-3 = [%lld %lld %lld], best score %.4f (expected document %lld)\n", who,
        q, static_cast<long long>(best), static_cast<long long>(indices[i][1].item<std::int64_t>()),
        static_cast<long long>(indices[i][2].item<std::int64_t>()), scores[i][0].item<float>(),
        static_cast<long long>(c.expected[q]));
    if (best != c.expected[q]) ++wrong;
  }
  return wrong;
}

}  // namespace

int main() {
  torch::manual_seed(7);
  const c10::Device device = compute_device();
  const gs::TorchCudaAgreement agreement = gs::torch_cuda_agreement();
  std::printf("CUDA: %s\n", agreement.describe().c_str());
  const gs::DeviceInfo info = gs::get_device_info(0);
  std::printf("Running on %s (%s), tensors on %s\n", info.name.c_str(), info.is_gpu ? "GPU" : "CPU",
              device.str().c_str());

  // 1. The embedding model, written the way a training job would write it.
  const std::string model_path = temp_model_path();
  torch::save(torch::nn::Linear(kFeatures, kEmbedding), model_path);
  std::printf("Wrote the embedding model to %s\n", model_path.c_str());

  // 2. The model cache: the encoder is a primary model (loaded once, never evicted).
  gs::ModelCacheOptions cache_options;
  cache_options.name = "models";
  cache_options.byte_budget = 1 << 20;
  static Cache cache(cache_options);
  cache.add("encoder",
            gs::torch_module_loader<torch::nn::Linear>(
                model_path, [] { return torch::nn::Linear(kFeatures, kEmbedding); }, device,
                gs::ModuleMode::eval),  // inference: evaluation mode
            gs::Residency::primary);
  std::shared_ptr<Encoder> encoder = cache.get("encoder");
  std::printf("Loaded 'encoder' through the cache: %zu bytes resident (expected %d)\n",
              cache.stats().bytes_resident, (kFeatures * kEmbedding + kEmbedding) * 4);
  std::remove(model_path.c_str());

  const Corpus corpus = make_corpus();
  int wrong = 0;

  // 3. A Retriever that lives in main: its buffer goes back to the pool when it dies.
  {
    Retriever scoped(encoder, corpus.documents);
    std::printf(
        "Scoped retriever: matrix %lld x %lld on %s, zero-copy over pool '%s' (in use %zu)\n",
        static_cast<long long>(scoped.matrix().size(0)),
        static_cast<long long>(scoped.matrix().size(1)), scoped.matrix().device().str().c_str(),
        scoped.pool().name().c_str(), scoped.pool().stats().totals.in_use);
    wrong += check_answers("scoped", scoped, corpus);
  }

  // 4. A static Retriever, alive when the program exits.
  static Retriever service(encoder, corpus.documents);
  wrong += check_answers("static", service, corpus);

  const gs::ResourceUsage torch_cache = gs::torch_allocator_reclaimable()->usage();
  std::printf("LibTorch CUDA caching allocator: %zu bytes allocated, %zu reserved\n",
              torch_cache.bytes_in_use, torch_cache.bytes_reserved);
  std::printf("safe_cuda_empty_cache() released %zu bytes\n", gs::safe_cuda_empty_cache());

  if (wrong != 0) {
    std::printf("FAILED: %d queries answered wrongly\n", wrong);
    return 1;
  }
  std::printf("All queries answered; exiting with a static retriever still alive.\n");
  return 0;
}
