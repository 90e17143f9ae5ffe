// SPDX-License-Identifier: MIT
// gpusafe/memory_manager.hpp: MemoryManager, the central memory controller of a GPU pipeline.
//
// It attaches pools, caches and any other Reclaimable (held weakly: an attached object may die
// first), runs a light cleanup every N frames (`on_frame()`) and/or every interval on a timer
// thread, frees memory in order of cost when device usage crosses a threshold
// (`release_if_over_threshold()`), takes snapshots of device memory and of every resource into a
// bounded history (text, JSON and CSV reports: gpusafe/memory_report.hpp), and lists outstanding
// leases (`leak_report()`) of attached resources that implement LeakReporter.
//
// Thread safety: every member function may be called from any thread. `on_frame()` is one relaxed
// atomic increment and a compare on its common path (no lock, no allocation). Cleanups running
// on several threads at once do not overlap: a cleanup that finds another one running skips. A
// cleanup or release called from inside this manager's own cleanup (a resource's reclaim()) on
// the same thread is skipped too, instead of waiting for itself.
//
// Teardown: the timer thread (detail/periodic_thread.hpp) is joined by stop(), by the destructor
// and by gpusafe::shutdown() (the manager registers itself as a ReclaimCost::controller resource,
// which shutdown() drains first); it is never detached and never joined from an atexit handler.
// Once the process is exiting the timer thread only sleeps, so a static manager's destructor can
// still join it. In a forked child the timer thread does not exist: its handle is forgotten
// without any call on it (not joined, not detached). The manager makes no runtime call from its
// destructor, and none at all once the process is exiting.
#ifndef GPUSAFE_MEMORY_MANAGER_HPP
#define GPUSAFE_MEMORY_MANAGER_HPP

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "gpusafe/config.hpp"
#include "gpusafe/detail/attached_resources.hpp"
#include "gpusafe/detail/device_memory.hpp"
#include "gpusafe/detail/fork.hpp"
#include "gpusafe/detail/periodic_thread.hpp"
#include "gpusafe/detail/threshold_release.hpp"
#include "gpusafe/lifecycle.hpp"
#include "gpusafe/log.hpp"
#include "gpusafe/memory_report.hpp"
#include "gpusafe/reclaim.hpp"
#include "gpusafe/runtime.hpp"

GPUSAFE_NAMESPACE_BEGIN

/// Settings of a MemoryManager. Every automatic behaviour is off at 0.
struct MemoryManagerOptions {
  /// Run a light cleanup every this many on_frame() calls; 0 = never.
  std::uint64_t cleanup_every_frames = 0;
  /// Longest timer period accepted: a longer timed wait can overflow the clock arithmetic.
  static constexpr std::chrono::hours kMaxCleanupInterval{24};

  /// Period of the timer thread started by start(); 0 = no timer; at most kMaxCleanupInterval.
  std::chrono::milliseconds cleanup_interval{0};
  /// Fraction (0..1) of device memory in use above which cleanups release memory; 0 = off.
  double release_threshold = 0.0;
  /// Device whose memory is watched (index 0 is the host when there is no GPU).
  int device = 0;
  /// Snapshots kept in the history (oldest dropped first); at least 1.
  std::size_t history_length = 256;
  /// Shown in reports and log lines.
  std::string name = "memory_manager";
  /// Receives the manager's reports (releases, leaks); empty = gpusafe::log.
  LogSink log_sink;
};

namespace detail {

/// The data locks of one manager (the timer's locks are its PeriodicThread's). Around fork() the
/// forking thread holds the two that guard data (the attached list and the history: leaf locks),
/// so the child never copies them half-changed; in the child all of them are built anew (their
/// holders do not exist there).
struct ManagerSync final : ForkAware {
  Mutex attach;        // attached list
  std::mutex history;  // snapshots
  std::mutex cleanup;  // one cleanup / release at a time
  std::mutex sink;     // calls to the user's log sink

  ManagerSync() noexcept { enrol_fork_aware(this); }
  ~ManagerSync() override { withdraw_fork_aware(this); }

