// Unit tests of gpusafe/testing/fake_runtime.hpp: the simulated devices, counters, fault
// injection (per call and whole-runtime modes), simulated streams, and its bad-input errors.
#include "gpusafe/testing/fake_runtime.hpp"

#include <gtest/gtest.h>

#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "../support/child_process.hpp"
#include "gpusafe/lifecycle.hpp"

namespace gs = gpusafe;
using gs::MemoryKind;
using gs::testing::FakeMode;
using gs::testing::FakeOp;
using gs::testing::FakeRuntime;
/// How the library calls the fake: the calls that arm the exit flag and record sticky errors.
using Calls = gs::detail::RuntimeCalls<FakeRuntime>;

namespace {

constexpr std::size_t kMiB = std::size_t{1} << 20;

class FakeRuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override { FakeRuntime::reset(2, 16 * kMiB); }
  void TearDown() override {
    FakeRuntime::reset();
    // Sticky faults mark devices poisoned; leave no trace for the next test.
    for (int d = 0; d < 2; ++d) gs::notify_device_reset(d);
  }
};

// Calls `op` once with valid arguments and returns its status.
gs::Status call_op(FakeOp op) {
  switch (op) {
    case FakeOp::device_count: {
      int n = 0;
      return FakeRuntime::device_count(n);
    }
    case FakeOp::initialize:
      return FakeRuntime::initialize();
    case FakeOp::allocate: {
      void* p = nullptr;
      const gs::Status s = FakeRuntime::allocate(MemoryKind::device, 0, 64, &p);
      if (s.ok()) (void)FakeRuntime::deallocate(MemoryKind::device, 0, p);
      return s;
    }
    case FakeOp::deallocate:
      return FakeRuntime::deallocate(MemoryKind::device, 0, nullptr);
    case FakeOp::memory_info: {
      std::size_t f = 0, t = 0;
      return FakeRuntime::memory_info(0, f, t);
    }
    case FakeOp::synchronize:
      return FakeRuntime::synchronize(1);
    case FakeOp::get_device: {
      int d = 0;
      return FakeRuntime::get_device(d);
    }
    case FakeOp::set_device:
      return FakeRuntime::set_device(0);
    case FakeOp::device_properties: {
      gs::DeviceProperties p;
      return FakeRuntime::device_properties(1, p);
    }
    case FakeOp::event_create: {
      gs::EventHandle e = nullptr;
      const gs::Status s = FakeRuntime::event_create(e);
      if (e) (void)FakeRuntime::event_destroy(e);
      return s;
    }
    case FakeOp::event_destroy:
      return FakeRuntime::event_destroy(nullptr);
    case FakeOp::event_record:
      return FakeRuntime::event_record(nullptr, nullptr);
    case FakeOp::event_query:
      return FakeRuntime::event_query(nullptr);
    case FakeOp::handle_create: {
      void* h = nullptr;
      const gs::Status s = FakeRuntime::handle_create(3, &h);
      if (h) (void)FakeRuntime::handle_destroy(h);
      return s;
    }
    case FakeOp::handle_destroy:
      return FakeRuntime::handle_destroy(nullptr);
    case FakeOp::handle_finalize:
      return FakeRuntime::handle_finalize(nullptr);
    case FakeOp::handle_query:
      return FakeRuntime::handle_query(nullptr);
    case FakeOp::handle_abort:
      return FakeRuntime::handle_abort(nullptr);
    case FakeOp::count_:
      break;
  }
  return {-1};
}

std::vector<FakeOp> all_ops() {
  std::vector<FakeOp> ops;
  for (int i = 0; i < static_cast<int>(FakeOp::count_); ++i) ops.push_back(static_cast<FakeOp>(i));
  return ops;
}

}  // namespace

