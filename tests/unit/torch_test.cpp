// Unit tests of gpusafe/torch.hpp against the LibTorch the build found (CPU or CUDA).
#include "gpusafe/torch.hpp"

#include <gtest/gtest.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/linear.h>

#if GPUSAFE_TORCH_WITH_CUDA
#include <ATen/cuda/Sleep.h>
#endif

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "../support/child_process.hpp"
#include "gpusafe/testing/fake_runtime.hpp"

namespace gs = gpusafe;

namespace {

/// A fresh directory under TMPDIR, removed with its files at the end of the test.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base && *base ? base : "/tmp") + "/gpusafe_torch_XXXXXX";
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    if (::mkdtemp(buf.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = buf.data();
  }
  ~TempDir() {
    for (const auto& f : files_) std::remove(f.c_str());
    ::rmdir(path_.c_str());
  }
  std::string file(const std::string& name) {
    files_.push_back(path_ + "/" + name);
    return files_.back();
  }

 private:
  std::string path_;
  std::vector<std::string> files_;
};

/// A host pool on the default runtime: `count` buffers of `bytes`.
gs::BufferPool host_pool(std::size_t bytes, std::size_t count, std::size_t alignment = 256) {
  gs::BufferPoolOptions o;
  o.kind = gs::MemoryKind::host;
  o.classes = {{bytes, count}};
  o.alignment = alignment;
  o.name = "torch_test_host";
  return gs::BufferPool(o);
}

std::size_t in_use(const gs::BufferPool& pool) { return pool.stats().totals.in_use; }

/// A tensor whose storage is an external blob with a counting deleter, as a CUDA or pinned
/// tensor would be (memory LibTorch's CPU allocator did not make).
at::Tensor external_tensor(std::atomic<int>& deleted) {
  static float blob[4] = {1, 2, 3, 4};
  return torch::from_blob(
      blob, {4}, [&deleted](void*) { deleted.fetch_add(1); }, at::kFloat);
}

struct Net : torch::nn::Module {
  Net() {
    fc1 = register_module("fc1", torch::nn::Linear(6, 4));
    fc2 = register_module("fc2", torch::nn::Linear(4, 2));
    bn = register_module("bn", torch::nn::BatchNorm1d(4));
  }
  torch::Tensor forward(torch::Tensor x) { return fc2(torch::relu(bn(fc1(x)))); }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  torch::nn::BatchNorm1d bn{nullptr};
};

constexpr std::size_t kLinear10x5Bytes = (10 * 5 + 5) * sizeof(float);
// weight, bias, running_mean, running_var (float) + num_batches_tracked (int64).
constexpr std::size_t kBatchNorm8Bytes = 4 * 8 * sizeof(float) + sizeof(std::int64_t);

// ---- safe_tensor_cleanup ----------------------------------------------------------------------

TEST(TorchCleanup, TensorIsReleasedOnceAndLeftUndefined) {
  at::Tensor t = torch::ones({3, 3});
  EXPECT_TRUE(gs::safe_tensor_cleanup(t));
  EXPECT_FALSE(t.defined());
  EXPECT_FALSE(gs::safe_tensor_cleanup(t));
}

TEST(TorchCleanup, ReleasingTheLastReferenceRunsTheDeleter) {
  std::atomic<int> deleted{0};
  at::Tensor t = external_tensor(deleted);
  at::Tensor view = t.slice(0, 1, 3);
  EXPECT_TRUE(gs::safe_tensor_cleanup(t));
  EXPECT_EQ(deleted.load(), 0) << "a view still shares the storage";
  EXPECT_TRUE(gs::safe_tensor_cleanup(view));
  EXPECT_EQ(deleted.load(), 1);
}

TEST(TorchCleanup, OptionalsAndContainersOfTensors) {
  std::optional<at::Tensor> some = torch::zeros({2});
  std::optional<at::Tensor> none;
  std::vector<at::Tensor> list = {torch::ones({1}), at::Tensor(), torch::ones({2})};
  std::map<std::string, at::Tensor> named = {{"a", torch::ones({1})}};
  EXPECT_TRUE(gs::safe_tensor_cleanup(some));
  EXPECT_FALSE(some.has_value());
  EXPECT_FALSE(gs::safe_tensor_cleanup(none));
  EXPECT_TRUE(gs::safe_tensor_cleanup(list));
  EXPECT_TRUE(list.empty());
  EXPECT_TRUE(gs::safe_tensor_cleanup(named));
  EXPECT_TRUE(named.empty());
  std::vector<at::Tensor> only_undefined(2);
  EXPECT_FALSE(gs::safe_tensor_cleanup(only_undefined));
}

TEST(TorchCleanup, ModuleHoldersAndSharedModules) {
  torch::nn::Linear linear(10, 5);
  std::weak_ptr<torch::nn::LinearImpl> watch = linear.ptr();
  EXPECT_TRUE(gs::safe_tensor_cleanup(linear));
  EXPECT_TRUE(linear.is_empty());
  EXPECT_TRUE(watch.expired());
  EXPECT_FALSE(gs::safe_tensor_cleanup(linear));

  auto net = std::make_shared<Net>();
  std::shared_ptr<torch::nn::Module> base = std::make_shared<Net>();
  std::weak_ptr<Net> watch_net = net;
  EXPECT_TRUE(gs::safe_tensor_cleanup(net, base));
  EXPECT_EQ(net, nullptr);
  EXPECT_EQ(base, nullptr);
  EXPECT_TRUE(watch_net.expired());

  std::vector<torch::nn::Linear> layers = {torch::nn::Linear(2, 2), torch::nn::Linear(3, 3)};
  EXPECT_TRUE(gs::safe_tensor_cleanup(layers));
  EXPECT_TRUE(layers.empty());
}

TEST(TorchCleanup, JitModule) {
  torch::jit::Module m("Scaler");
  m.register_parameter("w", torch::ones({3}), false);
  torch::jit::Module empty;
  EXPECT_FALSE(gs::safe_tensor_cleanup(empty));
  EXPECT_TRUE(gs::safe_tensor_cleanup(m));
  EXPECT_FALSE(gs::detail::jit_module_holds(m));
  EXPECT_FALSE(gs::safe_tensor_cleanup(m));
}

TEST(TorchCleanup, WhichTensorsNeedTheRuntimeAtTeardown) {
  std::atomic<int> deleted{0};
  EXPECT_FALSE(gs::detail::tensor_needs_runtime(at::Tensor()));
  EXPECT_FALSE(gs::detail::tensor_needs_runtime(torch::ones({4})));
  EXPECT_FALSE(gs::detail::tensor_needs_runtime(torch::ones({4}).slice(0, 1)));
  EXPECT_TRUE(gs::detail::tensor_needs_runtime(external_tensor(deleted)));
  EXPECT_FALSE(gs::detail::module_needs_runtime(*torch::nn::Linear(3, 3)));
}

// In a forked child the runtime is "gone": a tensor over external memory (as a CUDA tensor is)
// must be leaked, its deleter never run; a plain CPU tensor is still freed normally.
TEST(TorchCleanup, ForkedChildLeaksRuntimeOwnedTensors) {
  std::atomic<int> deleted{0};
  at::Tensor external = external_tensor(deleted);
  at::Tensor plain = torch::ones({8});
  torch::nn::Linear linear(2, 2);
  const int rc = gpusafe_test::run_in_child([&] {
    int child_rc = 0;
    if (!gs::in_forked_child()) child_rc = 10;
    if (!gs::safe_tensor_cleanup(external)) child_rc = 11;
    if (external.defined()) child_rc = 12;
    if (deleted.load() != 0) child_rc = 13;  // the deleter must not have run
    if (!gs::safe_tensor_cleanup(plain) || plain.defined()) child_rc = 14;
    if (!gs::safe_tensor_cleanup(linear) || !linear.is_empty()) child_rc = 15;
    return child_rc;
  });
  EXPECT_EQ(rc, 0);
  // The parent is not gone: the same cleanup runs the deleter.
  EXPECT_TRUE(gs::safe_tensor_cleanup(external));
  EXPECT_EQ(deleted.load(), 1);
}

// ---- as_tensor --------------------------------------------------------------------------------

TEST(TorchAsTensor, ZeroCopyAndBackToThePoolWhenTheLastViewDies) {
  auto pool = host_pool(4096, 2);
  gs::BufferLease lease = pool.acquire(6 * sizeof(float));
  void* data = lease.data();
  at::Tensor t = gs::as_tensor(std::move(lease), {2, 3}, at::kFloat);
  EXPECT_FALSE(lease);
  EXPECT_EQ(t.data_ptr(), data);
  EXPECT_TRUE(t.device().is_cpu());
  EXPECT_EQ(t.sizes(), at::IntArrayRef({2, 3}));
  EXPECT_TRUE(t.is_contiguous());
  t.fill_(2.0f);
  EXPECT_EQ(static_cast<float*>(data)[5], 2.0f);
  EXPECT_EQ(in_use(pool), 1u);

  at::Tensor row = t[1];
  at::Tensor slice = t.slice(1, 1, 3);
  at::Tensor flat = t.view({6});
  at::Tensor copy = t.clone();
  t.reset();
  EXPECT_EQ(in_use(pool), 1u) << "views still hold the buffer";
  row.reset();
  slice.reset();
  EXPECT_EQ(in_use(pool), 1u);
  flat.reset();
  EXPECT_EQ(in_use(pool), 0u) << "the last view died; a clone must not hold the buffer";
  EXPECT_FLOAT_EQ(copy.sum().item<float>(), 12.0f);
}

TEST(TorchAsTensor, TensorOutlivesItsPool) {
  at::Tensor t;
  {
    auto pool = host_pool(1024, 1);
    t = gs::as_tensor(pool.acquire(16 * sizeof(float)), {16}, at::kFloat);
    t.fill_(1.0f);
  }
  EXPECT_FLOAT_EQ(t.sum().item<float>(), 16.0f);
  EXPECT_TRUE(gs::safe_tensor_cleanup(t));
}

TEST(TorchAsTensor, StridesAndDtypes) {
  auto pool = host_pool(4096, 4);
  at::Tensor t = gs::as_tensor(pool.acquire(12 * sizeof(double)), {3, 2}, {1, 3}, at::kDouble);
  EXPECT_EQ(t.strides(), at::IntArrayRef({1, 3}));
  EXPECT_FALSE(t.is_contiguous());
  at::Tensor i = gs::as_tensor(pool.acquire(64), {8}, at::kLong);
  EXPECT_EQ(i.scalar_type(), at::kLong);
  at::Tensor b = gs::as_tensor(pool.acquire(1), {1}, at::kByte);
  EXPECT_EQ(b.numel(), 1);
  at::Tensor e = gs::as_tensor(pool.acquire(8), {0, 5}, at::kFloat);
  EXPECT_EQ(e.numel(), 0);
  EXPECT_EQ(in_use(pool), 4u);
  gs::safe_tensor_cleanup(t, i, b, e);
  EXPECT_EQ(in_use(pool), 0u);
}

TEST(TorchAsTensor, ErrorsKeepTheLease) {
  auto pool = host_pool(1024, 1);
  gs::BufferLease lease = pool.acquire(10 * sizeof(float));
  void* data = lease.data();

  auto expect_invalid = [&](auto&& call, const std::string& needle) {
    try {
      call();
      ADD_FAILURE() << "no exception; expected one mentioning '" << needle << "'";
    } catch (const gs::InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
    ASSERT_TRUE(lease) << "the lease was lost on error";
    EXPECT_EQ(lease.data(), data);
    EXPECT_EQ(in_use(pool), 1u);
  };
  expect_invalid([&] { (void)gs::as_tensor(std::move(lease), {11}, at::kFloat); },
                 "needs 44 bytes");
  expect_invalid([&] { (void)gs::as_tensor(std::move(lease), {6}, at::kDouble); },
                 "needs 48 bytes");
  expect_invalid([&] { (void)gs::as_tensor(std::move(lease), {-1}, at::kFloat); }, "negative");
  expect_invalid(
      [&] {
        (void)gs::as_tensor(std::move(lease), {2, 2}, {1}, at::kFloat);
      },
      "strides for");
  expect_invalid(
      [&] {
        (void)gs::as_tensor(std::move(lease), {4, 4}, {1, 4}, at::kFloat);
      },
      "needs 64 bytes");
  expect_invalid(
      [&] {
        (void)gs::as_tensor(std::move(lease), {1LL << 40, 1LL << 40}, at::kFloat);
      },
      "overflow");
  expect_invalid([&] { (void)gs::as_tensor(std::move(lease), {1}, at::ScalarType::Undefined); },
                 "element size");

  at::Tensor ok = gs::as_tensor(std::move(lease), {10}, at::kFloat);
  EXPECT_FALSE(lease);
  gs::BufferLease empty;
  EXPECT_THROW((void)gs::as_tensor(std::move(empty), {1}, at::kFloat), gs::InvalidArgument);
}

TEST(TorchAsTensor, MisalignedBufferIsRefusedAndKept) {
  // Alignment 1 and 13-byte buffers: one of the two slots starts at an odd address.
  auto pool = host_pool(13, 2, 1);
  gs::BufferLease a = pool.acquire(13);
  gs::BufferLease b = pool.acquire(13);
  gs::BufferLease& odd = reinterpret_cast<std::uintptr_t>(a.data()) % 4 != 0 ? a : b;
  ASSERT_NE(reinterpret_cast<std::uintptr_t>(odd.data()) % 4, 0u);
  void* data = odd.data();
  try {
    (void)gs::as_tensor(std::move(odd), {2}, at::kFloat);
    ADD_FAILURE() << "a misaligned float tensor was made";
  } catch (const gs::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("aligned"), std::string::npos) << e.what();
  }
  ASSERT_TRUE(odd);
  EXPECT_EQ(odd.data(), data);
  at::Tensor bytes = gs::as_tensor(std::move(odd), {13}, at::kByte);  // 1-byte elements: fine
  EXPECT_EQ(bytes.data_ptr(), data);
}

TEST(TorchAsTensor, DevicePoolFollowsWhereTheMemoryIs) {
  gs::BufferPoolOptions o;
  o.kind = gs::MemoryKind::device;
  o.classes = {{1 << 12, 2}};
  gs::BufferPool pool(o);
  at::Tensor t = gs::as_tensor(pool.acquire(256 * sizeof(float)), {256}, at::kFloat);
  if (gs::is_cuda_available() && torch::cuda::is_available()) {
    EXPECT_TRUE(t.is_cuda());
    EXPECT_EQ(t.device().index(), 0);
    t.fill_(3.0f);
    EXPECT_FLOAT_EQ(t.sum().item<float>(), 768.0f);
  } else {
    EXPECT_TRUE(pool.stats().fallback);
    EXPECT_TRUE(t.device().is_cpu());
  }
  EXPECT_EQ(in_use(pool), 1u);
  EXPECT_TRUE(gs::safe_tensor_cleanup(t));
  EXPECT_EQ(in_use(pool), 0u);
}

#if GPUSAFE_TORCH_WITH_CUDA
// LibTorch's default stream has a null handle: a tensor made on it must still keep its slot out of
// the pool until the work queued there has finished.
TEST(TorchAsTensor, DefaultStreamWorkKeepsTheSlotUntilItFinishes) {
  if (!(gs::is_cuda_available() && torch::cuda::is_available())) GTEST_SKIP() << "no usable GPU";
  gs::BufferPoolOptions o;
  o.kind = gs::MemoryKind::device;
  o.classes = {{1 << 12, 1}};
  o.fallback = gs::Fallback::error;
  gs::BufferPool pool(o);
  {
    at::Tensor t = gs::as_tensor(pool.acquire(1 << 12), {1 << 10}, at::kFloat);
    at::cuda::sleep(std::int64_t{400'000'000});  // ~0.2 s of GPU time on the current stream
    t.fill_(1.0f);
  }  // the tensor dies while the stream still runs
  EXPECT_FALSE(pool.try_acquire(1 << 12)) << "the slot was handed out while the stream used it";
  torch::cuda::synchronize();
  EXPECT_TRUE(pool.try_acquire(1 << 12));
}
#endif

// A FakeRuntime "device" buffer is host memory posing as a GPU's: LibTorch must not be told it is
// a CUDA pointer, and the lease stays with the caller.
TEST(TorchAsTensor, FakeDeviceMemoryIsRefused) {
  gs::testing::FakeRuntime::reset();
  gs::BufferPoolOptions o;
  o.kind = gs::MemoryKind::device;
  o.classes = {{1024, 1}};
  gs::BasicBufferPool<gs::testing::FakeRuntime> pool(o);
  gs::BufferLease lease = pool.acquire(64);
  ASSERT_FALSE(lease.is_fallback());
  EXPECT_THROW((void)gs::as_tensor(std::move(lease), {16}, at::kFloat), gs::InvalidArgument);
  EXPECT_TRUE(lease);
}

// ---- module_bytes -----------------------------------------------------------------------------

TEST(TorchModuleBytes, MatchesHandComputedSizes) {
  EXPECT_EQ(gs::module_bytes(torch::nn::Linear(10, 5)), kLinear10x5Bytes);
  EXPECT_EQ(gs::module_bytes(torch::nn::Linear(torch::nn::LinearOptions(10, 5).bias(false))),
            50 * sizeof(float));
  EXPECT_EQ(gs::module_bytes(torch::nn::BatchNorm1d(8)), kBatchNorm8Bytes);
  const std::size_t net = (6 * 4 + 4) * 4 + (4 * 2 + 2) * 4 + (4 * 4 * 4 + 8);
  auto shared = std::make_shared<Net>();
  EXPECT_EQ(gs::module_bytes(shared), net);
  EXPECT_EQ(gs::module_bytes(*shared), net);
  EXPECT_EQ(gs::module_bytes(torch::nn::Linear(nullptr)), 0u);
  EXPECT_EQ(gs::module_bytes(std::shared_ptr<Net>()), 0u);
  auto half = torch::nn::Linear(10, 5);
  half->to(at::kHalf);
  EXPECT_EQ(gs::module_bytes(half), (10 * 5 + 5) * 2u);
}

TEST(TorchModuleBytes, SharedTensorsCountOnce) {
  struct Tied : torch::nn::Module {
    Tied() {
      a = register_module("a", torch::nn::Linear(4, 4));
      tied = register_parameter("tied", a->weight);  // the same tensor under a second name
    }
    torch::nn::Linear a{nullptr};
    torch::Tensor tied;
  } tied;
  ASSERT_EQ(tied.parameters().size(), 3u);
  EXPECT_EQ(gs::module_bytes(tied), (16 + 4) * sizeof(float));
}

TEST(TorchModuleBytes, JitModule) {
  torch::jit::Module m("Holder");
  m.register_parameter("w", torch::ones({3}), false);
  m.register_buffer("stats", torch::zeros({2}, at::kDouble));
  torch::jit::Module child("Child");
  child.register_parameter("v", torch::ones({5}), false);
  m.register_module("child", child);
  EXPECT_EQ(gs::module_bytes(m), 3 * sizeof(float) + 2 * sizeof(double) + 5 * sizeof(float));
  EXPECT_EQ(gs::module_bytes(torch::jit::Module()), 0u);
}

// ---- loaders ----------------------------------------------------------------------------------

template <class F>
std::string load_failure(F&& loader) {
  try {
    (void)loader();
  } catch (const gs::LoadFailed& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("WRONG TYPE: ") + e.what();
  }
  return "NO EXCEPTION";
}

TEST(TorchLoaders, TorchModuleLoaderRoundTrip) {
  TempDir dir;
  const std::string path = dir.file("linear.pt");
  torch::nn::Linear saved(10, 5);
  torch::save(saved, path);

  auto loader =
      gs::torch_module_loader<torch::nn::Linear>(path, [] { return torch::nn::Linear(10, 5); });
  gs::Loaded<torch::nn::LinearImpl> loaded = loader();
  ASSERT_NE(loaded.model, nullptr);
  EXPECT_EQ(loaded.bytes, kLinear10x5Bytes);
  EXPECT_TRUE(torch::equal(loaded.model->weight, saved->weight));
  EXPECT_TRUE(torch::equal(loaded.model->bias, saved->bias));
  EXPECT_TRUE(loaded.model->is_training());  // ModuleMode::keep: as torch::load leaves it

  auto for_inference = gs::torch_module_loader<torch::nn::Linear>(
      path, [] { return torch::nn::Linear(10, 5); }, torch::kCPU, gs::ModuleMode::eval);
  EXPECT_FALSE(for_inference().model->is_training());
}

TEST(TorchLoaders, DefaultConstructibleModuleThroughTheCache) {
  TempDir dir;
  const std::string path = dir.file("net.pt");
  auto saved = std::make_shared<Net>();
  torch::save(saved, path);

  gs::ModelCache<std::string, Net> cache;
  cache.add("net", gs::torch_module_loader<Net>(path));
  auto net = cache.get("net");
  ASSERT_NE(net, nullptr);
  EXPECT_TRUE(torch::equal(net->fc1->weight, saved->fc1->weight));
  EXPECT_EQ(cache.stats().bytes_resident, gs::module_bytes(*saved));
  at::Tensor out = net->forward(torch::ones({3, 6}));
  EXPECT_EQ(out.sizes(), at::IntArrayRef({3, 2}));
}

TEST(TorchLoaders, MissingAndCorruptFilesNameTheFile) {
  TempDir dir;
  const std::string missing = dir.file("missing.pt");
  const std::string corrupt = dir.file("corrupt.pt");
  std::ofstream(corrupt, std::ios::binary) << "this is not a model archive";

  auto make = [] { return torch::nn::Linear(10, 5); };
  std::string m = load_failure(gs::torch_module_loader<torch::nn::Linear>(missing, make));
  EXPECT_NE(m.find(missing), std::string::npos) << m;
  EXPECT_NE(m.find("does not exist"), std::string::npos) << m;
  std::string c = load_failure(gs::torch_module_loader<torch::nn::Linear>(corrupt, make));
  EXPECT_NE(c.find(corrupt), std::string::npos) << c;
  EXPECT_NE(c.find("not a torch::save archive"), std::string::npos) << c;

  std::string jm = load_failure(gs::torchscript_loader(missing));
  EXPECT_NE(jm.find(missing), std::string::npos) << jm;
  std::string jc = load_failure(gs::torchscript_loader(corrupt));
  EXPECT_NE(jc.find(corrupt), std::string::npos) << jc;
  EXPECT_NE(jc.find("TorchScript"), std::string::npos) << jc;
  std::string dirm = load_failure(gs::torchscript_loader("/tmp"));
  EXPECT_NE(dirm.find("directory"), std::string::npos) << dirm;

  // Through the cache the loader's message reaches the caller.
  gs::ModelCache<std::string, torch::jit::Module> cache;
  cache.add("broken", gs::torchscript_loader(corrupt));
  try {
    (void)cache.get("broken");
    ADD_FAILURE() << "no exception";
  } catch (const gs::LoadFailed& e) {
    EXPECT_NE(std::string(e.what()).find(corrupt), std::string::npos) << e.what();
  }
}

// LibTorch C++ cannot script a C++ module, but it can build a TorchScript module directly and
// compile a method from source, which gives a genuine TorchScript file to load.
TEST(TorchLoaders, TorchScriptLoaderRoundTrip) {
  TempDir dir;
  const std::string path = dir.file("scaler.pt");
  {
    torch::jit::Module m("Scaler");
    m.register_parameter("w", torch::full({4}, 2.0f), false);
    m.register_buffer("offset", torch::ones({4}));
    m.define("def forward(self, x):\n  return x * self.w + self.offset\n");
    m.save(path);
  }
  gs::ModelCache<std::string, torch::jit::Module> cache;
  cache.add("scaler", gs::torchscript_loader(path), gs::Residency::primary);
  auto m = cache.get("scaler");
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(cache.stats().bytes_resident, 8 * sizeof(float));
  at::Tensor y = m->forward({torch::ones({4})}).toTensor();
  EXPECT_TRUE(torch::allclose(y, torch::full({4}, 3.0f)));
}

// ---- LibTorch's CUDA caching allocator --------------------------------------------------------

TEST(TorchAllocator, RegisteredOnceAtStartup) {
  auto r = gs::torch_allocator_reclaimable();
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r.get(), gs::torch_allocator_reclaimable().get());
  EXPECT_EQ(r->reclaim_cost(), gs::ReclaimCost::framework_cache);
  EXPECT_STREQ(r->reclaimable_name(), "libtorch_cuda_caching_allocator");
  int found = 0;
  for (const auto& entry : gs::detail::registry_snapshot())
    if (entry->target == r.get()) ++found;
  EXPECT_EQ(found, 1);
  EXPECT_TRUE(gs::detail::torch_allocator_registered);
}

