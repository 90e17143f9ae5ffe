// Stress test of ModelCache: many threads getting, pinning, evicting and loading the same and
// different keys, with slow and failing loaders. Checked: a key is never loaded by two threads
// at once, a herd of gets of one missing key loads it once, the budget is never exceeded (seen
// from inside the loaders), every handle holds the right, live model, and the counters add up.
// GPUSAFE_STRESS_SCALE (default 1.0; 0.1 under ThreadSanitizer) scales the work.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "gpusafe/model_cache.hpp"
#include "gpusafe/testing/fake_runtime.hpp"

namespace gs = gpusafe;
using gs::testing::FakeRuntime;

namespace {

double stress_scale() {
  const char* s = std::getenv("GPUSAFE_STRESS_SCALE");
  if (!s || !*s) return 1.0;
  const double v = std::atof(s);
  return v > 0 ? v : 1.0;
}

int scaled(int n) { return std::max(1, static_cast<int>(n * stress_scale())); }

constexpr std::uint64_t kAlive = 0x600DF00DCAFEBEEFull;

struct Model {
  explicit Model(int k) : key(k) {}
  ~Model() { magic = 0; }
  int key;
  std::uint64_t magic = kAlive;
};

using Cache = gs::BasicModelCache<FakeRuntime, int, Model, std::hash<int>>;

class Barrier {
 public:
  explicit Barrier(int n) : n_(n) {}
  void arrive_and_wait() {
    std::unique_lock<std::mutex> lk(m_);
    const int gen = gen_;
    if (++count_ == n_) {
      count_ = 0;
      ++gen_;
      cv_.notify_all();
      return;
    }
    cv_.wait(lk, [&] { return gen != gen_; });
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  int n_;
  int count_ = 0;
  int gen_ = 0;
};

struct Fixture {
  static constexpr int kKeys = 24;
  static constexpr int kSlowKey = 21;
  static constexpr int kFlakyKey = 22;
  static constexpr int kBrokenKey = 23;
  static constexpr std::size_t kBudget = 300;

  explicit Fixture(gs::OversizePolicy policy) : cache(options(policy)) {
    for (int k = 0; k < kKeys; ++k) {
      bytes[k] = 10 + static_cast<std::size_t>((k * 37) % 51);
      const std::size_t hint = (k % 3 == 0) ? 0 : (k % 3 == 1 ? bytes[k] : bytes[k] / 2);
      cache.add(
          k, [this, k] { return load(k); },
          k < 2 ? gs::Residency::primary : gs::Residency::secondary, hint);
    }
  }

  static gs::ModelCacheOptions options(gs::OversizePolicy policy) {
    gs::ModelCacheOptions o;
    o.name = "stress";
    o.byte_budget = kBudget;
    o.oversize = policy;
    o.max_evictions_per_call = 4;
    return o;
  }

  gs::Loaded<Model> load(int k) {
    if (in_flight[k].fetch_add(1) != 0) double_load = true;
    ++loads[k];
    const auto s = cache.stats();
    if (s.bytes_charged() > kBudget) over_budget = true;
    if (k == kSlowKey) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    const bool fail = k == kBrokenKey || (k == kFlakyKey && (loads[k].load() % 2) == 0);
    in_flight[k].fetch_sub(1);
    if (fail) throw std::runtime_error("injected load failure");
    return {std::make_shared<Model>(k), bytes[k]};
  }

