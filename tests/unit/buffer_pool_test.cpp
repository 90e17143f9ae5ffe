// Unit tests of gpusafe/buffer_pool.hpp, mostly on FakeRuntime, plus the CPU fallback of
// DefaultRuntime on machines without a GPU.
#include "gpusafe/buffer_pool.hpp"

#include <gtest/gtest.h>
#include <malloc.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "../support/child_process.hpp"
#include "gpusafe/testing/fake_runtime.hpp"

// Pointer-sized allocations on this thread can be made to fail, to test the pool's behaviour
// when a vector of slab pointers cannot grow.
namespace alloc_probe {
thread_local bool armed = false;
thread_local int seen = 0;     // pointer-sized allocations while armed
thread_local int fail_at = 0;  // 1-based; 0: none fails
}  // namespace alloc_probe

// ASan brings its own operator new and checks that every delete matches it: the probe is left
// out there (and its one test skipped).
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define GPUSAFE_TEST_ALLOC_PROBE 0
#else
#define GPUSAFE_TEST_ALLOC_PROBE 1
void* operator new(std::size_t n) {
  if (alloc_probe::armed && n == sizeof(void*) && ++alloc_probe::seen == alloc_probe::fail_at)
    throw std::bad_alloc();
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
// The replacement new above is malloc-based, so free() is the matching release.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif  // GPUSAFE_TEST_ALLOC_PROBE

namespace gs = gpusafe;
using gs::testing::FakeOp;
using gs::testing::FakeRuntime;
using FakePool = gs::BasicBufferPool<FakeRuntime>;

namespace {

gs::BufferPoolOptions device_options(std::vector<gs::SizeClass> classes,
                                     std::string name = "frames") {
  gs::BufferPoolOptions o;
  o.kind = gs::MemoryKind::device;
  o.classes = std::move(classes);
  o.name = std::move(name);
  return o;
}

/// Expects `fn` to throw E with every fragment in its message.
template <class E, class Fn>
void expect_throw_with(Fn&& fn, std::vector<std::string> fragments) {
  try {
    fn();
    ADD_FAILURE() << "no exception";
  } catch (const E& e) {
    const std::string m = e.what();
    for (const auto& f : fragments)
      EXPECT_NE(m.find(f), std::string::npos) << m << "\nmissing: " << f;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
  }
}

class BufferPoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    FakeRuntime::reset(2);
    // Other tests bump epochs and poison devices; start from a clean device 0 and 1.
    for (int d = 0; d < 2; ++d)
      if (gs::device_is_poisoned(d)) gs::notify_device_reset(d);
    baseline_ = FakeRuntime::live_allocations();
  }
  std::size_t baseline_ = 0;
};

TEST_F(BufferPoolTest, PreallocatesOneSlabPerClassAndNoCallsOnTheHotPath) {
  FakePool pool(device_options({{4096, 8}, {1 << 20, 2}}));
  EXPECT_EQ(FakeRuntime::calls(FakeOp::allocate), 2u);
  EXPECT_EQ(FakeRuntime::live_allocations(), baseline_ + 2);
  const auto calls = FakeRuntime::total_calls();
  for (int i = 0; i < 1000; ++i) {
    auto a = pool.acquire(100);
    auto b = pool.acquire(5000);
    ASSERT_TRUE(a && b);
  }
  EXPECT_EQ(FakeRuntime::total_calls(), calls) << "acquire/release must not call the runtime";
}

TEST_F(BufferPoolTest, PicksTheSmallestClassThatFits) {
  FakePool pool(device_options({{256, 2}, {4096, 2}, {65536, 2}}));
  auto a = pool.acquire(1);
  auto b = pool.acquire(257);
  auto c = pool.acquire(4096);
  auto d = pool.acquire(4097);
  EXPECT_EQ(a.capacity(), 256u);
  EXPECT_EQ(b.capacity(), 4096u);
  EXPECT_EQ(c.capacity(), 4096u);
  EXPECT_EQ(d.capacity(), 65536u);
  EXPECT_EQ(b.size(), 257u);
  EXPECT_EQ(a.kind(), gs::MemoryKind::device);
  EXPECT_EQ(a.device(), 0);
  EXPECT_FALSE(a.is_fallback());
  EXPECT_FALSE(a.is_overflow());
  EXPECT_STREQ(a.pool_name(), "frames");
  for (auto* l : {&a, &b, &c, &d}) EXPECT_EQ(reinterpret_cast<std::uintptr_t>(l->data()) % 256, 0u);
}

TEST_F(BufferPoolTest, CapacityIsExactAndBuffersAreDistinct) {
  FakePool pool(device_options({{1024, 130}}));  // three bitmap words, the last one partial
  std::vector<gs::BufferLease> leases;
  std::set<void*> seen;
  for (int i = 0; i < 130; ++i) {
    leases.push_back(pool.acquire(1024));
    EXPECT_TRUE(seen.insert(leases.back().data()).second) << "buffer handed out twice";
  }
  EXPECT_FALSE(pool.try_acquire(1));
  auto st = pool.stats();
  EXPECT_EQ(st.classes[0].in_use, 130u);
  EXPECT_EQ(st.classes[0].available, 0u);
  EXPECT_EQ(st.classes[0].high_water, 130u);
  EXPECT_EQ(st.classes[0].failures, 1u);
  leases.clear();
  st = pool.stats();
  EXPECT_EQ(st.classes[0].in_use, 0u);
  EXPECT_EQ(st.classes[0].available, 130u);
  EXPECT_EQ(st.classes[0].acquires, 130u);
}

TEST_F(BufferPoolTest, ExhaustionThrowsPoolExhaustedNamingClassAndOccupancy) {
  FakePool pool(device_options({{4096, 2}, {1048576, 8}}));
  std::vector<gs::BufferLease> held;
  for (int i = 0; i < 8; ++i) held.push_back(pool.acquire(1048576));
  expect_throw_with<gs::PoolExhausted>(
      [&] { pool.acquire(1048576); },
      {"acquire(1048576 bytes) from pool 'frames'", "size class 1048576 has 8/8 buffers leased",
       "acquire_for()", "overflow"});
  EXPECT_FALSE(pool.try_acquire(1048576));
  EXPECT_TRUE(pool.try_acquire(4096)) << "other classes are unaffected";
  EXPECT_EQ(pool.stats().classes[1].failures, 2u);
  held.pop_back();
  EXPECT_TRUE(pool.try_acquire(1048576));
}

TEST_F(BufferPoolTest, BadRequestsAreTypedErrors) {
  FakePool pool(device_options({{4096, 2}}));
  expect_throw_with<gs::InvalidArgument>([&] { pool.acquire(0); }, {"'frames'", "zero bytes"});
  expect_throw_with<gs::InvalidArgument>([&] { pool.acquire(4097); },
                                         {"4097", "largest size class (4096)", "add a class"});
  expect_throw_with<gs::InvalidArgument>(
      [&] { pool.acquire(std::numeric_limits<std::size_t>::max()); }, {"'frames'", "overflow"});
  EXPECT_THROW(pool.try_acquire(0), gs::InvalidArgument) << "try_acquire only hides exhaustion";
  EXPECT_THROW(pool.acquire_for(0, std::chrono::milliseconds(1)), gs::InvalidArgument);
}

