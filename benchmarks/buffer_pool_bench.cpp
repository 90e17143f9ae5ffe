// Benchmarks of gpusafe::BufferPool against what a user would pick instead: malloc/free, mimalloc,
// TBB's scalable allocator, std::pmr::synchronized_pool_resource, a mutex-protected free list and
// a Boost lock-free stack of preallocated buffers (host), and on a GPU cudaMalloc/cudaFree,
// cudaMallocAsync/cudaFreeAsync, CUB's CachingDeviceAllocator and LibTorch's caching allocator.
// Every host peer touches the first and the last byte of each buffer. mimalloc is loaded with
// dlopen (RTLD_LOCAL), so that it does not replace malloc for the other rows; its, TBB's and
// Boost's rows are compiled only when CMake found them. gpusafe::PoolMemoryResource (the pool as a
// std::pmr::memory_resource) runs next to std::pmr's synchronized_pool_resource,
// unsynchronized_pool_resource (one per thread) and new_delete_resource, 256-byte aligned.
//
// Run: gpusafe_buffer_pool_bench --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <memory_resource>
#include <mutex>
#include <vector>

#include "gpusafe/buffer_pool.hpp"
#include "gpusafe/pmr.hpp"

#if defined(GPUSAFE_BENCH_MIMALLOC_PATH)
#include <dlfcn.h>
#endif
#if defined(GPUSAFE_BENCH_HAS_TBB)
#include <tbb/scalable_allocator.h>
#endif
#if defined(GPUSAFE_BENCH_HAS_BOOST_LOCKFREE)
#include <boost/lockfree/stack.hpp>
#endif

#if GPUSAFE_WITH_CUDA && defined(__has_include)
#if __has_include(<cub/util_allocator.cuh>)
#include <cub/util_allocator.cuh>
#define GPUSAFE_BENCH_HAS_CUB 1
#endif
// CPU-only LibTorch packages may ship c10/cuda headers without the library; ATen's CUDA config
// header exists only in CUDA builds of LibTorch.
#if defined(GPUSAFE_BENCH_HAS_TORCH) && __has_include(<ATen/cuda/CUDAConfig.h>)
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#define GPUSAFE_BENCH_HAS_TORCH_CUDA 1
#endif
#endif

namespace gs = gpusafe;

