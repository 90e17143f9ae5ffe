// Unit tests of gpusafe/detail/periodic_thread.hpp: ticks, stop and restart from outside and from
// the thread's own tick, and the thread of a parent process in a forked child.
#include "gpusafe/detail/periodic_thread.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "../support/child_process.hpp"

namespace gs = gpusafe;
using gs::detail::PeriodicThread;
using namespace std::chrono_literals;

namespace {

#if defined(__SANITIZE_THREAD__)
constexpr bool kThreadSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
constexpr bool kThreadSanitizer = true;
#else
constexpr bool kThreadSanitizer = false;
#endif
#else
constexpr bool kThreadSanitizer = false;
#endif

/// Waits up to `limit` for `done()`; returns its last value.
template <class Pred>
bool wait_for(Pred done, std::chrono::milliseconds limit = 5s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

TEST(PeriodicThreadTest, TicksUntilStoppedAndNotAfter) {
  std::atomic<int> ticks{0};
  PeriodicThread t([&] { ticks.fetch_add(1); });
  EXPECT_FALSE(t.running());
  t.start(1ms);
  EXPECT_TRUE(t.running());
  EXPECT_TRUE(wait_for([&] { return ticks.load() >= 3; }));
  t.stop();
  EXPECT_FALSE(t.running());
  const int after_stop = ticks.load();
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(ticks.load(), after_stop) << "stop() joins: no tick after it returns";
}

TEST(PeriodicThreadTest, StartWhileRunningKeepsOneThreadAndRestartWorks) {
  std::atomic<int> ticks{0};
  PeriodicThread t([&] { ticks.fetch_add(1); });
  t.start(1ms);
  t.start(1ms);
  EXPECT_TRUE(t.running());
  t.stop();
  t.stop();
  EXPECT_FALSE(t.running());
  const int before = ticks.load();
  t.start(1ms);
  EXPECT_TRUE(wait_for([&] { return ticks.load() > before; }));
}

TEST(PeriodicThreadTest, StopWakesALongWaitAtOnce) {
  PeriodicThread t([] {});
  t.start(std::chrono::hours(1));
  const auto begin = std::chrono::steady_clock::now();
  t.stop();
  EXPECT_LT(std::chrono::steady_clock::now() - begin, 2s);
}

TEST(PeriodicThreadTest, KnowsItsOwnThread) {
  std::atomic<int> own{-1};
  PeriodicThread* self = nullptr;
  PeriodicThread t([&] { own.store(self->on_own_thread() ? 1 : 0); });
  self = &t;
  EXPECT_FALSE(t.on_own_thread());
  t.start(1ms);
  EXPECT_TRUE(wait_for([&] { return own.load() != -1; }));
  t.stop();
  EXPECT_EQ(own.load(), 1);
}

TEST(PeriodicThreadTest, StopFromItsOwnTickEndsTheLoopAndIsJoinedLater) {
  std::atomic<int> ticks{0};
  PeriodicThread* self = nullptr;
  PeriodicThread t([&] {
    ticks.fetch_add(1);
    self->stop();
  });
  self = &t;
  t.start(1ms);
  EXPECT_TRUE(wait_for([&] { return ticks.load() >= 1; }));
  EXPECT_TRUE(wait_for([&] { return !t.running(); }));
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(ticks.load(), 1) << "the loop ended after the tick that stopped it";
  t.start(1ms);  // joins the ended thread, starts a new one
  EXPECT_TRUE(wait_for([&] { return ticks.load() >= 2; }));
  t.stop();
}

TEST(PeriodicThreadTest, StartFromItsOwnTickAfterStopKeepsTheLoopGoing) {
  std::atomic<int> ticks{0};
  PeriodicThread* self = nullptr;
  PeriodicThread t([&] {
    if (ticks.fetch_add(1) == 0) {
      self->stop();
      self->start(1ms);
    }
  });
  self = &t;
  t.start(1ms);
  EXPECT_TRUE(wait_for([&] { return ticks.load() >= 3; }));
  EXPECT_TRUE(t.running());
  t.stop();
}

TEST(PeriodicThreadTest, DestructorStopsAndJoins) {
  std::atomic<int> ticks{0};
  {
    PeriodicThread t([&] { ticks.fetch_add(1); });
    t.start(1ms);
    EXPECT_TRUE(wait_for([&] { return ticks.load() >= 1; }));
  }
  const int after = ticks.load();
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(ticks.load(), after);
}

TEST(PeriodicThreadTest, ForkedChildForgetsTheParentsThreadAndCanStartItsOwn) {
  std::atomic<int> ticks{0};
  PeriodicThread t([&] { ticks.fetch_add(1); });
  t.start(1ms);
  ASSERT_TRUE(wait_for([&] { return ticks.load() >= 1; }));
  const int rc = gpusafe_test::run_in_child([&] {
    // The parent's thread does not exist here: stop() must neither join it (a hang) nor detach
    // it (a crash), and the locks it may have held are new.
    if (t.on_own_thread()) return 1;
    t.stop();
    if (t.running()) return 2;
    // ThreadSanitizer refuses new threads in a child of a threaded process: the restart below is
    // left to the other builds.
    if (kThreadSanitizer) return 0;
    const int before = ticks.load();
    t.start(1ms);
    if (!wait_for([&] { return ticks.load() > before; })) return 3;
    t.stop();
    return 0;
  });
  EXPECT_EQ(rc, 0);
  EXPECT_TRUE(t.running()) << "the parent's thread goes on";
  t.stop();
}

TEST(PeriodicThreadTest, OnceTheProcessIsExitingTheThreadOnlySleeps) {
  const int rc = gpusafe_test::run_in_child([] {
    std::atomic<int> ticks{0};
    PeriodicThread t([&] { ticks.fetch_add(1); });
    t.start(1ms);
    if (!wait_for([&] { return ticks.load() >= 1; })) return 1;
    gs::detail::mark_exiting();
    std::this_thread::sleep_for(10ms);
    const int frozen = ticks.load();
    std::this_thread::sleep_for(30ms);
    if (ticks.load() != frozen) return 2;
    t.stop();  // still joins
    return t.running() ? 3 : 0;
  });
  EXPECT_EQ(rc, 0);
}

}  // namespace