TEST_F(BufferPoolTest, BadOptionsAreTypedErrorsAndAllocateNothing) {
  auto expect_bad = [&](gs::BufferPoolOptions o, std::vector<std::string> fragments) {
    const auto calls = FakeRuntime::calls(FakeOp::allocate);
    fragments.push_back("'bad'");
    o.name = "bad";
    expect_throw_with<gs::InvalidArgument>([&] { FakePool p(o); }, fragments);
    EXPECT_EQ(FakeRuntime::calls(FakeOp::allocate), calls);
  };
  expect_bad(device_options({}), {"no size classes"});
  expect_bad(device_options({{4096, 2}, {1024, 2}}), {"ascending", "unsorted"});
  expect_bad(device_options({{4096, 2}, {4096, 2}}), {"ascending", "duplicate"});
  expect_bad(device_options({{4096, 0}}), {"count is zero"});
  expect_bad(device_options({{0, 3}}), {"zero bytes"});
  expect_bad(device_options({{std::numeric_limits<std::size_t>::max(), 1}}), {"overflow"});
  expect_bad(device_options({{std::size_t{1} << 40, std::size_t{1} << 30}}), {"overflows"});
  for (std::size_t a : {std::size_t{0}, std::size_t{3}, std::size_t{384}}) {
    auto o = device_options({{4096, 1}});
    o.alignment = a;
    expect_bad(o, {"alignment " + std::to_string(a), "power of two"});
  }
}

TEST_F(BufferPoolTest, FailedConstructionLeaksNothingForEveryFailingAllocation) {
  for (std::uint64_t k = 1; k <= 3; ++k) {
    FakeRuntime::reset(2);
    const auto before = FakeRuntime::live_allocations();
    FakeRuntime::fail_nth_allocation(k);
    expect_throw_with<gs::OutOfMemory>(
        [&] {
          FakePool p(device_options({{256, 4}, {4096, 4}, {65536, 4}}));
        },
        {"BufferPool 'frames'", "allocating size class"});
    EXPECT_EQ(FakeRuntime::live_allocations(), before) << "k=" << k;
    EXPECT_EQ(FakeRuntime::invalid_frees(), 0u);
  }
  // An event that cannot be created fails construction the same way.
  FakeRuntime::reset(2);
  const auto before = FakeRuntime::live_allocations();
  FakeRuntime::fail_call(FakeOp::event_create, gs::codes::memory_allocation, 5);
  EXPECT_THROW(FakePool p(device_options({{256, 4}, {4096, 4}})), gs::OutOfMemory);
  EXPECT_EQ(FakeRuntime::live_allocations(), before);
  EXPECT_EQ(FakeRuntime::calls(FakeOp::event_destroy), FakeRuntime::calls(FakeOp::event_create) - 1)
      << "every event created was destroyed";
  // And a pool destroyed normally frees its slabs and events.
  FakeRuntime::reset(2);
  { FakePool p(device_options({{256, 4}, {4096, 4}})); }
  EXPECT_EQ(FakeRuntime::live_allocations(), before);
  EXPECT_EQ(FakeRuntime::calls(FakeOp::event_destroy), FakeRuntime::calls(FakeOp::event_create));
}

TEST_F(BufferPoolTest, AlignmentOptionIsHonoured) {
  auto o = device_options({{100, 5}});
  o.alignment = 4096;
  FakePool pool(o);
  std::vector<gs::BufferLease> leases;
  for (int i = 0; i < 5; ++i) {
    leases.push_back(pool.acquire(100));
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(leases.back().data()) % 4096, 0u);
  }
  std::memset(leases.back().data(), 0xab, 100);  // the host memory behind FakeRuntime is real
}

struct alignas(512) Wide {
  char bytes[512];
};

TEST_F(BufferPoolTest, AsIsCheckedForSizeAndAlignment) {
  FakePool pool(device_options({{512, 2}, {4096, 1}}));
  auto small = pool.acquire(8);
  EXPECT_NE(small.as<std::uint64_t>(), nullptr);
  expect_throw_with<gs::InvalidArgument>([&] { small.as<double[2]>(); },
                                         {"pool 'frames'", "smaller than one T", "16"});
  gs::BufferLease empty;
  EXPECT_THROW(empty.as<int>(), gs::InvalidArgument);
}

