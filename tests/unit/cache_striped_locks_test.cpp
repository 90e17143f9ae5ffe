// Unit tests of detail::StripedLocks, the reader/writer locking of ModelCache.
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include "gpusafe/detail/cache/striped_locks.hpp"

namespace gd = gpusafe::detail;

namespace {

struct Node {
  int id;
};

struct Recorder {
  std::vector<int>* applied;
  void operator()(Node& n) const { applied->push_back(n.id); }
};

TEST(CacheStripedLocks, ThreadSlotIsStablePerThreadAndDiffersAcrossThreads) {
  const unsigned mine = gd::striped_lock_thread_slot();
  EXPECT_NE(mine, 0u);
  EXPECT_EQ(gd::striped_lock_thread_slot(), mine);
  unsigned other = 0;
  std::thread([&] { other = gd::striped_lock_thread_slot(); }).join();
  EXPECT_NE(other, 0u);
  EXPECT_NE(other, mine);
}

TEST(CacheStripedLocks, LockAllAppliesTouchesInOrderAndSkipsRepeats) {
  gd::StripedLocks<Node, 4, 8> locks;
  std::vector<int> applied;
  Node a{1}, b{2};
  {
    decltype(locks)::Reader r(locks);
    auto& s = r.stripe();
    locks.touch(s, &a, Recorder{&applied});
    locks.touch(s, &a, Recorder{&applied});  // repeat of the last: not recorded
    locks.touch(s, &b, Recorder{&applied});
    locks.touch(s, &a, Recorder{&applied});
  }
  EXPECT_TRUE(applied.empty());  // buffered until a writer comes
  locks.lock_all(Recorder{&applied});
  EXPECT_EQ(applied, (std::vector<int>{1, 2, 1}));
  locks.unlock_all();
  locks.lock_all(Recorder{&applied});  // drained: nothing again
  EXPECT_EQ(applied.size(), 3u);
  locks.unlock_all();
}

TEST(CacheStripedLocks, AFullBufferIsAppliedByTheReader) {
  gd::StripedLocks<Node, 2, 4> locks;
  std::vector<int> applied;
  std::vector<Node> nodes{{0}, {1}, {2}, {3}, {4}};
  {
    decltype(locks)::Reader r(locks);
    auto& s = r.stripe();
    for (auto& n : nodes) locks.touch(s, &n, Recorder{&applied});
  }
  EXPECT_EQ(applied, (std::vector<int>{0, 1, 2, 3}));  // the fifth touch drained the first four
  locks.lock_all(Recorder{&applied});
  EXPECT_EQ(applied, (std::vector<int>{0, 1, 2, 3, 4}));
  locks.unlock_all();
}

TEST(CacheStripedLocks, HitsSumOverStripes) {
  gd::StripedLocks<Node, 4, 4> locks;
  {
    decltype(locks)::Reader r(locks);
    r.stripe().hits += 3;
  }
  locks.lock_all([](Node&) {});
  locks.count_hit_exclusive();
  EXPECT_EQ(locks.hits(), 4u);
  locks.unlock_all();
}

TEST(CacheStripedLocks, WriterExcludesEveryReader) {
  gd::StripedLocks<Node, 4, 4> locks;
  std::atomic<bool> writer_in{false};
  std::atomic<int> overlaps{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t)
    readers.emplace_back([&] {
      while (!stop.load()) {
        decltype(locks)::Reader r(locks);
        if (writer_in.load()) overlaps.fetch_add(1);
      }
    });
  for (int i = 0; i < 200; ++i) {
    locks.lock_all([](Node&) {});
    writer_in.store(true);
    std::this_thread::yield();
    writer_in.store(false);
    locks.unlock_all();
  }
  stop.store(true);
  for (auto& r : readers) r.join();
  EXPECT_EQ(overlaps.load(), 0);
}

TEST(CacheStripedLocks, OnlyStripesInUseAreEnrolled) {
  gd::StripedLocks<Node, 4, 4> locks;
  EXPECT_EQ(locks.enrolled_stripes(), 0u);
  locks.lock_all([](Node&) {});  // a writer alone takes no stripe
  EXPECT_TRUE(locks.mine().mutex.try_lock());
  locks.mine().mutex.unlock();
  locks.unlock_all();
  locks.leave(locks.enter());
  locks.leave(locks.enter());
  EXPECT_EQ(locks.enrolled_stripes(), 1u);
  locks.lock_all([](Node&) {});  // now this thread's stripe is taken by writers
  EXPECT_FALSE(locks.mine().mutex.try_lock());
  locks.unlock_all();
  std::thread([&] { locks.leave(locks.enter()); }).join();  // another thread, another stripe
  EXPECT_EQ(locks.enrolled_stripes(), 2u);
}

TEST(CacheStripedLocks, ForkHooksLockAndRecreate) {
  gd::StripedLocks<Node, 2, 2> locks;
  locks.lock_for_fork();
  auto& s = locks.mine();
  EXPECT_FALSE(s.mutex.try_lock());
  locks.unlock_after_fork();
  EXPECT_TRUE(s.mutex.try_lock());
  s.mutex.unlock();
  locks.lock_for_fork();
  locks.recreate_in_child();  // as in a child: held copies become fresh mutexes
  EXPECT_TRUE(s.mutex.try_lock());
  s.mutex.unlock();
}

}  // namespace
