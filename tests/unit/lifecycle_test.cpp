// Unit tests of gpusafe/lifecycle.hpp: the exit flag against the runtime's teardown, fork
// detection (also with library locks held by other threads at fork time), device epochs and
// poisoning, the registry of Reclaimables, NoDestructor and the bad-input errors.
#include "gpusafe/lifecycle.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "../support/child_process.hpp"
#include "gpusafe/testing/fake_runtime.hpp"

namespace gs = gpusafe;
using gs::testing::FakeRuntime;
using namespace std::chrono_literals;

namespace {

using gpusafe_test::kChildHung;
using gpusafe_test::run_in_child;

// A resource for the registry tests: records the order and the requests it saw.
class Probe : public gs::Reclaimable {
 public:
  Probe(std::string name, gs::ReclaimCost cost, std::size_t gives, std::vector<std::string>* order,
        std::mutex* order_mutex)
      : name_(std::move(name)), cost_(cost), gives_(gives), order_(order), mutex_(order_mutex) {}
  std::size_t reclaim(const gs::ReclaimRequest& r) noexcept override {
    last_ = r;
    ++calls_;
    if (order_) {
      std::lock_guard<std::mutex> lock(*mutex_);
      order_->push_back(name_);
    }
    return gives_;
  }
  gs::ReclaimCost reclaim_cost() const noexcept override { return cost_; }
  const char* reclaimable_name() const noexcept override { return name_.c_str(); }

  int calls() const { return calls_.load(); }
  gs::ReclaimRequest last() const { return last_; }