TEST_F(BufferPoolTest, AsRejectsMisalignedBuffers) {
  // Slots 768 bytes apart from a 256-aligned base: exactly one of two is 512-aligned.
  FakePool pool(device_options({{768, 2}}));
  auto a = pool.acquire(768);
  auto b = pool.acquire(768);
  int thrown = 0;
  for (auto* l : {&a, &b}) {
    try {
      EXPECT_EQ(reinterpret_cast<std::uintptr_t>(l->as<Wide>()) % 512, 0u);
    } catch (const gs::InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("not aligned"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("'frames'"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("alignment to 512"), std::string::npos) << e.what();
      ++thrown;
    }
  }
  EXPECT_EQ(thrown, 1);
}

TEST_F(BufferPoolTest, OverflowAllocatesOutsideThePoolAndCountsIt) {
  auto o = device_options({{4096, 1}});
  o.overflow = gs::OverflowPolicy::allocate;
  FakePool pool(o);
  auto a = pool.acquire(4096);
  const auto allocs = FakeRuntime::calls(FakeOp::allocate);
  auto b = pool.acquire(4096);
  auto big = pool.acquire(1 << 20);
  EXPECT_TRUE(b.is_overflow());
  EXPECT_TRUE(big.is_overflow());
  EXPECT_FALSE(a.is_overflow());
  EXPECT_EQ(big.capacity(), std::size_t{1} << 20);
  EXPECT_EQ(FakeRuntime::calls(FakeOp::allocate), allocs + 2);
  auto st = pool.stats();
  EXPECT_EQ(st.classes[0].overflow, 1u);
  EXPECT_EQ(st.totals.overflow, 2u);
  EXPECT_EQ(st.overflow_live, 2u);
  EXPECT_EQ(st.overflow_bytes_live, 4096u + (1u << 20));
  EXPECT_THROW(pool.acquire(std::numeric_limits<std::size_t>::max()), gs::InvalidArgument);
  b.release();
  big.release();
  EXPECT_EQ(pool.stats().overflow_live, 0u);
  EXPECT_EQ(FakeRuntime::live_allocations(), baseline_ + 1);
  EXPECT_EQ(FakeRuntime::invalid_frees(), 0u);
}

TEST_F(BufferPoolTest, LeaseIsMoveOnlyAndReleaseIsIdempotent) {
  static_assert(!std::is_copy_constructible<gs::BufferLease>::value, "move-only");
  static_assert(std::is_nothrow_move_constructible<gs::BufferLease>::value, "noexcept move");
  static_assert(std::is_nothrow_destructible<gs::BufferLease>::value, "noexcept destructor");
  FakePool pool(device_options({{4096, 1}}));
  gs::BufferLease a = pool.acquire(10);
  void* p = a.data();
  gs::BufferLease b = std::move(a);
  EXPECT_FALSE(a);
  EXPECT_EQ(a.data(), nullptr);
  EXPECT_EQ(b.data(), p);
  EXPECT_FALSE(pool.try_acquire(10));
  gs::BufferLease c;
  c = std::move(b);
  EXPECT_EQ(c.data(), p);
  c.release();
  c.release();
  EXPECT_FALSE(c);
  auto d = pool.acquire(10);
  EXPECT_EQ(d.data(), p);
  // try_acquire runs while d still holds the only slot; the assignment then releases it.
  d = pool.try_acquire(10);
  EXPECT_FALSE(d);
  EXPECT_EQ(pool.stats().classes[0].in_use, 0u);
  EXPECT_THROW(c.record_stream(nullptr), gs::InvalidArgument);
}

TEST_F(BufferPoolTest, LeaseOutlivesItsPool) {
  gs::BufferLease lease;
  {
    FakePool pool(device_options({{4096, 2}, {65536, 2}}));
    lease = pool.acquire(4000);
    std::memset(lease.data(), 1, 4000);
  }
  // The idle class was freed with the pool; the leased one waits for its lease.
  EXPECT_EQ(FakeRuntime::live_allocations(), baseline_ + 1);
  EXPECT_STREQ(lease.pool_name(), "frames");
  std::memset(lease.data(), 2, 4000);
  lease.release();
  EXPECT_EQ(FakeRuntime::live_allocations(), baseline_);
  EXPECT_EQ(FakeRuntime::invalid_frees(), 0u);
}

TEST_F(BufferPoolTest, ReclaimableHandleOutlivesThePoolAndSlabsStillGetFreed) {
  const auto registered = gs::registered_reclaimable_count();
  std::shared_ptr<gs::Reclaimable> handle;
  gs::BufferLease lease;
  {
    FakePool pool(device_options({{4096, 2}}, "camera"));
    EXPECT_EQ(gs::registered_reclaimable_count(), registered + 1);
    handle = pool.reclaimable();
    EXPECT_STREQ(handle->reclaimable_name(), "camera");
    lease = pool.acquire(100);
    const auto u = handle->usage();
    EXPECT_EQ(u.bytes_reserved, 2u * 4096u);
    EXPECT_EQ(u.bytes_in_use, 4096u);
    EXPECT_EQ(u.items, 1u);
    EXPECT_EQ(u.device, 0);
  }
  EXPECT_EQ(gs::registered_reclaimable_count(), registered);
  EXPECT_EQ(handle->reclaim({}), 0u) << "a dead pool's handle reclaims nothing";
  EXPECT_EQ(FakeRuntime::live_allocations(), baseline_ + 1);
  lease.release();
  EXPECT_EQ(FakeRuntime::live_allocations(), baseline_) << "freed when the last lease returned";
  EXPECT_EQ(handle->usage().bytes_reserved, 0u);
}

TEST_F(BufferPoolTest, TrimFreesIdleSlabsAndTheNextAcquireReallocates) {
  FakePool pool(device_options({{4096, 4}, {65536, 2}}));
  auto held = pool.acquire(65536);
  const auto allocs = FakeRuntime::calls(FakeOp::allocate);
  EXPECT_EQ(pool.trim(), 4u * 4096u) << "only the idle class is freed";
  EXPECT_EQ(FakeRuntime::live_allocations(), baseline_ + 1);
  auto st = pool.stats();
  EXPECT_FALSE(st.classes[0].resident);
  EXPECT_TRUE(st.classes[1].resident);
  EXPECT_EQ(st.classes[0].bytes_reserved, 0u);
  auto again = pool.acquire(10);
  EXPECT_EQ(FakeRuntime::calls(FakeOp::allocate), allocs + 1) << "lazy re-allocation";
  EXPECT_TRUE(pool.stats().classes[0].resident);
  EXPECT_EQ(pool.trim(), 0u) << "both classes have a lease out";
}

TEST_F(BufferPoolTest, ReclaimAllAndShutdownTrimAndReportOutstandingLeasesOnce) {
  auto o = device_options({{4096, 2}, {8192, 1}}, "shut");
  o.track_leases = true;
  FakePool pool(o);
  auto held = pool.acquire(8000, GPUSAFE_LEASE_TAG("kept"));
  std::vector<std::string> logged;
  auto previous =
      gs::set_log_sink([&](gs::LogLevel, std::string_view m) { logged.emplace_back(m); });
  gs::ReclaimRequest light;
  light.level = gs::ReclaimLevel::light;
  EXPECT_EQ(pool.reclaimable()->reclaim(light), 0u);
  EXPECT_GE(gs::reclaim_all(), 2u * 4096u);
  EXPECT_FALSE(pool.stats().classes[0].resident);
  gs::shutdown();
  gs::shutdown();
  gs::set_log_sink(previous);
  int reports = 0;
  for (const auto& m : logged)
    if (m.find("'shut'") != std::string::npos) {
      ++reports;
      EXPECT_NE(m.find("[kept]"), std::string::npos) << m;
      EXPECT_NE(m.find("buffer_pool_test.cpp"), std::string::npos) << m;
    }
  EXPECT_EQ(reports, 1) << "the shutdown report is logged once";
  auto after = pool.acquire(10);  // still works after shutdown (slow path)
  EXPECT_TRUE(after);
}

TEST_F(BufferPoolTest, StatsCountAcquiresHighWaterAndWaits) {
  FakePool pool(device_options({{4096, 4}}));
  {
    auto a = pool.acquire(1);
    auto b = pool.acquire(1);
    auto c = pool.acquire(1);
  }
  auto d = pool.acquire(1);
  const auto st = pool.stats();
  EXPECT_EQ(st.name, "frames");
  EXPECT_EQ(st.classes[0].capacity, 4u);
  EXPECT_EQ(st.classes[0].acquires, 4u);
  EXPECT_EQ(st.classes[0].in_use, 1u);
  EXPECT_EQ(st.classes[0].high_water, 3u);
  EXPECT_EQ(st.classes[0].waits, 0u);
  EXPECT_EQ(st.classes[0].fallback, 0u);
  EXPECT_EQ(st.totals.capacity, 4u);
  EXPECT_EQ(st.totals.acquires, 4u);
  EXPECT_EQ(st.totals.bytes_reserved, 4u * 4096u);
  EXPECT_FALSE(st.fallback);
}

TEST_F(BufferPoolTest, AcquireForWakesUpOnRelease) {
  FakePool pool(device_options({{4096, 1}}));
  auto held = pool.acquire(1);
  void* p = held.data();
  const auto t0 = std::chrono::steady_clock::now();  // before the releaser can start its sleep
  std::thread releaser([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    held.release();
  });
  auto got = pool.acquire_for(1, std::chrono::seconds(10));
  const auto waited = std::chrono::steady_clock::now() - t0;
  releaser.join();
  EXPECT_EQ(got.data(), p);
  EXPECT_LT(waited, std::chrono::seconds(5)) << "woken by the release, not by the timeout";
  EXPECT_GE(waited, std::chrono::milliseconds(40));
  EXPECT_EQ(pool.stats().classes[0].waits, 1u);
}

TEST_F(BufferPoolTest, AcquireForTimesOut) {
  FakePool pool(device_options({{4096, 1}}));
  auto held = pool.acquire(1);
  const auto t0 = std::chrono::steady_clock::now();
  expect_throw_with<gs::Timeout>([&] { pool.acquire_for(1, std::chrono::milliseconds(30)); },
                                 {"1/1 buffers leased", "timed out"});
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(30));
  const auto st = pool.stats();
  EXPECT_EQ(st.classes[0].waits, 1u);
  EXPECT_EQ(st.classes[0].failures, 1u);
  held.release();
  auto free_now = pool.acquire_for(4096, std::chrono::milliseconds(0), GPUSAFE_HERE);
  EXPECT_TRUE(free_now) << "no wait when a buffer is free";
  EXPECT_EQ(pool.stats().classes[0].waits, 1u);
}