  // Taken in the prepare handler and released after fork() in another call: beyond the analysis.
  void lock_for_fork() noexcept override GPUSAFE_NO_THREAD_SAFETY_ANALYSIS {
    attach.lock();
    history.lock();
  }
  void unlock_after_fork() noexcept override GPUSAFE_NO_THREAD_SAFETY_ANALYSIS {
    history.unlock();
    attach.unlock();
  }
  void recreate_locks_in_child() noexcept override {
    new (&attach) Mutex();
    new (&history) std::mutex();
    new (&cleanup) std::mutex();
    new (&sink) std::mutex();
  }
};

/// The managers running a cleanup or release on this thread, innermost first (a stack through
/// resources' reclaim() calls), so that a nested call is seen instead of waiting on its own lock.
struct ManagerCleanupFrame {
  const void* manager;
  ManagerCleanupFrame* outer;
};

inline ManagerCleanupFrame*& manager_cleanup_frames() noexcept {
  static thread_local ManagerCleanupFrame* top = nullptr;
  return top;
}

/// Marks this thread as running a cleanup or release of `manager` for its scope.
class ManagerCleanupScope {
 public:
  explicit ManagerCleanupScope(const void* manager) noexcept
      : frame_{manager, manager_cleanup_frames()} {
    manager_cleanup_frames() = &frame_;
  }
  ~ManagerCleanupScope() { manager_cleanup_frames() = frame_.outer; }
  ManagerCleanupScope(const ManagerCleanupScope&) = delete;
  ManagerCleanupScope& operator=(const ManagerCleanupScope&) = delete;

  /// Whether this thread is inside a cleanup or release of `manager`.
  static bool active_for(const void* manager) noexcept {
    for (auto* f = manager_cleanup_frames(); f; f = f->outer)
      if (f->manager == manager) return true;
    return false;
  }

 private:
  ManagerCleanupFrame frame_;
};

/// Throws InvalidArgument for a threshold outside 0..1, a negative interval or one above 24 h, a
/// negative device, or a history length of 0.
inline MemoryManagerOptions validate_manager_options(MemoryManagerOptions o) {
  const std::string what = "MemoryManager '" + o.name + "'";
  if (!(o.release_threshold >= 0.0 && o.release_threshold <= 1.0))
    GPUSAFE_THROW(
        InvalidArgument(what + ": release_threshold " + std::to_string(o.release_threshold) +
                        " is outside 0..1; it is the fraction of device memory in use above "
                        "which memory is released (0.9 = 90%), or 0 to turn it off"));
  if (o.cleanup_interval.count() < 0)
    GPUSAFE_THROW(InvalidArgument(what + ": cleanup_interval " +
                                  std::to_string(o.cleanup_interval.count()) +
                                  " ms is negative; pass a positive period, or 0 for no timer"));
  if (o.cleanup_interval > MemoryManagerOptions::kMaxCleanupInterval)
    GPUSAFE_THROW(
        InvalidArgument(what + ": cleanup_interval " + std::to_string(o.cleanup_interval.count()) +
                        " ms is longer than 24 h; pass a period of at most 24 h "
                        "(MemoryManagerOptions::kMaxCleanupInterval), or 0 for no timer"));
  if (o.device < 0)
    GPUSAFE_THROW(
        InvalidArgument(what + ": device " + std::to_string(o.device) +
                        " is negative; pass the CUDA device index (0 on a CPU-only machine)"));
  if (o.history_length == 0)
    GPUSAFE_THROW(InvalidArgument(what +
                                  ": history_length is 0; the history must hold at least one "
                                  "snapshot (the default keeps 256)"));
  return o;
}

/// Throws InvalidArgument for a timer interval that is not positive or is above 24 h; `what`
/// names the call.
inline void check_timer_interval(const std::string& what, std::chrono::milliseconds interval) {
  if (interval.count() <= 0)
    GPUSAFE_THROW(InvalidArgument(what + ": the interval must be positive; set "
                                         "MemoryManagerOptions::cleanup_interval or pass one"));
  if (interval > MemoryManagerOptions::kMaxCleanupInterval)
    GPUSAFE_THROW(InvalidArgument(what +
                                  ": the interval is longer than 24 h; pass at most 24 h "
                                  "(MemoryManagerOptions::kMaxCleanupInterval), or call cleanup() "
                                  "yourself for longer periods"));
}

/// A manager's entry in the global registry: gpusafe::shutdown() (ReclaimLevel::shutdown), which
/// drains controllers first, stops the manager's timer and logs its leak report.
template <class Manager>
class ManagerController final : public Reclaimable {
 public:
  explicit ManagerController(Manager* owner) noexcept : owner_(owner) {}
  std::size_t reclaim(const ReclaimRequest& request) noexcept override {
    if (request.level == ReclaimLevel::shutdown) {
      owner_->stop();
      owner_->log_leaks_once();
    }
    return 0;
  }
  ReclaimCost reclaim_cost() const noexcept override { return ReclaimCost::controller; }
  const char* reclaimable_name() const noexcept override { return owner_->name().c_str(); }

