// Unit tests of gpusafe/model_cache.hpp.
#include "gpusafe/model_cache.hpp"

#include <gtest/gtest.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <exception>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <ostream>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "../support/child_process.hpp"
#include "gpusafe/guards.hpp"
#include "gpusafe/memory_manager.hpp"
#include "gpusafe/testing/fake_runtime.hpp"

namespace gs = gpusafe;
using gs::testing::FakeRuntime;

namespace {

struct Model {
  explicit Model(int v, std::atomic<int>* live = nullptr) : value(v), live_count(live) {
    if (live_count) ++*live_count;
  }
  ~Model() {
    if (live_count) --*live_count;
  }
  int value;
  std::atomic<int>* live_count;
};

using Cache = gs::BasicModelCache<FakeRuntime, std::string, Model, std::hash<std::string>>;
using Event = std::tuple<std::string, std::size_t, gs::EvictReason>;

// Runs `fn` on its own thread and waits at most `limit` for it. On a timeout the thread is left
// behind (stuck), so `fn` must own by value what it uses; the caller reports the failure.
template <class Fn>
bool finishes_within(std::chrono::milliseconds limit, Fn fn) {
  auto done = std::make_shared<std::promise<void>>();
  std::future<void> ready = done->get_future();
  std::thread t([done, fn]() mutable {
    fn();
    done->set_value();
  });
  if (ready.wait_for(limit) != std::future_status::ready) {
    t.detach();
    return false;
  }
  t.join();
  return true;
}

gs::ModelCacheOptions budget(std::size_t bytes) {
  gs::ModelCacheOptions o;
  o.name = "unit";
  o.byte_budget = bytes;
  return o;
}

class ModelCacheTest : public ::testing::Test {
 protected:
  void SetUp() override { FakeRuntime::reset(1, std::size_t{1} << 30); }

  // Registers `key` with a loader that counts its calls and reports `bytes`.
  void add(Cache& c, const std::string& key, std::size_t bytes,
           gs::Residency r = gs::Residency::secondary, std::size_t hint = 0) {
    c.add(
        key,
        [this, key, bytes] {
          ++loads[key];
          return gs::Loaded<Model>{std::make_shared<Model>(static_cast<int>(bytes), &live), bytes};
        },
        r, hint);
  }

  void record(Cache& c) {
    c.on_evict([this](const std::string& k, std::size_t b, gs::EvictReason r) {
      std::lock_guard<std::mutex> lock(events_mutex);
      events.emplace_back(k, b, r);
    });
  }

  // Records evictions and makes resident one primary, one secondary and one pinned secondary
  // model of 10 bytes each: "p", "s", "pinned".
  void load_one_of_each(Cache& c) {
    record(c);
    add(c, "p", 10, gs::Residency::primary);
    add(c, "s", 10);
    add(c, "pinned", 10);
    c.pin("pinned");
    c.get("p");
    c.get("s");
    c.get("pinned");
  }

  std::map<std::string, int> loads;
  std::atomic<int> live{0};
  std::mutex events_mutex;
  std::vector<Event> events;
};

TEST_F(ModelCacheTest, GetLoadsOnceThenHits) {
  Cache c(budget(1000));
  add(c, "a", 10);
  auto h1 = c.get("a");
  auto h2 = c.get("a");
  ASSERT_TRUE(h1);
  EXPECT_EQ(h1.get(), h2.get());
  EXPECT_EQ(h1->value, 10);
  EXPECT_EQ(loads["a"], 1);
  const auto s = c.stats();
  EXPECT_EQ(s.misses, 1u);
  EXPECT_EQ(s.hits, 1u);
  EXPECT_EQ(s.loads, 1u);
  EXPECT_EQ(s.bytes_resident, 10u);
  EXPECT_EQ(s.models_resident, 1u);
  EXPECT_EQ(s.models_registered, 1u);
  EXPECT_TRUE(c.is_resident("a"));
  EXPECT_TRUE(c.contains("a"));
  EXPECT_FALSE(c.contains("b"));
}

TEST_F(ModelCacheTest, TryGetNeverLoads) {
  Cache c;
  add(c, "a", 10);
  EXPECT_EQ(c.try_get("a"), nullptr);
  EXPECT_EQ(c.try_get("nope"), nullptr);
  EXPECT_EQ(loads["a"], 0);
  c.get("a");
  auto h = c.try_get("a");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->value, 10);
  EXPECT_EQ(c.stats().hits, 1u);
}