TEST_F(BufferPoolTest, RecordStreamDelaysReuseUntilTheStreamFinishes) {
  FakePool pool(device_options({{4096, 1}}));
  auto stream = FakeRuntime::create_stream();
  {
    auto lease = pool.acquire(100);
    FakeRuntime::enqueue_work(stream);  // a kernel that uses the buffer
    lease.record_stream(stream);
  }
  EXPECT_EQ(FakeRuntime::calls(FakeOp::event_record), 1u);
  expect_throw_with<gs::PoolExhausted>([&] { pool.acquire(100); }, {"wait for stream work"});
  EXPECT_FALSE(pool.try_acquire(100));
  EXPECT_EQ(pool.trim(), 0u) << "memory with pending stream work is not freed";
  FakeRuntime::complete_stream(stream);
  auto again = pool.acquire(100);
  EXPECT_TRUE(again);
  FakeRuntime::destroy_stream(stream);
}

TEST_F(BufferPoolTest, PendingSlotsAreSkippedInFavourOfIdleOnes) {
  FakePool pool(device_options({{4096, 2}}));
  auto stream = FakeRuntime::create_stream();
  auto a = pool.acquire(1);
  void* busy = a.data();
  FakeRuntime::enqueue_work(stream);
  a.record_stream(stream);
  a.release();
  auto b = pool.acquire(1);
  EXPECT_NE(b.data(), busy);
  EXPECT_FALSE(pool.try_acquire(1));
  // acquire_for polls pending slots (the fake's streams are single-threaded, so the stream is
  // completed between two calls here rather than from another thread).
  expect_throw_with<gs::Timeout>([&] { pool.acquire_for(1, std::chrono::milliseconds(5)); },
                                 {"wait for stream work"});
  FakeRuntime::complete_stream(stream);
  auto c = pool.acquire_for(1, std::chrono::seconds(10));
  EXPECT_EQ(c.data(), busy) << "completing the stream frees the slot without a release";
  EXPECT_EQ(pool.stats().classes[0].waits, 1u);
  c.release();
  b.release();
  FakeRuntime::destroy_stream(stream);
}

TEST_F(BufferPoolTest, RecordStreamIsIgnoredForHostMemory) {
  auto o = device_options({{4096, 1}});
  o.kind = gs::MemoryKind::host;
  FakePool pool(o);
  EXPECT_EQ(FakeRuntime::calls(FakeOp::event_create), 0u);
  auto stream = FakeRuntime::create_stream();
  {
    auto lease = pool.acquire(1);
    FakeRuntime::enqueue_work(stream);
    lease.record_stream(stream);
  }
  EXPECT_TRUE(pool.acquire(1));
  FakeRuntime::destroy_stream(stream);
}

TEST_F(BufferPoolTest, DeviceResetDropsOldBuffersAndAllocatesAFreshSlab) {
  FakePool pool(device_options({{4096, 2}}));
  auto old_lease = pool.acquire(1);
  char* old_base = static_cast<char*>(old_lease.data());
  const auto allocs = FakeRuntime::calls(FakeOp::allocate);
  const auto frees = FakeRuntime::calls(FakeOp::deallocate);
  gs::notify_device_reset(0);
  old_lease.release();
  EXPECT_EQ(FakeRuntime::calls(FakeOp::deallocate), frees) << "old-epoch buffers are not freed";
  EXPECT_EQ(pool.stats().classes[0].dropped, 1u);
  auto fresh = pool.acquire(1);
  EXPECT_EQ(FakeRuntime::calls(FakeOp::allocate), allocs + 1) << "a fresh slab";
  char* p = static_cast<char*>(fresh.data());
  // The old slab (its first slot leased above) spanned [old_base, old_base + 2 * 4096); a fresh
  // allocation may start right after it.
  EXPECT_TRUE(p + 4096 <= old_base || p >= old_base + 2 * 4096) << "old memory is never reused";
  auto second = pool.acquire(1);
  EXPECT_FALSE(pool.try_acquire(1)) << "the fresh slab has the full capacity, no more";
  EXPECT_EQ(pool.stats().classes[0].in_use, 2u);
  fresh.release();
  second.release();
  EXPECT_EQ(pool.trim(), 2u * 4096u);
  EXPECT_EQ(FakeRuntime::calls(FakeOp::deallocate), frees + 1);
}

TEST_F(BufferPoolTest, ResetDoesNotAffectHostPools) {
  auto o = device_options({{4096, 1}});
  o.kind = gs::MemoryKind::host;
  FakePool pool(o);
  void* p = pool.acquire(1).data();
  const auto allocs = FakeRuntime::calls(FakeOp::allocate);
  gs::notify_device_reset(0);
  EXPECT_EQ(pool.acquire(1).data(), p);
  EXPECT_EQ(FakeRuntime::calls(FakeOp::allocate), allocs);
}

TEST_F(BufferPoolTest, PoisonedDeviceRefusesAcquiresAndDropsReleases) {
  FakePool pool(device_options({{4096, 2}}));
  auto lease = pool.acquire(1);
  // A sticky error seen by any runtime call poisons the device.
  FakeRuntime::fail_call(FakeOp::synchronize, gs::codes::illegal_address);
  EXPECT_EQ(gs::detail::RuntimeCalls<FakeRuntime>::synchronize(0).code, gs::codes::illegal_address);
  ASSERT_TRUE(gs::device_is_poisoned(0));
  expect_throw_with<gs::DevicePoisoned>([&] { pool.acquire(1); },
                                        {"'frames'", "notify_device_reset(0)"});
  EXPECT_THROW(pool.try_acquire(1), gs::DevicePoisoned);
  const auto calls = FakeRuntime::total_calls();
  lease.release();
  EXPECT_EQ(FakeRuntime::total_calls(), calls) << "releases on a poisoned device make no call";
  EXPECT_EQ(pool.stats().classes[0].dropped, 1u);
  gs::notify_device_reset(0);
  auto fresh = pool.acquire(1);
  EXPECT_TRUE(fresh);
}

TEST_F(BufferPoolTest, PoolOnAnotherDeviceRestoresTheCurrentDevice) {
  auto o = device_options({{4096, 2}});
  o.device = 1;
  FakePool pool(o);
  int current = -1;
  ASSERT_TRUE(FakeRuntime::get_device(current).ok());
  EXPECT_EQ(current, 0);
  EXPECT_EQ(FakeRuntime::bytes_in_use(1), 2u * 4096u);
  EXPECT_EQ(pool.acquire(1).device(), 1);
  pool.trim();
  ASSERT_TRUE(FakeRuntime::get_device(current).ok());
  EXPECT_EQ(current, 0);
  EXPECT_EQ(FakeRuntime::bytes_in_use(1), 0u);
}

TEST_F(BufferPoolTest, ForkedChildReleasesWithoutRuntimeCallsAndRefusesDeviceAcquires) {
  auto dev = std::make_unique<FakePool>(device_options({{4096, 4}}, "dev"));
  auto ho = device_options({{4096, 4}}, "host");
  ho.kind = gs::MemoryKind::host;
  auto host = std::make_unique<FakePool>(ho);
  auto dev_lease = dev->acquire(1);
  auto host_lease = host->acquire(1);
  auto stream = FakeRuntime::create_stream();
  dev_lease.record_stream(stream);
  const int rc = gpusafe_test::run_in_child([&] {
    const auto calls = FakeRuntime::total_calls();
    dev_lease.release();
    host_lease.release();
    if (FakeRuntime::total_calls() != calls) return 10;
    try {
      (void)dev->acquire(1);
      return 11;
    } catch (const gs::ForkedChild&) {
    } catch (...) {
      return 12;
    }
    try {
      auto h = host->acquire(1);  // host pools keep working
      if (!h) return 13;
      std::memset(h.data(), 7, 4096);
    } catch (...) {
      return 14;
    }
    dev.reset();
    host.reset();
    return FakeRuntime::total_calls() != calls ? 15 : 0;
  });
  EXPECT_EQ(rc, 0) << "child check failed with code " << rc;
  // The fake's events point at their stream: release and trim before the stream goes.
  dev_lease.release();
  dev.reset();
  FakeRuntime::destroy_stream(stream);
}

