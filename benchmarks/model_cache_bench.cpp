// ModelCache against the cache a user would write instead: one mutex, a std::list for the LRU
// order and an unordered_map of shared_ptr; and, when TBB is installed, against
// tbb::concurrent_lru_cache (whose capacity counts unused items, as the budget here does). Hit path
// (16 resident models, random keys, the handle copied out and dropped) on 1 and 2 threads, a miss
// with a trivial loader, and eviction churn (16 keys, room for 8).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <random>
#include <unordered_map>
#include <utility>
#include <vector>

#include "gpusafe/model_cache.hpp"

#if GPUSAFE_BENCH_HAS_TBB_LRU
#define TBB_PREVIEW_CONCURRENT_LRU_CACHE 1
#include <tbb/concurrent_lru_cache.h>
#endif

namespace gs = gpusafe;

namespace {

struct Model {
  explicit Model(int k) : key(k) {}
  int key;
  char payload[56] = {};
};

gs::Loaded<Model> trivial_load(int k) { return {std::make_shared<Model>(k), 1}; }

/// The usual hand-written LRU: every get takes the one mutex and moves the entry to the front.
class PlainLru {
 public:
  explicit PlainLru(std::size_t capacity) : capacity_(capacity) {}

  std::shared_ptr<Model> get(int key) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = map_.find(key);
    if (it != map_.end()) {
      order_.splice(order_.begin(), order_, it->second.second);
      return it->second.first;
    }
    auto model = trivial_load(key).model;
    order_.push_front(key);
    map_.emplace(key, std::make_pair(model, order_.begin()));
    if (map_.size() > capacity_) {
      map_.erase(order_.back());
      order_.pop_back();
    }
    return model;
  }

  void clear() {
    std::lock_guard<std::mutex> lock(mutex_);
    map_.clear();
    order_.clear();
  }

 private:
  std::mutex mutex_;
  std::size_t capacity_;
  std::list<int> order_;
  std::unordered_map<int, std::pair<std::shared_ptr<Model>, std::list<int>::iterator>> map_;
};

using Cache = gs::ModelCache<int, Model>;

constexpr int kResident = 16;

constexpr std::size_t kRandomKeys = 4096;  // a power of two: the loops index with a mask

std::vector<int> random_keys(int thread, int range) {
  std::mt19937 rng(42u + static_cast<unsigned>(thread));
  std::vector<int> keys(kRandomKeys);
  for (auto& k : keys) k = static_cast<int>(rng() % static_cast<unsigned>(range));
  return keys;
}

/// Times get(key) over `keys` in turn, the handle copied out and dropped.
template <class Get>
void gets_of(benchmark::State& state, const std::vector<int>& keys, Get get) {
  std::size_t i = 0;
  for (auto _ : state) {
    auto h = get(keys[i++ & (kRandomKeys - 1)]);
    benchmark::DoNotOptimize(h.get());
  }
  state.SetItemsProcessed(state.iterations());
}

/// Times gets that all miss: keys 0..keys-1 in order, the cache cleared (untimed) when all were
/// loaded.
template <class C>
void misses_of(benchmark::State& state, C& cache, int keys) {
  int k = 0;
  for (auto _ : state) {
    auto h = cache.get(k);
    benchmark::DoNotOptimize(h.get());
    if (++k == keys) {
      state.PauseTiming();
      h.reset();
      cache.clear();
      k = 0;
      state.ResumeTiming();
    }
  }
  state.SetItemsProcessed(state.iterations());
}

Cache& hit_cache() {
  static Cache* cache = [] {
    gs::ModelCacheOptions o;
    o.name = "bench_hits";
    auto* c = new Cache(o);
    for (int k = 0; k < kResident; ++k) c->add(k, [k] { return trivial_load(k); });
    for (int k = 0; k < kResident; ++k) c->get(k);
    return c;
  }();
  return *cache;
}

PlainLru& hit_plain() {
  static PlainLru* lru = [] {
    auto* l = new PlainLru(kResident);
    for (int k = 0; k < kResident; ++k) l->get(k);
    return l;
  }();
  return *lru;
}

void BM_Hit_ModelCache(benchmark::State& state) {
  Cache& cache = hit_cache();
  gets_of(state, random_keys(state.thread_index(), kResident),
          [&](int key) { return cache.get(key); });
}
BENCHMARK(BM_Hit_ModelCache)->Threads(1)->Threads(2)->UseRealTime();

void BM_Hit_PlainLru(benchmark::State& state) {
  PlainLru& lru = hit_plain();
  gets_of(state, random_keys(state.thread_index(), kResident),
          [&](int key) { return lru.get(key); });
}
BENCHMARK(BM_Hit_PlainLru)->Threads(1)->Threads(2)->UseRealTime();

