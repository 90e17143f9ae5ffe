// The duties the library performs for every Runtime (gpusafe/detail/runtime_calls.hpp): a
// minimal Runtime written here, which only reports what happens, gets the exit flag armed at
// its first call and its devices poisoned after a sticky error without doing anything itself;
// plus the shared device switch, the failure-to-exception mapping and the release-failure log.
#include <gtest/gtest.h>

#include <atomic>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "gpusafe/guards.hpp"
#include "gpusafe/lifecycle.hpp"
#include "gpusafe/runtime.hpp"

namespace gs = gpusafe;

namespace {

/// A user's Runtime as small as the concept allows: four devices, host memory behind every
/// allocation, and a switch that makes every device call fail with a sticky code. It neither
/// arms gpusafe's exit flag nor records sticky errors.
struct MinimalRuntime {
  static inline std::atomic<int> initialize_calls{0};
  static inline std::atomic<int> sticky_code{0};
  static inline thread_local int current = 0;

  static constexpr const char* name() noexcept { return "minimal"; }
  static gs::Status initialize() noexcept {
    initialize_calls.fetch_add(1);
    return {};
  }
  static bool gpu_available() noexcept { return true; }
  static gs::Status device_count(int& count) noexcept {
    count = 4;
    return {};
  }
  static gs::Status allocate(gs::MemoryKind kind, int device, std::size_t bytes,
                             void** out) noexcept {
    *out = nullptr;
    if (sticky_code.load() != 0) return {sticky_code.load()};
    return gs::HostRuntime::allocate(kind, device, bytes, out);
  }
  static gs::Status deallocate(gs::MemoryKind kind, int device, void* p) noexcept {
    return gs::HostRuntime::deallocate(kind, device, p);
  }
  static gs::Status memory_info(int, std::size_t& free_bytes, std::size_t& total_bytes) noexcept {
    free_bytes = 1 << 20;
    total_bytes = 1 << 21;
    return {sticky_code.load()};
  }
  static gs::Status synchronize(int) noexcept { return {sticky_code.load()}; }
  static gs::Status get_device(int& device) noexcept {
    device = current;
    return {};
  }
  static gs::Status set_device(int device) noexcept {
    if (device < 0 || device >= 4) return {gs::codes::invalid_device};
    current = device;
    return {};
  }
  static gs::Status device_properties(int, gs::DeviceProperties& props) noexcept {
    props.name = "minimal";
    return {};
  }
  static gs::Status event_create(gs::EventHandle& event) noexcept {
    event = nullptr;
    return {sticky_code.load()};
  }
  static gs::Status event_destroy(gs::EventHandle) noexcept { return {}; }
  static gs::Status event_record(gs::EventHandle, gs::StreamHandle) noexcept { return {}; }
  static gs::Status event_query(gs::EventHandle) noexcept { return {sticky_code.load()}; }
};

static_assert(gs::is_runtime_v<MinimalRuntime>);

using Calls = gs::detail::RuntimeCalls<MinimalRuntime>;

class RuntimeCallsTest : public ::testing::Test {
 protected:
  void SetUp() override { clear(); }
  void TearDown() override { clear(); }
  static void clear() {
    MinimalRuntime::sticky_code.store(0);
    MinimalRuntime::current = 0;
    for (int d = 0; d < 4; ++d)
      if (gs::device_is_poisoned(d)) gs::notify_device_reset(d);
  }
};

/// Collects the log lines of a scope.
class LogLines {
 public:
  LogLines() : old_level_(gs::log_level()) {
    gs::set_log_level(gs::LogLevel::debug);
    old_sink_ = gs::set_log_sink([this](gs::LogLevel level, std::string_view m) {
      lines.emplace_back(m);
      levels.push_back(level);
    });
  }
  ~LogLines() {
    gs::set_log_sink(old_sink_);
    gs::set_log_level(old_level_);
  }
  LogLines(const LogLines&) = delete;
  LogLines& operator=(const LogLines&) = delete;

  std::vector<std::string> lines;
  std::vector<gs::LogLevel> levels;

 private:
  gs::LogLevel old_level_;
  gs::LogSink old_sink_;
};

}  // namespace

TEST_F(RuntimeCallsTest, TheFirstCallArmsTheExitFlagOnce) {
  // The first test of this program to call MinimalRuntime arms it; others find it armed.
  const int before = MinimalRuntime::initialize_calls.load();
  int count = 0;
  ASSERT_TRUE(Calls::device_count(count).ok());
  EXPECT_EQ(gs::detail::exit_arm_state<MinimalRuntime>.load(), 2);
  EXPECT_LE(MinimalRuntime::initialize_calls.load(), 1);
  EXPECT_GE(MinimalRuntime::initialize_calls.load(), before);
  ASSERT_TRUE(Calls::synchronize(0).ok());
  EXPECT_EQ(MinimalRuntime::initialize_calls.load(), 1) << "armed once, by the library";
}

TEST_F(RuntimeCallsTest, StickyErrorOnANamedDevicePoisonsIt) {
  MinimalRuntime::sticky_code.store(gs::codes::illegal_address);
  EXPECT_EQ(MinimalRuntime::synchronize(2).code, gs::codes::illegal_address);
  EXPECT_FALSE(gs::device_is_poisoned(2)) << "the Runtime itself records nothing";
  EXPECT_EQ(Calls::synchronize(2).code, gs::codes::illegal_address);
  EXPECT_TRUE(gs::device_is_poisoned(2));
  EXPECT_FALSE(gs::device_is_poisoned(1)) << "only the device the call named";
  EXPECT_THROW(gs::check_gpu_request(2, "after the fault"), gs::DevicePoisoned);
  gs::notify_device_reset(2);
  EXPECT_FALSE(gs::device_is_poisoned(2));
}

