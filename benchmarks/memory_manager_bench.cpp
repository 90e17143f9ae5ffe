// MemoryManager costs: on_frame() on its common path (goal: <= 5 ns), next to the bare atomic
// increment it is built on; on_frame() with its periodic cleanups amortised; snapshot() with a
// pool and a model cache attached; report_json().
#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "gpusafe/buffer_pool.hpp"
#include "gpusafe/memory_manager.hpp"
#include "gpusafe/model_cache.hpp"

namespace gs = gpusafe;

namespace {

struct Blob {
  std::unique_ptr<char[]> data;
};

/// A manager watching a 4-class frame pool and a cache with 4 small models.
struct Rig {
  gs::BufferPool pool;
  gs::ModelCache<std::string, Blob> cache;
  gs::MemoryManager manager;

  static gs::BufferPoolOptions pool_options() {
    gs::BufferPoolOptions o;
    o.name = "frames";
    o.kind = gs::MemoryKind::device;
    o.fallback = gs::Fallback::host;
    o.classes = {{4096, 8}, {65536, 8}, {1 << 20, 4}, {4 << 20, 2}};
    return o;
  }
  static gs::ModelCacheOptions cache_options() {
    gs::ModelCacheOptions o;
    o.name = "models";
    return o;
  }
  explicit Rig(gs::MemoryManagerOptions o)
      : pool(pool_options()), cache(cache_options()), manager(std::move(o)) {
    for (int i = 0; i < 4; ++i) {
      cache.add("m" + std::to_string(i), [] {
        return gs::Loaded<Blob>{std::make_shared<Blob>(Blob{std::make_unique<char[]>(1 << 16)}),
                                1 << 16};
      });
      cache.get("m" + std::to_string(i));
    }
    manager.attach(pool);
    manager.attach(cache);
  }
};

// The pool's one-line notice that it serves "device" memory from the host would repeat per run.
const bool quiet_logs = (gs::set_log_level(gs::LogLevel::error), true);

gs::MemoryManagerOptions quiet(std::uint64_t every) {
  gs::MemoryManagerOptions o;
  o.cleanup_every_frames = every;
  o.log_sink = [](gs::LogLevel, std::string_view) {};
  return o;
}

// The floor: what the common path of on_frame() is made of.
void BM_AtomicRelaxedIncrement(benchmark::State& state) {
  static std::atomic<std::uint64_t> counter{0};
  for (auto _ : state) benchmark::DoNotOptimize(counter.fetch_add(1, std::memory_order_relaxed));
}
BENCHMARK(BM_AtomicRelaxedIncrement)->Threads(1)->Threads(2);

// Common path: cleanups configured, none due during the measurement.
void BM_OnFrame(benchmark::State& state) {
  // Shared by the threads of a run, so never destroyed while one of them may use it.
  static gs::MemoryManager manager(quiet(std::uint64_t{1} << 62));
  for (auto _ : state) benchmark::DoNotOptimize(manager.on_frame());
}
BENCHMARK(BM_OnFrame)->Threads(1)->Threads(2);

// Amortised over a light cleanup (with a snapshot into the history) every N frames.
void BM_OnFrameWithCleanupEvery(benchmark::State& state) {
  Rig rig(quiet(static_cast<std::uint64_t>(state.range(0))));
  for (auto _ : state) benchmark::DoNotOptimize(rig.manager.on_frame());
  state.counters["cleanups"] = static_cast<double>(rig.manager.stats().frame_cleanups);
}
BENCHMARK(BM_OnFrameWithCleanupEvery)->Arg(100)->Arg(1000);

void BM_Snapshot(benchmark::State& state) {
  Rig rig(quiet(0));
  for (auto _ : state) benchmark::DoNotOptimize(rig.manager.snapshot());
}
BENCHMARK(BM_Snapshot);

void BM_ReportJson(benchmark::State& state) {
  Rig rig(quiet(0));
  for (auto _ : state) benchmark::DoNotOptimize(rig.manager.report_json());
}
BENCHMARK(BM_ReportJson);

}  // namespace

BENCHMARK_MAIN();
