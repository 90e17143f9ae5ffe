// SPDX-License-Identifier: MIT
// gpusafe/detail/periodic_thread.hpp: PeriodicThread, a thread that calls one function every
// interval until stopped (MemoryManager's timer).
//
// The function runs on the thread with no lock of this class held; it may call stop() (the loop
// then ends after it, and the thread is joined later by whoever calls stop(), start() or the
// destructor) and start() (which then keeps the running loop going).
//
// Thread safety: every member may be called from any thread. start() and stop() are serialised
// against each other; running() is one atomic load.
//
// Teardown: stop() and the destructor wake the thread and join it; it is never detached and
// never joined from an atexit handler. Once the process is exiting the thread only sleeps (the
// runtime may be torn down), so a static owner's destructor can still join it. In a forked child
// the thread does not exist: its handle is forgotten without any call on it (not joined, not
// detached), and the locks are built anew there through the fork-aware list (detail/fork.hpp).
#ifndef GPUSAFE_DETAIL_PERIODIC_THREAD_HPP
#define GPUSAFE_DETAIL_PERIODIC_THREAD_HPP

#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <new>
#include <thread>
#include <utility>

#include "gpusafe/config.hpp"
#include "gpusafe/detail/fork.hpp"
#include "gpusafe/detail/thread_annotations.hpp"
#include "gpusafe/lifecycle.hpp"

GPUSAFE_NAMESPACE_BEGIN
namespace detail {

class PeriodicThread {
 public:
  /// `tick` runs on the thread once per interval; it must not throw.
  explicit PeriodicThread(std::function<void()> tick) : tick_(std::move(tick)) {}

  PeriodicThread(const PeriodicThread&) = delete;
  PeriodicThread& operator=(const PeriodicThread&) = delete;

  /// Stops and joins the thread (forgets it in a forked child).
  ~PeriodicThread() { stop(); }

  /// Starts the thread with `interval`, or keeps it running with the new interval when it was
  /// stopped from inside its own tick and has not left its loop yet. Does nothing when it runs
  /// already. Throws std::system_error when the thread cannot be created.
  void start(std::chrono::milliseconds interval) {
    MutexLock control(sync_.control);
    forget_foreign_thread();
    if (thread_.joinable() && keep_loop_running(interval)) return;
    if (thread_.joinable()) thread_.join();  // its loop has ended: nothing left to wait for
    reset_loop(interval);
    pid_.store(::getpid(), std::memory_order_relaxed);  // before the thread reads it
    thread_ = std::thread([this] { loop(); });
    running_.store(true, std::memory_order_release);
  }

  /// Stops the thread and joins it (wakes it at once). Called on the thread itself (from its
  /// tick), it only ends the loop. In a forked child the parent's thread is forgotten, never
  /// touched. Never throws.
  void stop() noexcept {
    if (on_own_thread()) {
      end_loop_from_inside();
      return;
    }
    MutexLock control(sync_.control);
    stop_locked();
  }

  bool running() const noexcept { return running_.load(std::memory_order_acquire); }

  /// Whether the caller is this object's thread (in this process).
  bool on_own_thread() const noexcept {
    return current() == this && pid_.load(std::memory_order_relaxed) == ::getpid();
  }

 private:
  /// The locks. In a forked child they are built anew: their holders do not exist there.
  struct Sync final : ForkAware {
    Mutex loop;     // stop_requested_, loop_ended_, interval_; with `wake`
    Mutex control;  // start() and stop() against each other
    std::condition_variable_any wake;

    Sync() noexcept { enrol_fork_aware(this); }
    ~Sync() override { withdraw_fork_aware(this); }

    void recreate_locks_in_child() noexcept override {
      new (&loop) Mutex();
      new (&control) Mutex();
      new (&wake) std::condition_variable_any();
    }
  };

  /// The PeriodicThread whose thread this is (null on every other thread).
  static const PeriodicThread*& current() noexcept {
    static thread_local const PeriodicThread* owner = nullptr;
    return owner;
  }

  void loop() noexcept {
    current() = this;
    sync_.loop.lock();
    while (!stop_requested_) {
      if (sleep_or_stop()) break;
      // Once exiting, only sleep: the runtime may be torn down, and whoever destroys the owner
      // joins this thread. A thread started in a forked child does run there.
      if (process_is_exiting()) continue;
      sync_.loop.unlock();
      tick_();
      sync_.loop.lock();
    }
    loop_ended_ = true;
    sync_.loop.unlock();
  }

  /// Waits one interval (or until stop); true when stopped.
  bool sleep_or_stop() GPUSAFE_REQUIRES(sync_.loop) {
    const auto deadline = std::chrono::steady_clock::now() + interval_;
    while (!stop_requested_)
      if (sync_.wake.wait_until(sync_.loop, deadline) == std::cv_status::timeout) break;
    return stop_requested_;
  }

  /// Called with the control lock and a joinable thread: true when that thread goes on (it runs,
  /// or was stopped from its own tick and is still in its loop: it resumes with `interval`).
  bool keep_loop_running(std::chrono::milliseconds interval) noexcept {
    MutexLock lock(sync_.loop);
    if (!stop_requested_) return true;
    if (loop_ended_) return false;
    stop_requested_ = false;
    interval_ = interval;
    running_.store(true, std::memory_order_release);
    return true;
  }

  void reset_loop(std::chrono::milliseconds interval) noexcept {
    MutexLock lock(sync_.loop);
    stop_requested_ = false;
    loop_ended_ = false;
    interval_ = interval;
  }

  /// In a forked child the thread does not exist (fork copies only the calling thread). Its
  /// handle is forgotten without any call on it: joining would wait forever, detaching touches a
  /// thread descriptor that the child's C library has reclaimed (a crash), and destroying a
  /// joinable std::thread calls std::terminate. So an empty handle is built over it and the old
  /// one's destructor never runs.
  void forget_foreign_thread() noexcept {
    if (thread_.joinable() && pid_.load(std::memory_order_relaxed) != ::getpid()) {
      new (&thread_) std::thread();
      running_.store(false, std::memory_order_release);
    }
  }

  /// stop() from the thread's own tick: the loop ends after it. No control lock: another thread
  /// may hold it while joining this one.
  void end_loop_from_inside() noexcept {
    {
      MutexLock lock(sync_.loop);
      stop_requested_ = true;
    }
    running_.store(false, std::memory_order_release);
  }

  void stop_locked() noexcept {
    forget_foreign_thread();
    if (!thread_.joinable()) return;
    {
      MutexLock lock(sync_.loop);
      stop_requested_ = true;
    }
    sync_.wake.notify_all();
    running_.store(false, std::memory_order_release);
    if (thread_.get_id() == std::this_thread::get_id()) return;  // from its own tick: it ends
    thread_.join();
  }

  std::function<void()> tick_;
  Sync sync_;
  std::thread thread_;
  std::atomic<pid_t> pid_{0};
  bool stop_requested_ GPUSAFE_GUARDED_BY(sync_.loop) = false;
  bool loop_ended_ GPUSAFE_GUARDED_BY(sync_.loop) = false;  // the thread is past its loop
  std::chrono::milliseconds interval_ GPUSAFE_GUARDED_BY(sync_.loop){0};
  std::atomic<bool> running_{false};
};

}  // namespace detail
GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_PERIODIC_THREAD_HPP