TEST_F(FakeRuntimeTest, NormalModeServesDevicesUpToCapacity) {
  EXPECT_TRUE(FakeRuntime::gpu_available());
  int n = 0;
  ASSERT_TRUE(FakeRuntime::device_count(n).ok());
  EXPECT_EQ(n, 2);

  void* a = nullptr;
  void* b = nullptr;
  ASSERT_TRUE(FakeRuntime::allocate(MemoryKind::device, 0, 10 * kMiB, &a).ok());
  std::memset(a, 7, 10 * kMiB);  // real memory behind it
  EXPECT_EQ(FakeRuntime::bytes_in_use(0), 10 * kMiB);
  EXPECT_EQ(FakeRuntime::bytes_in_use(1), 0u);
  const gs::Status full = FakeRuntime::allocate(MemoryKind::device, 0, 7 * kMiB, &b);
  EXPECT_EQ(full.code, gs::codes::memory_allocation);
  EXPECT_EQ(b, nullptr);
  ASSERT_TRUE(FakeRuntime::allocate(MemoryKind::device, 1, 7 * kMiB, &b).ok());

  std::size_t free_b = 0, total_b = 0;
  ASSERT_TRUE(FakeRuntime::memory_info(0, free_b, total_b).ok());
  EXPECT_EQ(total_b, 16 * kMiB);
  EXPECT_EQ(free_b, 6 * kMiB);
  EXPECT_EQ(FakeRuntime::live_allocations(), 2u);

  EXPECT_TRUE(FakeRuntime::deallocate(MemoryKind::device, 0, a).ok());
  EXPECT_TRUE(FakeRuntime::deallocate(MemoryKind::device, 1, b).ok());
  EXPECT_EQ(FakeRuntime::bytes_in_use(0), 0u);
  EXPECT_EQ(FakeRuntime::live_allocations(), 0u);
  EXPECT_EQ(FakeRuntime::invalid_frees(), 0u);
}

TEST_F(FakeRuntimeTest, HostAndPinnedMemoryDoNotCountAgainstTheDevice) {
  void* p = nullptr;
  void* h = nullptr;
  ASSERT_TRUE(FakeRuntime::allocate(MemoryKind::pinned_host, 0, 32 * kMiB, &p).ok());
  ASSERT_TRUE(FakeRuntime::allocate(MemoryKind::host, 0, 32 * kMiB, &h).ok());
  EXPECT_EQ(FakeRuntime::bytes_in_use(0), 0u);
  EXPECT_TRUE(FakeRuntime::deallocate(MemoryKind::pinned_host, 0, p).ok());
  EXPECT_TRUE(FakeRuntime::deallocate(MemoryKind::host, 0, h).ok());
}

TEST_F(FakeRuntimeTest, CountsEveryCall) {
  for (FakeOp op : all_ops()) {
    const std::uint64_t before = FakeRuntime::calls(op);
    (void)call_op(op);
    EXPECT_GE(FakeRuntime::calls(op), before + 1) << gs::testing::to_string(op);
  }
  EXPECT_GE(FakeRuntime::total_calls(), all_ops().size());
  FakeRuntime::reset(2);
  EXPECT_EQ(FakeRuntime::total_calls(), 0u);
}

TEST_F(FakeRuntimeTest, DoubleAndForeignFreesAreCounted) {
  void* p = nullptr;
  ASSERT_TRUE(FakeRuntime::allocate(MemoryKind::device, 0, 100, &p).ok());
  EXPECT_TRUE(FakeRuntime::deallocate(MemoryKind::device, 0, p).ok());
  EXPECT_EQ(FakeRuntime::deallocate(MemoryKind::device, 0, p).code, gs::codes::invalid_value);
  int local = 0;
  EXPECT_EQ(FakeRuntime::deallocate(MemoryKind::device, 0, &local).code, gs::codes::invalid_value);
  EXPECT_EQ(FakeRuntime::invalid_frees(), 2u);
}

TEST_F(FakeRuntimeTest, FreeingWithTheWrongKindIsInvalid) {
  void* p = nullptr;
  ASSERT_TRUE(FakeRuntime::allocate(MemoryKind::device, 0, 100, &p).ok());
  EXPECT_EQ(FakeRuntime::deallocate(MemoryKind::pinned_host, 0, p).code, gs::codes::invalid_value);
  EXPECT_EQ(FakeRuntime::invalid_frees(), 1u);
  EXPECT_TRUE(FakeRuntime::deallocate(MemoryKind::device, 0, p).ok());
}