TEST(TorchAllocator, UsageAndReclaim) {
  auto r = gs::torch_allocator_reclaimable();
  if (!(GPUSAFE_TORCH_WITH_CUDA && gs::is_cuda_available() && torch::cuda::is_available())) {
    const gs::ResourceUsage u = r->usage();
    EXPECT_EQ(u.bytes_reserved, 0u);
    EXPECT_EQ(u.bytes_in_use, 0u);
    EXPECT_EQ(r->reclaim({}), 0u);
    GTEST_SKIP()
        << "no CUDA in LibTorch or gpusafe: the allocator reclaimable is a no-op (checked)";
  }
  {
    at::Tensor big =
        torch::empty({64 << 20}, at::TensorOptions().device(at::kCUDA).dtype(at::kByte));
    const gs::ResourceUsage held = r->usage();
    EXPECT_GE(held.bytes_in_use, std::size_t{64} << 20);
    EXPECT_GE(held.bytes_reserved, held.bytes_in_use);
  }
  EXPECT_GE(r->usage().bytes_reserved, std::size_t{64} << 20) << "the cache keeps the block";
  // safe_cuda_empty_cache() reclaims at light level, which empties LibTorch's cache.
  EXPECT_GE(gs::safe_cuda_empty_cache(), std::size_t{64} << 20);
  EXPECT_LT(r->usage().bytes_reserved, std::size_t{64} << 20);
}

