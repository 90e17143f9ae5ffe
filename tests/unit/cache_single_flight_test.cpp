// Unit tests of the single-flight parts of ModelCache: LoadBoard, the load frames and the wait
// graph that turns loads waiting for each other into errors.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "gpusafe/detail/cache/single_flight.hpp"

namespace gd = gpusafe::detail;

namespace {

std::string describe_int(const void* key) { return std::to_string(*static_cast<const int*>(key)); }

TEST(CacheSingleFlight, PublishWakesAWaiter) {
  gd::LoadBoard board;
  auto op = std::make_unique<gd::LoadOpBase>();
  std::atomic<bool> woke{false};
  std::thread waiter([&] {
    board.wait_done(*op);
    woke.store(true);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_FALSE(woke.load());
  board.publish(*op);
  waiter.join();
  EXPECT_TRUE(woke.load());
  EXPECT_TRUE(op->finished.load());
  board.wait_done(*op);  // already done: returns at once
}

TEST(CacheSingleFlight, GenerationAdvancesOnEveryPublication) {
  gd::LoadBoard board;
  const auto g0 = board.generation();
  gd::LoadOpBase a, b;
  std::thread waiter([&] { board.wait_generation(g0); });
  board.publish(a);
  waiter.join();
  board.publish(b);
  EXPECT_EQ(board.generation(), g0 + 2);
}

TEST(CacheSingleFlight, AbandonInChildMarksDone) {
  gd::LoadOpBase op;
  gd::LoadBoard::abandon_in_child(op);
  EXPECT_TRUE(op.done);
  EXPECT_TRUE(op.finished.load());
}

TEST(CacheSingleFlight, FramesNestAndCountOwnReservations) {
  const int owner_a = 0, owner_b = 0;
  gd::LoadOpBase op1, op2, op3;
  const int k1 = 1, k2 = 2;
  EXPECT_EQ(gd::load_frames(), nullptr);
  {
    gd::LoadFrameScope f1(&owner_a, 10, op1, &k1, &describe_int);
    {
      gd::LoadFrameScope f2(&owner_b, 20, op2, &k2, &describe_int);
      gd::LoadFrameScope f3(&owner_a, 5, op3, &k2, &describe_int);
      EXPECT_EQ(gd::own_load_reservations(&owner_a), 15u);
      EXPECT_EQ(gd::own_load_reservations(&owner_b), 20u);
      const gd::LoadFrame* f = gd::load_frame_of(&op1);
      ASSERT_NE(f, nullptr);
      EXPECT_EQ(f->describe(f->key), "1");
    }
    EXPECT_EQ(gd::own_load_reservations(&owner_a), 10u);
    EXPECT_EQ(gd::load_frame_of(&op2), nullptr);
  }
  EXPECT_EQ(gd::load_frames(), nullptr);
  EXPECT_EQ(gd::own_load_reservations(&owner_a), 0u);
}

TEST(CacheSingleFlight, WaitingForARunningLoadIsAllowed) {
  std::unique_ptr<gd::LoadOpBase> theirs;
  std::thread t([&] { theirs = std::make_unique<gd::LoadOpBase>(); });  // owned by a thread...
  t.join();  // ...that is not waiting for anything
  gd::LoadWait w;
  w.one = theirs.get();
  EXPECT_EQ(gd::begin_load_wait(w), nullptr);
  gd::end_load_wait();
}

TEST(CacheSingleFlight, WaitingForOwnLoadIsACycle) {
  gd::LoadOpBase mine;  // owned by this thread
  gd::LoadWait w;
  w.one = &mine;
  EXPECT_EQ(gd::begin_load_wait(w), &mine);
  gd::LoadWait any;
  any.any = {&mine};
  EXPECT_EQ(gd::begin_load_wait(any), &mine);
  gd::LoadWait none;  // an empty "any" never closes
  EXPECT_EQ(gd::begin_load_wait(none), nullptr);
  gd::end_load_wait();
}

TEST(CacheSingleFlight, AFinishedLoadNeverClosesACycle) {
  gd::LoadOpBase mine;
  mine.finished.store(true);
  gd::LoadWait w;
  w.one = &mine;
  EXPECT_EQ(gd::begin_load_wait(w), nullptr);
  gd::end_load_wait();
}

TEST(CacheSingleFlight, TwoThreadsWaitingForEachOthersLoadsAreDetected) {
  gd::LoadOpBase mine;  // this thread's load
  std::unique_ptr<gd::LoadOpBase> theirs;
  std::atomic<int> stage{0};
  std::thread other([&] {
    theirs = std::make_unique<gd::LoadOpBase>();  // the other thread's load
    gd::LoadWait w;
    w.one = &mine;  // it waits for this thread's load
    EXPECT_EQ(gd::begin_load_wait(w), nullptr);
    gd::LoadWaitScope scope;
    stage.store(1);
    while (stage.load() != 2) std::this_thread::yield();
  });
  while (stage.load() != 1) std::this_thread::yield();
  gd::LoadWait w;
  w.one = theirs.get();
  EXPECT_EQ(gd::begin_load_wait(w), &mine);  // waiting would never end
  gd::LoadWait any;  // nor would waiting for any of them when all lead back here
  any.any = {theirs.get(), &mine};
  EXPECT_EQ(gd::begin_load_wait(any), &mine);
  stage.store(2);
  other.join();
  EXPECT_EQ(gd::begin_load_wait(w), nullptr);  // it stopped waiting: its load may finish
  gd::end_load_wait();
}

}  // namespace
