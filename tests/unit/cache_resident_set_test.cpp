// Unit tests of ResidentSet, the budget and LRU eviction of ModelCache
// (detail/cache/resident_set.hpp).
#include <gtest/gtest.h>

#include <cstddef>
#include <memory>
#include <vector>

#include "gpusafe/detail/cache/resident_set.hpp"

namespace gs = gpusafe;
namespace gd = gpusafe::detail;

namespace {

struct Model {
  int id = 0;
};

using Entry = gd::CacheEntry<int, Model>;
using Set = gd::ResidentSet<Entry>;
using Grave = gd::Graveyard<Entry>;

struct CacheResidentSet : ::testing::Test {
  gd::CacheMessages messages{"set"};
  gd::CallbackFailureLog failures{messages};
  std::vector<std::shared_ptr<Entry>> entries;

  Entry& entry(int key, gs::Residency residency = gs::Residency::secondary) {
    entries.push_back(std::make_shared<Entry>(
        key, [] { return gs::Loaded<Model>{}; }, residency, 0));
    return *entries.back();
  }
  void admit(Set& set, Entry& e, std::size_t bytes) {
    set.admit(e, std::make_shared<Entry::LoadOp>(), std::make_shared<Model>(), bytes);
  }
  static std::vector<int> evicted_keys(Set& set, std::size_t need) {
    std::vector<int> keys;
    gd::CacheMessages m{"set"};
    gd::CallbackFailureLog f{m};
    Grave g(f);
    g.set_callback(std::make_shared<const Grave::Callback>(
        [&](const int& key, std::size_t, gs::EvictReason) { keys.push_back(key); }));
    if (!set.make_room(need, g)) keys.push_back(-1);
    g.finish();
    return keys;
  }
};

TEST_F(CacheResidentSet, AdmitCountsBytesAndListsOnlyEvictableModels) {
  Set set(100, 0);
  admit(set, entry(1), 10);
  admit(set, entry(2, gs::Residency::primary), 20);
  EXPECT_EQ(set.resident_bytes(), 30u);
  EXPECT_EQ(set.resident_count(), 2u);
  EXPECT_EQ(set.pinned_bytes(), 20u);
  EXPECT_EQ(set.lru().size(), 1u);
  EXPECT_TRUE(set.fits(70));
  EXPECT_FALSE(set.fits(71));
  set.reserve(5);
  EXPECT_EQ(set.charged(), 35u);
  EXPECT_FALSE(set.fits(66));
  set.unreserve(5);
  EXPECT_TRUE(set.fits(70));
}

TEST_F(CacheResidentSet, MakeRoomEvictsLeastRecentlyUsedFirstSkippingModelsInUse) {
  Set set(30, 0);
  for (int k = 1; k <= 3; ++k) admit(set, entry(k), 10);
  auto held = entries[0]->cached;  // key 1, the least recently used, is in use
  EXPECT_EQ(evicted_keys(set, 10), (std::vector<int>{2}));
  EXPECT_EQ(set.resident_bytes(), 20u);
  EXPECT_EQ(evicted_keys(set, 30), (std::vector<int>{-1}));  // all or nothing: 3 alone is 10
  EXPECT_EQ(set.resident_bytes(), 20u);
  held.reset();
  EXPECT_EQ(evicted_keys(set, 20), (std::vector<int>{1}));
}

TEST_F(CacheResidentSet, MakeRoomRespectsTheEvictionCap) {
  Set set(30, 1);
  for (int k = 1; k <= 3; ++k) admit(set, entry(k), 10);
  EXPECT_EQ(evicted_keys(set, 20), (std::vector<int>{-1}));
  EXPECT_EQ(evicted_keys(set, 10), (std::vector<int>{1}));
}

TEST_F(CacheResidentSet, ANeedOverTheBudgetNeverFits) {
  Set set(30, 0);
  admit(set, entry(1), 10);
  EXPECT_EQ(evicted_keys(set, 31), (std::vector<int>{-1}));
  EXPECT_EQ(set.resident_count(), 1u);
}

TEST_F(CacheResidentSet, AModelEvictedWhileHeldStaysChargedUntilItsLastHandleDrops) {
  Set set(100, 0);
  Entry& e = entry(1);
  admit(set, e, 40);
  auto held = e.cached;
  Grave g(failures);
  set.retire(e, gs::EvictReason::requested, g);
  g.finish();
  EXPECT_EQ(set.resident_bytes(), 0u);
  EXPECT_EQ(set.retired_bytes(), 40u);
  EXPECT_EQ(set.charged(), 40u);
  held.reset();
  EXPECT_EQ(set.retired_bytes(), 0u);
  gs::ModelCacheStats s;
  set.fill_stats(s);
  EXPECT_EQ(s.evictions_for(gs::EvictReason::requested), 1u);
  EXPECT_EQ(s.byte_budget, 100u);
}

TEST_F(CacheResidentSet, PinnedModelsLeaveTheListAndComeBackAsMostRecent) {
  Set set(100, 0);
  Entry& a = entry(1);
  Entry& b = entry(2);
  admit(set, a, 10);
  admit(set, b, 10);
  set.pin(a);
  EXPECT_FALSE(a.in_lru);
  EXPECT_EQ(set.pinned_bytes(), 10u);
  Grave g(failures);
  EXPECT_EQ(set.evict_lru(100, gs::EvictReason::reclaim, 0, g), 10u);  // b only
  g.finish();
  set.unpin(a);
  EXPECT_EQ(set.lru().head(), &a);
  EXPECT_EQ(set.pinned_bytes(), 0u);
}

}  // namespace