 private:
  std::string name_;
  gs::ReclaimCost cost_;
  std::size_t gives_;
  std::vector<std::string>* order_;
  std::mutex* mutex_;
  std::atomic<int> calls_{0};
  gs::ReclaimRequest last_{};
};

// A reclaim that blocks (in the process that created it) until released.
class Blocking : public gs::Reclaimable {
 public:
  std::size_t reclaim(const gs::ReclaimRequest&) noexcept override {
    ++calls;
    if (::getpid() == owner) {
      entered = true;
      const auto deadline = std::chrono::steady_clock::now() + 5s;
      while (!release && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(1ms);
      finished = true;
    }
    return 10;
  }
  const pid_t owner = ::getpid();
  std::atomic<int> calls{0};
  std::atomic<bool> entered{false};
  std::atomic<bool> release{false};
  std::atomic<bool> finished{false};
};

void wait_for(const std::atomic<bool>& flag) {
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!flag && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
  ASSERT_TRUE(flag.load()) << "the other thread never got there";
}

}  // namespace

// ---- the exit flag and the runtime's teardown
// ----------------------------------------------------

// Each of these runs in a fresh child process (a re-executed copy of this test), so the fake
// runtime really is used there for the first time.
class ExitFlag : public ::testing::Test {
 protected:
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

namespace {

// Holds a fake device buffer; its destructor releases it as every gpusafe release path does.
struct StaticHolder {
  void* buffer = nullptr;
  bool built_before_first_call = false;
  ~StaticHolder() {
    if (FakeRuntime::torn_down() && !gs::process_is_exiting<FakeRuntime>()) std::_Exit(11);
    if (built_before_first_call) {
      // Destroyed after the runtime's teardown (atexit order): exiting must already be set.
      // gpusafe's first use with the fake is here, after the fake's teardown: it must learn it.
      if (!gs::process_is_exiting<FakeRuntime>()) std::_Exit(12);
      if (gs::is_cuda_available()) std::_Exit(13);
      if (gs::cuda_status() != gs::CudaStatus::exiting) std::_Exit(14);
    }
    gs::detail::BasicRuntimeCallGate<FakeRuntime> gate;
    if (!gate) {
      // Dropped (the OS takes the memory back): right only after the runtime's teardown.
      if (!built_before_first_call) std::_Exit(16);
      return;
    }
    // Admitted: the runtime must still be alive (a call after teardown traps).
    if (!FakeRuntime::deallocate(gs::MemoryKind::device, 0, buffer).ok()) std::_Exit(15);
  }
};

StaticHolder& holder() {
  static StaticHolder h;
  return h;
}

[[noreturn]] void static_then_first_call(bool other_runtime_first) {
  if (other_runtime_first) (void)gs::is_cuda_available();  // gpusafe used first, on CUDA
  if (gs::process_is_exiting()) std::_Exit(20);
  holder().built_before_first_call = true;  // built now, before the fake's first call
  FakeRuntime::reset();
  FakeRuntime::trap_after_teardown(true);
  if (FakeRuntime::started()) std::_Exit(21);
  if (!FakeRuntime::allocate(gs::MemoryKind::device, 0, 256, &holder().buffer).ok()) std::_Exit(22);
  std::exit(0);
}

[[noreturn]] void first_call_then_static() {
  FakeRuntime::reset();
  FakeRuntime::trap_after_teardown(true);
  int n = 0;
  if (!FakeRuntime::device_count(n).ok()) std::_Exit(22);
  holder().built_before_first_call = false;  // built after the first call: destroyed first
  if (!FakeRuntime::allocate(gs::MemoryKind::device, 0, 256, &holder().buffer).ok()) std::_Exit(23);
  std::atexit([] {
    // Registered last, runs first: nothing has been torn down yet. A peek, not a use of
    // gpusafe: the holder's release below is gpusafe's first use, inside exit but before the
    // runtime's teardown, and must release for real.
    if (gs::detail::is_exiting() || FakeRuntime::torn_down()) std::_Exit(24);
  });
  std::exit(0);
}

}  // namespace

TEST_F(ExitFlag, StaticBuiltBeforeTheFirstCallSeesExitingBeforeTeardown) {
  EXPECT_EXIT(static_then_first_call(false), ::testing::ExitedWithCode(0), "");
}

TEST_F(ExitFlag, HoldsWhenAnotherRuntimeWasCalledFirst) {
  EXPECT_EXIT(static_then_first_call(true), ::testing::ExitedWithCode(0), "");
}

TEST_F(ExitFlag, StaticBuiltAfterTheFirstCallReleasesNormally) {
  EXPECT_EXIT(first_call_then_static(), ::testing::ExitedWithCode(0), "");
}

TEST_F(ExitFlag, QuickExitSetsTheFlagToo) {
  EXPECT_EXIT(
      {
        // Registered before gpusafe's first use, so it runs after gpusafe's handler.
        std::at_quick_exit([] { std::_Exit(gs::detail::is_exiting() ? 0 : 30); });
        FakeRuntime::reset();
        (void)gs::process_is_exiting<FakeRuntime>();  // gpusafe's first use
        std::quick_exit(1);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST(ProcessState, NotExitingWhileTestsRun) {
  EXPECT_FALSE(gs::process_is_exiting());
  gs::detail::RuntimeCallGate gate;
  EXPECT_TRUE(static_cast<bool>(gate));
}

// ---- fork --------------------------------------------------------------------------------------

TEST(Fork, ChildIsDetected) {
  (void)gs::is_cuda_available();  // probe in the parent first, as real programs do
  EXPECT_FALSE(gs::in_forked_child());
  const bool parent_available = gs::is_cuda_available();
  const int rc = run_in_child([] {
    if (!gs::in_forked_child()) return 1;
    if (gs::is_cuda_available()) return 2;
    if (gs::cuda_status() != gs::CudaStatus::forked_child) return 3;
    if (gs::cuda_device_count() != 0) return 4;
    gs::detail::RuntimeCallGate gate;
    if (gate) return 5;
    try {
      gs::check_gpu_request(0, "child request");
      return 6;
    } catch (const gs::ForkedChild& e) {
      if (std::string(e.what()).find("child request") == std::string::npos) return 7;
    }
    bool fell_back = false;
    try {
      (void)gs::resolve_memory_kind<gs::HostRuntime>(gs::MemoryKind::device, gs::Fallback::host,
                                                     &fell_back, "child buffer");
      return 8;
    } catch (const gs::ForkedChild&) {
    }
    // CPU paths keep working.
    if (gs::resolve_memory_kind<gs::HostRuntime>(gs::MemoryKind::host, gs::Fallback::error,
                                                 &fell_back, "host") != gs::MemoryKind::host)
      return 9;
    return 0;
  });
  EXPECT_EQ(rc, 0);
  EXPECT_FALSE(gs::in_forked_child());
  EXPECT_EQ(gs::is_cuda_available(), parent_available) << "the parent is unaffected";
}

TEST(Fork, ChildOfAChildIsDetected) {
  const int rc = run_in_child([] {
    const int inner = run_in_child([] { return gs::in_forked_child() ? 0 : 1; });
    return inner == 0 && gs::in_forked_child() ? 0 : 1;
  });
  EXPECT_EQ(rc, 0);
}

TEST(Fork, ChildLogsAndReclaimsWhileLocksWereHeldAtForkTime) {
  FakeRuntime::reset();
  int n = 0;
  ASSERT_TRUE(FakeRuntime::device_count(n).ok());  // its lock hook is installed now

  Blocking slow;
  gs::ReclaimRegistration reg(slow);
  ASSERT_TRUE(reg.active());

  // Thread 1 holds the log lock inside a slow sink.
  std::atomic<bool> in_sink{false};
  std::atomic<bool> leave_sink{false};
  const pid_t parent = ::getpid();
  const gs::LogLevel old_level = gs::log_level();
  gs::set_log_level(gs::LogLevel::info);
  gs::LogSink old_sink = gs::set_log_sink([&](gs::LogLevel, std::string_view) {
    if (::getpid() != parent) return;
    in_sink = true;
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (!leave_sink && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(1ms);
  });
  // Each thread is started only once the previous one holds its lock, so none waits on another.
  std::thread logger([] { gs::log(gs::LogLevel::error, "slow message"); });
  wait_for(in_sink);
  // Thread 2 holds a registry entry's lock inside a slow reclaim.
  std::thread reclaimer([] { (void)gs::reclaim_all(); });
  wait_for(slow.entered);
  // Thread 3 holds the registry's own lock as fork() begins. That lock guards the registry's list,
  // so fork() waits for it (a pthread_atfork prepare handler) and the child never copies the
  // list half-changed; it is held only briefly in real code, and here for 200 ms.
  std::atomic<bool> holding{false};
  std::atomic<bool> let_go{false};
  std::thread registry_holder([&] {
    std::lock_guard<std::mutex> lock(gs::detail::registry().mutex);
    holding = true;
    const auto until = std::chrono::steady_clock::now() + 200ms;
    while (!let_go && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(1ms);
  });
  wait_for(holding);
  // Thread 4 holds the fake runtime's lock.
  std::atomic<bool> fake_locked{false};
  std::atomic<bool> fake_unlock{false};
  std::thread fake_holder([&] {
    std::lock_guard<std::mutex> lock(gs::testing::detail_fake::state().mutex);
    fake_locked = true;
    while (!fake_unlock) std::this_thread::sleep_for(1ms);
  });
  wait_for(fake_locked);

  const int rc = run_in_child([&slow] {
    if (!gs::in_forked_child()) return 1;
    static std::atomic<int> delivered{0};
    gs::set_log_sink([](gs::LogLevel, std::string_view m) {
      if (m == "from the child") ++delivered;
    });
    gs::log(gs::LogLevel::error, "from the child");
    if (delivered != 1) return 2;
    // The slow resource's lock was held by a thread that does not exist here.
    if (gs::reclaim_all() < 10) return 3;
    if (slow.calls < 2) return 4;
    if (gs::shutdown() < 10) return 5;
    Blocking other;
    gs::ReclaimRegistration r2(other);
    if (gs::registered_reclaimable_count() < 2) return 6;
    r2.reset();
    if (FakeRuntime::live_allocations() != 0) return 7;  // takes the fake's lock
    int m = 0;
    if (FakeRuntime::device_count(m).code != gs::codes::initialization_error) return 8;
    return 0;
  });
  leave_sink = true;
  slow.release = true;
  let_go = true;
  fake_unlock = true;
  logger.join();
  reclaimer.join();
  registry_holder.join();
  fake_holder.join();
  gs::set_log_sink(std::move(old_sink));
  gs::set_log_level(old_level);

  EXPECT_NE(rc, kChildHung) << "the child hung on a lock inherited held";
  EXPECT_EQ(rc, 0);
  EXPECT_TRUE(slow.finished.load());
}

// ---- epochs and poisoning ----------------------------------------------------------------------

TEST(Epochs, ResetBumpsOnlyThatDevice) {
  const std::uint32_t e0 = gs::device_epoch(0);
  const std::uint32_t e1 = gs::device_epoch(1);
  const std::uint32_t e2 = gs::device_epoch(2);
  gs::notify_device_reset(1);
  EXPECT_EQ(gs::device_epoch(0), e0);
  EXPECT_EQ(gs::device_epoch(1), e1 + 1);
  EXPECT_EQ(gs::device_epoch(2), e2);
  gs::notify_device_reset(1);
  EXPECT_EQ(gs::device_epoch(1), e1 + 2);
  gs::notify_device_reset(gs::detail::kMaxDevices - 1);
  EXPECT_EQ(gs::device_epoch(0), e0);
}

TEST(Epochs, StickyStatusPoisonsUntilReset) {
  FakeRuntime::reset(2);
  gs::notify_device_reset(1);
  ASSERT_FALSE(gs::device_is_poisoned(1));
  EXPECT_NO_THROW(gs::check_gpu_request(1, "before"));

  FakeRuntime::set_mode(gs::testing::FakeMode::sticky);
  EXPECT_EQ(gs::detail::RuntimeCalls<FakeRuntime>::synchronize(1).error_class(),
            gs::ErrorClass::sticky);
  EXPECT_TRUE(gs::device_is_poisoned(1));
  EXPECT_FALSE(gs::device_is_poisoned(0)) << "only the failing device";
  try {
    gs::check_gpu_request(1, "acquire(4096 bytes)");
    FAIL() << "expected DevicePoisoned";
  } catch (const gs::DevicePoisoned& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("acquire(4096 bytes)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("notify_device_reset(1)"), std::string::npos) << msg;
  }

  FakeRuntime::set_mode(gs::testing::FakeMode::normal);
  const std::uint32_t before = gs::device_epoch(1);
  gs::notify_device_reset(1);
  EXPECT_FALSE(gs::device_is_poisoned(1));
  EXPECT_EQ(gs::device_epoch(1), before + 1);
  EXPECT_NO_THROW(gs::check_gpu_request(1, "after"));
  FakeRuntime::reset();
}

TEST(Epochs, NonStickyErrorsDoNotPoison) {
  FakeRuntime::reset(1);
  for (int code : {2, 4, 35, 100, 709, 999, 1}) {
    FakeRuntime::fail_call(gs::testing::FakeOp::synchronize, code);
    EXPECT_EQ(gs::detail::RuntimeCalls<FakeRuntime>::synchronize(0).code, code);
    EXPECT_FALSE(gs::device_is_poisoned(0)) << code;
  }
}

TEST(BadInput, NotifyDeviceResetOutOfRange) {
  for (int bad : {-1, 1000, gs::detail::kMaxDevices}) {
    try {
      gs::notify_device_reset(bad);
      FAIL() << "expected InvalidArgument for " << bad;
    } catch (const gs::InvalidArgument& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("notify_device_reset(" + std::to_string(bad) + ")"), std::string::npos)
          << msg;
      EXPECT_NE(msg.find("pass the index given to cudaSetDevice"), std::string::npos) << msg;
    }
  }
}

// ---- the registry
// --------------------------------------------------------------------------------

TEST(Registry, RegisterAndUnregister) {
  const std::size_t base = gs::registered_reclaimable_count();
  Probe a("a", gs::ReclaimCost::idle_memory, 1, nullptr, nullptr);
  {
    gs::ReclaimRegistration r(a);
    EXPECT_TRUE(r.active());
    EXPECT_EQ(gs::registered_reclaimable_count(), base + 1);
    gs::ReclaimRegistration moved(std::move(r));
    EXPECT_FALSE(r.active());  // NOLINT(bugprone-use-after-move): the moved-from state is defined
    EXPECT_TRUE(moved.active());
    EXPECT_EQ(gs::registered_reclaimable_count(), base + 1);
  }
  EXPECT_EQ(gs::registered_reclaimable_count(), base);
  EXPECT_EQ(gs::reclaim_all(), 0u);
  EXPECT_EQ(a.calls(), 0) << "an unregistered resource is never called";
}

TEST(Registry, ReclaimAllGoesCheapestFirst) {
  std::vector<std::string> order;
  std::mutex m;
  Probe fw("framework", gs::ReclaimCost::framework_cache, 5, &order, &m);
  Probe idle1("idle1", gs::ReclaimCost::idle_memory, 5, &order, &m);
  Probe models("models", gs::ReclaimCost::evictable_models, 5, &order, &m);
  Probe ctl("controller", gs::ReclaimCost::controller, 0, &order, &m);
  Probe idle2("idle2", gs::ReclaimCost::idle_memory, 5, &order, &m);
  gs::ReclaimRegistration r1(fw), r2(idle1), r3(models), r4(ctl), r5(idle2);
  EXPECT_EQ(gs::reclaim_all(), 20u);
  EXPECT_EQ(order,
            (std::vector<std::string>{"controller", "idle1", "idle2", "models", "framework"}));
}

TEST(Registry, BytesGoalStopsEarly) {
  Probe a("a", gs::ReclaimCost::idle_memory, 100, nullptr, nullptr);
  Probe b("b", gs::ReclaimCost::evictable_models, 100, nullptr, nullptr);
  Probe c("c", gs::ReclaimCost::framework_cache, 100, nullptr, nullptr);
  gs::ReclaimRegistration ra(a), rb(b), rc(c);
  gs::ReclaimRequest req;
  req.level = gs::ReclaimLevel::light;
  req.bytes_goal = 150;
  req.device = 3;
  EXPECT_EQ(gs::reclaim_all(req), 200u);
  EXPECT_EQ(a.calls(), 1);
  EXPECT_EQ(b.calls(), 1);
  EXPECT_EQ(c.calls(), 0) << "the goal was met before the dearest resource";
  EXPECT_EQ(a.last().bytes_goal, 150u);
  EXPECT_EQ(b.last().bytes_goal, 50u) << "each resource is asked for what is still missing";
  EXPECT_EQ(b.last().level, gs::ReclaimLevel::light);
  EXPECT_EQ(b.last().device, 3);
}

TEST(Registry, ShutdownReachesEveryResource) {
  std::vector<std::unique_ptr<Probe>> probes;
  std::vector<gs::ReclaimRegistration> regs;
  const gs::ReclaimCost costs[] = {gs::ReclaimCost::framework_cache, gs::ReclaimCost::controller,
                                   gs::ReclaimCost::idle_memory, gs::ReclaimCost::evictable_models};
  for (int i = 0; i < 12; ++i) {
    probes.push_back(std::make_unique<Probe>("p" + std::to_string(i), costs[i % 4],
                                             static_cast<std::size_t>(i), nullptr, nullptr));
    regs.emplace_back(*probes.back());
  }
  EXPECT_EQ(gs::shutdown(), std::size_t{66});  // 0 + 1 + ... + 11
  for (const auto& p : probes) {
    EXPECT_EQ(p->calls(), 1) << p->reclaimable_name();
    EXPECT_EQ(p->last().level, gs::ReclaimLevel::shutdown);
    EXPECT_EQ(p->last().device, -1);
  }
}

TEST(Registry, UnregisterWaitsForAConcurrentReclaim) {
  auto slow = std::make_unique<Blocking>();
  auto reg = std::make_unique<gs::ReclaimRegistration>(*slow);
  std::thread reclaimer([] { (void)gs::reclaim_all(); });
  wait_for(slow->entered);

  std::atomic<bool> unregistered{false};
  std::atomic<bool> reclaim_done_when_unregistered{false};
  std::thread destroyer([&] {
    reg->reset();
    reclaim_done_when_unregistered = slow->finished.load();
    unregistered = true;
  });
  std::this_thread::sleep_for(100ms);
  EXPECT_FALSE(unregistered.load()) << "reset() returned while reclaim() was still running";
  slow->release = true;
  destroyer.join();
  reclaimer.join();
  EXPECT_TRUE(unregistered.load());
  EXPECT_TRUE(reclaim_done_when_unregistered.load());
  slow.reset();  // safe now: nothing can call it any more
  EXPECT_EQ(gs::reclaim_all(), 0u);
}

TEST(Registry, AResourceMayUnregisterItselfDuringReclaim) {
  struct SelfRemoving : gs::Reclaimable {
    gs::ReclaimRegistration reg;
    std::size_t reclaim(const gs::ReclaimRequest&) noexcept override {
      reg.reset();
      return 7;
    }
  } self;
  self.reg = gs::ReclaimRegistration(self);
  const std::size_t before = gs::registered_reclaimable_count();
  EXPECT_EQ(gs::reclaim_all(), 7u);
  EXPECT_EQ(gs::registered_reclaimable_count(), before - 1);
  EXPECT_FALSE(self.reg.active());
}

TEST(Registry, ConcurrentRegistrationAndReclaim) {
  std::atomic<bool> stop{false};
  std::thread reclaimer([&] {
    while (!stop) (void)gs::reclaim_all();
  });
  std::vector<std::thread> workers;
  for (int t = 0; t < 2; ++t) {
    workers.emplace_back([] {
      for (int i = 0; i < 2000; ++i) {
        Probe p("p", gs::ReclaimCost::idle_memory, 1, nullptr, nullptr);
        gs::ReclaimRegistration r(p);
      }  // p dies right after unregistering: a reclaim must never touch it afterwards
    });
  }
  for (auto& w : workers) w.join();
  stop = true;
  reclaimer.join();
  EXPECT_EQ(gs::reclaim_all(), 0u);
}

// ---- NoDestructor
// --------------------------------------------------------------------------------

namespace {
std::atomic<int> g_destroyed{0};
// A shared resource whose reclaim takes a lock of the program's own (as a cache's eviction
// callback may).
class LockingReclaimable : public gs::Reclaimable {
 public:
  explicit LockingReclaimable(std::mutex& m) : m_(m) {}
  std::size_t reclaim(const gs::ReclaimRequest&) noexcept override {
    entered = true;
    std::lock_guard<std::mutex> lock(m_);
    return 1;
  }
  std::atomic<bool> entered{false};

 private:
  std::mutex& m_;
};

TEST(Registry, SharedResourceIsReclaimedWithNoRegistryLockHeld) {
  std::mutex program_lock;
  auto resource = std::make_shared<LockingReclaimable>(program_lock);
  auto registration = std::make_unique<gs::ReclaimRegistration>(
      std::static_pointer_cast<gs::Reclaimable>(resource));
  std::unique_lock<std::mutex> held(program_lock);
  // reclaim_all blocks inside the resource, on the program's lock...
  auto reclaiming = std::async(std::launch::async, [] { return gs::reclaim_all(); });
  while (!resource->entered) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  // ...while the lock's holder unregisters the resource: that must not wait for the reclaim.
  auto unregistering = std::async(std::launch::async, [&] { registration.reset(); });
  const bool unregistered =
      unregistering.wait_for(std::chrono::seconds(5)) == std::future_status::ready;
  held.unlock();
  EXPECT_TRUE(unregistered) << "unregistering waited for a reclaim blocked on the caller's lock";
  EXPECT_GE(reclaiming.get(), 1u);
  unregistering.wait();
  EXPECT_EQ(gs::reclaim_all(), 0u);  // gone from the registry
}

TEST(Registry, SharedResourceDyingFirstIsSkipped) {
  std::mutex m;
  auto resource = std::make_shared<LockingReclaimable>(m);
  gs::ReclaimRegistration registration(std::static_pointer_cast<gs::Reclaimable>(resource));
  EXPECT_EQ(gs::reclaim_all(), 1u);
  resource.reset();  // the registry does not keep it alive
  EXPECT_EQ(gs::reclaim_all(), 0u);
}

struct Counted {
  explicit Counted(int v) : value(v) {}
  ~Counted() { ++g_destroyed; }
  int value;
};
}  // namespace

TEST(NoDestructorTest, ConstructsInPlaceAndNeverDestroys) {
  {
    gs::NoDestructor<Counted> nd(41);
    EXPECT_EQ(nd->value, 41);
    nd.get().value = 42;
    EXPECT_EQ((*nd).value, 42);
    const auto& cref = nd;
    EXPECT_EQ(cref.get().value, 42);
  }
  EXPECT_EQ(g_destroyed.load(), 0);
  static_assert(std::is_trivially_destructible<gs::NoDestructor<std::string>>::value,
                "no exit-time destructor is registered for it");
}

TEST(NoDestructorTest, ValidInAnAtexitHandlerAfterStaticDestruction) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        static std::string* seen = nullptr;
        std::atexit([] { std::_Exit(seen && *seen == "still here" ? 0 : 1); });
        static gs::NoDestructor<std::string> kept("still here");
        seen = &kept.get();
        std::exit(2);
      },
      ::testing::ExitedWithCode(0), "");
}
