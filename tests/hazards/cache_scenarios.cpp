// Teardown-hazard scenarios of gpusafe/model_cache.hpp. See hazard.hpp.
#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "gpusafe/model_cache.hpp"
#include "hazard.hpp"

namespace gs = gpusafe;
namespace hz = gpusafe_hazards;
using gs::testing::FakeRuntime;

namespace {

// A model holding GPU memory through a release-rule-abiding type.
template <class Runtime>
struct GpuModel {
  explicit GpuModel(std::size_t bytes) : block(bytes) {}
  hz::DeviceBlock<Runtime> block;
};

template <class Runtime>
using GpuCache = gs::BasicModelCache<Runtime, int, GpuModel<Runtime>, std::hash<int>>;

template <class Runtime>
void register_models(GpuCache<Runtime>& cache, int count) {
  for (int k = 0; k < count; ++k) {
    const std::size_t bytes = 1024 * static_cast<std::size_t>(k + 1);
    cache.add(
        k,
        [bytes] {
          return gs::Loaded<GpuModel<Runtime>>{std::make_shared<GpuModel<Runtime>>(bytes), bytes};
        },
        k == 0 ? gs::Residency::primary : gs::Residency::secondary);
  }
}

template <class Runtime>
gs::ModelCacheOptions cache_options(const char* name) {
  gs::ModelCacheOptions o;
  o.name = name;
  o.byte_budget = 8 * 1024;
  return o;
}

}  // namespace

// (1) Caches in static objects: one built before the first runtime call (destroyed after the
// runtime's teardown, so its models must free nothing through the runtime), one built after
// (destroyed while the runtime is alive: its models really free). Handles cross between them
// and stay alive until exit.
GPUSAFE_HAZARD_SCENARIO(cache_static_objects) {
  using Cache = GpuCache<Runtime>;
  struct Early {
    std::optional<Cache> cache;
    typename Cache::Handle own;
    typename Cache::Handle crossing;  // from the late cache: dropped after the teardown
  };
  struct Late {
    std::optional<Cache> cache;
    typename Cache::Handle own;
    ~Late() {
      GPUSAFE_HAZARD_CHECK(!gs::process_is_exiting());
      if constexpr (hz::kIsFake<Runtime>) {
        const auto live = FakeRuntime::live_allocations();
        const auto resident = cache->stats().models_resident;
        own.reset();
        cache.reset();
        // Every resident model of the late cache is freed, except the one `crossing` holds.
        GPUSAFE_HAZARD_CHECK(FakeRuntime::live_allocations() == live - (resident - 1));
      }
    }
  };
  static Early early;  // constructed before any runtime call
  early.cache.emplace(cache_options<Runtime>("early"));
  register_models(*early.cache, 6);
  early.own = early.cache->get(1);  // first runtime call
  (void)early.cache->get(0);
  (void)early.cache->get(2);
  static Late late;
  late.cache.emplace(cache_options<Runtime>("late"));
  register_models(*late.cache, 6);
  late.own = late.cache->get(3);
  early.crossing = late.cache->get(2);
  (void)late.cache->get(0);
  late.cache->on_evict([](const int&, std::size_t, gs::EvictReason) {
    // Destruction reports nothing; an eviction callback at exit would be a bug.
    GPUSAFE_HAZARD_CHECK(!gs::process_is_exiting());
  });
  return 0;
}

// (2) A handle alive at exit: the cache dies first (at the end of the body), the handle is
// dropped by a static destructor after the runtime's teardown. An evicted model held by a
// handle is in the same situation.
GPUSAFE_HAZARD_SCENARIO(cache_handle_alive_at_exit) {
  using Cache = GpuCache<Runtime>;
  static typename Cache::Handle survivor;
  static typename Cache::Handle evicted;
  {
    Cache cache(cache_options<Runtime>("short_lived"));
    register_models(cache, 4);
    survivor = cache.get(1);
    evicted = cache.get(2);
    cache.clear();  // evicted while held: its bytes stay charged until the handle drops
    GPUSAFE_HAZARD_CHECK(cache.stats().bytes_retired == 2 * 1024 + 3 * 1024);
    (void)cache.get(0);  // fits beside the held bytes; model 3 (4 KiB) would not
  }
  GPUSAFE_HAZARD_CHECK(survivor && survivor->block);
  GPUSAFE_HAZARD_CHECK(evicted && evicted->block);
  return 0;
}