// The floor of any cache that hands out std::shared_ptr: copying (and dropping) one of 16
// shared_ptrs from a shared array, with no lookup and no lock. On 2 threads the reference
// counts' cache lines travel between the cores, whatever the cache does around them.
void BM_Hit_SharedPtrCopyFloor(benchmark::State& state) {
  static std::vector<std::shared_ptr<Model>>* models = [] {
    auto* v = new std::vector<std::shared_ptr<Model>>();
    for (int k = 0; k < kResident; ++k) v->push_back(trivial_load(k).model);
    return v;
  }();
  gets_of(state, random_keys(state.thread_index(), kResident),
          [&](int key) { return (*models)[static_cast<std::size_t>(key)]; });
}
BENCHMARK(BM_Hit_SharedPtrCopyFloor)->Threads(1)->Threads(2)->UseRealTime();

// Every get misses: 65536 registered keys taken in order, cleared when all were loaded.
constexpr int kMissKeys = 1 << 16;

void BM_Miss_ModelCache(benchmark::State& state) {
  gs::ModelCacheOptions o;
  o.name = "bench_miss";
  Cache cache(o);
  for (int k = 0; k < kMissKeys; ++k) cache.add(k, [k] { return trivial_load(k); });
  misses_of(state, cache, kMissKeys);
}
BENCHMARK(BM_Miss_ModelCache);

void BM_Miss_PlainLru(benchmark::State& state) {
  PlainLru lru(kMissKeys);
  misses_of(state, lru, kMissKeys);
}
BENCHMARK(BM_Miss_PlainLru);

// 16 keys, room for 8 (byte budget 8 with 1-byte models): about half the gets load and evict.
void BM_Churn_ModelCache(benchmark::State& state) {
  gs::ModelCacheOptions o;
  o.name = "bench_churn";
  o.byte_budget = 8;
  Cache cache(o);
  for (int k = 0; k < 16; ++k) cache.add(k, [k] { return trivial_load(k); });
  gets_of(state, random_keys(0, 16), [&](int key) { return cache.get(key); });
  const auto s = cache.stats();
  state.counters["miss_ratio"] =
      static_cast<double>(s.misses) / static_cast<double>(s.misses + s.hits);
}
BENCHMARK(BM_Churn_ModelCache);

void BM_Churn_PlainLru(benchmark::State& state) {
  PlainLru lru(8);
  gets_of(state, random_keys(0, 16), [&](int key) { return lru.get(key); });
}
BENCHMARK(BM_Churn_PlainLru);

#if GPUSAFE_BENCH_HAS_TBB_LRU
std::shared_ptr<Model> tbb_load(int k) { return trivial_load(k).model; }
using TbbLru =
    tbb::concurrent_lru_cache<int, std::shared_ptr<Model>, std::shared_ptr<Model> (*)(int)>;

/// Adapts TbbLru to the get(key) / clear() of the loops above (clear() builds a new one).
class TbbPeer {
 public:
  explicit TbbPeer(std::size_t capacity)
      : capacity_(capacity), lru_(std::make_unique<TbbLru>(&tbb_load, capacity)) {}
  std::shared_ptr<Model> get(int key) { return (*lru_)[key].value(); }
  void clear() { lru_ = std::make_unique<TbbLru>(&tbb_load, capacity_); }

 private:
  std::size_t capacity_;
  std::unique_ptr<TbbLru> lru_;
};

TbbPeer& hit_tbb() {
  static TbbPeer* peer = [] {
    auto* p = new TbbPeer(kResident);
    for (int k = 0; k < kResident; ++k) p->get(k);
    return p;
  }();
  return *peer;
}

void BM_Hit_TbbLru(benchmark::State& state) {
  TbbPeer& peer = hit_tbb();
  gets_of(state, random_keys(state.thread_index(), kResident),
          [&](int key) { return peer.get(key); });
}
BENCHMARK(BM_Hit_TbbLru)->Threads(1)->Threads(2)->UseRealTime();

void BM_Miss_TbbLru(benchmark::State& state) {
  TbbPeer peer(kMissKeys);
  misses_of(state, peer, kMissKeys);
}
BENCHMARK(BM_Miss_TbbLru);

void BM_Churn_TbbLru(benchmark::State& state) {
  TbbPeer peer(8);
  gets_of(state, random_keys(0, 16), [&](int key) { return peer.get(key); });
}
BENCHMARK(BM_Churn_TbbLru);
#endif

}  // namespace

BENCHMARK_MAIN();