// LibTorch's cached blocks are idle memory: every level empties them, light included, so that
// safe_cuda_empty_cache() and a manager's periodic cleanup reach them. (On CPU LibTorch there is
// no CUDA cache to empty; the dispatch is what is checked here.)
TEST(TorchAllocator, EmptiesAtEveryLevelLightIncluded) {
  static_assert(gs::TorchCudaAllocatorReclaimable::empties_at(gs::ReclaimLevel::light));
  EXPECT_TRUE(gs::TorchCudaAllocatorReclaimable::empties_at(gs::ReclaimLevel::light));
  EXPECT_TRUE(gs::TorchCudaAllocatorReclaimable::empties_at(gs::ReclaimLevel::heavy));
  EXPECT_TRUE(gs::TorchCudaAllocatorReclaimable::empties_at(gs::ReclaimLevel::shutdown));
  gs::ReclaimRequest light;
  light.level = gs::ReclaimLevel::light;
  const std::size_t released = gs::torch_allocator_reclaimable()->reclaim(light);
  if (!(GPUSAFE_TORCH_WITH_CUDA && gs::is_cuda_available())) {
    EXPECT_EQ(released, 0u);  // no CUDA cache to empty
  }
}

TEST(TorchAgreement, CudaAvailabilityAgreesWithLibTorch) {
  const gs::TorchCudaAgreement a = gs::torch_cuda_agreement();
  SCOPED_TRACE(a.describe());
  EXPECT_TRUE(a.agree);
  EXPECT_EQ(a.gpusafe_available, gs::is_cuda_available());
  EXPECT_EQ(a.torch_available, torch::cuda::is_available());
  if (a.comparable) {
    EXPECT_EQ(gs::is_cuda_available(), torch::cuda::is_available());
    EXPECT_EQ(gs::cuda_device_count(), static_cast<int>(torch::cuda::device_count()));
    if (a.gpusafe_available) {
      const gs::DeviceInfo info = gs::get_device_info(0);
      EXPECT_TRUE(info.is_gpu);
    }
  } else if (!GPUSAFE_WITH_CUDA) {
    EXPECT_FALSE(a.gpusafe_available) << "gpusafe without CUDA never reports a GPU";
  }
}

}  // namespace