  Cache cache;
  std::size_t bytes[kKeys] = {};
  std::atomic<int> in_flight[kKeys] = {};
  std::atomic<int> loads[kKeys] = {};
  std::atomic<bool> double_load{false};
  std::atomic<bool> over_budget{false};
  std::atomic<bool> bad_handle{false};
  std::atomic<std::uint64_t> unexpected{0};
};

void check(Fixture& f, const Cache::Handle& h, int k) {
  if (!h || h->key != k || h->magic != kAlive) f.bad_handle = true;
}

void run_mixed(gs::OversizePolicy policy) {
  FakeRuntime::reset();
  // Failing prefetches are logged; keep the output readable.
  const auto old_sink = gs::set_log_sink([](gs::LogLevel, std::string_view) {});
  Fixture f(policy);
  std::atomic<std::uint64_t> evicted_by_callback{0};
  f.cache.on_evict([&](const int&, std::size_t b, gs::EvictReason) { evicted_by_callback += b; });

  const int threads = 8;
  const int ops = scaled(20000);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      std::mt19937 rng(1234u + static_cast<unsigned>(t));
      std::vector<Cache::Handle> kept;
      for (int i = 0; i < ops; ++i) {
        // Hot keys are asked for more often, so the same key is often loaded concurrently.
        const int k = static_cast<int>(rng() % 4 == 0 ? rng() % Fixture::kKeys : rng() % 6 + 2);
        const unsigned op = rng() % 100;
        try {
          if (op < 60) {
            auto h = f.cache.get(k);
            check(f, h, k);
            if (rng() % 8 == 0) kept.push_back(std::move(h));
            if (kept.size() > 3) kept.erase(kept.begin());
          } else if (op < 75) {
            if (auto h = f.cache.try_get(k)) check(f, h, k);
          } else if (op < 80) {
            f.cache.pin(k);
          } else if (op < 86) {
            f.cache.unpin(k);
          } else if (op < 90) {
            f.cache.evict(rng() % 100);
          } else if (op < 94) {
            f.cache.prefetch(k);
          } else if (op < 96) {
            (void)f.cache.stats();
          } else if (op < 97) {
            gs::ReclaimRequest r;
            r.bytes_goal = rng() % 80;
            gs::reclaim_all(r);
          } else if (op < 98) {
            if (rng() % 10 == 0) f.cache.clear();
          } else {
            kept.clear();
          }
        } catch (const gs::LoadFailed&) {
          if (k != Fixture::kBrokenKey && k != Fixture::kFlakyKey) ++f.unexpected;
        } catch (const gs::BudgetExceeded&) {
          // Primary models never go uncached: pinned and held models may crowd them out.
          if (policy != gs::OversizePolicy::throw_error && k >= 2) ++f.unexpected;
        } catch (...) {
          ++f.unexpected;
        }
      }
    });
  }
  for (auto& th : pool) th.join();

  EXPECT_FALSE(f.double_load.load()) << "a key was loaded by two threads at once";
  EXPECT_FALSE(f.over_budget.load()) << "the budget was exceeded during a load";
  EXPECT_FALSE(f.bad_handle.load()) << "a handle held the wrong or a destroyed model";
  EXPECT_EQ(f.unexpected.load(), 0u);
  const auto s = f.cache.stats();
  EXPECT_LE(s.bytes_charged(), Fixture::kBudget);
  EXPECT_EQ(s.bytes_reserved, 0u);
  EXPECT_EQ(s.bytes_retired, 0u);  // every handle was dropped
  std::uint64_t loader_calls = 0;
  for (auto& l : f.loads) loader_calls += static_cast<std::uint64_t>(l.load());
  // Every loader call ends as a load or a failure; failures also count budget refusals made
  // before any loader call.
  EXPECT_LE(s.loads, loader_calls);
  EXPECT_LE(loader_calls, s.loads + s.load_failures);
  EXPECT_GT(s.hits, 0u);
  EXPECT_GT(s.waits, 0u) << "no get ever waited for another thread's load";
  std::size_t resident = 0;
  for (int k = 0; k < Fixture::kKeys; ++k)
    if (f.cache.is_resident(k)) resident += f.bytes[k];
  EXPECT_EQ(resident, s.bytes_resident);
  f.cache.on_evict(nullptr);
  gs::set_log_sink(old_sink);
}

TEST(ModelCacheStress, MixedOperationsLoadUncached) {
  run_mixed(gs::OversizePolicy::load_uncached);
}