TEST_F(FakeRuntimeTest, ResetKeepsLiveAllocationsCounted) {
  void* p = nullptr;
  ASSERT_TRUE(FakeRuntime::allocate(MemoryKind::device, 1, 3 * kMiB, &p).ok());
  FakeRuntime::reset(2, 16 * kMiB);
  EXPECT_EQ(FakeRuntime::bytes_in_use(1), 3 * kMiB);
  EXPECT_EQ(FakeRuntime::live_allocations(), 1u);
  EXPECT_TRUE(FakeRuntime::deallocate(MemoryKind::device, 1, p).ok());
  EXPECT_EQ(FakeRuntime::bytes_in_use(1), 0u);
}

TEST_F(FakeRuntimeTest, InvalidDeviceIndices) {
  void* p = nullptr;
  EXPECT_EQ(FakeRuntime::allocate(MemoryKind::device, 2, 10, &p).code, gs::codes::invalid_device);
  EXPECT_EQ(FakeRuntime::allocate(MemoryKind::device, -1, 10, &p).code, gs::codes::invalid_device);
  EXPECT_EQ(FakeRuntime::set_device(5).code, gs::codes::invalid_device);
  EXPECT_EQ(FakeRuntime::synchronize(-1).code, gs::codes::invalid_device);
  std::size_t f = 0, t = 0;
  EXPECT_EQ(FakeRuntime::memory_info(2, f, t).code, gs::codes::invalid_device);
  gs::DeviceProperties props;
  EXPECT_EQ(FakeRuntime::device_properties(9, props).code, gs::codes::invalid_device);
}

TEST_F(FakeRuntimeTest, CurrentDeviceIsPerThreadAndSettable) {
  ASSERT_TRUE(FakeRuntime::set_device(1).ok());
  int d = -1;
  ASSERT_TRUE(FakeRuntime::get_device(d).ok());
  EXPECT_EQ(d, 1);
  std::thread([] {
    int other = -1;
    (void)FakeRuntime::get_device(other);
    EXPECT_EQ(other, 0);
  }).join();
}

TEST_F(FakeRuntimeTest, SetMemoryInfoOverridesTheFigures) {
  FakeRuntime::set_memory_info(1, 100, 1000);
  std::size_t f = 0, t = 0;
  ASSERT_TRUE(FakeRuntime::memory_info(1, f, t).ok());
  EXPECT_EQ(f, 100u);
  EXPECT_EQ(t, 1000u);
  FakeRuntime::clear_memory_info(1);
  ASSERT_TRUE(FakeRuntime::memory_info(1, f, t).ok());
  EXPECT_EQ(t, 16 * kMiB);
}

// ---- per-call faults
// -----------------------------------------------------------------------------

TEST_F(FakeRuntimeTest, FailCallHonoursSkipAndTimes) {
  FakeRuntime::fail_call(FakeOp::synchronize, gs::codes::launch_failure, /*skip=*/2, /*times=*/2);
  std::vector<int> seen;
  for (int i = 0; i < 6; ++i) seen.push_back(FakeRuntime::synchronize(0).code);
  EXPECT_EQ(seen, (std::vector<int>{0, 0, 719, 719, 0, 0}));
  // Other operations are unaffected.
  int d = 0;
  EXPECT_TRUE(FakeRuntime::get_device(d).ok());
}

TEST_F(FakeRuntimeTest, FailCallForever) {
  FakeRuntime::fail_call(FakeOp::event_query, gs::codes::not_ready, 0, -1);
  gs::EventHandle e = nullptr;
  ASSERT_TRUE(FakeRuntime::event_create(e).ok());
  for (int i = 0; i < 50; ++i) EXPECT_EQ(FakeRuntime::event_query(e).code, gs::codes::not_ready);
  FakeRuntime::clear_faults();
  EXPECT_TRUE(FakeRuntime::event_query(e).ok());
  EXPECT_TRUE(FakeRuntime::event_destroy(e).ok());
}