 private:
  Manager* owner_;
};

}  // namespace detail

/// The memory controller (see the header comment). Not copyable, not movable: the timer thread
/// and the global registry refer to it.
template <class Runtime>
class BasicMemoryManager {
  GPUSAFE_CHECK_RUNTIME(Runtime);

 public:
  using Options = MemoryManagerOptions;

  /// Throws InvalidArgument for a threshold outside 0..1, a negative interval or one above
  /// 24 h, a negative device, or a history length of 0.
  explicit BasicMemoryManager(Options options = {})
      : options_(detail::validate_manager_options(std::move(options))),
        created_(std::chrono::steady_clock::now()),
        timer_([this] { run_cleanup(timer_cleanups_); }),
        controller_(this) {
    next_cleanup_.store(options_.cleanup_every_frames == 0 ? kNever : options_.cleanup_every_frames,
                        std::memory_order_relaxed);
    registration_ = ReclaimRegistration(controller_);
  }

  BasicMemoryManager(const BasicMemoryManager&) = delete;
  BasicMemoryManager& operator=(const BasicMemoryManager&) = delete;

  /// Stops and joins the timer (forgets it in a forked child). Makes no runtime call.
  ~BasicMemoryManager() {
    registration_.reset();  // waits for a gpusafe::shutdown() that is stopping us right now
    stop();
  }

  const Options& options() const noexcept { return options_; }
  const std::string& name() const noexcept { return options_.name; }

  // ---- attached resources --------------------------------------------------------------------

  /// Attaches a resource (held weakly). Attaching the same resource twice has no effect.
  /// Throws InvalidArgument for a null pointer.
  void attach(const std::shared_ptr<Reclaimable>& resource) {
    if (!resource)
      GPUSAFE_THROW(
          InvalidArgument("MemoryManager '" + options_.name +
                          "': attach(nullptr): nothing to attach; pass pool.reclaimable() or "
                          "the pool itself"));
    attached_.add(resource);
  }

  /// Attaches a pool, cache or anything with `reclaimable()`.
  template <class T, std::enable_if_t<detail::has_reclaimable<T>::value, int> = 0>
  void attach(const T& x) {
    attach(std::shared_ptr<Reclaimable>(x.reclaimable()));
  }

  /// Detaches a resource; returns whether it was attached. Never throws.
  bool detach(const std::shared_ptr<Reclaimable>& resource) noexcept {
    return resource && attached_.remove(resource);
  }

  template <class T, std::enable_if_t<detail::has_reclaimable<T>::value, int> = 0>
  bool detach(const T& x) noexcept {
    GPUSAFE_TRY { return detach(std::shared_ptr<Reclaimable>(x.reclaimable())); }
    GPUSAFE_CATCH_ALL { return false; }
  }

  /// Attached resources still alive.
  std::size_t attached_count() const noexcept { return attached_.alive(); }

  // ---- frames and cleanups -------------------------------------------------------------------

  /// Counts a frame; every `cleanup_every_frames` frames runs a light cleanup on this thread
  /// (then returns true). Never throws.
  bool on_frame() noexcept {
    const std::uint64_t n = frames_.fetch_add(1, std::memory_order_relaxed) + 1;
    if (GPUSAFE_LIKELY(n < next_cleanup_.load(std::memory_order_relaxed))) return false;
    return frame_cleanup(n);
  }

  /// Frames counted so far.
  std::uint64_t frames() const noexcept { return frames_.load(std::memory_order_relaxed); }

  /// Runs a cleanup now: ReclaimLevel::light on every attached resource (what they hold cached
  /// and idle: framework caches, pools' idle overflow and grown slabs; no model is evicted), then
  /// release_if_over_threshold(), then a snapshot into the history. Returns the bytes released
  /// (0 when another cleanup was running, or when called from inside this manager's own
  /// cleanup). Never throws.
  std::size_t cleanup() noexcept { return run_cleanup(manual_cleanups_); }