TEST_F(BufferPoolTest, TrackingReportsWhereLeasesWereTaken) {
  auto o = device_options({{4096, 4}}, "tracked");
  o.track_leases = true;
  o.overflow = gs::OverflowPolicy::allocate;
  FakePool pool(o);
  auto a = pool.acquire(100, GPUSAFE_LEASE_TAG("decoder"));
  const int line_b = __LINE__ + 1;
  auto b = pool.acquire(200);
  auto c = pool.acquire(1 << 16, GPUSAFE_HERE);
  auto leases = pool.outstanding_leases();
  ASSERT_EQ(leases.size(), 3u);
  EXPECT_EQ(leases[0].tag, "decoder");
  EXPECT_EQ(leases[0].bytes, 100u);
  EXPECT_EQ(leases[0].class_bytes, 4096u);
  EXPECT_NE(leases[0].file.find("buffer_pool_test.cpp"), std::string::npos);
  EXPECT_EQ(leases[1].line, line_b) << "the default argument records the caller";
  EXPECT_TRUE(leases[2].overflow);
  // The leases are the LeakRecords every leak report uses: resource (also named pool), when
  // taken and how long ago.
  EXPECT_EQ(leases[0].resource, "tracked");
  EXPECT_EQ(leases[0].resource, "tracked");
  EXPECT_TRUE(leases[0].age_known);
  EXPECT_EQ(leases[0].leases, 1u);
  EXPECT_LE(leases[0].acquired, std::chrono::system_clock::now());
  EXPECT_GE(leases[0].age.count(), 0);
  const std::string report = pool.leak_report();
  EXPECT_NE(report.find("3 lease(s) outstanding"), std::string::npos) << report;
  EXPECT_NE(report.find("[decoder]"), std::string::npos) << report;
  EXPECT_NE(report.find("tracked: 100 B taken at "), std::string::npos) << report;
  EXPECT_NE(report.find("ago (class 4096)\n"), std::string::npos) << report;
  EXPECT_NE(report.find("ago (overflow)\n"), std::string::npos) << report;
  a.release();
  c.release();
  leases = pool.outstanding_leases();
  ASSERT_EQ(leases.size(), 1u);
  EXPECT_EQ(leases[0].bytes, 200u);
}

TEST_F(BufferPoolTest, TrackingOffRecordsNothing) {
  FakePool pool(device_options({{4096, 4}}));
  auto a = pool.acquire(100, GPUSAFE_LEASE_TAG("x"));
  EXPECT_TRUE(pool.outstanding_leases().empty());
  EXPECT_NE(pool.leak_report().find("enable BufferPoolOptions::track_leases"), std::string::npos);
}

TEST_F(BufferPoolTest, MovedPoolKeepsWorking) {
  FakePool a(device_options({{4096, 1}}));
  auto lease = a.acquire(1);
  FakePool b(std::move(a));
  EXPECT_FALSE(b.try_acquire(1));
  lease.release();
  EXPECT_TRUE(b.acquire(1));
  EXPECT_EQ(b.name(), "frames");
}

TEST_F(BufferPoolTest, NoGpuFallsBackToHostOrThrows) {
  FakeRuntime::set_mode(gs::testing::FakeMode::no_driver);
  FakePool pool(device_options({{4096, 2}}, "fb"));
  EXPECT_TRUE(pool.is_fallback());
  EXPECT_EQ(pool.kind(), gs::MemoryKind::host);
  EXPECT_EQ(FakeRuntime::calls(FakeOp::allocate), 0u) << "fallback memory comes from the host";
  auto lease = pool.acquire(10);
  EXPECT_TRUE(lease.is_fallback());
  EXPECT_EQ(lease.kind(), gs::MemoryKind::host);
  EXPECT_EQ(pool.stats().classes[0].fallback, 1u);
  EXPECT_TRUE(pool.stats().fallback);
  FakeRuntime::set_mode(gs::testing::FakeMode::no_device);
  auto o = device_options({{4096, 2}}, "strict");
  o.fallback = gs::Fallback::error;
  expect_throw_with<gs::NoGpu>([&] { FakePool p(o); }, {"'strict'", "Fallback::error"});
  FakeRuntime::set_mode(gs::testing::FakeMode::normal);
}

TEST_F(BufferPoolTest, FailingToRecordASlabLeaksNothing) {
  if (!GPUSAFE_TEST_ALLOC_PROBE) GTEST_SKIP() << "the allocation probe is off under ASan";
  const auto options = device_options({{256, 4}, {4096, 4}, {65536, 4}});
  alloc_probe::seen = 0;
  alloc_probe::fail_at = 0;
  alloc_probe::armed = true;
  { FakePool dry(options); }
  alloc_probe::armed = false;
  const int n = alloc_probe::seen;
  ASSERT_GE(n, 3) << "one slab pointer per class";
  for (int k = 1; k <= n; ++k) {
    FakeRuntime::reset(2);
    const auto before = FakeRuntime::live_allocations();
    alloc_probe::seen = 0;
    alloc_probe::fail_at = k;
    alloc_probe::armed = true;
    EXPECT_THROW(FakePool p(options), std::bad_alloc) << "k=" << k;
    alloc_probe::armed = false;
    EXPECT_EQ(FakeRuntime::live_allocations(), before) << "k=" << k;
    EXPECT_EQ(FakeRuntime::calls(FakeOp::event_destroy), FakeRuntime::calls(FakeOp::event_create))
        << "k=" << k;
  }
}

TEST_F(BufferPoolTest, AcquireForAcceptsAForeverTimeout) {
  FakePool pool(device_options({{4096, 1}}));
  auto held = pool.acquire(1);
  void* p = held.data();
  // Each wait is ended by a release 30 ms later; an overflowed deadline times out at once.
  auto wait_forever = [&](auto timeout) {
    std::thread releaser([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(30));
      held.release();
    });
    gs::BufferLease got;
    try {
      got = pool.acquire_for(1, timeout);
    } catch (const std::exception& e) {
      ADD_FAILURE() << e.what();
    }
    releaser.join();
    EXPECT_EQ(got.data(), p);
    held = std::move(got);
    if (!held) held = pool.acquire(1);
  };
  wait_forever(std::chrono::steady_clock::duration::max());
  wait_forever(std::chrono::milliseconds::max());
  wait_forever(std::chrono::hours::max());
  wait_forever(std::chrono::duration<double>(1e300));
}