TEST_F(FakeRuntimeTest, FailNthAllocation) {
  FakeRuntime::fail_nth_allocation(3);
  std::vector<void*> got;
  std::vector<int> codes;
  for (int i = 0; i < 4; ++i) {
    void* p = nullptr;
    codes.push_back(FakeRuntime::allocate(MemoryKind::device, 0, 128, &p).code);
    if (p) got.push_back(p);
  }
  EXPECT_EQ(codes, (std::vector<int>{0, 0, gs::codes::memory_allocation, 0}));
  EXPECT_EQ(FakeRuntime::live_allocations(), 3u);
  for (void* p : got) EXPECT_TRUE(FakeRuntime::deallocate(MemoryKind::device, 0, p).ok());

  // Like CUDA, the fake only reports a sticky code; the library's calls record it.
  FakeRuntime::fail_nth_allocation(1, gs::codes::illegal_address);
  void* p = nullptr;
  EXPECT_EQ(FakeRuntime::allocate(MemoryKind::device, 1, 128, &p).code, gs::codes::illegal_address);
  EXPECT_FALSE(gs::device_is_poisoned(1)) << "the runtime itself poisons nothing";
  FakeRuntime::fail_nth_allocation(1, gs::codes::illegal_address);
  EXPECT_EQ(Calls::allocate(MemoryKind::device, 1, 128, &p).code, gs::codes::illegal_address);
  EXPECT_TRUE(gs::device_is_poisoned(1)) << "a sticky code marks the device";
}

// ---- whole-runtime modes
// -------------------------------------------------------------------------

TEST_F(FakeRuntimeTest, EveryModeIsReturnedByEveryOperation) {
  const FakeMode modes[] = {FakeMode::forked_child, FakeMode::runtime_unloading,
                            FakeMode::no_driver,    FakeMode::no_device,
                            FakeMode::sticky,       FakeMode::context_destroyed};
  for (FakeMode mode : modes) {
    FakeRuntime::reset(2, 16 * kMiB);
    FakeRuntime::set_mode(mode);
    EXPECT_EQ(FakeRuntime::mode(), mode);
    EXPECT_FALSE(FakeRuntime::gpu_available()) << static_cast<int>(mode);
    for (FakeOp op : all_ops()) {
      EXPECT_EQ(call_op(op).code, static_cast<int>(mode))
          << "mode " << static_cast<int>(mode) << ", op " << gs::testing::to_string(op);
    }
    EXPECT_EQ(FakeRuntime::live_allocations(), 0u);
  }
  FakeRuntime::set_mode(FakeMode::normal);
  EXPECT_TRUE(FakeRuntime::gpu_available());
}

TEST_F(FakeRuntimeTest, ModeCodesClassifyAsDocumented) {
  EXPECT_EQ(gs::classify(static_cast<int>(FakeMode::forked_child)), gs::ErrorClass::no_gpu);
  EXPECT_EQ(gs::classify(static_cast<int>(FakeMode::runtime_unloading)),
            gs::ErrorClass::benign_at_shutdown);
  EXPECT_EQ(gs::classify(static_cast<int>(FakeMode::no_driver)), gs::ErrorClass::no_gpu);
  EXPECT_EQ(gs::classify(static_cast<int>(FakeMode::no_device)), gs::ErrorClass::no_gpu);
  EXPECT_EQ(gs::classify(static_cast<int>(FakeMode::sticky)), gs::ErrorClass::sticky);
  EXPECT_EQ(gs::classify(static_cast<int>(FakeMode::context_destroyed)),
            gs::ErrorClass::benign_at_shutdown);
}

TEST_F(FakeRuntimeTest, ZeroDevicesIsNoDevice) {
  FakeRuntime::reset(0);
  EXPECT_FALSE(FakeRuntime::gpu_available());
  int n = -1;
  EXPECT_EQ(FakeRuntime::device_count(n).code, gs::codes::no_device);
  EXPECT_EQ(n, 0);
}

TEST_F(FakeRuntimeTest, StickyModeRecordsThePoisonedDevice) {
  FakeRuntime::set_mode(FakeMode::sticky);
  EXPECT_FALSE(gs::device_is_poisoned(1));
  EXPECT_EQ(FakeRuntime::synchronize(1).code, gs::codes::illegal_address);
  EXPECT_FALSE(gs::device_is_poisoned(1)) << "the runtime itself poisons nothing";
  EXPECT_EQ(Calls::synchronize(1).code, gs::codes::illegal_address);
  EXPECT_TRUE(gs::device_is_poisoned(1));
  EXPECT_THROW(gs::check_gpu_request(1, "test"), gs::DevicePoisoned);
}

TEST(FakeRuntimeDeath, TrapModeAbortsOnAnyCall) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        FakeRuntime::reset();
        FakeRuntime::set_mode(FakeMode::trap);
        (void)FakeRuntime::synchronize(0);
      },
      "FakeRuntime trap: synchronize called in trap mode");
}