  /// When device usage is above the threshold, asks the attached resources, cheapest first
  /// (idle pool memory, then evictable models, then framework caches, then the framework caches
  /// of the global registry), at ReclaimLevel::heavy, to release until usage falls to the
  /// threshold. Waits for a cleanup running on another thread; called from inside this manager's
  /// own cleanup (a resource's reclaim()), it returns at once with a `note` instead of waiting
  /// for itself. Never throws (an allocation failure is in `note`).
  ReleaseResult release_if_over_threshold() noexcept {
    if (in_own_cleanup()) return skip_nested_release();
    std::lock_guard<std::mutex> lock(sync_.cleanup);
    detail::ManagerCleanupScope scope(this);
    return release_locked();
  }

  // ---- timer ---------------------------------------------------------------------------------

  /// Starts the timer thread with `cleanup_interval` from the options. Does nothing when it runs
  /// already. Throws InvalidArgument when the interval is 0 or above 24 h, ShuttingDown when the
  /// process is exiting, RuntimeFailure when the thread cannot be created.
  void start() { start(options_.cleanup_interval); }

  /// Starts the timer thread with `interval` (kept for later start() calls).
  void start(std::chrono::milliseconds interval) {
    const std::string what =
        "MemoryManager '" + options_.name + "': start(" + std::to_string(interval.count()) + " ms)";
    detail::check_timer_interval(what, interval);
    if (process_is_exiting())
      GPUSAFE_THROW(
          ShuttingDown(what + ": the process is exiting; start the timer before exit begins"));
    GPUSAFE_TRY { timer_.start(interval); }
    GPUSAFE_CATCH_ALL {
      // std::thread reports a thread it could not create as std::system_error.
      GPUSAFE_THROW(RuntimeFailure(what + ": could not create the timer thread (" +
                                   detail::current_exception_what() +
                                   "); call on_frame() from your loop instead"));
    }
  }

  /// Stops the timer thread and joins it (wakes it at once). Called on the timer thread itself
  /// (from a cleanup), it only ends the loop: the thread is joined later by stop(), start() or
  /// the destructor. In a forked child the parent's timer thread is forgotten, never touched.
  /// Never throws.
  void stop() noexcept { timer_.stop(); }

  bool timer_running() const noexcept { return timer_.running(); }

  /// The orderly end: stops the timer, asks the attached resources to release everything they
  /// can (ReclaimLevel::shutdown), and logs the leak report once if leases are still out.
  /// Returns the bytes released. Never throws.
  std::size_t shutdown() noexcept {
    stop();
    log_leaks_once();  // first, so that the resources need not report the same leases again
    std::size_t released = 0;
    GPUSAFE_TRY {
      ReclaimRequest request;
      request.level = ReclaimLevel::shutdown;
      for (const auto& r : attached_.live()) released += r->reclaim(request);
    }
    GPUSAFE_CATCH_ALL {}
    bytes_released_.fetch_add(released, std::memory_order_relaxed);
    return released;
  }

  // ---- monitoring ----------------------------------------------------------------------------

  /// Takes a snapshot and appends it to the history. May throw std::bad_alloc.
  MemorySnapshot snapshot() {
    MemorySnapshot s = take_snapshot();
    record(s);
    return s;
  }

  /// The recorded snapshots, oldest first.
  std::vector<MemorySnapshot> history() const {
    std::lock_guard<std::mutex> lock(sync_.history);
    return std::vector<MemorySnapshot>(history_.begin(), history_.end());
  }

  void clear_history() noexcept {
    std::lock_guard<std::mutex> lock(sync_.history);
    history_.clear();
  }

  MemoryManagerStats stats() const noexcept {
    MemoryManagerStats s;
    s.frames = frames();
    s.frame_cleanups = frame_cleanups_.load(std::memory_order_relaxed);
    s.timer_cleanups = timer_cleanups_.load(std::memory_order_relaxed);
    s.manual_cleanups = manual_cleanups_.load(std::memory_order_relaxed);
    s.skipped_cleanups = skipped_cleanups_.load(std::memory_order_relaxed);
    s.threshold_releases = threshold_releases_.load(std::memory_order_relaxed);
    s.bytes_released = bytes_released_.load(std::memory_order_relaxed);
    s.timer_running = timer_running();
    s.attached = attached_count();
    {
      std::lock_guard<std::mutex> lock(sync_.history);
      s.history_size = history_.size();
    }
    return s;
  }

  /// A fresh snapshot and the counters as aligned text (format_memory_report()).
  std::string report() {
    const MemorySnapshot s = take_snapshot();
    return format_memory_report(report_subject(), s, stats());
  }