TEST_F(BufferPoolTest, TrimLeavesAClassWithAWaiterToTheWaiter) {
  // Pinned memory has no events, so a waiter sleeps until notified (no polling).
  auto o = device_options({{4096, 1}});
  o.kind = gs::MemoryKind::pinned_host;
  FakePool pool(o);
  auto held = pool.acquire(1);
  void* p = held.data();
  gs::BufferLease got;
  std::thread waiter([&] { got = pool.acquire_for(1, std::chrono::seconds(20)); });
  while (pool.stats().classes[0].waits == 0) std::this_thread::yield();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the waiter is asleep
  const auto allocs = FakeRuntime::calls(FakeOp::allocate);
  const auto t0 = std::chrono::steady_clock::now();
  held.release();
  // Whether or not the waiter has woken yet, the buffer is its own: trim must not free it.
  EXPECT_EQ(pool.trim(), 0u);
  waiter.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
  EXPECT_EQ(got.data(), p);
  EXPECT_EQ(FakeRuntime::calls(FakeOp::allocate), allocs) << "the slab was not reallocated";
}

TEST_F(BufferPoolTest, ForkWaitsForThePoolListLock) {
  FakePool pool(device_options({{4096, 1}}));  // installs the fork handlers
  auto& list = gs::detail::fork_aware_list();
  std::atomic<bool> forked{false};
  list.mutex.lock();
  std::thread forker([&] {
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    if (pid == 0) ::_exit(0);
    forked.store(true);
    if (pid > 0) ::waitpid(pid, nullptr, 0);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_FALSE(forked.load()) << "fork() must wait while the list is being changed";
  list.mutex.unlock();
  forker.join();
  EXPECT_TRUE(forked.load());
  FakePool after_fork(device_options({{4096, 1}}));  // the list lock was released in the parent
}

TEST_F(BufferPoolTest, DeviceResetsRacingWithStreamReleasesAreSafe) {
  // Built with -fsanitize=thread this finds a retire that touches what lock-free takes and
  // releases read.
  // The fake's events point at their stream: it must outlive the pool (whose last trim queries).
  auto stream = FakeRuntime::create_stream();
  auto pool = std::make_unique<FakePool>(device_options({{4096, 64}}));
  std::atomic<bool> stop{false};
  std::thread user([&] {
    while (!stop.load()) {
      try {
        auto l = pool->try_acquire(1);
        if (l) l.record_stream(stream);
      } catch (const gs::Error&) {
      }
    }
  });
  for (int i = 0; i < 300; ++i) {
    gs::notify_device_reset(0);
    auto l = pool->acquire(1);
    EXPECT_TRUE(l);
  }
  stop.store(true);
  user.join();
  pool.reset();
  FakeRuntime::destroy_stream(stream);
}

// ---- growth --------------------------------------------------------------------------------

gs::BufferPoolOptions grow_options(std::size_t max_bytes) {
  auto o = device_options({{4096, 2}, {65536, 1}}, "grower");
  o.overflow = gs::OverflowPolicy::grow;
  o.max_bytes = max_bytes;
  return o;
}

TEST_F(BufferPoolTest, GrowDoublesAClassUpToMaxBytesAndTrimGivesWholeSlabsBack) {
  // First slabs: 2 * 4096 + 65536; room for the 4 KiB class to double twice (2 -> 4 -> 8).
  FakePool pool(grow_options(65536 + 8 * 4096));
  const auto allocs = FakeRuntime::calls(FakeOp::allocate);
  std::vector<gs::BufferLease> held;
  std::set<void*> seen;
  for (int i = 0; i < 8; ++i) {
    held.push_back(pool.acquire(100));
    EXPECT_TRUE(seen.insert(held.back().data()).second) << "buffer handed out twice";
  }
  EXPECT_EQ(FakeRuntime::calls(FakeOp::allocate), allocs + 2)
      << "one slab per growth, not per lease";
  auto st = pool.stats();
  EXPECT_EQ(st.classes[0].capacity, 8u);
  EXPECT_EQ(st.classes[0].slabs, 3u);
  EXPECT_EQ(st.classes[0].in_use, 8u);
  EXPECT_EQ(st.classes[0].bytes_reserved, 8u * 4096u);
  expect_throw_with<gs::PoolExhausted>([&] { pool.acquire(100); },
                                       {"8/8 buffers leased", "max_bytes 98304"});
  EXPECT_FALSE(pool.try_acquire(100));
  held.resize(2);  // the grown slabs are idle again (the first two leases came from the first)
  EXPECT_EQ(pool.trim(), 6u * 4096u + 65536u) << "whole idle slabs, and the idle 64 KiB class";
  st = pool.stats();
  EXPECT_EQ(st.classes[0].capacity, 2u);
  EXPECT_EQ(st.classes[0].slabs, 1u);
  EXPECT_EQ(FakeRuntime::live_allocations(), baseline_ + 1);
  held.push_back(pool.acquire(100));  // grows again
  EXPECT_EQ(pool.stats().classes[0].capacity, 4u);
  held.clear();
  EXPECT_EQ(pool.stats().classes[0].in_use, 0u);
}

TEST_F(BufferPoolTest, DeviceResetsRacingWithGrownClassesAreSafe) {
  // A reset retires every slab of a class while other threads scan the class's slab list
  // without its lock (taking slots, sampling the high-water mark): a scan that loaded the old
  // slab count must still find every slab it indexes.
  FakePool pool(grow_options(1 << 20));
  std::atomic<bool> stop{false};
  std::vector<std::thread> users;
  for (int t = 0; t < 2; ++t)
    users.emplace_back([&] {
      std::vector<gs::BufferLease> held;
      while (!stop.load()) {
        try {
          for (int i = 0; i < 6; ++i) held.push_back(pool.acquire(100));  // grows the class
        } catch (const gs::Error&) {
        }
        held.clear();
      }
    });
  for (int i = 0; i < 2000; ++i) {
    gs::notify_device_reset(0);
    EXPECT_TRUE(pool.acquire(100));
  }
  stop.store(true);
  for (auto& u : users) u.join();
}

TEST_F(BufferPoolTest, TrimAndGrowCyclesKeepHostMemoryFlat) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "mallinfo2() does not see a sanitizer's allocator";
#endif
  // A service whose timer trims between bursts: each burst grows the class again. The grown
  // slabs' bookkeeping must be reused, not made anew per cycle.
  FakePool pool(grow_options(65536 + 8 * 4096));
  auto burst_then_trim = [&pool] {
    std::vector<gs::BufferLease> held;
    for (int i = 0; i < 8; ++i) held.push_back(pool.acquire(100));  // two growths
    held.clear();
    EXPECT_GT(pool.trim(), 0u);
  };
  for (int i = 0; i < 20; ++i) burst_then_trim();
  const std::size_t before = ::mallinfo2().uordblks;
  for (int i = 0; i < 2000; ++i) burst_then_trim();
  const std::size_t after = ::mallinfo2().uordblks;
  EXPECT_LT(after, before + 16 * 1024) << "heap grew by " << after - before << " bytes";
  EXPECT_EQ(pool.stats().classes[0].capacity, 2u);
}

TEST_F(BufferPoolTest, GrowNeedsAMaxBytesThatCoversTheFirstSlabs) {
  auto bad = [&](gs::BufferPoolOptions o, std::vector<std::string> fragments) {
    const auto calls = FakeRuntime::calls(FakeOp::allocate);
    expect_throw_with<gs::InvalidArgument>([&] { FakePool p(o); }, fragments);
    EXPECT_EQ(FakeRuntime::calls(FakeOp::allocate), calls);
  };
  bad(grow_options(0), {"'grower'", "OverflowPolicy::grow with max_bytes 0", "set "});
  bad(grow_options(65536),
      {"max_bytes 65536", "smaller than the first slab", "73728", "raise max_bytes"});
  auto fixed = device_options({{4096, 2}});
  fixed.max_bytes = 100;
  bad(fixed, {"max_bytes 100", "8192"});
}

// ---- per-thread caches ---------------------------------------------------------------------

TEST_F(BufferPoolTest, ThreadCachesCountAsAvailableAndReturnWhenTheThreadExits) {
  FakePool pool(device_options({{4096, 64}}));
  std::atomic<int> phase{0};
  std::thread worker([&] {
    std::vector<gs::BufferLease> held;
    for (int i = 0; i < 8; ++i) held.push_back(pool.acquire(1));
    held.clear();  // into this thread's magazine
    phase.store(1);
    while (phase.load() != 2) std::this_thread::yield();
  });
  while (phase.load() != 1) std::this_thread::yield();
  auto st = pool.stats();
  EXPECT_EQ(st.classes[0].in_use, 0u);
  EXPECT_EQ(st.classes[0].acquires, 8u);
  EXPECT_GT(st.classes[0].cached, 0u);
  EXPECT_EQ(st.classes[0].available, 64u) << "cached buffers count as available";
  EXPECT_EQ(pool.trim(), 0u) << "another thread caches buffers of the slab";
  phase.store(2);
  worker.join();
  st = pool.stats();
  EXPECT_EQ(st.classes[0].cached, 0u) << "the thread's exit gave them back";
  EXPECT_EQ(st.classes[0].acquires, 8u);
  std::vector<gs::BufferLease> all;
  for (int i = 0; i < 64; ++i) all.push_back(pool.acquire(1));
  EXPECT_FALSE(pool.try_acquire(1));
  all.clear();
  EXPECT_EQ(pool.trim(), 64u * 4096u) << "trim takes back the calling thread's cache";
}

TEST_F(BufferPoolTest, LeasesReleasedOnOtherThreadsAreCountedOnce) {
  FakePool pool(device_options({{4096, 64}}));
  std::vector<gs::BufferLease> leases;
  for (int i = 0; i < 20; ++i) leases.push_back(pool.acquire(1));
  std::thread([&] { leases.clear(); }).join();
  const auto st = pool.stats();
  EXPECT_EQ(st.classes[0].acquires, 20u);
  EXPECT_EQ(st.classes[0].in_use, 0u);
  EXPECT_EQ(st.classes[0].available, 64u);
}

TEST_F(BufferPoolTest, ThreadCacheOffKeepsEveryFreeBufferShared) {
  auto o = device_options({{4096, 64}});
  o.thread_cache = 0;
  FakePool pool(o);
  std::thread([&] {
    for (int i = 0; i < 10; ++i) pool.acquire(1).release();
    EXPECT_EQ(pool.stats().classes[0].cached, 0u);
  }).join();
}

TEST_F(BufferPoolTest, CachedBuffersOfAResetDeviceAreNeverHandedOutAgain) {
  FakePool pool(device_options({{4096, 64}}));
  std::set<void*> old;
  {
    std::vector<gs::BufferLease> held;
    for (int i = 0; i < 8; ++i) {
      held.push_back(pool.acquire(1));
      old.insert(held.back().data());
    }
  }
  ASSERT_GT(pool.stats().classes[0].cached, 0u);
  const auto frees = FakeRuntime::calls(FakeOp::deallocate);
  gs::notify_device_reset(0);
  std::vector<gs::BufferLease> fresh;
  for (int i = 0; i < 64; ++i) {
    fresh.push_back(pool.acquire(1));
    EXPECT_EQ(old.count(fresh.back().data()), 0u) << "a cached buffer of the old epoch";
  }
  EXPECT_FALSE(pool.try_acquire(1));
  EXPECT_EQ(FakeRuntime::calls(FakeOp::deallocate), frees) << "the old slab is dropped, not freed";
}

TEST_F(BufferPoolTest, StreamReleasesBypassTheThreadCache) {
  FakePool pool(device_options({{4096, 64}}));
  auto stream = FakeRuntime::create_stream();
  void* busy = nullptr;
  std::size_t cached = 0;
  {
    auto lease = pool.acquire(1);  // the refill keeps a few more in this thread's cache
    busy = lease.data();
    cached = pool.stats().classes[0].cached;
    FakeRuntime::enqueue_work(stream);
    lease.record_stream(stream);
  }
  EXPECT_EQ(pool.stats().classes[0].cached, cached) << "a stream release goes to the bitmap";
  std::vector<gs::BufferLease> held;
  for (int i = 0; i < 63; ++i) {
    held.push_back(pool.acquire(1));
    EXPECT_NE(held.back().data(), busy) << "reused before its stream work finished";
  }
  EXPECT_FALSE(pool.try_acquire(1));
  FakeRuntime::complete_stream(stream);
  EXPECT_EQ(pool.acquire(1).data(), busy);
  held.clear();
  pool.trim();
  FakeRuntime::destroy_stream(stream);
}

TEST_F(BufferPoolTest, PoolDyingWhileAnotherThreadCachesFreesEverythingWhenItExits) {
  std::atomic<int> phase{0};
  auto pool = std::make_unique<FakePool>(device_options({{4096, 64}}));
  gs::BufferLease kept;
  std::thread worker([&] {
    for (int i = 0; i < 4; ++i) pool->acquire(1).release();  // cached here
    kept = pool->acquire(1);
    phase.store(1);
    while (phase.load() != 2) std::this_thread::yield();
    kept.release();  // after the pool died: returns to the orphaned core
  });
  while (phase.load() != 1) std::this_thread::yield();
  pool.reset();
  EXPECT_EQ(FakeRuntime::live_allocations(), baseline_ + 1) << "held by the lease and the cache";
  phase.store(2);
  worker.join();
  EXPECT_EQ(FakeRuntime::live_allocations(), baseline_);
  EXPECT_EQ(FakeRuntime::invalid_frees(), 0u);
}

// ---- DefaultRuntime: on a machine without a GPU it serves host memory and says so ----------

TEST(BufferPoolDefaultRuntime, FallsBackToHostWithoutAGpu) {
  if (gs::is_cuda_available()) GTEST_SKIP() << "a GPU is present: the fallback is not exercised";
  gs::BufferPoolOptions o;
  o.kind = gs::MemoryKind::device;
  o.classes = {{4096, 4}, {1 << 20, 2}};
  o.name = "default";
  gs::BufferPool pool(o);
  EXPECT_TRUE(pool.is_fallback());
  auto lease = pool.acquire(1 << 20);
  EXPECT_TRUE(lease.is_fallback());
  std::memset(lease.data(), 0x5a, 1 << 20);
  EXPECT_EQ(pool.stats().totals.fallback, 1u);
  EXPECT_TRUE(pool.stats().fallback);
  o.fallback = gs::Fallback::error;
  EXPECT_THROW(gs::BufferPool strict(o), gs::NoGpu);
}

TEST(BufferPoolDefaultRuntime, HostPoolWorksEverywhere) {
  gs::BufferPoolOptions o;
  o.kind = gs::MemoryKind::host;
  o.classes = {{64, 100}};
  gs::BufferPool pool(o);
  EXPECT_FALSE(pool.is_fallback());
  std::vector<gs::BufferLease> v;
  for (int i = 0; i < 100; ++i) v.push_back(pool.acquire(64));
  EXPECT_FALSE(pool.try_acquire(64));
  EXPECT_EQ(pool.stats().totals.in_use, 100u);
}

}  // namespace

