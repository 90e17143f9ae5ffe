// Teardown-hazard scenarios of gpusafe/torch.hpp (built only with LibTorch). See hazard.hpp.
//
// On the fake variant the pools hold pinned host memory from FakeRuntime (its device memory is
// host memory that LibTorch must not be told is CUDA), so every release is a counted runtime call
// that traps after the fake runtime's teardown. On the default variant the pools hold device
// memory when LibTorch can use the GPU (CUDA tensors), host memory otherwise.
#include <torch/cuda.h>

#include <cstdlib>

#include "gpusafe/buffer_pool.hpp"
#include "gpusafe/guards.hpp"
#include "gpusafe/torch.hpp"
#include "hazard.hpp"

namespace gs = gpusafe;
namespace hz = gpusafe_hazards;
using gs::testing::FakeRuntime;

namespace {

template <class Runtime>
gs::BufferPoolOptions torch_pool_options(const char* name) {
  gs::BufferPoolOptions o;
  o.kind = gs::MemoryKind::pinned_host;
  if constexpr (!hz::kIsFake<Runtime>) {
    if (gs::is_cuda_available() && torch::cuda::is_available()) o.kind = gs::MemoryKind::device;
  }
  o.classes = {{4096, 4}};
  o.name = name;
  return o;
}

template <class Runtime>
at::Tensor pooled_tensor(gs::BasicBufferPool<Runtime>& pool, float value) {
  at::Tensor t = gs::as_tensor(pool.acquire(256 * sizeof(float)), {16, 16}, at::kFloat);
  t.fill_(value);
  return t;
}

std::size_t in_use_of(const gs::BufferPoolStats& s) { return s.totals.in_use; }

float sum_of(const at::Tensor& t) { return t.sum().item<float>(); }

}  // namespace

// A static tensor over a pooled buffer, built before the first runtime call and so destroyed at
// exit after the runtime's teardown (its pool, a static built later, is already gone): releasing
// the buffer must make no runtime call. A second static tensor, built after the pool, dies while
// everything is alive and really gives its buffer back.
GPUSAFE_HAZARD_SCENARIO(torch_static_pooled_tensor) {
  static at::Tensor early;  // constructed before any runtime call: destroyed last
  static gs::BasicBufferPool<Runtime> pool(torch_pool_options<Runtime>("torch_static"));
  struct Late {
    at::Tensor tensor;
    ~Late() {
      const std::size_t before = in_use_of(pool.stats());
      tensor.reset();
      GPUSAFE_HAZARD_CHECK(in_use_of(pool.stats()) + 1 == before);
    }
  };
  static Late late;
  early = pooled_tensor(pool, 1.0f);
  late.tensor = pooled_tensor(pool, 2.0f);
  at::Tensor view = early.slice(0, 2, 4);  // a view that dies in main
  GPUSAFE_HAZARD_CHECK(in_use_of(pool.stats()) == 2);
  GPUSAFE_HAZARD_CHECK(sum_of(view) == 32.0f);
  return 0;
}

// A tensor alive after its pool died: still readable, its release frees the buffer through the
// pool's surviving core; another one is left to die at exit with no pool around.
GPUSAFE_HAZARD_SCENARIO(torch_tensor_outlives_pool) {
  static at::Tensor left_for_exit;  // constructed before any runtime call
  at::Tensor survivor;
  {
    gs::BasicBufferPool<Runtime> pool(torch_pool_options<Runtime>("torch_short_lived"));
    survivor = pooled_tensor(pool, 3.0f);
    left_for_exit = pooled_tensor(pool, 4.0f);
  }
  GPUSAFE_HAZARD_CHECK(sum_of(survivor) == 3.0f * 256);
  if constexpr (hz::kIsFake<Runtime>) GPUSAFE_HAZARD_CHECK(FakeRuntime::live_allocations() == 1);
  GPUSAFE_HAZARD_CHECK(gs::safe_tensor_cleanup(survivor));
  GPUSAFE_HAZARD_CHECK(!survivor.defined());
  GPUSAFE_HAZARD_CHECK(sum_of(left_for_exit) == 4.0f * 256);
  if constexpr (hz::kIsFake<Runtime>) GPUSAFE_HAZARD_CHECK(FakeRuntime::live_allocations() == 1);
  return 0;
}

