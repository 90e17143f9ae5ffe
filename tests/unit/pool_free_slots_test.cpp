// Unit tests of gpusafe/detail/pool/free_slots.hpp: the shared slot bitmap (batched takes, gives,
// pending slots, closing), the per-thread magazines and the thread-local table of caches.
#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <thread>
#include <vector>

#include "gpusafe/detail/pool/free_slots.hpp"

namespace gd = gpusafe::detail;

namespace {

auto never_idle = [](std::uint32_t) { return false; };

TEST(SlotBitmap, StartsClosedAndOpensExactlyItsCount) {
  gd::SlotBitmap b;
  b.init(130);  // three words, the last one partial
  EXPECT_EQ(b.nwords(), 3u);
  EXPECT_EQ(b.free_count(), 0u);
  std::uint32_t out[gd::kMagazineMax];
  EXPECT_EQ(b.take(4, out, never_idle), 0u);
  b.open_all();
  EXPECT_EQ(b.free_count(), 130u);
  std::set<std::uint32_t> seen;
  for (;;) {
    const std::uint32_t n = b.take(gd::kMagazineMax, out, never_idle);
    if (n == 0) break;
    for (std::uint32_t i = 0; i < n; ++i) {
      EXPECT_LT(out[i], 130u);
      EXPECT_TRUE(seen.insert(out[i]).second) << "slot taken twice";
    }
  }
  EXPECT_EQ(seen.size(), 130u);
  EXPECT_EQ(b.free_count(), 0u);
}

TEST(SlotBitmap, TakesABatchFromOneWordAtOnce) {
  gd::SlotBitmap b;
  b.init(64);
  b.open_all();
  std::uint32_t out[8];
  EXPECT_EQ(b.take(8, out, never_idle), 8u);
  for (std::uint32_t i = 0; i < 8; ++i) EXPECT_EQ(out[i], i) << "lowest slots first";
  EXPECT_EQ(b.free_count(), 56u);
  b.give(3);
  b.give_bits(0, 0x3);  // slots 0 and 1
  EXPECT_EQ(b.free_count(), 59u);
}

TEST(SlotBitmap, PendingSlotsAreTakenOnlyWhenIdle) {
  gd::SlotBitmap b;
  b.init(4);
  b.open_all();
  std::uint32_t out[4];
  ASSERT_EQ(b.take(4, out, never_idle), 4u);
  b.mark_pending(2);
  b.give(2);
  EXPECT_EQ(b.pending_count(), 1u);
  EXPECT_FALSE(b.idle_slot_visible());
  EXPECT_EQ(b.take(1, out, never_idle), 0u) << "stream work still pending";
  EXPECT_EQ(b.free_count(), 1u) << "given back after the query";
  b.give(0);
  EXPECT_TRUE(b.idle_slot_visible());
  ASSERT_EQ(b.take(1, out, never_idle), 1u);
  EXPECT_EQ(out[0], 0u) << "idle slots are preferred";
  bool asked = false;
  ASSERT_EQ(b.take(1, out,
                   [&](std::uint32_t slot) {
                     asked = slot == 2;
                     return true;
                   }),
            1u);
  EXPECT_TRUE(asked);
  EXPECT_EQ(out[0], 2u);
  EXPECT_EQ(b.pending_count(), 0u);
  b.give(2);
  EXPECT_EQ(b.pending_count(), 0u) << "the pending mark was cleared when taken";
}

TEST(SlotBitmap, CloseIfAllFreeChangesNothingWhenASlotIsOut) {
  gd::SlotBitmap b;
  b.init(100);
  b.open_all();
  std::uint32_t out[1];
  ASSERT_EQ(b.take(1, out, never_idle), 1u);
  EXPECT_FALSE(b.close_if_all_free());
  EXPECT_EQ(b.free_count(), 99u);
  b.give(out[0]);
  EXPECT_TRUE(b.close_if_all_free());
  EXPECT_EQ(b.free_count(), 0u);
  b.reopen_all();
  EXPECT_EQ(b.free_count(), 100u);
  b.close_all();
  EXPECT_EQ(b.take(1, out, never_idle), 0u);
}

TEST(SlotBitmap, ConcurrentTakesAndGivesNeverDuplicateASlot) {
  gd::SlotBitmap b;
  b.init(200);
  b.open_all();
  std::unique_ptr<std::atomic<int>[]> owner(new std::atomic<int>[200]);
  for (int i = 0; i < 200; ++i) owner[i].store(0);
  std::atomic<int> duplicates{0};
  std::vector<std::thread> threads;
  for (int t = 1; t <= 4; ++t) {
    threads.emplace_back([&, t] {
      std::uint32_t out[gd::kMagazineMax];
      for (int round = 0; round < 20000; ++round) {
        const std::uint32_t n = b.take(1 + round % gd::kMagazineMax, out, never_idle);
        for (std::uint32_t i = 0; i < n; ++i)
          if (owner[out[i]].exchange(t) != 0) duplicates.fetch_add(1);
        for (std::uint32_t i = 0; i < n; ++i) {
          owner[out[i]].store(0);
          b.give(out[i]);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(duplicates.load(), 0);
  EXPECT_EQ(b.free_count(), 200u);
}

TEST(Magazine, IsAStackOfSlotsWithOwnerWrittenCounters) {
  gd::Magazine m;
  m.capacity = 3;
  int slab = 0;
  EXPECT_EQ(m.count(), 0u);
  m.push(&slab, 1);
  m.push(&slab, 2);
  m.push(&slab, 3);
  EXPECT_TRUE(m.full());
  EXPECT_EQ(m.pop().slot, 3u);
  EXPECT_EQ(m.pop().slot, 2u);
  EXPECT_EQ(m.pop().slab, &slab);
  EXPECT_EQ(m.count(), 0u);
  gd::bump(m.acquires);
  gd::bump(m.acquires);
  EXPECT_EQ(m.acquires.load(), 2u);
}

/// An owner that records its caches' retirement.
class RecordingOwner final : public gd::PoolCacheOwner {
 public:
  void retire_thread_cache(gd::ThreadCache* cache) noexcept override {
    retired.fetch_add(1);
    delete cache;
  }
  bool cache_owner_orphaned() const noexcept override { return orphaned.load(); }
  std::atomic<int> retired{0};
  std::atomic<bool> orphaned{false};
};

TEST(ThreadCacheTable, FindsInsertsAndRetiresAtThreadExit) {
  RecordingOwner a, b;
  std::thread([&] {
    EXPECT_EQ(gd::find_thread_cache(&a), nullptr);
    auto* ca = new gd::ThreadCache(&a, 2);
    ASSERT_TRUE(gd::insert_thread_cache(ca));
    auto* cb = new gd::ThreadCache(&b, 1);
    ASSERT_TRUE(gd::insert_thread_cache(cb));
    EXPECT_EQ(gd::find_thread_cache(&b), cb);
    EXPECT_EQ(gd::find_thread_cache(&a), ca) << "found beyond the first entry";
    EXPECT_EQ(gd::find_thread_cache(&a), ca);
    EXPECT_EQ(ca->nclasses(), 2u);
  }).join();
  EXPECT_EQ(a.retired.load(), 1) << "flushed when the thread exited";
  EXPECT_EQ(b.retired.load(), 1);
}

TEST(ThreadCacheTable, DropsCachesOfDeadPoolsAndTheLeastRecentlyUsedWhenFull) {
  std::vector<std::unique_ptr<RecordingOwner>> owners;
  for (std::uint32_t i = 0; i < gd::kThreadCacheEntries + 2; ++i)
    owners.push_back(std::make_unique<RecordingOwner>());
  std::thread([&] {
    for (std::uint32_t i = 0; i < gd::kThreadCacheEntries; ++i)
      ASSERT_TRUE(gd::insert_thread_cache(new gd::ThreadCache(owners[i].get(), 1)));
    EXPECT_EQ(owners[0]->retired.load(), 0);
    ASSERT_TRUE(
        gd::insert_thread_cache(new gd::ThreadCache(owners[gd::kThreadCacheEntries].get(), 1)));
    EXPECT_EQ(owners[0]->retired.load(), 1) << "the least recently used went";
    owners[3]->orphaned.store(true);
    ASSERT_TRUE(
        gd::insert_thread_cache(new gd::ThreadCache(owners[gd::kThreadCacheEntries + 1].get(), 1)));
    EXPECT_EQ(owners[3]->retired.load(), 1) << "a dead pool's cache is dropped";
    gd::drop_thread_cache(owners[5].get());
    EXPECT_EQ(owners[5]->retired.load(), 1);
    EXPECT_EQ(gd::find_thread_cache(owners[5].get()), nullptr);
  }).join();
  for (auto& o : owners) EXPECT_EQ(o->retired.load(), 1);
}

}  // namespace