// ---- reclaim levels, devices, release-path failures ---------------------------------------------

TEST_F(BufferPoolTest, LightReclaimGivesBackGrownSlabsAndKeepsThePreallocatedOnes) {
  FakePool pool(grow_options(65536 + 8 * 4096));
  {
    std::vector<gs::BufferLease> held;
    for (int i = 0; i < 8; ++i) held.push_back(pool.acquire(100));  // grows twice
  }
  EXPECT_EQ(pool.stats().classes[0].slabs, 3u);
  gs::ReclaimRequest light;
  light.level = gs::ReclaimLevel::light;
  EXPECT_EQ(pool.reclaimable()->reclaim(light), 6u * 4096u) << "the two grown slabs only";
  auto st = pool.stats();
  EXPECT_EQ(st.classes[0].slabs, 1u);
  EXPECT_EQ(st.classes[0].capacity, 2u);
  EXPECT_EQ(st.classes[1].slabs, 1u) << "a preallocated slab stays at the light level";
  gs::ReclaimRequest heavy;
  heavy.level = gs::ReclaimLevel::heavy;
  EXPECT_EQ(pool.reclaimable()->reclaim(heavy), 2u * 4096u + 65536u) << "idle first slabs too";
  EXPECT_TRUE(pool.acquire(100)) << "and the next acquire allocates again";
}