TEST(FakeRuntimeDeath, TrapAfterTeardownAbortsACallFromAnAtexitHandler) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  // Registered before the first call, so it runs after the fake's teardown: the call must trap.
  EXPECT_DEATH(
      {
        std::atexit([] {
          int d = 0;
          (void)FakeRuntime::get_device(d);
        });
        FakeRuntime::reset();
        FakeRuntime::trap_after_teardown(true);
        int n = 0;
        (void)FakeRuntime::device_count(n);
        std::exit(0);
      },
      "FakeRuntime trap: get_device called after the runtime's teardown");
}

TEST(FakeRuntimeTeardown, WithoutTrapCallsAfterTeardownFailWithUnloading) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        std::atexit([] {
          int d = 0;
          const bool ok = FakeRuntime::torn_down() &&
                          FakeRuntime::get_device(d).code == gs::codes::cudart_unloading &&
                          FakeRuntime::calls_after_teardown() == 1;
          std::_Exit(ok ? 42 : 1);
        });
        FakeRuntime::reset();
        int n = 0;
        (void)FakeRuntime::device_count(n);
        if (!FakeRuntime::started() || FakeRuntime::torn_down()) std::_Exit(2);
        std::exit(0);
      },
      ::testing::ExitedWithCode(42), "");
}

TEST_F(FakeRuntimeTest, ForkedChildGetsInitializationError) {
  int n = 0;
  ASSERT_TRUE(FakeRuntime::device_count(n).ok());
  const int rc = gpusafe_test::run_in_child([] {
    int m = 0;
    const bool ok = FakeRuntime::device_count(m).code == gs::codes::initialization_error &&
                    !FakeRuntime::gpu_available();
    return ok ? 0 : 1;
  });
  EXPECT_EQ(rc, 0);
  EXPECT_TRUE(FakeRuntime::device_count(n).ok()) << "the parent is unaffected";
}

// ---- simulated streams and events
// ----------------------------------------------------------------

TEST_F(FakeRuntimeTest, EventsFollowTheirStream) {
  gs::StreamHandle s = FakeRuntime::create_stream();
  gs::EventHandle e = nullptr;
  ASSERT_TRUE(FakeRuntime::event_create(e).ok());
  FakeRuntime::enqueue_work(s);
  ASSERT_TRUE(FakeRuntime::event_record(e, s).ok());
  EXPECT_EQ(FakeRuntime::event_query(e).code, gs::codes::not_ready);
  FakeRuntime::enqueue_work(s);  // later work does not delay the recorded point
  FakeRuntime::complete_stream(s);
  EXPECT_TRUE(FakeRuntime::event_query(e).ok());

  FakeRuntime::enqueue_work(s);
  ASSERT_TRUE(FakeRuntime::event_record(e, s).ok());  // re-recorded: pending again
  EXPECT_EQ(FakeRuntime::event_query(e).code, gs::codes::not_ready);
  FakeRuntime::complete_stream(s);
  EXPECT_TRUE(FakeRuntime::event_query(e).ok());

  // The null (default) stream has nothing pending until work is enqueued on it.
  ASSERT_TRUE(FakeRuntime::event_record(e, nullptr).ok());
  EXPECT_TRUE(FakeRuntime::event_query(e).ok());
  EXPECT_TRUE(FakeRuntime::event_destroy(e).ok());
  FakeRuntime::destroy_stream(s);
  EXPECT_EQ(FakeRuntime::event_query(nullptr).code, gs::codes::invalid_resource_handle);
}

TEST_F(FakeRuntimeTest, TheNullStreamCanBeBusyLikeAnyOther) {
  gs::EventHandle e = nullptr;
  ASSERT_TRUE(FakeRuntime::event_create(e).ok());
  FakeRuntime::enqueue_work(nullptr);  // a kernel on the default stream
  ASSERT_TRUE(FakeRuntime::event_record(e, nullptr).ok());
  EXPECT_EQ(FakeRuntime::event_query(e).code, gs::codes::not_ready);
  FakeRuntime::complete_stream(nullptr);
  EXPECT_TRUE(FakeRuntime::event_query(e).ok());
  (void)FakeRuntime::event_destroy(e);
}

