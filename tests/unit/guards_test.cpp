// Unit tests of gpusafe/guards.hpp on FakeRuntime and HostRuntime.
#include "gpusafe/guards.hpp"

#include <gtest/gtest.h>

#include <array>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "../support/child_process.hpp"
#include "gpusafe/testing/fake_runtime.hpp"

namespace gs = gpusafe;
using gs::testing::FakeOp;
using gs::testing::FakeRuntime;

namespace {

using FakeCleanup = gs::BasicSafeCudaCleanup<FakeRuntime>;
using FakeDeviceGuard = gs::BasicDeviceGuard<FakeRuntime>;

/// Collects log messages for the duration of a test.
class LogCapture {
 public:
  explicit LogCapture(gs::LogLevel level = gs::LogLevel::debug) : old_level_(gs::log_level()) {
    gs::set_log_level(level);
    old_sink_ =
        gs::set_log_sink([this](gs::LogLevel, std::string_view m) { messages.emplace_back(m); });
  }
  ~LogCapture() {
    gs::set_log_sink(old_sink_);
    gs::set_log_level(old_level_);
  }
  std::size_t count_containing(const std::string& needle) const {
    std::size_t n = 0;
    for (const auto& m : messages) n += m.find(needle) != std::string::npos;
    return n;
  }
  std::vector<std::string> messages;

 private:
  gs::LogLevel old_level_;
  gs::LogSink old_sink_;
};

/// A device buffer on FakeRuntime with reset(), as a tensor would hold one.
class FakeBuffer {
 public:
  FakeBuffer() = default;
  explicit FakeBuffer(std::size_t bytes) {
    gs::throw_on_failure(FakeRuntime::allocate(gs::MemoryKind::device, 0, bytes, &p_), "alloc");
  }
  FakeBuffer(FakeBuffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
  FakeBuffer& operator=(FakeBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      p_ = std::exchange(o.p_, nullptr);
    }
    return *this;
  }
  ~FakeBuffer() { reset(); }
  void reset() noexcept {
    if (p_) (void)FakeRuntime::deallocate(gs::MemoryKind::device, 0, p_);
    p_ = nullptr;
  }
  explicit operator bool() const noexcept { return p_ != nullptr; }