namespace {

constexpr std::size_t kFrameBytes = std::size_t{64} << 20;
constexpr std::size_t kSmall = 4096;
constexpr std::size_t kMedium = std::size_t{64} << 10;
constexpr std::size_t kLarge = std::size_t{1} << 20;
// Enough buffers that two threads never exhaust a class (each thread caches at most an eighth).
constexpr std::size_t kSmallCount = 256;
constexpr std::size_t kMediumCount = 64;
constexpr std::size_t kLargeCount = 16;

inline void touch(void* p, std::size_t bytes) {
  auto* c = static_cast<volatile unsigned char*>(p);
  c[0] = 1;
  c[bytes - 1] = 1;
}

gs::BufferPoolOptions bench_options(gs::MemoryKind kind, const char* name) {
  gs::BufferPoolOptions o;
  o.kind = kind;
  o.name = name;
  o.classes = {{kSmall, kSmallCount}, {kMedium, kMediumCount}, {kLarge, kLargeCount}};
  return o;
}

gs::BasicBufferPool<gs::HostRuntime>& host_pool() {
  static gs::BasicBufferPool<gs::HostRuntime> pool(
      bench_options(gs::MemoryKind::host, "bench-host"));
  return pool;
}

gs::BufferPool& default_pool() {
  static gs::BufferPool pool(bench_options(gs::MemoryKind::device, "bench-default"));
  return pool;
}

// ---- one buffer: acquire + touch + release ---------------------------------------------------

/// Times one lease of state.range(0) bytes taken from `pool`, written when Touch, and released.
template <bool Touch, class Pool>
void leases_of(benchmark::State& state, Pool& pool) {
  const auto bytes = static_cast<std::size_t>(state.range(0));
  for (auto _ : state) {
    gs::BufferLease lease = pool.acquire(bytes);
    if constexpr (Touch) touch(lease.data(), bytes);
    benchmark::DoNotOptimize(lease.data());
  }
  state.SetItemsProcessed(state.iterations());
}

/// Times one buffer of state.range(0) bytes taken with take(bytes), written when Touch, and
/// given back with give(p, bytes). A null take stops the benchmark with `failure`.
template <bool Touch, class Take, class Give>
void buffers_of(benchmark::State& state, const char* failure, Take take, Give give) {
  const auto bytes = static_cast<std::size_t>(state.range(0));
  for (auto _ : state) {
    void* p = take(bytes);
    if (GPUSAFE_UNLIKELY(p == nullptr)) {
      state.SkipWithError(failure);
      break;
    }
    if constexpr (Touch) touch(p, bytes);
    benchmark::DoNotOptimize(p);
    give(p, bytes);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_Pool_Host(benchmark::State& state) { leases_of<true>(state, host_pool()); }

void BM_Pool_DefaultRuntime(benchmark::State& state) {
  auto& pool = default_pool();
  if (pool.kind() != gs::MemoryKind::host) {
    state.SkipWithError(
        "the default runtime has a GPU: device memory cannot be touched from the host");
    return;
  }
  if (state.thread_index() == 0) state.SetLabel(pool.is_fallback() ? "host fallback" : "");
  leases_of<true>(state, pool);
}

void BM_Malloc(benchmark::State& state) {
  buffers_of<true>(
      state, "malloc failed", [](std::size_t bytes) { return std::malloc(bytes); },
      [](void* p, std::size_t) { std::free(p); });
}

#if defined(GPUSAFE_BENCH_MIMALLOC_PATH)
/// mimalloc's mi_malloc/mi_free from a privately loaded copy (null when it cannot be loaded).
struct Mimalloc {
  void* (*allocate)(std::size_t) = nullptr;
  void (*free)(void*) = nullptr;
  Mimalloc() {
    void* lib = ::dlopen(GPUSAFE_BENCH_MIMALLOC_PATH, RTLD_NOW | RTLD_LOCAL);
    if (!lib) return;
    allocate = reinterpret_cast<void* (*)(std::size_t)>(::dlsym(lib, "mi_malloc"));
    free = reinterpret_cast<void (*)(void*)>(::dlsym(lib, "mi_free"));
  }
};

void BM_Mimalloc(benchmark::State& state) {
  static const Mimalloc mi;
  if (!mi.allocate || !mi.free) {
    state.SkipWithError("could not load " GPUSAFE_BENCH_MIMALLOC_PATH);
    return;
  }
  buffers_of<true>(
      state, "mi_malloc failed", [](std::size_t bytes) { return mi.allocate(bytes); },
      [](void* p, std::size_t) { mi.free(p); });
}
#endif

#if defined(GPUSAFE_BENCH_HAS_TBB)
void BM_TbbScalableMalloc(benchmark::State& state) {
  buffers_of<true>(
      state, "scalable_malloc failed", [](std::size_t bytes) { return scalable_malloc(bytes); },
      [](void* p, std::size_t) { scalable_free(p); });
}
#endif

std::pmr::synchronized_pool_resource& pmr_pool() {
  static std::pmr::synchronized_pool_resource pool(std::pmr::pool_options{kSmallCount, kLarge});
  return pool;
}

void BM_PmrSynchronizedPool(benchmark::State& state) {
  auto& pool = pmr_pool();
  buffers_of<true>(
      state, "allocate failed", [&](std::size_t bytes) { return pool.allocate(bytes, 256); },
      [&](void* p, std::size_t bytes) { pool.deallocate(p, bytes, 256); });
}

/// gpusafe::PoolMemoryResource over a host pool, next to the standard memory resources. Each
/// block keeps its lease just past the bytes asked for, so this pool's classes have room for it.
gs::BasicPoolMemoryResource<gs::HostRuntime>& pool_resource() {
  static gs::BasicBufferPool<gs::HostRuntime> pool([] {
    gs::BufferPoolOptions o = bench_options(gs::MemoryKind::host, "bench-pmr");
    for (auto& c : o.classes) c.bytes += sizeof(gs::BufferLease);
    return o;
  }());
  static gs::BasicPoolMemoryResource<gs::HostRuntime> resource(pool, nullptr);
  return resource;
}

/// Times allocate + touch + deallocate of state.range(0) bytes, 256-aligned, on `resource`.
void blocks_of(benchmark::State& state, std::pmr::memory_resource& resource) {
  buffers_of<true>(
      state, "allocate failed", [&](std::size_t bytes) { return resource.allocate(bytes, 256); },
      [&](void* p, std::size_t bytes) { resource.deallocate(p, bytes, 256); });
}

void BM_PoolMemoryResource(benchmark::State& state) { blocks_of(state, pool_resource()); }

/// One unsynchronized_pool_resource per thread (it must not be shared).
void BM_PmrUnsynchronizedPool(benchmark::State& state) {
  thread_local std::pmr::unsynchronized_pool_resource pool(
      std::pmr::pool_options{kSmallCount, kLarge});
  blocks_of(state, pool);
}

void BM_PmrNewDelete(benchmark::State& state) {
  blocks_of(state, *std::pmr::new_delete_resource());
}

/// The classic hand-written pool: preallocated buffers on a vector behind one mutex.
class MutexFreeList {
 public:
  MutexFreeList(std::size_t bytes, std::size_t count) : storage_(bytes * count) {
    for (std::size_t i = 0; i < count; ++i) free_.push_back(storage_.data() + i * bytes);
  }
  void* acquire() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (free_.empty()) return nullptr;
    void* p = free_.back();
    free_.pop_back();
    return p;
  }
  void release(void* p) {
    std::lock_guard<std::mutex> lock(mutex_);
    free_.push_back(p);
  }

 private:
  std::vector<unsigned char> storage_;
  std::mutex mutex_;
  std::vector<void*> free_;
};

/// The free list for buffers of `bytes` (one per benchmarked size, made on first use).
template <class List>
List& list_for(std::size_t bytes) {
  static List small(kSmall, kSmallCount);
  static List medium(kMedium, kMediumCount);
  static List large(kLarge, kLargeCount);
  return bytes <= kSmall ? small : bytes <= kMedium ? medium : large;
}

void BM_MutexFreeList(benchmark::State& state) {
  auto& list = list_for<MutexFreeList>(static_cast<std::size_t>(state.range(0)));
  buffers_of<true>(
      state, "the free list is empty", [&](std::size_t) { return list.acquire(); },
      [&](void* p, std::size_t) { list.release(p); });
}

#if defined(GPUSAFE_BENCH_HAS_BOOST_LOCKFREE)
/// Preallocated buffers on a Boost lock-free stack (a Treiber stack with tagged pointers).
class BoostLockFreeList {
 public:
  BoostLockFreeList(std::size_t bytes, std::size_t count) : storage_(bytes * count), free_(count) {
    for (std::size_t i = 0; i < count; ++i) free_.push(storage_.data() + i * bytes);
  }
  void* acquire() {
    void* p = nullptr;
    return free_.pop(p) ? p : nullptr;
  }
  void release(void* p) { free_.push(p); }

 private:
  std::vector<unsigned char> storage_;
  boost::lockfree::stack<void*> free_;
};

void BM_BoostLockFreeStack(benchmark::State& state) {
  auto& list = list_for<BoostLockFreeList>(static_cast<std::size_t>(state.range(0)));
  buffers_of<true>(
      state, "the stack is empty", [&](std::size_t) { return list.acquire(); },
      [&](void* p, std::size_t) { list.release(p); });
}
#endif

/// No allocation at all, only arithmetic private to each thread: how much this machine lets two
/// threads scale (a VM whose vCPUs are shared with other work scales less than 2x).
void BM_Baseline_ThreadPrivateWork(benchmark::State& state) {
  unsigned x = 1;
  for (auto _ : state) {
    for (int i = 0; i < 20; ++i) x = x * 1664525u + 1013904223u;
    benchmark::DoNotOptimize(x);
  }
  state.SetItemsProcessed(state.iterations());
}

// ---- frame loop: a 64 MiB buffer written entirely each frame ---------------------------------

void BM_Frame64MiB_Pool(benchmark::State& state) {
  gs::BufferPoolOptions o;
  o.kind = gs::MemoryKind::host;
  o.name = "bench-frames";
  o.classes = {{kFrameBytes, 2}};
  gs::BasicBufferPool<gs::HostRuntime> pool(o);
  for (auto _ : state) {
    gs::BufferLease frame = pool.acquire(kFrameBytes);
    std::memset(frame.data(), 0x2a, kFrameBytes);
    benchmark::DoNotOptimize(frame.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kFrameBytes));
}

void BM_Frame64MiB_Malloc(benchmark::State& state) {
  for (auto _ : state) {
    void* frame = std::malloc(kFrameBytes);
    std::memset(frame, 0x2a, kFrameBytes);
    benchmark::DoNotOptimize(frame);
    benchmark::ClobberMemory();
    std::free(frame);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kFrameBytes));
}

// ---- GPU peers (device memory is not touched: kernels would dominate) ------------------------

bool skip_without_gpu(benchmark::State& state) {
  if (gs::is_cuda_available()) return false;
  state.SkipWithError("no GPU");
  return true;
}

void BM_Gpu_Pool(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  leases_of<false>(state, default_pool());
}

#if GPUSAFE_WITH_CUDA
/// The pool as a stream-ordered allocator: each release records an event on the stream (as
/// cudaFreeAsync and LibTorch's record_stream do), and the slot is reused once it completed.
void BM_Gpu_Pool_RecordStream(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  cudaStream_t stream = nullptr;
  if (cudaStreamCreate(&stream) != cudaSuccess) {
    state.SkipWithError("cudaStreamCreate failed");
    return;
  }
  auto& pool = default_pool();
  const auto bytes = static_cast<std::size_t>(state.range(0));
  for (auto _ : state) {
    gs::BufferLease lease = pool.acquire(bytes);
    lease.record_stream(stream);
    benchmark::DoNotOptimize(lease.data());
  }
  state.SetItemsProcessed(state.iterations());
  cudaStreamSynchronize(stream);
  cudaStreamDestroy(stream);
}
#endif

#if GPUSAFE_WITH_CUDA
void BM_Gpu_CudaMalloc(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  buffers_of<false>(
      state, "cudaMalloc failed",
      [](std::size_t bytes) {
        void* p = nullptr;
        return cudaMalloc(&p, bytes) == cudaSuccess ? p : nullptr;
      },
      [](void* p, std::size_t) { cudaFree(p); });
}

void BM_Gpu_CudaMallocAsync(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  cudaStream_t stream = nullptr;
  if (cudaStreamCreate(&stream) != cudaSuccess) {
    state.SkipWithError("cudaStreamCreate failed");
    return;
  }
  buffers_of<false>(
      state, "cudaMallocAsync failed (stream-ordered allocator unsupported?)",
      [&](std::size_t bytes) {
        void* p = nullptr;
        return cudaMallocAsync(&p, bytes, stream) == cudaSuccess ? p : nullptr;
      },
      [&](void* p, std::size_t) { cudaFreeAsync(p, stream); });
  cudaStreamSynchronize(stream);
  cudaStreamDestroy(stream);
}
#endif

#if defined(GPUSAFE_BENCH_HAS_CUB)
void BM_Gpu_CubCachingAllocator(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  static cub::CachingDeviceAllocator allocator;
  buffers_of<false>(
      state, "CachingDeviceAllocator::DeviceAllocate failed",
      [](std::size_t bytes) {
        void* p = nullptr;
        return allocator.DeviceAllocate(&p, bytes) == cudaSuccess ? p : nullptr;
      },
      [](void* p, std::size_t) { allocator.DeviceFree(p); });
}
#endif

#if defined(GPUSAFE_BENCH_HAS_TORCH_CUDA)
void BM_Gpu_TorchCachingAllocator(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  // LibTorch sets its allocator up lazily, with its first CUDA tensor; raw_alloc alone does not.
  static const bool initialized =
      (c10::cuda::CUDACachingAllocator::init(c10::cuda::device_count()), true);
  (void)initialized;
  buffers_of<false>(
      state, "CUDACachingAllocator::raw_alloc returned null",
      [](std::size_t bytes) { return c10::cuda::CUDACachingAllocator::raw_alloc(bytes); },
      [](void* p, std::size_t) { c10::cuda::CUDACachingAllocator::raw_delete(p); });
}
#endif

#define GPUSAFE_BENCH_ONE_BUFFER(fn) \
  BENCHMARK(fn)->Arg(kSmall)->Arg(kMedium)->Arg(kLarge)->Threads(1)->Threads(2)->UseRealTime()

BENCHMARK(BM_Baseline_ThreadPrivateWork)->Threads(1)->Threads(2)->UseRealTime();
GPUSAFE_BENCH_ONE_BUFFER(BM_Pool_Host);
GPUSAFE_BENCH_ONE_BUFFER(BM_Pool_DefaultRuntime);
GPUSAFE_BENCH_ONE_BUFFER(BM_Malloc);
#if defined(GPUSAFE_BENCH_MIMALLOC_PATH)
GPUSAFE_BENCH_ONE_BUFFER(BM_Mimalloc);
#endif
#if defined(GPUSAFE_BENCH_HAS_TBB)
GPUSAFE_BENCH_ONE_BUFFER(BM_TbbScalableMalloc);
#endif
GPUSAFE_BENCH_ONE_BUFFER(BM_PmrSynchronizedPool);
GPUSAFE_BENCH_ONE_BUFFER(BM_PoolMemoryResource);
GPUSAFE_BENCH_ONE_BUFFER(BM_PmrUnsynchronizedPool);
GPUSAFE_BENCH_ONE_BUFFER(BM_PmrNewDelete);
GPUSAFE_BENCH_ONE_BUFFER(BM_MutexFreeList);
#if defined(GPUSAFE_BENCH_HAS_BOOST_LOCKFREE)
GPUSAFE_BENCH_ONE_BUFFER(BM_BoostLockFreeStack);
#endif
BENCHMARK(BM_Frame64MiB_Pool)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_Frame64MiB_Malloc)->Unit(benchmark::kMicrosecond)->UseRealTime();
GPUSAFE_BENCH_ONE_BUFFER(BM_Gpu_Pool);
#if GPUSAFE_WITH_CUDA
GPUSAFE_BENCH_ONE_BUFFER(BM_Gpu_Pool_RecordStream);
GPUSAFE_BENCH_ONE_BUFFER(BM_Gpu_CudaMalloc);
GPUSAFE_BENCH_ONE_BUFFER(BM_Gpu_CudaMallocAsync);
#endif
#if defined(GPUSAFE_BENCH_HAS_CUB)
GPUSAFE_BENCH_ONE_BUFFER(BM_Gpu_CubCachingAllocator);
#endif
#if defined(GPUSAFE_BENCH_HAS_TORCH_CUDA)
GPUSAFE_BENCH_ONE_BUFFER(BM_Gpu_TorchCachingAllocator);
#endif

}  // namespace

BENCHMARK_MAIN();
