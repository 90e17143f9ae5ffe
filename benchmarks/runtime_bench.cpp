// Cost of asking "is there a usable GPU?": gpusafe's cached answer against what a program would
// call instead, cudaGetDeviceCount (CUDA builds) and torch::cuda::is_available() (LibTorch).
#include <benchmark/benchmark.h>

#include <atomic>

#include "gpusafe/runtime.hpp"

#ifdef GPUSAFE_BENCH_HAS_TORCH
#include <torch/cuda.h>
#endif

namespace gs = gpusafe;

namespace {
std::atomic<int> g_cached_answer{0};
}  // namespace

// The floor: one acquire load of a global atomic inside the benchmark loop, which is the least
// any cached answer can cost.
static void BM_floor_atomic_load(benchmark::State& state) {
  for (auto _ : state)
    benchmark::DoNotOptimize(g_cached_answer.load(std::memory_order_acquire) == 0);
}
BENCHMARK(BM_floor_atomic_load);

static void BM_gpusafe_is_cuda_available(benchmark::State& state) {
  (void)gs::is_cuda_available();  // the probe; what is measured is every later call
  for (auto _ : state) benchmark::DoNotOptimize(gs::is_cuda_available());
}
BENCHMARK(BM_gpusafe_is_cuda_available);

static void BM_gpusafe_cuda_status(benchmark::State& state) {
  (void)gs::cuda_status();
  for (auto _ : state) benchmark::DoNotOptimize(gs::cuda_status());
}
BENCHMARK(BM_gpusafe_cuda_status);

#if GPUSAFE_WITH_CUDA
static void BM_cudaGetDeviceCount(benchmark::State& state) {
  int count = 0;
  (void)cudaGetDeviceCount(&count);
  for (auto _ : state) {
    const cudaError_t rc = cudaGetDeviceCount(&count);
    benchmark::DoNotOptimize(rc);
    benchmark::DoNotOptimize(count);
  }
  (void)cudaGetLastError();
  state.SetLabel(count > 0 ? "GPU present" : "no usable GPU");
}
BENCHMARK(BM_cudaGetDeviceCount);
#endif

#ifdef GPUSAFE_BENCH_HAS_TORCH
static void BM_torch_cuda_is_available(benchmark::State& state) {
  (void)torch::cuda::is_available();
  for (auto _ : state) benchmark::DoNotOptimize(torch::cuda::is_available());
}
BENCHMARK(BM_torch_cuda_is_available);
#endif

BENCHMARK_MAIN();