 private:
  void* p_ = nullptr;
};

using gpusafe_test::run_in_child;

class GuardsTest : public ::testing::Test {
 protected:
  void SetUp() override { FakeRuntime::reset(2); }
};

// ---- SafeCudaCleanup ------------------------------------------------------------------------

TEST_F(GuardsTest, DeferredActionsRunLifoAtScopeExit) {
  std::vector<int> order;
  {
    FakeCleanup cleanup;
    cleanup.defer([&] { order.push_back(1); }).defer([&] { order.push_back(2); });
    cleanup.defer([&] { order.push_back(3); });
    EXPECT_EQ(cleanup.pending(), 3u);
    EXPECT_TRUE(order.empty());
  }
  EXPECT_EQ(order, (std::vector<int>{3, 2, 1}));
}

TEST_F(GuardsTest, DismissCancelsActionsAndSynchronization) {
  int runs = 0;
  {
    FakeCleanup cleanup({/*synchronize=*/true, /*empty_cache=*/false, /*device=*/0});
    cleanup.defer([&] { ++runs; });
    cleanup.dismiss();
    EXPECT_FALSE(cleanup.active());
    EXPECT_EQ(cleanup.pending(), 0u);
  }
  EXPECT_EQ(runs, 0);
  EXPECT_EQ(FakeRuntime::calls(FakeOp::synchronize), 0u);
}

TEST_F(GuardsTest, ThrowingActionIsLoggedOnceAndOthersStillRun) {
  LogCapture logs;
  std::vector<int> order;
  {
    FakeCleanup cleanup;
    cleanup.defer([&] { order.push_back(1); });
    cleanup.defer([] { throw std::runtime_error("first failure"); });
    cleanup.defer([&] { order.push_back(2); });
    cleanup.defer([] { throw 42; });
  }
  EXPECT_EQ(order, (std::vector<int>{2, 1}));
  ASSERT_EQ(logs.count_containing("SafeCudaCleanup"), 1u);
  EXPECT_EQ(logs.count_containing("2 deferred action(s) threw"), 1u);
  // The first to fail is the last deferred (LIFO): the non-std exception.
  EXPECT_EQ(logs.count_containing("a non-std exception"), 1u);
}

TEST_F(GuardsTest, SynchronizesChosenDeviceAndCurrentDevice) {
  { FakeCleanup cleanup({true, false, 1}); }
  EXPECT_EQ(FakeRuntime::calls(FakeOp::synchronize), 1u);
  EXPECT_EQ(FakeRuntime::calls(FakeOp::get_device), 0u);
  { FakeCleanup cleanup({true, false, -1}); }
  EXPECT_EQ(FakeRuntime::calls(FakeOp::synchronize), 2u);
  EXPECT_EQ(FakeRuntime::calls(FakeOp::get_device), 1u);
}

TEST_F(GuardsTest, SynchronizeFailureIsLoggedNotThrown) {
  LogCapture logs;
  FakeRuntime::fail_call(FakeOp::synchronize, gs::codes::unknown, 0, -1);
  { FakeCleanup cleanup({true, false, 0}); }
  EXPECT_EQ(logs.count_containing("synchronize on device 0 failed with cudaErrorUnknown"), 1u);
}

TEST_F(GuardsTest, NoSynchronizeOnPoisonedDevice) {
  FakeRuntime::fail_call(FakeOp::synchronize, gs::codes::illegal_address);
  { FakeCleanup cleanup({true, false, 1}); }  // hits the sticky error, poisons device 1
  ASSERT_TRUE(gs::device_is_poisoned(1));
  { FakeCleanup cleanup({true, false, 1}); }
  EXPECT_EQ(FakeRuntime::calls(FakeOp::synchronize), 1u);
  gs::notify_device_reset(1);
  EXPECT_FALSE(gs::device_is_poisoned(1));
}

TEST_F(GuardsTest, NoRuntimeCallInForkedChild) {
  const int rc = run_in_child([] {
    const auto before = FakeRuntime::total_calls();
    int runs = 0;
    {
      FakeCleanup cleanup({true, true, 0});
      cleanup.defer([&] { ++runs; });
    }
    return runs == 1 && FakeRuntime::total_calls() == before ? 0 : 1;
  });
  EXPECT_EQ(rc, 0);
}

class CountingReclaimable : public gs::Reclaimable {
 public:
  explicit CountingReclaimable(std::size_t bytes) : bytes_(bytes), registration_(*this) {}
  std::size_t reclaim(const gs::ReclaimRequest& request) noexcept override {
    ++calls;
    last_level = request.level;
    return std::exchange(bytes_, 0);
  }
  int calls = 0;
  gs::ReclaimLevel last_level = gs::ReclaimLevel::light;

 private:
  std::size_t bytes_;
  gs::ReclaimRegistration registration_;
};

TEST_F(GuardsTest, EmptyCacheReportsBytesReleasedByEveryReclaimable) {
  CountingReclaimable a(1000), b(234);
  EXPECT_EQ(gs::safe_cuda_empty_cache(), 1234u);
  EXPECT_EQ(a.calls, 1);
  EXPECT_EQ(a.last_level, gs::ReclaimLevel::light);  // like torch.cuda.empty_cache()
  EXPECT_EQ(gs::safe_cuda_empty_cache(), 0u);
  EXPECT_EQ(b.calls, 2);
}

TEST_F(GuardsTest, CleanupGuardEmptiesCaches) {
  CountingReclaimable a(64);
  { FakeCleanup cleanup({false, true, -1}); }
  EXPECT_EQ(a.calls, 1);
  EXPECT_EQ(FakeRuntime::total_calls(), 0u);
}

TEST_F(GuardsTest, EmptyCacheWithNothingRegisteredIsZero) {
  EXPECT_EQ(gs::safe_cuda_empty_cache(), 0u);
}

// ---- DeviceGuard ----------------------------------------------------------------------------

TEST_F(GuardsTest, DeviceGuardSwitchesAndRestores) {
  ASSERT_TRUE(FakeRuntime::set_device(0).ok());
  {
    FakeDeviceGuard guard(1);
    EXPECT_TRUE(guard.switched());
    EXPECT_EQ(guard.previous_device(), 0);
    int current = -1;
    ASSERT_TRUE(FakeRuntime::get_device(current).ok());
    EXPECT_EQ(current, 1);
    {
      FakeDeviceGuard same(1);
      EXPECT_FALSE(same.switched());
    }
    ASSERT_TRUE(FakeRuntime::get_device(current).ok());
    EXPECT_EQ(current, 1);
  }
  int current = -1;
  ASSERT_TRUE(FakeRuntime::get_device(current).ok());
  EXPECT_EQ(current, 0);
}

TEST_F(GuardsTest, DeviceGuardBadIndexThrowsInvalidArgumentNamingValidOnes) {
  try {
    FakeDeviceGuard guard(5);
    FAIL() << "no exception";
  } catch (const gs::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("valid indices are 0..1"), std::string::npos) << e.what();
  }
  EXPECT_THROW(FakeDeviceGuard(-1), gs::InvalidArgument);
  int current = -1;
  ASSERT_TRUE(FakeRuntime::get_device(current).ok());
  EXPECT_EQ(current, 0);
}

