// Unit tests of the messages of ModelCache (detail/cache/messages.hpp).
#include <gtest/gtest.h>

#include <ostream>
#include <stdexcept>
#include <string>

#include "gpusafe/detail/cache/messages.hpp"

namespace gs = gpusafe;
namespace gd = gpusafe::detail;

namespace {

struct Opaque {
  int id = 0;
};

struct Throwing {};
std::ostream& operator<<(std::ostream& os, const Throwing&) {
  throw std::runtime_error("no text");
  return os;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(CacheMessages, KeysAreQuotedOrPlaceheld) {
  EXPECT_EQ(gd::describe_cache_key(std::string("resnet")), "'resnet'");
  EXPECT_EQ(gd::describe_cache_key(42), "'42'");
  EXPECT_EQ(gd::describe_cache_key(Opaque{}), "(key without operator<<)");
  const int key = 7;
  EXPECT_EQ(gd::describe_erased_cache_key<int>(&key), "'7'");
}

TEST(CacheMessages, NameTheCacheTheOperationAndTheKey) {
  const gd::CacheMessages m("models");
  EXPECT_EQ(m.prefix("get"), "ModelCache 'models': get ");
  EXPECT_TRUE(contains(m.unknown_key("pin", 3), "ModelCache 'models': pin '3': key is not"));
  EXPECT_TRUE(contains(m.duplicate_key(3), "already registered"));
  EXPECT_TRUE(contains(m.empty_loader(3), "the loader is empty"));
  EXPECT_TRUE(contains(m.destroyed("add"), "the cache was destroyed"));
  EXPECT_TRUE(contains(m.null_model(3), "returned a null model"));
  EXPECT_TRUE(contains(m.own_loader_gets_its_key(3), "called from its own loader"));
}

TEST(CacheMessages, OverBudgetSaysWhatHoldsTheBudget) {
  const gd::CacheMessages m("models");
  gd::BudgetFigures f{100, 40, 30, 20};
  const std::string fits_not = m.over_budget(1, gs::Residency::secondary, 50, "as loaded", f);
  EXPECT_TRUE(contains(fits_not, "secondary model of 50 bytes (as loaded)"));
  EXPECT_TRUE(contains(fits_not, "40 bytes of primary/pinned models, 30 bytes held by handles"));
  EXPECT_TRUE(contains(fits_not, "20 bytes reserved"));
  EXPECT_TRUE(contains(fits_not, "OversizePolicy::load_uncached"));
  const std::string too_big = m.over_budget(1, gs::Residency::primary, 500, "size hint", f);
  EXPECT_TRUE(contains(too_big, "larger than the whole budget of 100 bytes"));
  EXPECT_TRUE(contains(too_big, "register the model as secondary"));
  EXPECT_TRUE(
      contains(m.over_budget(1, gs::Residency::secondary, 50, "size hint", f, "; why"), "; why"));
}

TEST(CacheMessages, LoadFailureSurvivesAKeyThatCannotBeDescribed) {
  const gd::CacheMessages m("models");
  EXPECT_EQ(m.load_failure(5, "the loader threw", "boom"),
            "ModelCache 'models': get '5': the loader threw: boom");
  EXPECT_EQ(m.load_failure(Throwing{}, "the loader threw", "boom"),
            "ModelCache 'models': get (a key whose description failed): the loader threw: boom");
}

TEST(CacheMessages, CycleAndCallbackFailureNameBothSides) {
  const gd::CacheMessages m("models");
  const std::string cycle = m.load_cycle(std::string("a"), "'b'");
  EXPECT_TRUE(contains(cycle, "get 'a': called from the loader of 'b'"));
  const std::string cb = m.callback_failure(9, 4, gs::EvictReason::budget, "oops");
  EXPECT_TRUE(contains(cb, "callback threw for key '9' (evicted by budget, 4 bytes): oops"));
  EXPECT_TRUE(contains(m.callback_failure(Opaque{}, 4, gs::EvictReason::clear, "x"), "<key>"));
}

}  // namespace
