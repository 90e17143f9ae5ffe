// Unit tests of gpusafe/handles.hpp (streams, events, graph executables, the handle template) on
// FakeRuntime, and of creation on the real runtime of this machine.
#include "gpusafe/handles.hpp"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "../support/child_process.hpp"
#include "gpusafe/memory_manager.hpp"
#include "gpusafe/testing/fake_runtime.hpp"

namespace gs = gpusafe;
using gs::HandleKind;
using gs::LeakReason;
using gs::ReleaseOutcome;
using gs::testing::FakeMode;
using gs::testing::FakeOp;
using gs::testing::FakeRuntime;

namespace {

using FakeStream = gs::BasicStream<FakeRuntime>;
using FakeEvent = gs::BasicEvent<FakeRuntime>;
using FakeGraphExec = gs::BasicGraphExec<FakeRuntime>;

constexpr int kStreamKind = static_cast<int>(HandleKind::stream);

/// Collects log messages for the duration of a test.
class LogCapture {
 public:
  LogCapture() : old_level_(gs::log_level()) {
    gs::set_log_level(gs::LogLevel::debug);
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

class HandlesTest : public ::testing::Test {
 protected:
  void SetUp() override { FakeRuntime::reset(2); }
  void TearDown() override {
    FakeRuntime::reset();
    for (int d = 0; d < 2; ++d) gs::notify_device_reset(d);
  }
};

gs::GraphExecParams some_graph() {
  static int graph = 0;  // FakeRuntime does not look at the graph; the handle requires one
  return {&graph, 0};
}

}  // namespace

TEST_F(HandlesTest, StreamIsCreatedOnItsDeviceAndDestroyedThere) {
  const auto before = gs::handle_stats(HandleKind::stream);
  {
    FakeStream s(gs::StreamParams{}, 1);
    ASSERT_TRUE(s);
    EXPECT_EQ(s.device(), 1);
    EXPECT_EQ(FakeRuntime::handle_device(s.get()), 1);
    EXPECT_EQ(FakeRuntime::stream_device(s.get()), 1);
    EXPECT_EQ(FakeRuntime::live_handles(kStreamKind), 1u);
    int current = -1;
    ASSERT_TRUE(FakeRuntime::get_device(current).ok());
    EXPECT_EQ(current, 0) << "the caller's device is restored after creation";
    ASSERT_TRUE(FakeRuntime::set_device(0).ok());
  }
  EXPECT_EQ(FakeRuntime::live_handles(), 0u);
  EXPECT_EQ(FakeRuntime::invalid_handle_destroys(), 0u);
  int current = -1;
  ASSERT_TRUE(FakeRuntime::get_device(current).ok());
  EXPECT_EQ(current, 0) << "the caller's device is restored after the destroy (rule 7)";
  const auto after = gs::handle_stats(HandleKind::stream);
  EXPECT_EQ(after.created, before.created + 1);
  EXPECT_EQ(after.destroyed, before.destroyed + 1);
  EXPECT_EQ(after.live(), before.live());
}

TEST_F(HandlesTest, CurrentDeviceIsTheDefault) {
  ASSERT_TRUE(FakeRuntime::set_device(1).ok());
  auto s = FakeStream::create();
  EXPECT_EQ(s.device(), 1);
  ASSERT_TRUE(FakeRuntime::set_device(0).ok());
}

TEST_F(HandlesTest, DestroySwitchesToTheHandlesDeviceAndBack) {
  FakeStream s(gs::StreamParams{}, 1);
  ASSERT_TRUE(FakeRuntime::set_device(0).ok());
  const auto sets = FakeRuntime::calls(FakeOp::set_device);
  EXPECT_EQ(s.reset(), ReleaseOutcome::destroyed);
  EXPECT_EQ(FakeRuntime::calls(FakeOp::set_device), sets + 2);  // to 1, back to 0
  int current = -1;
  ASSERT_TRUE(FakeRuntime::get_device(current).ok());
  EXPECT_EQ(current, 0);
}

TEST_F(HandlesTest, MoveTransfersOwnership) {
  FakeStream a(gs::StreamParams{});
  void* native = a.get();
  FakeStream b(std::move(a));
  EXPECT_FALSE(a);  // NOLINT(bugprone-use-after-move): moved-from handles are empty
  EXPECT_EQ(b.get(), native);
  FakeStream c(gs::StreamParams{});
  c = std::move(b);
  EXPECT_EQ(c.get(), native);
  EXPECT_EQ(FakeRuntime::live_handles(kStreamKind), 1u);
  EXPECT_EQ(a.reset(), ReleaseOutcome::none);
  EXPECT_EQ(c.reset(), ReleaseOutcome::destroyed);
  EXPECT_EQ(c.reset(), ReleaseOutcome::none);
  EXPECT_EQ(FakeRuntime::invalid_handle_destroys(), 0u);
}

TEST_F(HandlesTest, EventsBelongToTheirDeviceLikeCudaEvents) {
  FakeStream s0(gs::StreamParams{}, 0);
  FakeEvent e1(gs::EventParams{}, 1);
  EXPECT_EQ(FakeRuntime::event_device(e1.get()), 1);
  EXPECT_EQ(FakeRuntime::event_record(e1.get(), s0.get()).code, gs::codes::invalid_resource_handle);
  FakeEvent e0(gs::EventParams{}, 0);
  FakeRuntime::enqueue_work(s0.get());
  ASSERT_TRUE(FakeRuntime::event_record(e0.get(), s0.get()).ok());
  EXPECT_EQ(FakeRuntime::event_query(e0.get()).code, gs::codes::not_ready);
  FakeRuntime::complete_stream(s0.get());
  EXPECT_TRUE(FakeRuntime::event_query(e0.get()).ok());
  const auto destroys = FakeRuntime::calls(FakeOp::event_destroy);
  e0.reset();
  e1.reset();
  EXPECT_EQ(FakeRuntime::calls(FakeOp::event_destroy), destroys + 2);
}

TEST_F(HandlesTest, GraphExecNeedsAGraph) {
  try {
    FakeGraphExec g(gs::GraphExecParams{});
    FAIL() << "no exception";
  } catch (const gs::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("GraphExec"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("no graph to instantiate"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("GraphExecParams::graph"), std::string::npos);
  }
  FakeGraphExec g(some_graph());
  EXPECT_TRUE(g);
  EXPECT_EQ(FakeRuntime::live_handles(static_cast<int>(HandleKind::graph_exec)), 1u);
}

TEST_F(HandlesTest, BadInputIsATypedErrorThatSaysWhatToDo) {
  auto message_of = [](auto&& make) -> std::string {
    try {
      make();
    } catch (const gs::InvalidArgument& e) {
      return e.what();
    } catch (...) {
      return "another exception";
    }
    return "no exception";
  };
  const std::string flags = message_of([] { FakeStream s(gs::StreamParams{8, 0}); });
  EXPECT_NE(flags.find("unknown stream flags 8"), std::string::npos) << flags;
  EXPECT_NE(flags.find("kStreamNonBlocking"), std::string::npos) << flags;
  const std::string prio = message_of([] { FakeStream s(gs::StreamParams{1, 3}); });
  EXPECT_NE(prio.find("priority 3"), std::string::npos) << prio;
  EXPECT_NE(prio.find("device's range"), std::string::npos) << prio;
  const std::string dev = message_of([] { FakeStream s(gs::StreamParams{}, 5); });
  EXPECT_NE(dev.find("device 5"), std::string::npos) << dev;
  EXPECT_NE(dev.find("valid indices are 0..1"), std::string::npos) << dev;
  const std::string neg = message_of([] { FakeStream s(gs::StreamParams{}, -3); });
  EXPECT_NE(neg.find("negative device index"), std::string::npos) << neg;
  const std::string ipc = message_of([] { FakeEvent e(gs::EventParams{gs::kEventInterprocess}); });
  EXPECT_NE(ipc.find("kEventDisableTiming"), std::string::npos) << ipc;
  EXPECT_EQ(FakeRuntime::live_handles(), 0u);
}

TEST_F(HandlesTest, CreationFailuresAreTypedErrors) {
  FakeRuntime::fail_call(FakeOp::handle_create, gs::codes::memory_allocation);
  EXPECT_THROW(FakeStream s(gs::StreamParams{}), gs::OutOfMemory);
  FakeRuntime::set_mode(FakeMode::no_driver);
  try {
    FakeStream s(gs::StreamParams{});
    FAIL() << "no exception";
  } catch (const gs::NoGpu& e) {
    EXPECT_EQ(e.runtime_code(), gs::codes::insufficient_driver);
    EXPECT_NE(std::string(e.what()).find("Stream("), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("no usable GPU"), std::string::npos) << e.what();
  }
  FakeRuntime::set_mode(FakeMode::normal);
  EXPECT_EQ(FakeRuntime::live_handles(), 0u);
}

TEST_F(HandlesTest, PoisonedDeviceRefusesCreationAndLeaksOnRelease) {
  FakeStream s(gs::StreamParams{});
  gs::detail::mark_poisoned(0);
  EXPECT_THROW(FakeStream t(gs::StreamParams{}), gs::DevicePoisoned);
  const auto before = gs::handle_stats(HandleKind::stream);
  const auto calls = FakeRuntime::total_calls();
  EXPECT_EQ(s.reset(), ReleaseOutcome::leaked);
  EXPECT_EQ(FakeRuntime::total_calls(), calls) << "no runtime call on a poisoned device";
  const auto after = gs::handle_stats(HandleKind::stream);
  EXPECT_EQ(after.leaked[static_cast<int>(LeakReason::poisoned)],
            before.leaked[static_cast<int>(LeakReason::poisoned)] + 1);
  gs::notify_device_reset(0);
  FakeStream u(gs::StreamParams{});  // works again after the reset
  EXPECT_TRUE(u);
}

TEST_F(HandlesTest, ResetDeviceLeavesOldHandlesToTheOs) {
  FakeEvent e0(gs::EventParams{}, 0);
  FakeEvent e1(gs::EventParams{}, 1);
  gs::notify_device_reset(0);
  EXPECT_FALSE(e0.usable());
  EXPECT_TRUE(e1.usable());
  const auto destroys = FakeRuntime::calls(FakeOp::event_destroy);
  const auto leaked = gs::leaked_handle_count(HandleKind::event);
  EXPECT_EQ(e0.reset(), ReleaseOutcome::leaked);
  EXPECT_EQ(e1.reset(), ReleaseOutcome::destroyed);
  EXPECT_EQ(FakeRuntime::calls(FakeOp::event_destroy), destroys + 1);
  EXPECT_EQ(gs::leaked_handle_count(HandleKind::event), leaked + 1);
}

TEST_F(HandlesTest, FailingDestroyIsLoggedOncePerKind) {
  LogCapture logs;
  std::vector<FakeGraphExec> graphs;
  for (int i = 0; i < 5; ++i) graphs.emplace_back(some_graph());
  FakeRuntime::fail_call(FakeOp::handle_destroy, gs::codes::unknown, 0, -1);
  const auto before = gs::handle_stats(HandleKind::graph_exec);
  for (auto& g : graphs) EXPECT_EQ(g.reset(), ReleaseOutcome::failed);
  EXPECT_LE(logs.count_containing("GraphExec: cudaGraphExecDestroy"), 1u);
  EXPECT_EQ(gs::handle_stats(HandleKind::graph_exec).destroy_failures, before.destroy_failures + 5);
  FakeRuntime::clear_faults();
}

TEST_F(HandlesTest, StickyErrorOnDestroyPoisonsTheDevice) {
  FakeStream a(gs::StreamParams{});
  FakeStream b(gs::StreamParams{});
  FakeRuntime::fail_call(FakeOp::handle_destroy, gs::codes::illegal_address);
  EXPECT_EQ(a.reset(), ReleaseOutcome::failed);
  EXPECT_TRUE(gs::device_is_poisoned(0));
  const auto calls = FakeRuntime::total_calls();
  EXPECT_EQ(b.reset(), ReleaseOutcome::leaked);
  EXPECT_EQ(FakeRuntime::total_calls(), calls);
}

TEST_F(HandlesTest, ForkedChildMakesNoCallAndRefusesNewHandles) {
  FakeStream s(gs::StreamParams{});
  FakeEvent e(gs::EventParams{});
  const int rc = gpusafe_test::run_in_child([&] {
    const auto calls = FakeRuntime::total_calls();
    if (s.reset() != ReleaseOutcome::leaked) return 10;
    if (e.reset() != ReleaseOutcome::leaked) return 11;
    if (FakeRuntime::total_calls() != calls) return 12;
    try {
      FakeStream t(gs::StreamParams{});
      return 13;
    } catch (const gs::ForkedChild&) {
    }
    return gs::handle_stats(HandleKind::stream).leaked[static_cast<int>(LeakReason::forked_child)] >
                   0
               ? 0
               : 14;
  });
  EXPECT_EQ(rc, 0);
  EXPECT_TRUE(s);
}

TEST_F(HandlesTest, TrackedHandlesAppearInTheLeakReport) {
  gs::set_handle_tracking(true);
  FakeStream s(gs::StreamParams{}, 1, GPUSAFE_HANDLE_SITE("decoder"));
  gs::set_handle_tracking(false);
  auto reporter = gs::handle_leak_reporter();
  auto records = reporter->leak_records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].resource, "Stream on device 1");
  EXPECT_EQ(records[0].tag, "decoder");
  EXPECT_NE(records[0].file.find("handles_test.cpp"), std::string::npos);
  gs::BasicMemoryManager<FakeRuntime> manager;
  manager.attach(reporter);
  const auto report = manager.leak_report();
  EXPECT_EQ(report.records.size(), 1u);
  s.reset();
  EXPECT_TRUE(reporter->leak_records().empty());
}

TEST(HandlesRealRuntime, CreationWithoutAGpuNamesTheCause) {
  if (gs::is_cuda_available()) GTEST_SKIP() << "a GPU is present";
  for (int kind = 0; kind < 2; ++kind) {
    try {
      if (kind == 0) {
        gs::Stream s(gs::StreamParams{});
      } else {
        gs::Event e(gs::EventParams{});
      }
      FAIL() << "no exception";
    } catch (const gs::NoGpu& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(kind == 0 ? "Stream(" : "Event("), std::string::npos) << what;
#if GPUSAFE_WITH_CUDA
      if (gs::cuda_status() == gs::CudaStatus::no_driver) {
        EXPECT_NE(what.find("no driver"), std::string::npos) << what;
        EXPECT_EQ(e.runtime_code(), gs::codes::insufficient_driver);
      }
#endif
    }
  }
}

TEST(HandlesHostRuntime, HostRuntimeHasNoHandles) {
  EXPECT_THROW(gs::BasicStream<gs::HostRuntime> s(gs::StreamParams{}), gs::NoGpu);
  gs::BasicStream<gs::HostRuntime> empty;
  EXPECT_FALSE(empty);
  EXPECT_EQ(empty.reset(), ReleaseOutcome::none);
}