TEST_F(FakeRuntimeTest, EachDeviceHasItsOwnNullStream) {
  ASSERT_TRUE(FakeRuntime::set_device(1).ok());
  FakeRuntime::enqueue_work(nullptr);  // busy on device 1 only
  gs::EventHandle on1 = nullptr;
  ASSERT_TRUE(FakeRuntime::event_create(on1).ok());
  ASSERT_TRUE(FakeRuntime::event_record(on1, nullptr).ok());
  ASSERT_TRUE(FakeRuntime::set_device(0).ok());
  gs::EventHandle on0 = nullptr;
  ASSERT_TRUE(FakeRuntime::event_create(on0).ok());
  ASSERT_TRUE(FakeRuntime::event_record(on0, nullptr).ok());
  EXPECT_TRUE(FakeRuntime::event_query(on0).ok()) << "device 0's null stream is idle";
  EXPECT_EQ(FakeRuntime::event_query(on1).code, gs::codes::not_ready);
  (void)FakeRuntime::event_destroy(on0);
  (void)FakeRuntime::event_destroy(on1);
}

TEST_F(FakeRuntimeTest, EventsAndStreamsBelongToTheirDevice) {
  // As in CUDA: an event made on device 1 cannot be recorded on a stream of device 0 (a created
  // one, or the null stream while device 0 is current).
  ASSERT_TRUE(FakeRuntime::set_device(1).ok());
  gs::EventHandle e = nullptr;
  ASSERT_TRUE(FakeRuntime::event_create(e).ok());
  gs::StreamHandle s1 = FakeRuntime::create_stream();
  EXPECT_EQ(FakeRuntime::event_device(e), 1);
  EXPECT_EQ(FakeRuntime::stream_device(s1), 1);
  ASSERT_TRUE(FakeRuntime::set_device(0).ok());
  gs::StreamHandle s0 = FakeRuntime::create_stream();
  EXPECT_EQ(FakeRuntime::event_record(e, s0).code, gs::codes::invalid_resource_handle);
  EXPECT_EQ(FakeRuntime::event_record(e, nullptr).code, gs::codes::invalid_resource_handle);
  EXPECT_TRUE(FakeRuntime::event_record(e, s1).ok()) << "its own device's stream, from anywhere";
  ASSERT_TRUE(FakeRuntime::set_device(1).ok());
  EXPECT_TRUE(FakeRuntime::event_record(e, nullptr).ok());
  (void)FakeRuntime::event_destroy(e);
  FakeRuntime::destroy_stream(s0);
  FakeRuntime::destroy_stream(s1);
}

// The fake imitates a runtime whose teardown is registered independently of gpusafe: its first
// call registers the fake's teardown and nothing else, so gpusafe's exit flag is set only because
// gpusafe itself armed it.
TEST(FakeRuntimeTeardown, TheFirstCallDoesNotArmGpusafe) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        std::atexit([] {
          // Registered before the fake's first call: runs after its teardown. Nothing of
          // gpusafe was used, so gpusafe's flag (peeked, not used) must still be clear.
          std::_Exit(FakeRuntime::torn_down() && !gs::detail::is_exiting() ? 0 : 1);
        });
        FakeRuntime::reset();
        int n = 0;
        (void)FakeRuntime::device_count(n);
        std::exit(5);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST(FakeRuntimeTeardown, InitializeAfterTeardownAnswersUnloadingWithoutTrapping) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        std::atexit([] {
          if (FakeRuntime::initialize().code != gs::codes::cudart_unloading) std::_Exit(2);
          int d = 0;
          (void)FakeRuntime::get_device(d);  // any other call traps
          std::_Exit(1);
        });
        FakeRuntime::reset();
        FakeRuntime::trap_after_teardown(true);
        EXPECT_TRUE(FakeRuntime::initialize().ok());
        std::exit(5);
      },
      ::testing::KilledBySignal(SIGABRT), "FakeRuntime trap: get_device called after");
}

// ---- bad input
// -----------------------------------------------------------------------------------

TEST_F(FakeRuntimeTest, ResetWithANegativeCountIsATypedError) {
  try {
    FakeRuntime::reset(-1);
    FAIL() << "expected InvalidArgument";
  } catch (const gs::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("pass 0 or more"), std::string::npos) << e.what();
  }
  int n = 0;
  ASSERT_TRUE(FakeRuntime::device_count(n).ok());
  EXPECT_EQ(n, 2) << "a rejected reset changes nothing";
}

