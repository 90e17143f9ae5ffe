// Teardown-hazard scenarios of the MemoryManager: a timer thread alive at exit (static and leaked
// managers), in a forked child, and the manager's locks held by another thread across fork().
#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "gpusafe/buffer_pool.hpp"
#include "gpusafe/memory_manager.hpp"
#include "hazard.hpp"

namespace gs = gpusafe;
namespace hz = gpusafe_hazards;
using namespace std::chrono_literals;

namespace {

template <class Runtime>
gs::BasicBufferPool<Runtime> make_pool(const char* name) {
  gs::BufferPoolOptions o;
  o.kind = gs::MemoryKind::device;
  o.fallback = gs::Fallback::host;
  o.classes = {{64 << 10, 4}, {1 << 20, 2}};
  o.name = name;
  return gs::BasicBufferPool<Runtime>(o);
}

// The sanitizers' runtimes (GCC 12) are not fork-safe while other threads allocate (a child can
// hang in their allocator), and ThreadSanitizer cannot start threads in a forked child. Under a
// sanitizer, the fork scenarios therefore fork while the other threads sleep, and the child
// starts no thread of its own under ThreadSanitizer; the plain build runs them in full.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitizedBuild = true;
#else
constexpr bool kSanitizedBuild = false;
#endif
#if defined(__SANITIZE_THREAD__)
constexpr bool kThreadSanitizer = true;
#else
constexpr bool kThreadSanitizer = false;
#endif

/// A timer that cleans up every millisecond and, with a threshold far below any real use, asks
/// the attached pools to trim on every tick: as much runtime traffic as the manager can make.
gs::MemoryManagerOptions busy_options(const char* name) {
  gs::MemoryManagerOptions o;
  o.name = name;
  o.cleanup_interval = 1ms;
  o.cleanup_every_frames = 3;
  o.release_threshold = 1e-9;
  o.log_sink = [](gs::LogLevel, std::string_view) {};
  return o;
}

/// A timer that sleeps through a fork under a sanitizer, and runs every millisecond otherwise.
gs::MemoryManagerOptions fork_options(const char* name) {
  gs::MemoryManagerOptions o = busy_options(name);
  if (kSanitizedBuild) o.cleanup_interval = std::chrono::hours(1);
  return o;
}

/// Acquire/release churn, so trimmed slabs are allocated again while the timer trims them.
template <class Runtime>
void churn(gs::BasicBufferPool<Runtime>& pool, gs::BasicMemoryManager<Runtime>& m, int rounds) {
  for (int i = 0; i < rounds; ++i) {
    auto lease = pool.acquire(1000);
    GPUSAFE_HAZARD_CHECK(lease);
    m.on_frame();
    if (i % 16 == 0) std::this_thread::sleep_for(100us);
  }
}

template <class Fn>
bool eventually(Fn&& fn, std::chrono::milliseconds limit = 5000ms) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!fn()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

}  // namespace

// (1) A static manager whose timer runs when the process exits. It is built before the first
// runtime call, so its destructor runs after the runtime's teardown (the fake traps any call);
// it must join the timer there, and the timer must not call the runtime once exiting. The pool
// is built after the first call and is destroyed first, while the runtime is alive.
GPUSAFE_HAZARD_SCENARIO(manager_static_timer_at_exit) {
  static gs::BasicMemoryManager<Runtime> manager(busy_options("static"));
  static auto pool = make_pool<Runtime>("frames");
  manager.attach(pool);
  manager.start();
  churn(pool, manager, 500);
  GPUSAFE_HAZARD_CHECK(eventually([] { return manager.stats().timer_cleanups >= 2; }));
  GPUSAFE_HAZARD_CHECK(manager.timer_running());
  return 0;  // exits with the timer running
}

// (2) A manager that is never destroyed (leaked), its timer running through exit: no join ever
// happens, so the thread must simply stop calling the runtime once the process is exiting.
GPUSAFE_HAZARD_SCENARIO(manager_leaked_timer_at_exit) {
  // Leaked on purpose (the timer is still running at exit); static pointers keep them
  // reachable, so leak checkers do not report them.
  static auto* pool = new gs::BasicBufferPool<Runtime>(make_pool<Runtime>("frames"));
  static auto* manager = new gs::BasicMemoryManager<Runtime>(busy_options("leaked"));
  manager->attach(*pool);
  manager->start();
  churn(*pool, *manager, 300);
  GPUSAFE_HAZARD_CHECK(eventually([&] { return manager->stats().timer_cleanups >= 2; }));
  return 0;
}