TEST_F(RuntimeCallsTest, StickyErrorOfACallWithoutDevicePoisonsTheCurrentOne) {
  MinimalRuntime::current = 3;
  MinimalRuntime::sticky_code.store(gs::codes::launch_failure);
  EXPECT_EQ(Calls::event_query(nullptr).code, gs::codes::launch_failure);
  EXPECT_TRUE(gs::device_is_poisoned(3));
  EXPECT_FALSE(gs::device_is_poisoned(0));
}

TEST_F(RuntimeCallsTest, OtherErrorsPoisonNothing) {
  for (int code : {gs::codes::memory_allocation, gs::codes::cudart_unloading,
                   gs::codes::insufficient_driver, gs::codes::invalid_value, gs::codes::unknown}) {
    MinimalRuntime::sticky_code.store(code);
    EXPECT_EQ(Calls::synchronize(1).code, code);
    EXPECT_EQ(Calls::event_query(nullptr).code, code);
    EXPECT_FALSE(gs::device_is_poisoned(1)) << code;
    EXPECT_FALSE(gs::device_is_poisoned(0)) << code;
  }
}

TEST_F(RuntimeCallsTest, LibraryComponentsOnAUserRuntimeGetPoisoning) {
  MinimalRuntime::sticky_code.store(gs::codes::illegal_address);
  { gs::BasicSafeCudaCleanup<MinimalRuntime> cleanup({/*synchronize=*/true, false, 1}); }
  EXPECT_TRUE(gs::device_is_poisoned(1)) << "the guard's synchronize met the sticky error";
  try {
    (void)gs::get_device_info<MinimalRuntime>(2);
    FAIL() << "reading memory info must fail";
  } catch (const gs::DevicePoisoned& e) {
    EXPECT_NE(std::string(e.what()).find("get_device_info(2)"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(gs::device_is_poisoned(2));
}

TEST_F(RuntimeCallsTest, DeviceSwitchRestoresTheCallersDevice) {
  MinimalRuntime::current = 1;
  {
    gs::detail::DeviceSwitch<MinimalRuntime> on(3);
    EXPECT_TRUE(on.ok());
    EXPECT_TRUE(on.switched());
    EXPECT_EQ(on.previous(), 1);
    EXPECT_EQ(MinimalRuntime::current, 3);
  }
  EXPECT_EQ(MinimalRuntime::current, 1);
  {
    gs::detail::DeviceSwitch<MinimalRuntime> on(-1);  // only reads the current device
    EXPECT_TRUE(on.ok());
    EXPECT_FALSE(on.switched());
    EXPECT_EQ(on.device(), 1);
  }
  {
    gs::detail::DeviceSwitch<MinimalRuntime> on(7);
    EXPECT_FALSE(on.ok());
    EXPECT_EQ(on.status().code, gs::codes::invalid_device);
    EXPECT_STREQ(on.failed_step(), "switching device");
  }
  {
    gs::detail::DeviceSwitch<MinimalRuntime> off(2, /*active=*/false);
    EXPECT_TRUE(off.ok());
    EXPECT_EQ(MinimalRuntime::current, 1) << "an inactive switch makes no call";
  }
  EXPECT_EQ(MinimalRuntime::current, 1);
}

TEST_F(RuntimeCallsTest, DeviceFailuresMapToTypedErrors) {
  try {
    gs::detail::throw_device_failure<MinimalRuntime>({gs::codes::invalid_device}, "Thing(9)",
                                                     "switching device");
    FAIL();
  } catch (const gs::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("valid indices are 0..3"), std::string::npos) << e.what();
  }
  EXPECT_THROW(gs::detail::throw_device_failure<MinimalRuntime>({gs::codes::illegal_address},
                                                                "Thing(1)", "switching device"),
               gs::DevicePoisoned);
  EXPECT_THROW(gs::detail::throw_allocation_failure({}, "alloc", "ask for less"), gs::OutOfMemory);
  EXPECT_THROW(gs::detail::throw_allocation_failure({gs::codes::no_device}, "alloc", ""),
               gs::NoGpu);
}

TEST_F(RuntimeCallsTest, ReleaseFailuresAreLoggedOncePerFlag) {
  LogLines logs;
  gs::LogOnce once;
  for (int i = 0; i < 3; ++i)
    gs::detail::log_release_failure(&once, "Thing", "freeing", 1, {gs::codes::unknown},
                                    "it is forgotten");
  ASSERT_EQ(logs.lines.size(), 1u);
  EXPECT_EQ(logs.lines[0],
            "Thing: freeing on device 1 failed with cudaErrorUnknown (999) (other); it is "
            "forgotten");
  EXPECT_EQ(logs.levels[0], gs::LogLevel::warning);

  gs::LogOnce quiet;
  gs::detail::log_release_failure(
      &quiet, [] { return std::string("Lazy"); }, "closing", -1, {gs::codes::cudart_unloading},
      "left to the OS", gs::detail::BenignFailures::unlogged);
  EXPECT_EQ(logs.lines.size(), 1u) << "benign codes can stay silent";
  gs::detail::log_release_failure(
      &quiet, [] { return std::string("Lazy"); }, "closing", -1, {gs::codes::cudart_unloading},
      "left to the OS");
  ASSERT_EQ(logs.lines.size(), 2u);
  EXPECT_EQ(logs.lines[1],
            "Lazy: closing failed with cudaErrorCudartUnloading (4) "
            "(benign_at_shutdown); left to the OS");
  EXPECT_EQ(logs.levels[1], gs::LogLevel::debug);
}