TEST_F(GuardsTest, DeviceGuardWithoutGpu) {
  {
    gs::BasicDeviceGuard<gs::HostRuntime> guard(0);
    EXPECT_FALSE(guard.switched());
  }
  EXPECT_THROW(gs::BasicDeviceGuard<gs::HostRuntime>(1), gs::InvalidArgument);
  FakeRuntime::set_mode(gs::testing::FakeMode::no_device);
  { FakeDeviceGuard guard(0); }
  EXPECT_THROW(FakeDeviceGuard(1), gs::InvalidArgument);
  EXPECT_EQ(FakeRuntime::total_calls(), 0u);
  if (!gs::is_cuda_available()) {
    gs::DeviceGuard guard(0);
    EXPECT_FALSE(guard.switched());
  }
}

TEST_F(GuardsTest, DeviceGuardRestoreFailureIsLoggedNotThrown) {
  LogCapture logs;
  FakeRuntime::fail_call(FakeOp::set_device, gs::codes::unknown, 1, 1);  // the restore fails
  { FakeDeviceGuard guard(1); }
  EXPECT_EQ(logs.count_containing("DeviceGuard: restoring the device"), 1u);
}

TEST_F(GuardsTest, DeviceGuardInForkedChild) {
  const int rc = run_in_child([] {
    const auto before = FakeRuntime::total_calls();
    try {
      FakeDeviceGuard guard(1);
      return 1;
    } catch (const gs::ForkedChild&) {
    }
    { FakeDeviceGuard host(0); }  // CPU paths keep working
    return FakeRuntime::total_calls() == before ? 0 : 2;
  });
  EXPECT_EQ(rc, 0);
}

// ---- safe_tensor_cleanup --------------------------------------------------------------------

TEST_F(GuardsTest, CleanupResettable) {
  FakeBuffer b(100);
  EXPECT_EQ(FakeRuntime::live_allocations(), 1u);
  EXPECT_TRUE(gs::safe_tensor_cleanup(b));
  EXPECT_FALSE(b);
  EXPECT_EQ(FakeRuntime::live_allocations(), 0u);
  EXPECT_FALSE(gs::safe_tensor_cleanup(b));  // nothing left to release
}

TEST_F(GuardsTest, CleanupSmartPointers) {
  auto u = std::make_unique<FakeBuffer>(10);
  auto s = std::make_shared<FakeBuffer>(10);
  auto s2 = s;
  std::unique_ptr<FakeBuffer> empty;
  EXPECT_EQ(FakeRuntime::live_allocations(), 2u);
  EXPECT_TRUE(gs::safe_tensor_cleanup(u, s));
  EXPECT_FALSE(u);
  EXPECT_FALSE(s);
  EXPECT_EQ(FakeRuntime::live_allocations(), 1u);  // s2 still shares it
  EXPECT_TRUE(gs::safe_tensor_cleanup(s2));
  EXPECT_EQ(FakeRuntime::live_allocations(), 0u);
  EXPECT_FALSE(gs::safe_tensor_cleanup(empty));
}

TEST_F(GuardsTest, CleanupOptional) {
  std::optional<FakeBuffer> o(std::in_place, 10);
  std::optional<FakeBuffer> none;
  EXPECT_TRUE(gs::safe_tensor_cleanup(o));
  EXPECT_FALSE(o.has_value());
  EXPECT_FALSE(gs::safe_tensor_cleanup(none));
  EXPECT_EQ(FakeRuntime::live_allocations(), 0u);
}