  /// A fresh snapshot and the counters as one JSON object (format_memory_report_json()).
  std::string report_json() {
    const MemorySnapshot s = take_snapshot();
    return format_memory_report_json(report_subject(), s, stats());
  }

  /// The history as CSV (format_history_csv()): time_s, frame, device_used_bytes,
  /// device_total_bytes, then `<name>_reserved_bytes` and `<name>_in_use_bytes` for every
  /// resource seen (empty where a snapshot does not have it).
  std::string history_csv() const { return format_history_csv(history()); }

  /// Outstanding leases of the attached resources that implement LeakReporter. May throw
  /// std::bad_alloc.
  LeakReport leak_report() const { return detail::collect_leaks(attached_.live()); }

 private:
  static constexpr std::uint64_t kNever = std::numeric_limits<std::uint64_t>::max();
  using Controller = detail::ManagerController<BasicMemoryManager>;
  friend Controller;

  MemoryReportSubject report_subject() const {
    return {options_.name, options_.release_threshold,
            std::string(detail::RuntimeCalls<Runtime>::name())};
  }

  bool frame_cleanup(std::uint64_t n) noexcept {
    const std::uint64_t every = options_.cleanup_every_frames;
    if (every == 0) return false;
    std::uint64_t expected = next_cleanup_.load(std::memory_order_relaxed);
    // One caller claims this slot; a frame counted meanwhile on another thread does not repeat it.
    if (n < expected || !next_cleanup_.compare_exchange_strong(expected, n - n % every + every,
                                                               std::memory_order_relaxed))
      return false;
    run_cleanup(frame_cleanups_);
    return true;
  }

  std::size_t run_cleanup(std::atomic<std::uint64_t>& counter) noexcept {
    if (in_own_cleanup()) return skip_nested_cleanup();
    std::unique_lock<std::mutex> lock(sync_.cleanup, std::try_to_lock);
    if (!lock.owns_lock()) {
      skipped_cleanups_.fetch_add(1, std::memory_order_relaxed);
      return 0;
    }
    detail::ManagerCleanupScope scope(this);
    counter.fetch_add(1, std::memory_order_relaxed);
    std::size_t released = 0;
    GPUSAFE_TRY {
      released += reclaim_light();
      released += release_locked().bytes_freed;
      record(take_snapshot());
    }
    GPUSAFE_CATCH_ALL {
      if (cleanup_failed_.first())
        emit(LogLevel::warning, "MemoryManager '" + options_.name +
                                    "': out of memory during a cleanup; part of it skipped");
    }
    return released;
  }

  /// Light: everything cached and idle goes back (no goal); evicting warm models and freeing
  /// preallocated slabs is left to the threshold release (heavy).
  std::size_t reclaim_light() {
    ReclaimRequest request;
    request.level = ReclaimLevel::light;
    request.device = request_device();
    std::size_t released = 0;
    for (const auto& r : attached_.live()) released += r->reclaim(request);
    bytes_released_.fetch_add(released, std::memory_order_relaxed);
    return released;
  }

  /// The device to put in reclaim requests: -1 (every resource) when the watched memory is the
  /// host's, since pools that fell back to host memory serve no device.
  int request_device() const noexcept {
    return detail::RuntimeCalls<Runtime>::gpu_available() ? options_.device : -1;
  }

  /// Reads the watched device's memory (the cache's watermarks read it the same way); warns once
  /// while the runtime's call fails.
  detail::MemoryReading read_memory() noexcept {
    const detail::MemoryReading m = detail::read_device_memory<Runtime>(options_.device);
    if (!m.status.ok() && memory_info_failed_.first())
      emit(LogLevel::warning, "MemoryManager '" + options_.name + "': reading memory of device " +
                                  std::to_string(options_.device) +
                                  " failed: " + m.status.describe() +
                                  "; threshold releases are skipped while it fails");
    return m;
  }

  ReleaseResult release_locked() noexcept {
    ReleaseResult result;
    GPUSAFE_TRY {
      const auto read = [this] { return read_memory(); };
      if (!detail::measure_for_release(result, options_.release_threshold, read)) return result;
      threshold_releases_.fetch_add(1, std::memory_order_relaxed);
      const std::string reason = format_threshold_crossing(
          options_.device, result.used_before, result.total_bytes, options_.release_threshold);
      detail::release_until_under_threshold(result, reason, request_device(), attached_.live(),
                                            read);
      bytes_released_.fetch_add(result.bytes_freed, std::memory_order_relaxed);
      // Still over with nothing left to free: warn once, then keep it at info level.
      emit(result.target_reached || !still_over_.first() ? LogLevel::info : LogLevel::warning,
           format_release_summary(options_.name, reason, result));
    }
    GPUSAFE_CATCH_ALL { result.note = "out of memory during the release"; }
    return result;
  }