TEST_F(FakeRuntimeTest, FailNthAllocationZeroIsATypedError) {
  try {
    FakeRuntime::fail_nth_allocation(0);
    FAIL() << "expected InvalidArgument";
  } catch (const gs::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("pass 1 or more"), std::string::npos) << e.what();
  }
  void* p = nullptr;
  ASSERT_TRUE(FakeRuntime::allocate(MemoryKind::device, 0, 8, &p).ok()) << "no fault was armed";
  EXPECT_TRUE(FakeRuntime::deallocate(MemoryKind::device, 0, p).ok());
}

TEST_F(FakeRuntimeTest, FailCallZeroTimesIsATypedError) {
  for (std::int64_t times : {std::int64_t{0}, std::int64_t{-2}}) {
    try {
      FakeRuntime::fail_call(FakeOp::allocate, gs::codes::memory_allocation, 0, times);
      FAIL() << "fail_call accepted times = " << times;
    } catch (const gs::InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("-1 for every call"), std::string::npos) << e.what();
    }
  }
  void* p = nullptr;
  ASSERT_TRUE(FakeRuntime::allocate(MemoryKind::device, 0, 8, &p).ok()) << "no fault was armed";
  EXPECT_TRUE(FakeRuntime::deallocate(MemoryKind::device, 0, p).ok());
}

TEST(FakeRuntimeBadInput, UnknownDeviceIndexIsATypedErrorNamingTheValidRange) {
  FakeRuntime::reset(2);
  for (int bad : {-1, 2, 99}) {
    try {
      FakeRuntime::set_memory_info(bad, 1, 2);
      FAIL() << "set_memory_info(" << bad << ") accepted";
    } catch (const gs::InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("valid indices are 0..1"), std::string::npos)
          << e.what();
    }
    EXPECT_THROW(FakeRuntime::clear_memory_info(bad), gs::InvalidArgument);
    EXPECT_THROW(FakeRuntime::bytes_in_use(bad), gs::InvalidArgument);
  }
  FakeRuntime::reset();
}

TEST(FakeRuntimeBadInput, StickyErrorOnACallWithoutDevicePoisonsTheCurrentDevice) {
  FakeRuntime::reset(2);
  gs::notify_device_reset(0);
  gs::notify_device_reset(1);
  ASSERT_TRUE(FakeRuntime::set_device(1).ok());
  gs::EventHandle event = nullptr;
  FakeRuntime::fail_call(FakeOp::event_create, gs::codes::illegal_address);
  EXPECT_EQ(Calls::event_create(event).code, gs::codes::illegal_address);
  EXPECT_TRUE(gs::device_is_poisoned(1));
  EXPECT_FALSE(gs::device_is_poisoned(0));
  gs::notify_device_reset(1);
  ASSERT_TRUE(FakeRuntime::set_device(0).ok());
  FakeRuntime::reset();
}

TEST_F(FakeRuntimeTest, ProtectedDeviceMemoryCrashesHostCodeThatTouchesIt) {
  FakeRuntime::protect_device_memory(true);
  void* device = nullptr;
  void* host = nullptr;
  ASSERT_TRUE(FakeRuntime::allocate(MemoryKind::device, 0, 4096, &device).ok());
  ASSERT_TRUE(FakeRuntime::allocate(MemoryKind::pinned_host, 0, 4096, &host).ok());
  std::memset(host, 1, 4096);  // host-visible kinds stay writable
  EXPECT_EQ(FakeRuntime::bytes_in_use(0), 4096u);
  EXPECT_DEATH(std::memset(device, 1, 16), "");
  EXPECT_TRUE(FakeRuntime::deallocate(MemoryKind::device, 0, device).ok());
  EXPECT_TRUE(FakeRuntime::deallocate(MemoryKind::pinned_host, 0, host).ok());
  EXPECT_EQ(FakeRuntime::live_allocations(), 0u);
  FakeRuntime::reset();
  void* plain = nullptr;
  ASSERT_TRUE(FakeRuntime::allocate(MemoryKind::device, 0, 64, &plain).ok());
  std::memset(plain, 1, 64);  // reset() turns the protection off again
  EXPECT_TRUE(FakeRuntime::deallocate(MemoryKind::device, 0, plain).ok());
}