// (3) A cache whose models hold runtime allocations, in a static object destroyed at exit,
// with a worker thread still loading and evicting until just before main ends; then the same
// after an orderly gpusafe::shutdown(), which frees every unpinned model while the runtime is
// alive.
GPUSAFE_HAZARD_SCENARIO(cache_models_destroyed_at_exit) {
  using Cache = GpuCache<Runtime>;
  static std::optional<Cache> busy;
  busy.emplace(cache_options<Runtime>("busy"));
  register_models(*busy, 8);
  busy->pin(5);
  std::atomic<bool> stop{false};
  std::thread worker([&stop] {
    int k = 0;
    while (!stop.load()) {
      try {
        (void)busy->get(k);
      } catch (const gs::BudgetExceeded&) {
      }
      k = (k + 1) % 8;
      if (k == 0) busy->evict(4096);
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  stop.store(true);
  worker.join();

  static std::optional<Cache> orderly;
  orderly.emplace(cache_options<Runtime>("orderly"));
  register_models(*orderly, 4);
  orderly->pin(2);
  for (int k = 0; k < 4; ++k) (void)orderly->get(k);
  const auto live_before = hz::kIsFake<Runtime> ? FakeRuntime::live_allocations() : 0;
  const auto resident_before = orderly->stats().models_resident;
  const auto released = gs::shutdown();
  GPUSAFE_HAZARD_CHECK(released > 0);
  GPUSAFE_HAZARD_CHECK(orderly->stats().models_resident == 1);  // the pinned one
  if constexpr (hz::kIsFake<Runtime>) {
    GPUSAFE_HAZARD_CHECK(FakeRuntime::live_allocations() + (resident_before - 1) <= live_before);
  }
  // Still usable after shutdown(); this model is freed (or dropped) at exit.
  GPUSAFE_HAZARD_CHECK(orderly->get(1)->block);
  return 0;
}

// (4) A forked child uses a cache whose locks a parent thread held at fork time: the locks are
// re-created, inherited models are dropped with zero runtime calls, host work continues.
GPUSAFE_HAZARD_SCENARIO_FAKE_ONLY(cache_forked_child) {
  using Cache = gs::BasicModelCache<Runtime, int, GpuModel<Runtime>, std::hash<int>>;
  auto cache = std::make_shared<Cache>(cache_options<Runtime>("forked"));
  register_models(*cache, 6);
  for (int k = 0; k < 4; ++k) (void)cache->get(k);
  std::atomic<bool> stop{false};
  std::thread hammer([&] {
    int k = 0;
    while (!stop.load()) {
      (void)cache->try_get(k % 4);
      (void)cache->stats();
      ++k;
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  const int rc = hz::run_in_child([&] {
    const auto calls = FakeRuntime::total_calls();
    for (int i = 0; i < 100; ++i) {
      (void)cache->try_get(i % 4);
      (void)cache->stats();
    }
    cache->clear();
    cache.reset();
    GPUSAFE_HAZARD_CHECK(FakeRuntime::total_calls() == calls);
    // A cache of host-only models works in the child.
    gs::BasicModelCache<Runtime, int, std::string, std::hash<int>> fresh;
    fresh.add(1, [] { return gs::Loaded<std::string>{std::make_shared<std::string>("x"), 1}; });
    GPUSAFE_HAZARD_CHECK(*fresh.get(1) == "x");
    return 0;
  });
  stop.store(true);
  hammer.join();
  GPUSAFE_HAZARD_CHECK(rc == 0);
  return 0;
}
