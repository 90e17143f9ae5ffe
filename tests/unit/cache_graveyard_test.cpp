// Unit tests of the Graveyard of ModelCache: what a locked section evicted is released and
// reported after it (detail/cache/graveyard.hpp).
#include <gtest/gtest.h>

#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "../support/cache_fixture.hpp"
#include "gpusafe/detail/cache/entry.hpp"
#include "gpusafe/detail/cache/graveyard.hpp"
#include "gpusafe/log.hpp"

namespace gs = gpusafe;
namespace gd = gpusafe::detail;

namespace {

using gpusafe_test::cache::Entry;
using gpusafe_test::cache::Model;
using Grave = gd::Graveyard<Entry>;

struct Fixture : ::testing::Test {
  gd::CacheMessages messages{"graves"};
  gd::CallbackFailureLog failures{messages};

  static std::shared_ptr<Entry> entry(int key) {
    return gpusafe_test::cache::make_shared_entry(key);
  }
  static std::shared_ptr<const Grave::Callback> callback(Grave::Callback f) {
    return std::make_shared<const Grave::Callback>(std::move(f));
  }
};

using CacheGraveyard = Fixture;

TEST_F(CacheGraveyard, ReportsEveryEvictionInOrderAfterDroppingItsModel) {
  std::vector<int> keys;
  bool destroyed[3] = {};
  Grave g(failures);
  g.set_callback(callback([&](const int& key, std::size_t bytes, gs::EvictReason reason) {
    EXPECT_TRUE(destroyed[key]);  // the model went before the callback ran
    EXPECT_EQ(bytes, static_cast<std::size_t>(10 * key));
    EXPECT_EQ(reason, gs::EvictReason::budget);
    keys.push_back(key);
  }));
  g.reserve(3);
  for (int k = 0; k < 3; ++k)
    g.add({entry(k), std::make_shared<Model>(&destroyed[k]), static_cast<std::size_t>(10 * k),
           gs::EvictReason::budget});
  EXPECT_FALSE(g.empty());
  EXPECT_TRUE(keys.empty());  // nothing runs before finish()
  EXPECT_EQ(g.finish(), 30u);
  EXPECT_EQ(keys, (std::vector<int>{0, 1, 2}));
  EXPECT_TRUE(g.empty());
  EXPECT_EQ(g.finish(), 0u);
}

TEST_F(CacheGraveyard, TheFirstEvictionNeedsNoReservation) {
  bool destroyed = false;
  {
    Grave g(failures);
    g.add({entry(1), std::make_shared<Model>(&destroyed), 4, gs::EvictReason::clear});
    EXPECT_FALSE(destroyed);
  }  // the destructor finishes
  EXPECT_TRUE(destroyed);
}

TEST_F(CacheGraveyard, AThrowingCallbackIsLoggedAndTheOthersStillRun) {
  std::vector<std::string> logged;
  auto old = gs::set_log_sink(
      [&](gs::LogLevel, std::string_view message) { logged.emplace_back(message); });
  int calls = 0;
  bool destroyed[2] = {};
  Grave g(failures);
  g.set_callback(callback([&](const int&, std::size_t, gs::EvictReason) {
    ++calls;
    throw std::runtime_error("callback failed");
  }));
  g.reserve(2);
  g.add({entry(0), std::make_shared<Model>(&destroyed[0]), 1, gs::EvictReason::removed});
  g.add({entry(1), std::make_shared<Model>(&destroyed[1]), 2, gs::EvictReason::removed});
  EXPECT_EQ(g.finish(), 3u);
  gs::set_log_sink(std::move(old));
  EXPECT_EQ(calls, 2);
  ASSERT_FALSE(logged.empty());
  EXPECT_NE(logged[0].find("callback threw for key '0'"), std::string::npos);
}

TEST_F(CacheGraveyard, KeptEntriesLiveUntilFinish) {
  auto e = entry(5);
  std::weak_ptr<Entry> weak = e;
  Grave g(failures);
  g.keep(std::move(e));
  EXPECT_FALSE(weak.expired());
  g.finish();
  EXPECT_TRUE(weak.expired());
}

}  // namespace