// (3) gpusafe::shutdown() stops a static manager's timer before the exit; the destructor then
// has nothing to join.
GPUSAFE_HAZARD_SCENARIO(manager_shutdown_then_exit) {
  static auto pool = make_pool<Runtime>("frames");
  static gs::BasicMemoryManager<Runtime> manager(busy_options("stopped"));
  manager.attach(pool);
  manager.start();
  churn(pool, manager, 200);
  gs::shutdown();
  GPUSAFE_HAZARD_CHECK(!manager.timer_running());
  const auto cleanups = manager.stats().timer_cleanups;
  std::this_thread::sleep_for(10ms);
  GPUSAFE_HAZARD_CHECK(manager.stats().timer_cleanups == cleanups);
  return 0;
}

// (4) fork() while the timer runs: in the child the thread does not exist. stop() and the
// destructor must not wait for it, the manager must keep working (no runtime call), and a new
// timer can be started and stopped there.
GPUSAFE_HAZARD_SCENARIO(manager_timer_in_forked_child) {
  auto pool = make_pool<Runtime>("frames");
  gs::BasicMemoryManager<Runtime> manager(fork_options("parent"));
  auto* second = new gs::BasicMemoryManager<Runtime>(fork_options("second"));
  manager.attach(pool);
  second->attach(pool);
  manager.start();
  second->start();
  churn(pool, manager, 100);
  if (!kSanitizedBuild)
    GPUSAFE_HAZARD_CHECK(eventually([&] { return manager.stats().timer_cleanups >= 2; }));

  const int rc = hz::run_in_child([&]() -> int {
    GPUSAFE_HAZARD_CHECK(gs::in_forked_child());
    manager.stop();
    GPUSAFE_HAZARD_CHECK(!manager.timer_running());
    delete second;  // its destructor forgets the parent's thread
    manager.cleanup();
    const auto s = manager.snapshot();
    GPUSAFE_HAZARD_CHECK(!s.device_is_gpu);
    GPUSAFE_HAZARD_CHECK(!manager.report().empty());
    GPUSAFE_HAZARD_CHECK(manager.stats().manual_cleanups == 1);
    if (kThreadSanitizer) return 0;
    // A timer of the child's own.
    manager.start(1ms);
    GPUSAFE_HAZARD_CHECK(eventually([&] { return manager.stats().timer_cleanups >= 1; }));
    manager.stop();
    GPUSAFE_HAZARD_CHECK(!manager.timer_running());
    return 0;
  });
  GPUSAFE_HAZARD_CHECK(rc == 0);
  GPUSAFE_HAZARD_CHECK(manager.timer_running());  // the parent's timer is untouched
  churn(pool, manager, 100);
  manager.stop();
  delete second;
  return 0;
}

// (5) Another thread holds the manager's locks (cleanups, snapshots, reports, attach) while the
// main thread forks: the child must be able to use the manager (its locks are re-created).
GPUSAFE_HAZARD_SCENARIO(manager_locks_across_fork) {
  auto pool = make_pool<Runtime>("frames");
  gs::MemoryManagerOptions o = fork_options("locks");
  o.history_length = 8;
  gs::BasicMemoryManager<Runtime> manager(o);
  manager.attach(pool);
  manager.start();
  std::atomic<bool> done{false};
  std::atomic<bool> hold{false};
  std::atomic<bool> held{false};
  std::thread hammer([&] {
    while (!done.load()) {
      if (hold.load()) {
        held = true;
        continue;
      }
      held = false;
      manager.cleanup();
      (void)manager.snapshot();
      (void)manager.report_json();
      manager.attach(pool);
      (void)manager.leak_report();
    }
  });
  for (int i = 0; i < 20; ++i) {
    // Under a sanitizer the hammer pauses around fork() (see kSanitizedBuild).
    if (kSanitizedBuild) {
      hold = true;
      while (!held.load()) std::this_thread::yield();
    }
    const int rc = hz::run_in_child([&]() -> int {
      (void)manager.snapshot();
      (void)manager.report();
      (void)manager.history_csv();
      manager.cleanup();
      manager.detach(pool);
      manager.attach(pool);
      manager.stop();
      return 0;
    });
    hold = false;
    if (rc != 0) std::fprintf(stderr, "child rc=%d\n", rc);
    GPUSAFE_HAZARD_CHECK(rc == 0);
  }
  done.store(true);
  hammer.join();
  manager.stop();
  return 0;
}
