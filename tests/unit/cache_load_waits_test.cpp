// Unit tests of LoadWaits, where the callers of a ModelCache wait for its loads
// (detail/cache/load_waits.hpp).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <thread>
#include <vector>

#include "gpusafe/detail/cache/load_waits.hpp"

namespace gd = gpusafe::detail;

namespace {

struct Op : gd::LoadOpBase {
  std::size_t waiters = 0;
};

TEST(CacheLoadWaits, ALoadIsWatchedOnlyWhenSomeoneJoinedOrWaitsForRoom) {
  gd::LoadWaits<Op> waits;
  Op op;
  EXPECT_FALSE(waits.watched(op));
  gd::LoadWaits<Op>::join(op);
  EXPECT_TRUE(waits.watched(op));
  Op other;
  EXPECT_FALSE(waits.watched(other));
  const auto seen = waits.count_room_waiter();
  EXPECT_TRUE(waits.watched(other));
  waits.publish(other, true);                  // a load ended since `seen`
  EXPECT_TRUE(waits.wait_for_room({}, seen));  // so this returns at once, and stops counting
  EXPECT_FALSE(waits.watched(other));
}

TEST(CacheLoadWaits, AnUnwatchedPublicationFinishesTheLoadWithoutWaking) {
  gd::LoadWaits<Op> waits;
  Op op;
  waits.publish(op, false);
  EXPECT_TRUE(op.finished.load());
  EXPECT_EQ(waits.wait_for_load(op), nullptr);  // already done: returns at once
}

TEST(CacheLoadWaits, AJoinerWakesWhenTheLoadIsPublished) {
  gd::LoadWaits<Op> waits;
  auto op = std::make_shared<Op>();
  gd::LoadWaits<Op>::join(*op);
  std::atomic<bool> woke{false};
  std::thread waiter([&] {
    EXPECT_EQ(waits.wait_for_load(*op), nullptr);
    woke = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(woke.load());
  waits.publish(*op, waits.watched(*op));
  waiter.join();
  EXPECT_TRUE(woke.load());
}

TEST(CacheLoadWaits, WaitingForOnesOwnLoadReturnsItInsteadOfWaiting) {
  gd::LoadWaits<Op> waits;
  Op mine;  // owned by this thread, never published
  EXPECT_EQ(waits.wait_for_load(mine), &mine);
}

}  // namespace