TEST_F(ModelCacheTest, UnknownKeySaysHowToRegister) {
  Cache c;
  try {
    c.get("missing");
    FAIL() << "expected UnknownKey";
  } catch (const gs::UnknownKey& e) {
    EXPECT_NE(std::string(e.what()).find("'missing'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("add("), std::string::npos) << e.what();
  }
  EXPECT_THROW(c.pin("missing"), gs::UnknownKey);
  EXPECT_THROW(c.unpin("missing"), gs::UnknownKey);
  EXPECT_THROW(c.remove("missing"), gs::UnknownKey);
}

TEST_F(ModelCacheTest, DuplicateKeyAndEmptyLoaderAreRejected) {
  Cache c;
  add(c, "a", 1);
  c.get("a");
  EXPECT_THROW(add(c, "a", 2), gs::DuplicateKey);
  EXPECT_THROW(c.add("b", Cache::Loader{}), gs::InvalidArgument);
  EXPECT_FALSE(c.contains("b"));
  // The original registration and its model are intact.
  EXPECT_EQ(c.get("a")->value, 1);
  EXPECT_EQ(loads["a"], 1);
}

TEST_F(ModelCacheTest, LoaderStdExceptionBecomesNestedLoadFailed) {
  Cache c(budget(100));
  add(c, "kept", 50);
  c.get("kept");
  c.add("bad", []() -> gs::Loaded<Model> { throw std::runtime_error("disk on fire"); });
  try {
    c.get("bad");
    FAIL() << "expected LoadFailed";
  } catch (const gs::LoadFailed& e) {
    EXPECT_NE(std::string(e.what()).find("'bad'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("disk on fire"), std::string::npos) << e.what();
    try {
      std::rethrow_if_nested(e);
      FAIL() << "expected a nested exception";
    } catch (const std::runtime_error& inner) {
      EXPECT_STREQ(inner.what(), "disk on fire");
    }
  }
  EXPECT_FALSE(c.is_resident("bad"));
  EXPECT_TRUE(c.is_resident("kept"));
  const auto s = c.stats();
  EXPECT_EQ(s.load_failures, 1u);
  EXPECT_EQ(s.bytes_resident, 50u);
  EXPECT_EQ(s.bytes_reserved, 0u);
}

TEST_F(ModelCacheTest, LoaderGpusafeErrorIsRethrownAsIs) {
  Cache c;
  c.add("oom", []() -> gs::Loaded<Model> { throw gs::OutOfMemory("no room", 2); });
  try {
    c.get("oom");
    FAIL() << "expected OutOfMemory";
  } catch (const gs::OutOfMemory& e) {
    EXPECT_STREQ(e.what(), "no room");
    EXPECT_EQ(e.runtime_code(), 2);
  }
}

TEST_F(ModelCacheTest, LoaderReturningNullIsLoadFailed) {
  Cache c;
  c.add("null", [] { return gs::Loaded<Model>{nullptr, 5}; });
  EXPECT_THROW(c.get("null"), gs::LoadFailed);
  EXPECT_FALSE(c.is_resident("null"));
  EXPECT_EQ(c.stats().load_failures, 1u);
  EXPECT_EQ(c.stats().bytes_resident, 0u);
}

TEST_F(ModelCacheTest, FailedLoadCanBeRetried) {
  Cache c;
  int calls = 0;
  c.add("flaky", [&calls] {
    if (++calls == 1) throw std::runtime_error("first time fails");
    return gs::Loaded<Model>{std::make_shared<Model>(7), 1};
  });
  EXPECT_THROW(c.get("flaky"), gs::LoadFailed);
  EXPECT_EQ(c.get("flaky")->value, 7);
  EXPECT_EQ(calls, 2);
}

TEST_F(ModelCacheTest, BudgetEvictsLeastRecentlyUsed) {
  Cache c(budget(30));
  record(c);
  add(c, "a", 10);
  add(c, "b", 10);
  add(c, "c", 10);
  add(c, "d", 10);
  c.get("a");
  c.get("b");
  c.get("c");
  c.get("a");  // b is now the least recently used
  c.get("d");
  EXPECT_TRUE(c.is_resident("a"));
  EXPECT_FALSE(c.is_resident("b"));
  EXPECT_TRUE(c.is_resident("c"));
  EXPECT_TRUE(c.is_resident("d"));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0], Event("b", 10, gs::EvictReason::budget));
  EXPECT_EQ(c.stats().evictions_for(gs::EvictReason::budget), 1u);
  EXPECT_EQ(c.stats().bytes_resident, 30u);
  EXPECT_EQ(live.load(), 3);  // b's model was destroyed
}

TEST_F(ModelCacheTest, TryGetCountsAsUse) {
  Cache c(budget(20));
  add(c, "a", 10);
  add(c, "b", 10);
  add(c, "c", 10);
  c.get("a");
  c.get("b");
  ASSERT_TRUE(c.try_get("a"));
  c.get("c");
  EXPECT_TRUE(c.is_resident("a"));
  EXPECT_FALSE(c.is_resident("b"));
}

TEST_F(ModelCacheTest, ManyHitsKeepExactLruOrder) {
  // More hits than one thread's touch buffer holds, in a known order.
  Cache c(budget(50));
  for (int i = 0; i < 5; ++i) add(c, "m" + std::to_string(i), 10);
  for (int i = 0; i < 5; ++i) c.get("m" + std::to_string(i));
  for (int round = 0; round < 40; ++round)
    for (int i : {3, 1, 4, 0, 2}) c.get("m" + std::to_string(i));
  add(c, "x", 10);
  add(c, "y", 10);
  c.get("x");  // evicts m3, the least recently used
  c.get("y");  // evicts m1
  EXPECT_FALSE(c.is_resident("m3"));
  EXPECT_FALSE(c.is_resident("m1"));
  EXPECT_TRUE(c.is_resident("m4"));
  EXPECT_TRUE(c.is_resident("m0"));
  EXPECT_TRUE(c.is_resident("m2"));
}

TEST_F(ModelCacheTest, PrimaryModelsAreNeverEvictedByBudget) {
  Cache c(budget(30));
  add(c, "p", 20, gs::Residency::primary);
  add(c, "s1", 10);
  add(c, "s2", 10);
  c.get("p");
  c.get("s1");
  c.get("s2");  // evicts s1, not p
  EXPECT_TRUE(c.is_resident("p"));
  EXPECT_FALSE(c.is_resident("s1"));
  EXPECT_EQ(c.stats().bytes_pinned, 20u);
  EXPECT_EQ(c.evict(1000), 10u);  // only s2 is evictable
  EXPECT_TRUE(c.is_resident("p"));
}

TEST_F(ModelCacheTest, PreloadLoadsPrimaryModelsOnly) {
  Cache c;
  add(c, "p1", 1, gs::Residency::primary);
  add(c, "p2", 1, gs::Residency::primary);
  add(c, "s", 1);
  c.preload();
  EXPECT_TRUE(c.is_resident("p1"));
  EXPECT_TRUE(c.is_resident("p2"));
  EXPECT_FALSE(c.is_resident("s"));
  c.preload();
  EXPECT_EQ(loads["p1"], 1);
}

TEST_F(ModelCacheTest, PrimaryBiggerThanBudgetThrowsBudgetExceeded) {
  Cache c(budget(100));
  add(c, "big", 200, gs::Residency::primary);
  try {
    c.get("big");
    FAIL() << "expected BudgetExceeded";
  } catch (const gs::BudgetExceeded& e) {
    EXPECT_NE(std::string(e.what()).find("primary"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("byte_budget"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(c.is_resident("big"));
  EXPECT_EQ(live.load(), 0);
}

TEST_F(ModelCacheTest, ZeroBudgetPrimaryFailsAtLoadTime) {
  gs::ModelCacheOptions o = budget(0);
  o.oversize = gs::OversizePolicy::load_uncached;  // never applies to primary models
  Cache c(o);
  add(c, "p", 1, gs::Residency::primary);
  EXPECT_THROW(c.preload(), gs::BudgetExceeded);
  EXPECT_EQ(loads["p"], 1);
  EXPECT_EQ(c.stats().load_failures, 1u);
  // A secondary model is handed out uncached under this policy.
  add(c, "s", 1);
  auto h = c.get("s");
  ASSERT_TRUE(h);
  EXPECT_FALSE(c.is_resident("s"));
  EXPECT_EQ(c.stats().uncached_loads, 1u);
}

TEST_F(ModelCacheTest, ZeroBudgetAcceptsModelsOfZeroBytes) {
  Cache c(budget(0));
  add(c, "empty", 0, gs::Residency::primary);
  c.preload();
  EXPECT_TRUE(c.is_resident("empty"));
}

TEST_F(ModelCacheTest, OversizeThrowKeepsCachedModels) {
  Cache c(budget(100));
  record(c);
  add(c, "a", 40);
  add(c, "b", 40);
  add(c, "huge", 150);
  add(c, "hinted", 1, gs::Residency::secondary, 500);
  c.get("a");
  c.get("b");
  EXPECT_THROW(c.get("huge"), gs::BudgetExceeded);
  EXPECT_THROW(c.get("hinted"), gs::BudgetExceeded);
  EXPECT_EQ(loads["hinted"], 0);  // rejected by its size hint before loading
  EXPECT_TRUE(c.is_resident("a"));
  EXPECT_TRUE(c.is_resident("b"));
  EXPECT_TRUE(events.empty());
  EXPECT_EQ(c.stats().bytes_resident, 80u);
}

TEST_F(ModelCacheTest, OversizeLoadUncachedServesWithoutCaching) {
  gs::ModelCacheOptions o = budget(100);
  o.oversize = gs::OversizePolicy::load_uncached;
  Cache c(o);
  add(c, "a", 40);
  add(c, "huge", 150);
  c.get("a");
  auto h1 = c.get("huge");
  auto h2 = c.get("huge");
  ASSERT_TRUE(h1 && h2);
  EXPECT_NE(h1.get(), h2.get());  // not cached: loaded every time
  EXPECT_EQ(loads["huge"], 2);
  EXPECT_FALSE(c.is_resident("huge"));
  EXPECT_TRUE(c.is_resident("a"));
  EXPECT_EQ(c.stats().uncached_loads, 2u);
  EXPECT_EQ(c.stats().bytes_resident, 40u);
}

TEST_F(ModelCacheTest, SizeHintIsReservedWhileLoading) {
  Cache c(budget(100));
  add(c, "a", 50);
  c.get("a");
  gs::ModelCacheStats inside;
  c.add(
      "b",
      [&] {
        inside = c.stats();
        return gs::Loaded<Model>{std::make_shared<Model>(1), 60};
      },
      gs::Residency::secondary, 60);
  c.get("b");
  // The hint made room (evicting a) before the loader ran.
  EXPECT_EQ(inside.bytes_reserved, 60u);
  EXPECT_EQ(inside.bytes_resident, 0u);
  EXPECT_LE(inside.bytes_charged(), 100u);
  const auto s = c.stats();
  EXPECT_EQ(s.bytes_reserved, 0u);
  EXPECT_EQ(s.bytes_resident, 60u);
}

TEST_F(ModelCacheTest, RealSizeAboveHintEvictsMoreAfterLoading) {
  Cache c(budget(100));
  add(c, "a", 30);
  add(c, "b", 30);
  add(c, "grows", 80, gs::Residency::secondary, 50);  // hint 50, really 80
  c.get("a");
  c.get("b");
  c.get("grows");  // hint evicts a; the real size evicts b too
  EXPECT_FALSE(c.is_resident("a"));
  EXPECT_FALSE(c.is_resident("b"));
  EXPECT_TRUE(c.is_resident("grows"));
  EXPECT_EQ(c.stats().bytes_resident, 80u);
}

TEST_F(ModelCacheTest, HandleOutlivesEvictionAndItsBytesStayCharged) {
  Cache c(budget(100));
  add(c, "a", 60);
  add(c, "b", 60);
  auto held = c.get("a");
  c.clear();
  EXPECT_FALSE(c.is_resident("a"));
  EXPECT_EQ(held->value, 60);  // still alive
  EXPECT_EQ(live.load(), 1);
  auto s = c.stats();
  EXPECT_EQ(s.bytes_resident, 0u);
  EXPECT_EQ(s.bytes_retired, 60u);
  // b does not fit beside the held bytes of a.
  EXPECT_THROW(c.get("b"), gs::BudgetExceeded);
  held.reset();
  EXPECT_EQ(live.load(), 0);
  EXPECT_EQ(c.stats().bytes_retired, 0u);
  EXPECT_EQ(c.get("b")->value, 60);
}

TEST_F(ModelCacheTest, BudgetEvictionSkipsModelsInUse) {
  Cache c(budget(20));
  record(c);
  add(c, "a", 10);
  add(c, "b", 10);
  add(c, "c", 10);
  auto held = c.get("a");  // least recently used but held
  c.get("b");
  c.get("c");  // evicts b: evicting a would free nothing
  EXPECT_TRUE(c.is_resident("a"));
  EXPECT_FALSE(c.is_resident("b"));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(std::get<0>(events[0]), "b");
}

TEST_F(ModelCacheTest, PinKeepsModelsAndUnpinReleasesThem) {
  Cache c(budget(20));
  add(c, "a", 10);
  add(c, "b", 10);
  add(c, "c", 10);
  c.pin("a");  // before it is loaded
  EXPECT_TRUE(c.is_pinned("a"));
  EXPECT_FALSE(c.is_resident("a"));
  c.get("a");
  c.get("b");
  c.get("c");  // a is pinned: b goes
  EXPECT_TRUE(c.is_resident("a"));
  EXPECT_FALSE(c.is_resident("b"));
  EXPECT_EQ(c.stats().bytes_pinned, 10u);
  EXPECT_EQ(c.evict(100), 10u);  // only c
  EXPECT_TRUE(c.is_resident("a"));
  c.unpin("a");
  EXPECT_FALSE(c.is_pinned("a"));
  EXPECT_EQ(c.evict(100), 10u);
  EXPECT_FALSE(c.is_resident("a"));
}

TEST_F(ModelCacheTest, EvictFreesLruFirstUntilGoal) {
  Cache c;
  record(c);
  for (const char* k : {"a", "b", "c", "d"}) add(c, k, 10);
  for (const char* k : {"a", "b", "c", "d"}) c.get(k);
  c.get("a");
  EXPECT_EQ(c.evict(15), 20u);  // b then c
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0], Event("b", 10, gs::EvictReason::requested));
  EXPECT_EQ(events[1], Event("c", 10, gs::EvictReason::requested));
  EXPECT_EQ(c.evict(0), 0u);
  EXPECT_EQ(c.stats().evictions_for(gs::EvictReason::requested), 2u);
}

TEST_F(ModelCacheTest, RemoveEvictsAndUnregisters) {
  Cache c;
  record(c);
  add(c, "a", 10);
  c.get("a");
  c.remove("a");
  EXPECT_FALSE(c.contains("a"));
  EXPECT_THROW(c.get("a"), gs::UnknownKey);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0], Event("a", 10, gs::EvictReason::removed));
  add(c, "a", 20);  // the key can be registered again
  EXPECT_EQ(c.get("a")->value, 20);
}

TEST_F(ModelCacheTest, RemoveDuringLoadServesTheCallerUncached) {
  Cache c;
  std::mutex m;
  std::condition_variable cv;
  bool loading = false, go = false;
  c.add("slow", [&] {
    std::unique_lock<std::mutex> lk(m);
    loading = true;
    cv.notify_all();
    cv.wait(lk, [&] { return go; });
    return gs::Loaded<Model>{std::make_shared<Model>(3), 5};
  });
  Cache::Handle got;
  std::thread t([&] { got = c.get("slow"); });
  {
    std::unique_lock<std::mutex> lk(m);
    cv.wait(lk, [&] { return loading; });
  }
  c.remove("slow");
  {
    std::lock_guard<std::mutex> lk(m);
    go = true;
  }
  cv.notify_all();
  t.join();
  ASSERT_TRUE(got);
  EXPECT_EQ(got->value, 3);
  EXPECT_FALSE(c.contains("slow"));
  EXPECT_EQ(c.stats().bytes_resident, 0u);
  EXPECT_EQ(c.stats().bytes_reserved, 0u);
}

TEST_F(ModelCacheTest, ClearEvictsEverythingButKeepsRegistrations) {
  Cache c;
  load_one_of_each(c);
  EXPECT_EQ(c.clear(), 30u);
  EXPECT_EQ(c.stats().models_resident, 0u);
  EXPECT_EQ(events.size(), 3u);
  for (const auto& e : events) EXPECT_EQ(std::get<2>(e), gs::EvictReason::clear);
  EXPECT_TRUE(c.is_pinned("pinned"));
  c.get("p");
  EXPECT_EQ(loads["p"], 2);
}

TEST_F(ModelCacheTest, CallbackMayCallBackIntoTheCache) {
  Cache c(budget(20));
  add(c, "a", 10);
  add(c, "b", 10);
  add(c, "c", 10);
  std::vector<std::string> seen;
  c.on_evict([&](const std::string& k, std::size_t, gs::EvictReason) {
    // Every call below takes the cache's locks: this would deadlock if run under them.
    seen.push_back(k);
    EXPECT_FALSE(c.is_resident(k));
    (void)c.stats();
    (void)c.try_get("c");
    if (k == "a") c.get("a");  // reload from inside the callback: evicts b
  });
  c.get("a");
  c.get("b");
  c.get("c");  // evicts a; the callback reloads a, which evicts b
  EXPECT_EQ(seen, (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(c.is_resident("a"));
  EXPECT_TRUE(c.is_resident("c"));
}

TEST_F(ModelCacheTest, CallbackExceptionIsSwallowed) {
  Cache c;
  add(c, "a", 10);
  c.get("a");
  c.on_evict([](const std::string&, std::size_t, gs::EvictReason) {
    throw std::runtime_error("callback failure");
  });
  const auto old = gs::set_log_sink([](gs::LogLevel, std::string_view) {});
  EXPECT_EQ(c.evict(10), 10u);
  gs::set_log_sink(old);
  EXPECT_FALSE(c.is_resident("a"));
}

// A model whose destructor runs arbitrary code (here: calls back into its cache).
struct Reentrant {
  std::function<void()> on_destroy;
  ~Reentrant() { on_destroy(); }
};

TEST_F(ModelCacheTest, ModelDestructorMayCallIntoTheCache) {
  using ReentrantCache =
      gs::BasicModelCache<FakeRuntime, std::string, Reentrant, std::hash<std::string>>;
  ReentrantCache c;
  std::atomic<int> destroyed{0};
  c.add("m", [&] {
    auto m = std::make_shared<Reentrant>();
    // Each call takes the cache's locks: this would deadlock if run under them.
    m->on_destroy = [&] {
      (void)c.stats();
      (void)c.try_get("m");
      (void)c.is_resident("m");
      ++destroyed;
    };
    return gs::Loaded<Reentrant>{m, 1};
  });
  c.get("m");
  c.evict(1);
  EXPECT_EQ(destroyed.load(), 1);
  c.get("m");
  c.clear();
  EXPECT_EQ(destroyed.load(), 2);
  c.get("m");
  c.remove("m");
  EXPECT_EQ(destroyed.load(), 3);
}

TEST_F(ModelCacheTest, PressureEvictsBetweenWatermarks) {
  gs::ModelCacheOptions o;
  o.high_watermark = 0.8;
  o.low_watermark = 0.5;
  Cache c(o);
  record(c);
  for (const char* k : {"a", "b", "c", "d", "e", "f"}) add(c, k, 100);
  for (const char* k : {"a", "b", "c", "d", "e", "f"}) c.get(k);
  FakeRuntime::set_memory_info(0, 300, 1000);  // 70% used: under high
  EXPECT_EQ(c.check_pressure(), 0u);
  FakeRuntime::set_memory_info(0, 100, 1000);  // 90% used: free 401 bytes to get under 50%
  EXPECT_EQ(c.check_pressure(), 500u);
  ASSERT_EQ(events.size(), 5u);
  EXPECT_EQ(events[0], Event("a", 100, gs::EvictReason::pressure));
  EXPECT_EQ(events[4], Event("e", 100, gs::EvictReason::pressure));
  EXPECT_TRUE(c.is_resident("f"));
  EXPECT_EQ(c.stats().evictions_for(gs::EvictReason::pressure), 5u);
}

TEST_F(ModelCacheTest, PressureIsCheckedBeforeEveryLoad) {
  gs::ModelCacheOptions o;
  o.high_watermark = 0.9;
  o.low_watermark = 0.85;
  Cache c(o);
  add(c, "a", 100);
  add(c, "b", 100);
  c.get("a");
  FakeRuntime::set_memory_info(0, 50, 1000);  // 95% used: 101 bytes to free
  c.get("b");
  EXPECT_FALSE(c.is_resident("a"));
  EXPECT_TRUE(c.is_resident("b"));
  EXPECT_EQ(c.stats().evictions_for(gs::EvictReason::pressure), 1u);
}

TEST_F(ModelCacheTest, PressureOffByDefaultMakesNoRuntimeCalls) {
  Cache c;
  add(c, "a", 100);
  FakeRuntime::set_memory_info(0, 0, 1000);
  const auto before = FakeRuntime::calls(gs::testing::FakeOp::memory_info);
  c.get("a");
  EXPECT_EQ(c.check_pressure(), 0u);
  EXPECT_EQ(FakeRuntime::calls(gs::testing::FakeOp::memory_info), before);
  EXPECT_TRUE(c.is_resident("a"));
}

TEST_F(ModelCacheTest, PressureToleratesRuntimeFailure) {
  gs::ModelCacheOptions o;
  o.high_watermark = 0.5;
  o.low_watermark = 0.1;
  Cache c(o);
  add(c, "a", 10);
  c.get("a");
  FakeRuntime::set_memory_info(0, 0, 1000);
  FakeRuntime::fail_call(gs::testing::FakeOp::memory_info, gs::codes::unknown);
  const auto old = gs::set_log_sink([](gs::LogLevel, std::string_view) {});
  EXPECT_EQ(c.check_pressure(), 0u);
  gs::set_log_sink(old);
  EXPECT_TRUE(c.is_resident("a"));
}

TEST_F(ModelCacheTest, WithoutAGpuPressureReadsHostMemoryAsTheManagerDoes) {
  FakeRuntime::reset(0);  // a CUDA build on a machine without a GPU
  gs::BasicMemoryManager<FakeRuntime> manager;
  const auto snapshot = manager.snapshot();
  ASSERT_TRUE(snapshot.memory_known);
  EXPECT_FALSE(snapshot.device_is_gpu);
  gs::ModelCacheOptions o;
  o.high_watermark = 1e-9;  // any host memory in use is over it
  o.low_watermark = 0.0;
  Cache c(o);
  add(c, "a", 10);
  c.get("a");
  const auto before = FakeRuntime::calls(gs::testing::FakeOp::memory_info);
  EXPECT_EQ(c.check_pressure(), 10u) << "the host's figures drive the watermarks, as the manager's";
  EXPECT_FALSE(c.is_resident("a"));
  EXPECT_EQ(FakeRuntime::calls(gs::testing::FakeOp::memory_info), before);  // no runtime call
}

TEST_F(ModelCacheTest, WatermarksAreValidated) {
  auto make = [](double hi, double lo) {
    gs::ModelCacheOptions o;
    o.high_watermark = hi;
    o.low_watermark = lo;
    Cache c(o);
  };
  EXPECT_THROW(make(0.5, 0.8), gs::InvalidArgument);
  EXPECT_THROW(make(1.5, 0.5), gs::InvalidArgument);
  EXPECT_THROW(make(0.5, -0.1), gs::InvalidArgument);
  EXPECT_THROW(make(std::nan(""), 0.1), gs::InvalidArgument);
  EXPECT_THROW(make(0.0, 0.1), gs::InvalidArgument);
  EXPECT_NO_THROW(make(0.0, 0.0));
  EXPECT_NO_THROW(make(0.9, 0.9));
  EXPECT_NO_THROW(make(1.0, 0.0));
  gs::ModelCacheOptions neg;
  neg.device = -1;
  EXPECT_THROW(Cache{neg}, gs::InvalidArgument);
}

TEST_F(ModelCacheTest, EvictionCapIsAllOrNothing) {
  gs::ModelCacheOptions o = budget(30);
  o.max_evictions_per_call = 1;
  Cache c(o);
  add(c, "a", 10);
  add(c, "b", 10);
  add(c, "c", 10);
  add(c, "wide", 20);
  for (const char* k : {"a", "b", "c"}) c.get(k);
  EXPECT_THROW(c.get("wide"), gs::BudgetExceeded);  // needs two evictions
  EXPECT_EQ(c.stats().models_resident, 3u);
  c.evict(10);
  EXPECT_NO_THROW(c.get("wide"));  // needs one now
}

TEST_F(ModelCacheTest, ConcurrentGetsOfAMissingKeyLoadOnce) {
  Cache c;
  constexpr int kThreads = 8;
  std::atomic<int> calls{0};
  c.add("shared", [&] {
    ++calls;
    // Hold the load until every other caller is waiting for it.
    while (c.stats().waits < kThreads - 1) std::this_thread::yield();
    return gs::Loaded<Model>{std::make_shared<Model>(9), 1};
  });
  std::vector<Cache::Handle> got(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) threads.emplace_back([&, i] { got[i] = c.get("shared"); });
  for (auto& t : threads) t.join();
  EXPECT_EQ(calls.load(), 1);
  for (const auto& h : got) EXPECT_EQ(h.get(), got[0].get());
  const auto s = c.stats();
  EXPECT_EQ(s.waits, static_cast<std::uint64_t>(kThreads - 1));
  EXPECT_EQ(s.misses, static_cast<std::uint64_t>(kThreads));
  EXPECT_EQ(s.loads, 1u);
}

TEST_F(ModelCacheTest, AFailedLoadReachesEveryWaiter) {
  Cache c;
  constexpr int kThreads = 6;
  std::atomic<int> calls{0};
  c.add("broken", [&]() -> gs::Loaded<Model> {
    ++calls;
    while (c.stats().waits < kThreads - 1) std::this_thread::yield();
    throw std::runtime_error("corrupt file");
  });
  c.add("oom", [&]() -> gs::Loaded<Model> {
    while (c.stats().waits < 2 * (kThreads - 1)) std::this_thread::yield();
    throw gs::OutOfMemory("device full", 2);
  });
  std::atomic<int> load_failed{0}, oom{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&] {
      try {
        c.get("broken");
      } catch (const gs::LoadFailed& e) {
        if (std::string(e.what()).find("corrupt file") != std::string::npos) ++load_failed;
      }
      try {
        c.get("oom");
      } catch (const gs::OutOfMemory& e) {
        // Waiters get their own copy: same type, message and runtime code.
        if (std::string(e.what()) == "device full" && e.runtime_code() == 2) ++oom;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(load_failed.load(), kThreads);
  EXPECT_EQ(oom.load(), kThreads);
  EXPECT_FALSE(c.is_resident("broken"));
  EXPECT_EQ(c.stats().load_failures, 2u);
}

TEST_F(ModelCacheTest, ALoaderThatGetsItsOwnKeyFailsInsteadOfHanging) {
  Cache c;
  c.add("self", [&] {
    c.get("self");
    return gs::Loaded<Model>{std::make_shared<Model>(1), 1};
  });
  try {
    c.get("self");
    FAIL() << "expected LoadFailed";
  } catch (const gs::LoadFailed& e) {
    try {
      std::rethrow_if_nested(e);
    } catch (const gs::InvalidArgument&) {
      SUCCEED();
    }
  } catch (const gs::InvalidArgument&) {
    SUCCEED();
  }
  EXPECT_FALSE(c.is_resident("self"));
}

/// Registers "a" (60 bytes), whose loader first gets "b" (50 bytes) from the same cache and
/// stores its value in `inner` when given.
void add_a_loading_b(Cache& c, std::shared_ptr<std::atomic<int>> inner = nullptr) {
  Cache* raw = &c;
  c.add(
      "a",
      [raw, inner] {
        const int b = raw->get("b")->value;
        if (inner) *inner = b;
        return gs::Loaded<Model>{std::make_shared<Model>(1), 60};
      },
      gs::Residency::secondary, 60);
  c.add(
      "b",
      [] {
        return gs::Loaded<Model>{std::make_shared<Model>(2), 50};
      },
      gs::Residency::secondary, 50);
}

TEST_F(ModelCacheTest, ALoaderGettingAKeyThatDoesNotFitFailsInsteadOfWaitingForItself) {
  // The 50-byte get cannot fit beside the loader's own 60-byte reservation, which ends only
  // after the loader returns: waiting for it would never end.
  auto c = std::make_shared<Cache>(budget(100));
  add_a_loading_b(*c);
  auto outcome = std::make_shared<std::atomic<int>>(0);  // 1 = BudgetExceeded
  const bool finished = finishes_within(std::chrono::seconds(10), [c, outcome] {
    try {
      c->get("a");
      *outcome = 2;
    } catch (const gs::BudgetExceeded&) {
      *outcome = 1;
    } catch (...) {
      *outcome = 3;
    }
  });
  ASSERT_TRUE(finished) << "get() in a loader waited for its own loader's reservation";
  EXPECT_EQ(outcome->load(), 1);
  EXPECT_FALSE(c->is_resident("a"));
  EXPECT_FALSE(c->is_resident("b"));
  EXPECT_EQ(c->stats().bytes_reserved, 0u);
}

TEST_F(ModelCacheTest, ALoaderGettingAKeyThatDoesNotFitLoadsItUncachedWhenAllowed) {
  gs::ModelCacheOptions o = budget(100);
  o.oversize = gs::OversizePolicy::load_uncached;
  auto c = std::make_shared<Cache>(o);
  auto inner = std::make_shared<std::atomic<int>>(0);
  add_a_loading_b(*c, inner);
  auto value = std::make_shared<std::atomic<int>>(0);
  const bool finished = finishes_within(std::chrono::seconds(10), [c, value] {
    try {
      *value = c->get("a")->value;
    } catch (...) {
      *value = -1;
    }
  });
  ASSERT_TRUE(finished) << "get() in a loader waited for its own loader's reservation";
  EXPECT_EQ(value->load(), 1);
  EXPECT_EQ(inner->load(), 2);
  EXPECT_TRUE(c->is_resident("a"));
  EXPECT_FALSE(c->is_resident("b"));
  EXPECT_EQ(c->stats().uncached_loads, 1u);
  EXPECT_EQ(c->stats().bytes_reserved, 0u);
}

TEST_F(ModelCacheTest, ConcurrentLoadsWaitForReservationsInsteadOfOvershooting) {
  // The second load waits for the first one's reservation; afterwards it evicts the first
  // model or, when a caller still holds it, loads uncached - never both loads at once.
  gs::ModelCacheOptions o = budget(100);
  o.oversize = gs::OversizePolicy::load_uncached;
  Cache c(o);
  std::atomic<int> inside{0};
  std::atomic<bool> over{false};
  auto slow = [&](int v) {
    return [&, v] {
      if (++inside > 1) over = true;  // two 60-byte loads at once would exceed the budget
      if (c.stats().bytes_charged() > 100) over = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      --inside;
      return gs::Loaded<Model>{std::make_shared<Model>(v), 60};
    };
  };
  c.add("x", slow(1), gs::Residency::secondary, 60);
  c.add("y", slow(2), gs::Residency::secondary, 60);
  std::thread t1([&] { c.get("x"); });
  std::thread t2([&] { c.get("y"); });
  t1.join();
  t2.join();
  EXPECT_FALSE(over.load());
  EXPECT_EQ(c.stats().loads, 2u);
  EXPECT_LE(c.stats().models_resident, 1u);
  EXPECT_LE(c.stats().bytes_charged(), 100u);
}

TEST_F(ModelCacheTest, PrefetchNeverThrows) {
  Cache c;
  add(c, "a", 1);
  c.add("bad", []() -> gs::Loaded<Model> { throw std::runtime_error("nope"); });
  const auto old = gs::set_log_sink([](gs::LogLevel, std::string_view) {});
  EXPECT_TRUE(c.prefetch("a"));
  EXPECT_FALSE(c.prefetch("bad"));
  EXPECT_FALSE(c.prefetch("unknown"));
  gs::set_log_sink(old);
  EXPECT_TRUE(c.is_resident("a"));
  EXPECT_EQ(c.stats().load_failures, 1u);
}

TEST_F(ModelCacheTest, LoadTimeIsMeasured) {
  Cache c;
  c.add("slow", [] {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return gs::Loaded<Model>{std::make_shared<Model>(1), 1};
  });
  c.get("slow");
  EXPECT_GE(c.stats().load_time, std::chrono::milliseconds(5));
}

TEST_F(ModelCacheTest, IsAReclaimableInTheRegistry) {
  const auto before = gs::registered_reclaimable_count();
  std::shared_ptr<gs::Reclaimable> r;
  {
    gs::ModelCacheOptions o;
    o.name = "faces";
    Cache c(o);
    EXPECT_EQ(gs::registered_reclaimable_count(), before + 1);
    r = c.reclaimable();
    EXPECT_STREQ(r->reclaimable_name(), "faces");
    EXPECT_EQ(r->reclaim_cost(), gs::ReclaimCost::evictable_models);
    add(c, "a", 10);
    add(c, "b", 20);
    c.get("a");
    c.get("b");
    const auto u = r->usage();
    EXPECT_EQ(u.bytes_in_use, 30u);
    EXPECT_EQ(u.items, 2u);
    gs::ReclaimRequest req;
    req.bytes_goal = 5;
    EXPECT_EQ(r->reclaim(req), 10u);  // the least recently used one
    EXPECT_FALSE(c.is_resident("a"));
    EXPECT_EQ(c.stats().evictions_for(gs::EvictReason::reclaim), 1u);
    req.device = 3;
    EXPECT_EQ(r->reclaim(req), 0u);  // another device
  }
  EXPECT_EQ(gs::registered_reclaimable_count(), before);
  EXPECT_EQ(r->reclaim({}), 0u);  // the cache is gone; the handle still works
  EXPECT_EQ(r->usage().bytes_in_use, 0u);
}

TEST_F(ModelCacheTest, ShutdownEvictsEveryUnpinnedModel) {
  Cache c;
  load_one_of_each(c);
  EXPECT_GE(gs::shutdown(), 20u);
  EXPECT_FALSE(c.is_resident("p"));
  EXPECT_FALSE(c.is_resident("s"));
  EXPECT_TRUE(c.is_resident("pinned"));
  EXPECT_EQ(c.stats().evictions_for(gs::EvictReason::shutdown), 2u);
  // Everything keeps working afterwards.
  EXPECT_EQ(c.get("p")->value, 10);
}

TEST_F(ModelCacheTest, ReclaimAllFromACallbackDoesNotDeadlock) {
  Cache c;
  add(c, "a", 10);
  add(c, "b", 10);
  c.get("a");
  c.get("b");
  int calls = 0;
  c.on_evict([&](const std::string&, std::size_t, gs::EvictReason) {
    if (++calls == 1) gs::reclaim_all();  // re-enters the registry and this cache
  });
  gs::reclaim_all();
  EXPECT_EQ(c.stats().models_resident, 0u);
  EXPECT_EQ(calls, 2);
}

TEST_F(ModelCacheTest, HandlesOutliveTheCache) {
  Cache::Handle h;
  {
    Cache c(budget(100));
    add(c, "a", 10);
    h = c.get("a");
  }
  ASSERT_TRUE(h);
  EXPECT_EQ(h->value, 10);
  EXPECT_EQ(live.load(), 1);
  h.reset();
  EXPECT_EQ(live.load(), 0);
}

struct Point {
  int x, y;
  bool operator==(const Point& o) const { return x == o.x && y == o.y; }
};
struct PointHash {
  std::size_t operator()(const Point& p) const { return std::hash<int>()(p.x * 31 + p.y); }
};

// A key whose operator<< throws: describing it in a load failure must not strand the load.
struct Unprintable {
  int id;
  bool operator==(const Unprintable& o) const { return id == o.id; }
};
std::ostream& operator<<(std::ostream&, const Unprintable&) {
  throw std::logic_error("cannot print this key");
}
struct UnprintableHash {
  std::size_t operator()(const Unprintable& k) const { return std::hash<int>()(k.id); }
};
using UnprintableCache = gs::BasicModelCache<FakeRuntime, Unprintable, int, UnprintableHash>;

TEST_F(ModelCacheTest, AFailedLoadWhoseKeyCannotBePrintedStillReleasesEveryone) {
  auto c = std::make_shared<UnprintableCache>(budget(100));
  UnprintableCache* raw = c.get();
  auto calls = std::make_shared<std::atomic<int>>(0);
  // The first load fails only once a second caller waits for it.
  raw->add(
      Unprintable{1},
      [raw, calls]() -> gs::Loaded<int> {
        if (++*calls == 1) {
          const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
          while (raw->stats().waits == 0 && std::chrono::steady_clock::now() < deadline)
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        throw std::runtime_error("weights are corrupt");
      },
      gs::Residency::secondary, 10);
  // 1 = LoadFailed carrying the loader's message, 2 = anything else
  auto loader_side = std::make_shared<std::atomic<int>>(0);
  auto waiter_side = std::make_shared<std::atomic<int>>(0);
  auto get_one = [c](std::atomic<int>& outcome) {
    try {
      c->get(Unprintable{1});
      outcome = 2;
    } catch (const gs::LoadFailed& e) {
      outcome = std::string(e.what()).find("weights are corrupt") != std::string::npos ? 1 : 2;
    } catch (...) {
      outcome = 2;
    }
  };
  bool finished = finishes_within(std::chrono::seconds(20), [=] {
    std::thread loader([&] { get_one(*loader_side); });
    while (c->stats().misses == 0) std::this_thread::yield();
    std::thread waiter([&] { get_one(*waiter_side); });
    loader.join();
    waiter.join();
  });
  ASSERT_TRUE(finished) << "a caller waited forever for a failed load";
  EXPECT_EQ(loader_side->load(), 1);
  EXPECT_EQ(waiter_side->load(), 1);
  EXPECT_EQ(c->stats().bytes_reserved, 0u);
  // A later get runs the loader again instead of waiting for the old load.
  auto later = std::make_shared<std::atomic<int>>(0);
  finished = finishes_within(std::chrono::seconds(10), [=] { get_one(*later); });
  ASSERT_TRUE(finished) << "a later get waited for a load that had ended";
  EXPECT_EQ(later->load(), 1);
  EXPECT_EQ(calls->load(), 2);
  EXPECT_EQ(c->stats().load_failures, 2u);
  EXPECT_EQ(c->stats().bytes_reserved, 0u);
}

TEST_F(ModelCacheTest, ForkWaitsWhileTheCacheListChanges) {
  Cache c;  // installs the fork handlers of the list of fork-aware objects
  auto& list = gs::detail::fork_aware_list();
  std::atomic<bool> forked{false};
  pid_t child = -1;
  list.mutex.lock();  // as a cache being created or destroyed on another thread would
  std::thread t([&] {
    child = ::fork();
    if (child == 0) ::_exit(0);
    forked = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const bool forked_while_locked = forked.load();
  list.mutex.unlock();
  t.join();
  EXPECT_FALSE(forked_while_locked) << "fork() copied the cache list while it was being changed";
  ASSERT_GT(child, 0);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST_F(ModelCacheTest, KeysWithoutStreamOperatorWork) {
  gs::BasicModelCache<FakeRuntime, Point, int, PointHash> c;
  c.add({1, 2}, [] { return gs::Loaded<int>{std::make_shared<int>(12), 4}; });
  EXPECT_EQ(*c.get({1, 2}), 12);
  try {
    c.get({3, 4});
    FAIL();
  } catch (const gs::UnknownKey& e) {
    EXPECT_NE(std::string(e.what()).find("operator<<"), std::string::npos) << e.what();
  }
}

// ---- reclaim levels
// ------------------------------------------------------------------------------

TEST_F(ModelCacheTest, EmptyCacheKeepsWarmModelsAndAHeavyReclaimEvictsThem) {
  Cache c;
  load_one_of_each(c);
  // safe_cuda_empty_cache() is light: a cache holds nothing cached and idle, it evicts nothing.
  (void)gs::safe_cuda_empty_cache();
  EXPECT_TRUE(c.is_resident("p"));
  EXPECT_TRUE(c.is_resident("s"));
  EXPECT_TRUE(c.is_resident("pinned"));
  gs::ReclaimRequest light;
  light.level = gs::ReclaimLevel::light;
  EXPECT_EQ(c.reclaimable()->reclaim(light), 0u);
  EXPECT_EQ(c.stats().evictions_total(), 0u);
  // Heavy evicts the unpinned secondary models; primary and pinned ones stay.
  gs::ReclaimRequest heavy;
  heavy.level = gs::ReclaimLevel::heavy;
  EXPECT_EQ(c.reclaimable()->reclaim(heavy), 10u);
  EXPECT_FALSE(c.is_resident("s"));
  EXPECT_TRUE(c.is_resident("p"));
  EXPECT_TRUE(c.is_resident("pinned"));
  EXPECT_EQ(c.stats().evictions_for(gs::EvictReason::reclaim), 1u);
  static_assert(gs::ReclaimLevel::trim == gs::ReclaimLevel::heavy, "trim is heavy's old name");
}

// ---- on_evict failures
// ---------------------------------------------------------------------------

/// Collects the messages at warning level and above for the duration of a test.
class WarningCapture {
 public:
  WarningCapture() : old_level_(gs::log_level()) {
    gs::set_log_level(gs::LogLevel::warning);
    old_sink_ = gs::set_log_sink([this](gs::LogLevel, std::string_view m) {
      std::lock_guard<std::mutex> lock(mutex_);
      messages_.emplace_back(m);
    });
  }
  ~WarningCapture() {
    gs::set_log_sink(old_sink_);
    gs::set_log_level(old_level_);
  }
  std::vector<std::string> messages() {
    std::lock_guard<std::mutex> lock(mutex_);
    return messages_;
  }

 private:
  gs::LogLevel old_level_;
  gs::LogSink old_sink_;
  std::mutex mutex_;
  std::vector<std::string> messages_;
};

TEST_F(ModelCacheTest, ThrowingEvictCallbackIsLoggedOnceNamingTheKey) {
  gs::ModelCacheOptions o;
  o.name = "faces";
  Cache c(o);
  for (const char* k : {"a", "b", "c"}) {
    add(c, k, 10);
    c.get(k);
  }
  c.on_evict([](const std::string&, std::size_t, gs::EvictReason) {
    throw std::runtime_error("callback failure");
  });
  WarningCapture logs;
  EXPECT_EQ(c.evict(10), 10u);  // "a", the least recently used
  EXPECT_EQ(c.evict(20), 20u);
  c.get("a");
  c.remove("a");
  const auto messages = logs.messages();
  ASSERT_EQ(messages.size(), 1u) << "one message per cache, not one per eviction";
  EXPECT_NE(messages[0].find("ModelCache 'faces'"), std::string::npos) << messages[0];
  EXPECT_NE(messages[0].find("key 'a'"), std::string::npos) << messages[0];
  EXPECT_NE(messages[0].find("callback failure"), std::string::npos) << messages[0];
  EXPECT_FALSE(c.is_resident("b"));
}

TEST_F(ModelCacheTest, ThrowingEvictCallbackOfAKeyWithoutStreamOperatorSaysKey) {
  gs::BasicModelCache<FakeRuntime, Point, int, PointHash> c;
  c.add({1, 2}, [] { return gs::Loaded<int>{std::make_shared<int>(12), 4}; });
  c.get({1, 2});
  c.on_evict([](const Point&, std::size_t, gs::EvictReason) { throw 42; });
  WarningCapture logs;
  EXPECT_EQ(c.evict(4), 4u);
  const auto messages = logs.messages();
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_NE(messages[0].find("key <key>"), std::string::npos) << messages[0];
  EXPECT_NE(messages[0].find("a non-std exception"), std::string::npos) << messages[0];
}

// ---- load cycles -----------------------------------------------------------------------------

/// Registers `key` in `c`, whose loader waits (up to 5 s) until `entered` loaders have started,
/// then gets `needs` from `other`.
void add_needing(Cache& c, const std::string& key, Cache& other, const std::string& needs,
                 std::shared_ptr<std::atomic<int>> entered) {
  Cache* raw = &other;
  c.add(key, [raw, needs, entered] {
    ++*entered;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (entered->load() < 2 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    const int v = raw->get(needs)->value;
    return gs::Loaded<Model>{std::make_shared<Model>(v + 1), 10};
  });
}

/// get(key) on its own thread; the outcome: the InvalidArgument's message, or "ok"/"other".
void get_expecting_cycle(std::shared_ptr<Cache> c, std::string key,
                         std::shared_ptr<std::string> outcome) {
  try {
    c->get(key);
    *outcome = "ok";
  } catch (const gs::InvalidArgument& e) {
    *outcome = e.what();
  } catch (const std::exception& e) {
    *outcome = std::string("other: ") + e.what();
  }
}

void expect_cycle_message(const std::string& m) {
  EXPECT_NE(m.find("'A'"), std::string::npos) << m;
  EXPECT_NE(m.find("'B'"), std::string::npos) << m;
  EXPECT_NE(m.find("need each other"), std::string::npos) << m;
}

TEST_F(ModelCacheTest, LoadersThatNeedEachOthersKeysFailInsteadOfDeadlocking) {
  auto c = std::make_shared<Cache>();
  auto entered = std::make_shared<std::atomic<int>>(0);
  add_needing(*c, "A", *c, "B", entered);
  add_needing(*c, "B", *c, "A", entered);
  auto a = std::make_shared<std::string>(), b = std::make_shared<std::string>();
  const bool finished = finishes_within(std::chrono::seconds(20), [c, a, b] {
    std::thread ta(get_expecting_cycle, c, "A", a);
    std::thread tb(get_expecting_cycle, c, "B", b);
    ta.join();
    tb.join();
  });
  ASSERT_TRUE(finished) << "two loaders waiting for each other deadlocked";
  // The thread that closed the cycle fails at once; its failed load reaches the other one.
  expect_cycle_message(*a);
  expect_cycle_message(*b);
  EXPECT_EQ(entered->load(), 2);
  EXPECT_EQ(c->stats().bytes_reserved, 0u);
  EXPECT_FALSE(c->is_resident("A"));
  EXPECT_FALSE(c->is_resident("B"));
}

TEST_F(ModelCacheTest, LoadersOfTwoCachesThatNeedEachOtherFailInsteadOfDeadlocking) {
  auto c1 = std::make_shared<Cache>(), c2 = std::make_shared<Cache>();
  auto entered = std::make_shared<std::atomic<int>>(0);
  add_needing(*c1, "A", *c2, "B", entered);
  add_needing(*c2, "B", *c1, "A", entered);
  auto a = std::make_shared<std::string>(), b = std::make_shared<std::string>();
  const bool finished = finishes_within(std::chrono::seconds(20), [c1, c2, a, b] {
    std::thread ta(get_expecting_cycle, c1, "A", a);
    std::thread tb(get_expecting_cycle, c2, "B", b);
    ta.join();
    tb.join();
  });
  ASSERT_TRUE(finished) << "two loaders waiting for each other deadlocked";
  expect_cycle_message(*a);
  expect_cycle_message(*b);
}

TEST_F(ModelCacheTest, LoadersWaitingForRoomThatTheOtherHoldsFailInsteadOfDeadlocking) {
  // Budget 100: the loads of "A" (60) and "B" (30) hold 90; A's loader then needs "C" (50) and
  // B's loader "D" (50). Each would wait for room that the other's load holds.
  auto c = std::make_shared<Cache>(budget(100));
  auto entered = std::make_shared<std::atomic<int>>(0);
  Cache* raw = c.get();
  auto add_outer = [&](const std::string& key, std::size_t bytes, const std::string& needs) {
    c->add(
        key,
        [raw, needs, entered, bytes] {
          ++*entered;
          const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
          while (entered->load() < 2 && std::chrono::steady_clock::now() < deadline)
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
          raw->get(needs);
          return gs::Loaded<Model>{std::make_shared<Model>(1), bytes};
        },
        gs::Residency::secondary, bytes);
  };
  add_outer("A", 60, "C");
  add_outer("B", 30, "D");
  add(*c, "C", 50, gs::Residency::secondary, 50);
  add(*c, "D", 50, gs::Residency::secondary, 50);
  auto outcomes = std::make_shared<std::vector<std::string>>(2);
  const bool finished = finishes_within(std::chrono::seconds(20), [c, outcomes] {
    auto get = [c](const std::string& key, std::string& outcome) {
      try {
        c->get(key);
        outcome = "ok";
      } catch (const gs::BudgetExceeded& e) {
        outcome = std::string("budget: ") + e.what();
      } catch (const std::exception& e) {
        outcome = std::string("other: ") + e.what();
      }
    };
    std::thread ta(get, "A", std::ref((*outcomes)[0]));
    std::thread tb(get, "B", std::ref((*outcomes)[1]));
    ta.join();
    tb.join();
  });
  ASSERT_TRUE(finished) << "two loaders waiting for room the other holds deadlocked";
  // The one that would close the cycle fails at once; its room then lets the other one finish
  // (or fail, when it was the second to wait and the first one's room is not enough).
  for (const auto& o : *outcomes) EXPECT_TRUE(o == "ok" || o.rfind("budget: ", 0) == 0) << o;
  const bool one_says_why = (*outcomes)[0].find("would never end") != std::string::npos ||
                            (*outcomes)[1].find("would never end") != std::string::npos;
  EXPECT_TRUE(one_says_why) << (*outcomes)[0] << "\n" << (*outcomes)[1];
  EXPECT_EQ(c->stats().bytes_reserved, 0u);
}

TEST_F(ModelCacheTest, ALoaderWaitingForAnotherThreadsLoadIsNoCycle) {
  // A's loader gets B, which another thread is loading (and which needs nothing): it waits.
  auto c = std::make_shared<Cache>();
  auto b_started = std::make_shared<std::atomic<bool>>(false);
  auto b_may_end = std::make_shared<std::atomic<bool>>(false);
  c->add("B", [b_started, b_may_end] {
    *b_started = true;
    while (!b_may_end->load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return gs::Loaded<Model>{std::make_shared<Model>(2), 10};
  });
  Cache* raw = c.get();
  c->add("A", [raw] {
    return gs::Loaded<Model>{std::make_shared<Model>(raw->get("B")->value), 10};
  });
  auto value = std::make_shared<std::atomic<int>>(0);
  const bool finished = finishes_within(std::chrono::seconds(20), [c, b_started, b_may_end, value] {
    std::thread tb([c] { c->get("B"); });
    while (!b_started->load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    std::thread ta([c, value] { *value = c->get("A")->value; });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    *b_may_end = true;
    ta.join();
    tb.join();
  });
  ASSERT_TRUE(finished);
  EXPECT_EQ(value->load(), 2);
}

// ---- fork
// ----------------------------------------------------------------------------------------

TEST_F(ModelCacheTest, ChildForkedDuringAnotherThreadsLoadDoesNotWaitForIt) {
  // "slow" is loading on another thread at fork time, holding 60 of the 100 budget bytes. That
  // thread does not exist in the child: its load is abandoned there and its room given back.
  auto c = std::make_shared<Cache>(budget(100));
  auto entered = std::make_shared<std::atomic<bool>>(false);
  auto may_end = std::make_shared<std::atomic<bool>>(false);
  c->add(
      "slow",
      [entered, may_end] {
        *entered = true;
        while (!may_end->load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        return gs::Loaded<Model>{std::make_shared<Model>(60), 60};
      },
      gs::Residency::secondary, 60);
  add(*c, "other", 50, gs::Residency::secondary, 50);
  std::thread loading([c] { c->get("slow"); });
  while (!entered->load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const int rc = gpusafe_test::run_in_child([&] {
    *may_end = true;  // the child's copy: a load run in the child ends at once
    if (c->stats().bytes_reserved != 0) return 2;
    if (c->get("other")->value != 50) return 3;  // fits: the vanished load holds no room
    if (c->get("slow")->value != 60) return 4;   // loads anew here (evicting "other")
    if (c->is_resident("other") || !c->is_resident("slow")) return 5;
    return 0;
  });
  EXPECT_EQ(rc, 0) << "-2: the child waited for a load of a thread that does not exist there";
  *may_end = true;
  loading.join();
  EXPECT_TRUE(c->is_resident("slow"));  // the parent's load finished as usual
}

TEST_F(ModelCacheTest, ChildForkedWhileAThreadWaitsForALoadGetsTheKeyItself) {
  // One thread loads "k", another waits for it; neither exists in the child.
  auto c = std::make_shared<Cache>();
  auto entered = std::make_shared<std::atomic<bool>>(false);
  auto may_end = std::make_shared<std::atomic<bool>>(false);
  c->add("k", [entered, may_end] {
    *entered = true;
    while (!may_end->load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return gs::Loaded<Model>{std::make_shared<Model>(7), 7};
  });
  std::thread loading([c] { c->get("k"); });
  while (!entered->load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::thread waiting([c] { c->get("k"); });
  while (c->stats().waits == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const int rc = gpusafe_test::run_in_child([&] {
    *may_end = true;
    return c->get("k")->value == 7 ? 0 : 2;
  });
  EXPECT_EQ(rc, 0) << "-2: hung";
  *may_end = true;
  loading.join();
  waiting.join();
  EXPECT_EQ(c->stats().loads, 1u);
}

TEST_F(ModelCacheTest, DefaultRuntimeCacheWorks) {
  gs::ModelCache<int, std::string> c;
  c.add(1, [] { return gs::Loaded<std::string>{std::make_shared<std::string>("one"), 3}; });
  EXPECT_EQ(*c.get(1), "one");
}

}  // namespace