TEST_F(BufferPoolTest, NullStreamReleaseOfAnotherDevicesLeaseRecordsOnThatDevice) {
  // A lease of device 1 released on the null stream by a thread whose current device is 0: the
  // event must be recorded on device 1 (CUDA refuses an event of device 1 on device 0's stream),
  // or the slot would never come back.
  auto options = device_options({{4096, 1}});
  options.device = 1;
  FakePool pool(options);
  ASSERT_TRUE(FakeRuntime::set_device(1).ok());
  FakeRuntime::enqueue_work(nullptr);  // a kernel on device 1's null stream uses the buffer
  ASSERT_TRUE(FakeRuntime::set_device(0).ok());
  {
    auto lease = pool.acquire(100);
    lease.record_stream(nullptr);
  }
  int current = -1;
  ASSERT_TRUE(FakeRuntime::get_device(current).ok());
  EXPECT_EQ(current, 0) << "the caller's device is restored";
  EXPECT_FALSE(pool.try_acquire(100)) << "reused before device 1's null stream finished";
  ASSERT_TRUE(FakeRuntime::set_device(1).ok());
  FakeRuntime::complete_stream(nullptr);
  ASSERT_TRUE(FakeRuntime::set_device(0).ok());
  EXPECT_TRUE(pool.try_acquire(100)) << "the slot came back once the stream finished";
}

TEST_F(BufferPoolTest, DeviceIndexOutOfRangeIsATypedErrorNamingTheValidRange) {
  auto options = device_options({{4096, 2}});
  options.device = 5;
  expect_throw_with<gs::InvalidArgument>(
      [&] { FakePool pool(options); },
      {"device 5", "2 GPU(s)", "0..1", "BufferPoolOptions::device"});
  options.device = -1;
  expect_throw_with<gs::InvalidArgument>([&] { FakePool pool(options); },
                                         {"device -1", "negative"});
  expect_throw_with<gs::InvalidArgument>(
      [&] { gs::BasicBufferPool<gs::HostRuntime> pool(options); }, {"device -1", "negative"});
  EXPECT_EQ(FakeRuntime::live_allocations(), baseline_) << "nothing allocated";
}

TEST_F(BufferPoolTest, FailingEventDestroyIsLoggedOncePerPool) {
  std::vector<std::string> logged;
  auto previous =
      gs::set_log_sink([&](gs::LogLevel, std::string_view m) { logged.emplace_back(m); });
  {
#if defined(__SANITIZE_ADDRESS__)
    // The simulated events whose destroy fails stay allocated, as after a failed
    // cudaEventDestroy: a leak on purpose, not one of the pool's.
    __lsan_disable();
#endif
    FakePool pool(device_options({{4096, 4}, {8192, 4}}));
#if defined(__SANITIZE_ADDRESS__)
    __lsan_enable();
#endif
    FakeRuntime::fail_call(FakeOp::event_destroy, 999, 0, -1);
    EXPECT_GT(pool.trim(), 0u);
  }
  FakeRuntime::clear_faults();
  gs::set_log_sink(previous);
  std::size_t lines = 0;
  for (const auto& m : logged)
    if (m.find("destroying a stream event failed") != std::string::npos) ++lines;
  EXPECT_EQ(lines, 1u) << "eight failed destroys, one line";
}

TEST_F(BufferPoolTest, AMovedFromOrReleasedLeaseReportsSizeZero) {
  FakePool pool(device_options({{4096, 4}}));
  auto a = pool.acquire(1000);
  ASSERT_EQ(a.size(), 1000u);
  ASSERT_EQ(a.capacity(), 4096u);
  gs::BufferLease b(std::move(a));
  EXPECT_EQ(a.data(), nullptr);  // NOLINT(bugprone-use-after-move): checking the moved-from state
  EXPECT_EQ(a.size(), 0u);       // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(a.capacity(), 0u);   // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(b.size(), 1000u);
  EXPECT_EQ(b.capacity(), 4096u);

  gs::BufferLease c;
  c = std::move(b);
  EXPECT_EQ(b.size(), 0u);  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(b.capacity(), 0u);
  EXPECT_FALSE(b);
  EXPECT_EQ(c.size(), 1000u);

  c.release();
  EXPECT_EQ(c.size(), 0u);
  EXPECT_EQ(c.capacity(), 0u);
  EXPECT_EQ(pool.stats().totals.in_use, 0u);
}

TEST_F(BufferPoolTest, FallbackErrorNamesWhyThereIsNoGpu) {
  auto o = device_options({{4096, 2}}, "strict");
  o.fallback = gs::Fallback::error;
  FakeRuntime::set_mode(gs::testing::FakeMode::no_device);
  try {
    FakePool p(o);
    ADD_FAILURE() << "no exception";
  } catch (const gs::NoGpu& e) {
    const std::string m = e.what();
    for (const char* f : {"'strict'", "Fallback::error", "no device visible", "cudaErrorNoDevice",
                          "Fallback::host"})
      EXPECT_NE(m.find(f), std::string::npos) << m << "\nmissing: " << f;
    EXPECT_EQ(e.runtime_code(), gs::codes::no_device);
  }
  FakeRuntime::set_mode(gs::testing::FakeMode::no_driver);
  expect_throw_with<gs::NoGpu>([&] { FakePool p(o); },
                               {"'strict'", "no driver", "cudaErrorInsufficientDriver"});
  FakeRuntime::set_mode(gs::testing::FakeMode::normal);
  FakeRuntime::reset(0);  // a runtime that answers but has no device
  expect_throw_with<gs::NoGpu>([&] { FakePool p(o); }, {"'strict'", "no device visible"});

  // Fallback::host logs the same cause.
  std::vector<std::string> logged;
  auto previous =
      gs::set_log_sink([&](gs::LogLevel, std::string_view m) { logged.emplace_back(m); });
  o.fallback = gs::Fallback::host;
  { FakePool p(o); }
  gs::set_log_sink(previous);
  bool named = false;
  for (const auto& m : logged)
    named = named || (m.find("'strict'") != std::string::npos &&
                      m.find("no device visible") != std::string::npos);
  EXPECT_TRUE(named) << "the fallback warning names the cause";
  FakeRuntime::reset(2);
}