// Tensors over pooled buffers inherited by a forked child: safe_tensor_cleanup in the child empties
// them with zero runtime calls (a tensor over pooled or CUDA memory is leaked there, a plain CPU
// tensor freed), and the child may exit through the inherited static destructors; the parent's
// tensors and pool are untouched and work afterwards.
GPUSAFE_HAZARD_SCENARIO(torch_tensor_in_forked_child) {
  static gs::BasicBufferPool<Runtime> pool(torch_pool_options<Runtime>("torch_fork"));
  static at::Tensor inherited_static = pooled_tensor(pool, 1.0f);
  at::Tensor inherited = pooled_tensor(pool, 5.0f);
  at::Tensor cpu_plain = torch::ones({64});
  for (int round = 0; round < 4; ++round) {
    const bool exit_normally = round % 2 == 1;
    const int rc = hz::run_in_child([&] {
      const auto calls = FakeRuntime::total_calls();
      GPUSAFE_HAZARD_CHECK(gs::in_forked_child());
      GPUSAFE_HAZARD_CHECK(gs::safe_tensor_cleanup(inherited, cpu_plain));
      GPUSAFE_HAZARD_CHECK(!inherited.defined() && !cpu_plain.defined());
      (void)gs::safe_cuda_empty_cache();  // includes LibTorch's allocator: no call in a child
      if constexpr (hz::kIsFake<Runtime>) GPUSAFE_HAZARD_CHECK(FakeRuntime::total_calls() == calls);
      if (exit_normally) std::exit(0);  // inherited static tensor and pool die here
      return 0;
    });
    GPUSAFE_HAZARD_CHECK(rc == 0);
  }
  GPUSAFE_HAZARD_CHECK(inherited.defined());
  GPUSAFE_HAZARD_CHECK(sum_of(inherited) == 5.0f * 256);
  GPUSAFE_HAZARD_CHECK(in_use_of(pool.stats()) == 2);
  GPUSAFE_HAZARD_CHECK(gs::safe_tensor_cleanup(inherited));
  GPUSAFE_HAZARD_CHECK(in_use_of(pool.stats()) == 1);
  return 0;
}

// Static LibTorch tensors at exit: one cleaned with safe_tensor_cleanup by a static object's
// destructor while the process exits (after the runtime's teardown), one left to die with its
// own static destructor. Each kind: a LibTorch-allocated tensor (CUDA when LibTorch has a GPU)
// and one over a pooled buffer.
GPUSAFE_HAZARD_SCENARIO(torch_static_tensors_at_exit) {
  struct Cleaner {
    at::Tensor own;
    at::Tensor pooled;
    ~Cleaner() {
      const bool exiting = gs::process_is_exiting();
      GPUSAFE_HAZARD_CHECK(gs::safe_tensor_cleanup(own, pooled));
      GPUSAFE_HAZARD_CHECK(!own.defined() && !pooled.defined());
      if (hz::current().exit_style != hz::kExitQuick) GPUSAFE_HAZARD_CHECK(exiting);
    }
  };
  static Cleaner cleaner;      // constructed before any runtime call: destroyed after teardown
  static at::Tensor left_own;  // likewise, left to its destructor
  static at::Tensor left_pooled;
  static gs::BasicBufferPool<Runtime> pool(torch_pool_options<Runtime>("torch_exit"));
  at::TensorOptions options;
  if constexpr (!hz::kIsFake<Runtime>) {
    if (gs::is_cuda_available() && torch::cuda::is_available()) options = options.device(at::kCUDA);
  }
  cleaner.own = torch::full({128}, 2.0f, options);
  left_own = torch::full({128}, 3.0f, options);
  cleaner.pooled = pooled_tensor(pool, 6.0f);
  left_pooled = pooled_tensor(pool, 7.0f);
  GPUSAFE_HAZARD_CHECK(sum_of(cleaner.own + left_own) == 5.0f * 128);
  return 0;
}