TEST(ModelCacheStress, MixedOperationsThrowError) { run_mixed(gs::OversizePolicy::throw_error); }

TEST(ModelCacheStress, HerdOfGetsLoadsOnce) {
  FakeRuntime::reset();
  gs::ModelCacheOptions o;
  o.name = "herd";
  Cache cache(o);
  std::atomic<int> loads{0};
  std::atomic<int> in_flight{0};
  std::atomic<bool> overlap{false};
  cache.add(7, [&] {
    if (in_flight.fetch_add(1) != 0) overlap = true;
    ++loads;
    std::this_thread::sleep_for(std::chrono::microseconds(300));
    in_flight.fetch_sub(1);
    return gs::Loaded<Model>{std::make_shared<Model>(7), 100};
  });
  const int threads = 8;
  const int rounds = scaled(400);
  Barrier barrier(threads + 1);
  std::atomic<bool> wrong{false};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      for (int r = 0; r < rounds; ++r) {
        barrier.arrive_and_wait();
        auto h = cache.get(7);
        if (!h || h->key != 7 || h->magic != kAlive) wrong = true;
        h.reset();
        barrier.arrive_and_wait();
      }
    });
  }
  for (int r = 0; r < rounds; ++r) {
    barrier.arrive_and_wait();  // the herd runs
    barrier.arrive_and_wait();
    EXPECT_EQ(loads.load(), r + 1) << "round " << r;
    cache.clear();
  }
  for (auto& th : pool) th.join();
  EXPECT_FALSE(overlap.load());
  EXPECT_FALSE(wrong.load());
  const auto s = cache.stats();
  EXPECT_EQ(s.loads, static_cast<std::uint64_t>(rounds));
  EXPECT_EQ(s.misses + s.hits, static_cast<std::uint64_t>(rounds) * threads);
}

TEST(ModelCacheStress, FailingHerdReportsToEveryWaiter) {
  FakeRuntime::reset();
  Cache cache;
  std::atomic<int> loads{0};
  cache.add(3, [&]() -> gs::Loaded<Model> {
    ++loads;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
    throw std::runtime_error("always broken");
  });
  const int threads = 8;
  const int rounds = scaled(200);
  Barrier barrier(threads);
  std::atomic<int> failures{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      for (int r = 0; r < rounds; ++r) {
        barrier.arrive_and_wait();
        try {
          cache.get(3);
        } catch (const gs::LoadFailed&) {
          ++failures;
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  EXPECT_EQ(failures.load(), threads * rounds);
  EXPECT_LE(loads.load(), threads * rounds);
  const auto s = cache.stats();
  EXPECT_EQ(s.load_failures, static_cast<std::uint64_t>(loads.load()));
  EXPECT_EQ(s.misses, static_cast<std::uint64_t>(threads) * rounds);
  EXPECT_EQ(s.bytes_resident, 0u);
}

TEST(ModelCacheStress, HitsOnManyThreadsKeepCountsExact) {
  FakeRuntime::reset();
  Cache cache;
  for (int k = 0; k < 16; ++k)
    cache.add(k, [k] { return gs::Loaded<Model>{std::make_shared<Model>(k), 1}; });
  for (int k = 0; k < 16; ++k) cache.get(k);
  const int threads = 6;
  const int ops = scaled(100000);
  std::atomic<bool> wrong{false};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t));
      for (int i = 0; i < ops; ++i) {
        const int k = static_cast<int>(rng() % 16);
        auto h = cache.get(k);
        if (!h || h->key != k) wrong = true;
      }
    });
  }
  for (auto& th : pool) th.join();
  EXPECT_FALSE(wrong.load());
  EXPECT_EQ(cache.stats().hits, static_cast<std::uint64_t>(threads) * ops);
  EXPECT_EQ(cache.stats().loads, 16u);
}

}  // namespace