TEST_F(GuardsTest, CleanupContainers) {
  std::vector<FakeBuffer> v;
  v.emplace_back(1);
  v.emplace_back(2);
  std::deque<std::unique_ptr<FakeBuffer>> d;
  d.push_back(std::make_unique<FakeBuffer>(3));
  std::list<std::optional<FakeBuffer>> l(1);
  l.front().emplace(4);
  std::map<std::string, std::shared_ptr<FakeBuffer>> m{{"a", std::make_shared<FakeBuffer>(5)}};
  std::unordered_map<int, std::vector<FakeBuffer>> nested;
  nested[1].emplace_back(6);
  std::array<FakeBuffer, 2> a{FakeBuffer(7), FakeBuffer()};
  EXPECT_EQ(FakeRuntime::live_allocations(), 7u);

  EXPECT_TRUE(gs::safe_tensor_cleanup(v, d, l, m, nested, a));
  EXPECT_EQ(FakeRuntime::live_allocations(), 0u);
  EXPECT_TRUE(v.empty());
  EXPECT_TRUE(d.empty());
  EXPECT_TRUE(m.empty());
  EXPECT_TRUE(nested.empty());
  EXPECT_FALSE(a[0]);

  std::vector<FakeBuffer> none;
  EXPECT_FALSE(gs::safe_tensor_cleanup(none));
}

struct Custom {
  int releases = 0;
  bool holds = true;
};

}  // namespace

template <>
struct gs::CleanupTraits<Custom> {
  static bool release(Custom& c) noexcept {
    ++c.releases;
    return std::exchange(c.holds, false);
  }
};

namespace {

TEST_F(GuardsTest, CustomizationPointIsUsedDirectlyAndInsideContainers) {
  Custom c;
  EXPECT_TRUE(gs::safe_tensor_cleanup(c));
  EXPECT_FALSE(gs::safe_tensor_cleanup(c));
  EXPECT_EQ(c.releases, 2);
  std::vector<Custom> v(3);
  EXPECT_TRUE(gs::safe_tensor_cleanup(v));
  EXPECT_TRUE(v.empty());
}

struct ThrowingReset {
  void reset() { throw std::runtime_error("boom"); }
};

TEST_F(GuardsTest, CleanupNeverThrows) {
  LogCapture logs;
  ThrowingReset t;
  EXPECT_FALSE(gs::safe_tensor_cleanup(t));
  EXPECT_FALSE(gs::safe_tensor_cleanup(t));
  EXPECT_EQ(logs.count_containing("safe_tensor_cleanup: reset() threw"), 1u);
  static_assert(noexcept(gs::safe_tensor_cleanup(t)));
}

/// A model whose destructor throws (declared noexcept(false), or it would terminate by itself).
struct ThrowingDestructor {
  ~ThrowingDestructor() noexcept(false) { throw std::runtime_error("destructor failure"); }
};

TEST_F(GuardsTest, CleanupOfAUniquePtrWhoseDestructorThrowsIsCaughtAndLoggedOnce) {
  LogCapture logs(gs::LogLevel::warning);
  auto a = std::make_unique<ThrowingDestructor>();
  auto b = std::make_unique<ThrowingDestructor>();
  EXPECT_TRUE(gs::safe_tensor_cleanup(a));
  EXPECT_EQ(a, nullptr);
  EXPECT_TRUE(gs::safe_tensor_cleanup(b));
  EXPECT_EQ(b, nullptr);
  // Inside an optional and a container too.
  std::optional<std::unique_ptr<ThrowingDestructor>> o(std::make_unique<ThrowingDestructor>());
  std::vector<std::unique_ptr<ThrowingDestructor>> v;
  v.push_back(std::make_unique<ThrowingDestructor>());
  EXPECT_TRUE(gs::safe_tensor_cleanup(o, v));
  EXPECT_FALSE(o.has_value());
  EXPECT_TRUE(v.empty());
  EXPECT_EQ(logs.count_containing("the object's destructor threw: destructor failure"), 1u);
  static_assert(noexcept(gs::safe_tensor_cleanup(a)));
}

/// Holds something until reset() succeeds, which it never does; destroying it while it holds
/// throws.
struct StuckModel {
  bool held = true;
  void reset() { throw std::runtime_error("reset failure"); }
  explicit operator bool() const { return held; }
  ~StuckModel() noexcept(false) {
    if (held) throw std::runtime_error("destroyed while held");
  }
};

TEST_F(GuardsTest, CleanupKeepsAnOptionalsValueThatCouldNotBeEmptied) {
  LogCapture logs(gs::LogLevel::warning);
  std::optional<StuckModel> o(std::in_place);
  // std::optional::reset() is noexcept: destroying the value there would terminate.
  EXPECT_FALSE(gs::safe_tensor_cleanup(o));
  EXPECT_FALSE(gs::safe_tensor_cleanup(o));
  ASSERT_TRUE(o.has_value());
  EXPECT_TRUE(o->held);
  EXPECT_EQ(logs.count_containing("safe_tensor_cleanup: reset() threw: reset failure"), 1u);
  o->held = false;  // so that the end of this scope destroys it quietly
}

/// Empties fine, but its destructor throws all the same.
struct AlwaysThrowingDestructor {
  void reset() {}
  ~AlwaysThrowingDestructor() noexcept(false) { throw std::runtime_error("destructor failure"); }
};

TEST_F(GuardsTest, CleanupDoesNotPromiseSharedPtrOrOptionalValuesWhoseDestructorThrows) {
  // C++ destroys these inside noexcept code (shared_ptr's release, std::optional::reset()), so
  // std::terminate is called: documented as not promised. (Threadsafe death tests run in a fresh
  // process: in a forked child the objects would be leaked, not destroyed.)
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        auto s = std::make_shared<ThrowingDestructor>();
        (void)gs::safe_tensor_cleanup(s);
      },
      "destructor failure");
  EXPECT_DEATH(
      {
        std::optional<AlwaysThrowingDestructor> o(std::in_place);
        (void)gs::safe_tensor_cleanup(o);
      },
      "destructor failure");
}