  MemorySnapshot take_snapshot() {
    MemorySnapshot s;
    s.time_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - created_).count();
    s.wall_time = std::chrono::system_clock::now();
    s.frame = frames();
    s.device = options_.device;
    const detail::MemoryReading m = read_memory();
    s.memory_known = m.known;
    s.device_is_gpu = m.is_gpu;
    s.device_free_bytes = m.free_bytes;
    s.device_total_bytes = m.total_bytes;
    if (s.memory_known) s.device_used_bytes = m.used_bytes();
    s.resources = detail::snapshot_resources(attached_.live());
    return s;
  }

  void record(const MemorySnapshot& s) {
    std::lock_guard<std::mutex> lock(sync_.history);
    history_.push_back(s);
    while (history_.size() > options_.history_length) history_.pop_front();
  }

  // ---- re-entrance ---------------------------------------------------------------------------

  bool in_own_cleanup() const noexcept { return detail::ManagerCleanupScope::active_for(this); }

  std::size_t skip_nested_cleanup() noexcept {
    log_lazy(LogLevel::debug, [&] {
      return "MemoryManager '" + options_.name +
             "': cleanup() called from inside its own cleanup (a resource's reclaim()); skipped";
    });
    skipped_cleanups_.fetch_add(1, std::memory_order_relaxed);
    return 0;
  }

  ReleaseResult skip_nested_release() noexcept {
    ReleaseResult result;
    GPUSAFE_TRY {
      result.note =
          "skipped: called from inside this manager's own cleanup (a resource's reclaim()); "
          "the cleanup running on this thread goes on";
      log(LogLevel::debug,
          "MemoryManager '" + options_.name + "': release_if_over_threshold() " + result.note);
    }
    GPUSAFE_CATCH_ALL {}
    return result;
  }

  // ---- logging -------------------------------------------------------------------------------

  void emit(LogLevel level, const std::string& message) noexcept {
    if (!options_.log_sink) {
      log(level, message);
      return;
    }
    GPUSAFE_TRY {
      std::lock_guard<std::mutex> lock(sync_.sink);
      options_.log_sink(level, message);
    }
    GPUSAFE_CATCH_ALL {}
  }

  void log_leaks_once() noexcept {
    GPUSAFE_TRY {
      const auto resources = attached_.live();
      const LeakReport report = detail::collect_leaks(resources);
      if (report.empty() || !leaks_logged_.first()) return;
      emit(LogLevel::warning,
           "MemoryManager '" + options_.name + "' at shutdown: " + report.to_string());
      for (const auto& r : resources)
        if (LeakReporter* reporter = r->leak_reporter()) reporter->note_leaks_reported();
    }
    GPUSAFE_CATCH_ALL {}
  }

  // ---- state ---------------------------------------------------------------------------------

  // The frame counter and the next cleanup frame sit on their own cache line: on_frame() touches
  // nothing else.
  alignas(64) std::atomic<std::uint64_t> frames_{0};
  std::atomic<std::uint64_t> next_cleanup_{kNever};
  alignas(64) Options options_;
  const std::chrono::steady_clock::time_point created_;

  mutable detail::ManagerSync sync_;
  detail::AttachedResources attached_{sync_.attach};
  std::deque<MemorySnapshot> history_;

  std::atomic<std::uint64_t> frame_cleanups_{0};
  std::atomic<std::uint64_t> timer_cleanups_{0};
  std::atomic<std::uint64_t> manual_cleanups_{0};
  std::atomic<std::uint64_t> skipped_cleanups_{0};
  std::atomic<std::uint64_t> threshold_releases_{0};
  std::atomic<std::uint64_t> bytes_released_{0};
  LogOnce memory_info_failed_;
  LogOnce cleanup_failed_;
  LogOnce leaks_logged_;
  LogOnce still_over_;

  detail::PeriodicThread timer_;  // runs run_cleanup(timer_cleanups_)
  Controller controller_;
  ReclaimRegistration registration_;  // last: unregistered first by the destructor
};

/// The manager on the default runtime (CUDA when compiled in and usable, else the host).
using MemoryManager = BasicMemoryManager<DefaultRuntime>;

GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_MEMORY_MANAGER_HPP
