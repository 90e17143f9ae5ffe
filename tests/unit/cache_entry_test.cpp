// Unit tests of the bookkeeping of one model in ModelCache: CacheEntry and CacheLoad, the one
// allocation a load makes (detail/cache/entry.hpp).
#include <gtest/gtest.h>

#include <memory>

#include "../support/cache_fixture.hpp"
#include "gpusafe/detail/cache/entry.hpp"

namespace gs = gpusafe;
namespace gd = gpusafe::detail;

namespace {

using gpusafe_test::cache::Entry;
using gpusafe_test::cache::make_entry;
using gpusafe_test::cache::Model;
using Load = Entry::LoadOp;

TEST(CacheEntry, ALoadHasNoResultUntilItHasOne) {
  auto load = std::make_shared<Load>();
  EXPECT_EQ(Load::result(load), nullptr);
  bool destroyed = false;
  load->uncached = std::make_shared<Model>(&destroyed);
  EXPECT_EQ(Load::result(load), load->uncached);
  load->drop_result();
  EXPECT_EQ(Load::result(load), nullptr);
  EXPECT_TRUE(destroyed);
}

TEST(CacheEntry, ACachedResultAliasesTheLoadWhichOwnsTheModel) {
  bool destroyed = false;
  auto load = std::make_shared<Load>();
  load->original = std::make_shared<Model>(&destroyed);
  load->cached_result = true;
  auto handle = Load::result(load);
  EXPECT_EQ(handle.get(), load->original.get());
  load.reset();
  EXPECT_FALSE(destroyed);  // the handle keeps the load, and so the model
  handle.reset();
  EXPECT_TRUE(destroyed);
}

TEST(CacheEntry, EvictableOnlyWhenResidentSecondaryAndNotPinned) {
  bool destroyed = false;
  Entry e = make_entry(1);
  EXPECT_FALSE(e.evictable());
  e.cached = std::make_shared<Model>(&destroyed);
  EXPECT_TRUE(e.evictable());
  e.pinned = true;
  EXPECT_FALSE(e.evictable());
  Entry primary = make_entry(1, gs::Residency::primary);
  primary.cached = e.cached;
  EXPECT_FALSE(primary.evictable());
}

TEST(CacheEntry, ARetiredModelStaysChargedUntilItsLastHandleDrops) {
  auto acct = std::make_shared<gd::ModelCacheAccounting>();
  bool destroyed = false;
  Entry e = make_entry(1);
  {
    auto load = std::make_shared<Load>();
    load->original = std::make_shared<Model>(&destroyed);
    load->cached_result = true;
    e.load = load.get();
    e.cached = Load::result(load);
  }
  e.bytes = 64;
  e.charge_retired(acct);  // only the cache holds it: nothing to charge
  EXPECT_EQ(acct->retired.load(), 0u);
  auto held = e.cached;
  EXPECT_TRUE(e.in_use());
  e.charge_retired(acct);
  EXPECT_EQ(acct->retired.load(), 64u);
  e.cached.reset();
  EXPECT_EQ(acct->retired.load(), 64u);
  EXPECT_FALSE(destroyed);
  held.reset();
  EXPECT_TRUE(destroyed);
  EXPECT_EQ(acct->retired.load(), 0u);
}

}  // namespace