TEST_F(GuardsTest, CleanupLeaksInsteadOfCallingTheRuntimeInForkedChild) {
  FakeBuffer b(10);
  auto u = std::make_unique<FakeBuffer>(20);
  auto s = std::make_shared<FakeBuffer>(30);
  std::optional<FakeBuffer> o(std::in_place, 40);
  std::vector<FakeBuffer> v;
  v.emplace_back(50);
  const int rc = run_in_child([&] {
    const auto before = FakeRuntime::total_calls();
    const bool released = gs::safe_tensor_cleanup(b, u, s, o, v);
    if (!released) return 1;
    if (b || u || s || o || !v.empty()) return 2;  // every holder is left empty
    return FakeRuntime::total_calls() == before ? 0 : 3;
  });
  EXPECT_EQ(rc, 0);
  // The parent's objects are untouched and release normally.
  EXPECT_TRUE(b);
  EXPECT_TRUE(gs::safe_tensor_cleanup(b, u, s, o, v));
  EXPECT_EQ(FakeRuntime::live_allocations(), 0u);
}

TEST_F(GuardsTest, CleanupLeaksAtExit) {
  // Runs in a fresh copy of this program (so no runtime call happened before): an atexit
  // handler registered before the first runtime call runs after gpusafe's exit handler and the
  // runtime's teardown, and must then make no runtime call (trap_after_teardown aborts if it does).
  if (std::getenv("GPUSAFE_GUARDS_EXIT_CHILD")) {
    static FakeBuffer* held = nullptr;
    static std::unique_ptr<FakeBuffer> up;
    std::atexit([] {
      // gpusafe's first use with the fake comes here, after the fake's teardown.
      const bool exiting = gs::process_is_exiting<FakeRuntime>();
      const bool released = gs::basic_safe_tensor_cleanup<FakeRuntime>(*held, up);
      std::_Exit(exiting && released && !*held && !up ? 0 : 7);
    });
    held = new FakeBuffer(64);  // the first runtime call
    up = std::make_unique<FakeBuffer>(32);
    FakeRuntime::trap_after_teardown(true);
    std::exit(9);  // the handler turns this into 0 when everything was leaked correctly
  }
  const int rc = run_in_child([] {
    ::setenv("GPUSAFE_GUARDS_EXIT_CHILD", "1", 1);
    ::execl("/proc/self/exe", "guards_test", "--gtest_filter=GuardsTest.CleanupLeaksAtExit",
            static_cast<char*>(nullptr));
    return 127;
  });
  EXPECT_EQ(rc, 0);
}

}  // namespace
