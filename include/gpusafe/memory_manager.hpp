// gpusafe/memory_manager.hpp: MemoryManager, the central memory controller of a GPU pipeline.
//
// It attaches pools, caches and any other Reclaimable (held weakly: an attached object may die
// first), runs a light cleanup every N frames (`on_frame()`) and/or every interval on a timer
// thread, frees memory in order of cost when device usage crosses a threshold
// (`release_if_over_threshold()`), takes snapshots of device memory and of every resource into a
// bounded history (text, JSON and CSV reports), and lists outstanding leases (`leak_report()`)
// of attached resources that implement LeakReporter.
//
// Thread safety: every member function may be called from any thread. `on_frame()` is one relaxed
// atomic increment and a compare on its common path (no lock, no allocation). Cleanups running
// on several threads at once do not overlap: a cleanup that finds another one running skips. A
// cleanup or release called from inside this manager's own cleanup (a resource's reclaim()) on
// the same thread is skipped too, instead of waiting for itself.
//
// Teardown: the timer thread is joined by stop(), by the destructor and by gpusafe::shutdown()
// (the manager registers itself as a ReclaimCost::controller resource, which shutdown() drains
// first); it is never detached and never joined from an atexit handler. Once the process is
// exiting the timer thread only sleeps, so a static manager's destructor can still join it. In a
// forked child the timer thread does not exist: its handle is forgotten without any call on it
// (not joined, not detached). The manager makes no runtime call from its destructor, and none at
// all once the process is exiting.
#ifndef GPUSAFE_MEMORY_MANAGER_HPP
#define GPUSAFE_MEMORY_MANAGER_HPP

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "gpusafe/config.hpp"
#include "gpusafe/detail/device_memory.hpp"
#include "gpusafe/lifecycle.hpp"
#include "gpusafe/log.hpp"
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

/// One resource in a snapshot.
struct ResourceSnapshot {
  std::string name;
  ReclaimCost cost = ReclaimCost::idle_memory;
  ResourceUsage usage;
  bool attached = true;  ///< false: a framework cache seen through the global registry
};

/// Memory of the watched device and of every resource at one moment.
struct MemorySnapshot {
  double time_s = 0;  ///< seconds since the manager was created
  std::chrono::system_clock::time_point wall_time{};
  std::uint64_t frame = 0;  ///< on_frame() calls so far
  int device = 0;
  bool device_is_gpu = false;  ///< false: host memory figures (/proc/meminfo)
  bool memory_known = false;   ///< false when the runtime could not (or must not) be asked
  std::size_t device_total_bytes = 0;
  std::size_t device_free_bytes = 0;
  std::size_t device_used_bytes = 0;
  std::vector<ResourceSnapshot> resources;
};

/// What one resource gave back during a threshold release.
struct ReleaseEntry {
  std::string resource;
  ReclaimCost cost = ReclaimCost::idle_memory;
  std::size_t bytes = 0;
  std::string reason;
};

/// Outcome of release_if_over_threshold().
struct ReleaseResult {
  bool checked = false;         ///< memory was read and a threshold is set
  bool was_over = false;        ///< usage was above the threshold when checked
  bool target_reached = false;  ///< usage is (now) at or under the threshold
  std::size_t total_bytes = 0;
  std::size_t used_before = 0;
  std::size_t used_after = 0;  ///< measured, or estimated from what the resources reported
  std::size_t target_bytes = 0;
  std::size_t bytes_freed = 0;
  std::vector<ReleaseEntry> released;  ///< in the order they were asked, those that gave bytes
  std::string note;                    ///< why nothing was checked, when so
};

/// Counters of a manager's activity.
struct MemoryManagerStats {
  std::uint64_t frames = 0;
  std::uint64_t frame_cleanups = 0;      ///< cleanups triggered by on_frame()
  std::uint64_t timer_cleanups = 0;      ///< cleanups run by the timer thread
  std::uint64_t manual_cleanups = 0;     ///< cleanup() called directly
  std::uint64_t skipped_cleanups = 0;    ///< skipped because another one was running
  std::uint64_t threshold_releases = 0;  ///< times usage was found over the threshold
  std::uint64_t bytes_released = 0;      ///< by cleanups and releases, in total
  bool timer_running = false;
  std::size_t attached = 0;  ///< attached resources still alive
  std::size_t history_size = 0;
};

/// Outstanding leases of the attached resources.
struct LeakReport {
  std::vector<LeakRecord> records;
  /// Resources attached that do not implement LeakReporter (their leases are not listed).
  std::vector<std::string> untracked;
  bool empty() const noexcept { return records.empty(); }
  std::size_t total_bytes() const noexcept {
    std::size_t n = 0;
    for (const auto& r : records) n += r.bytes;
    return n;
  }
  /// One line per outstanding lease.
  std::string to_string() const;
};

namespace detail {

/// "12.0 MiB"
inline std::string format_bytes(std::size_t bytes) {
  static const char* const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 4) {
    v /= 1024.0;
    ++u;
  }
  char buf[32];
  if (u == 0) {
    std::snprintf(buf, sizeof buf, "%zu B", bytes);
  } else {
    std::snprintf(buf, sizeof buf, "%.1f %s", v, units[u]);
  }
  return buf;
}

/// A JSON string literal, quotes included.
inline std::string json_string(const std::string& s) {
  std::string out;
  out.reserve(s.size() + 2);
  out += '"';
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (u < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", u);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  out += '"';
  return out;
}

/// A CSV field, quoted when it has to be.
inline std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

inline std::string format_age(std::chrono::nanoseconds age) {
  char buf[32];
  const double s = std::chrono::duration<double>(age).count();
  if (s < 1.0) {
    std::snprintf(buf, sizeof buf, "%.1f ms", s * 1e3);
  } else {
    std::snprintf(buf, sizeof buf, "%.1f s", s);
  }
  return buf;
}

/// The locks of one manager. Around fork() the forking thread holds the two that guard data (the
/// attached list and the history: leaf locks), so the child never copies them half-changed; in
/// the child all of them are built anew (their holders do not exist there).
struct ManagerSync final : ForkAware {
  std::mutex attach;   // attached list
  std::mutex history;  // snapshots
  std::mutex cleanup;  // one cleanup / release at a time
  std::mutex timer;    // timer state, with `wake`
  std::mutex sink;     // calls to the user's log sink
  std::mutex control;  // start() and stop() against each other
  std::condition_variable wake;

  ManagerSync() noexcept { enrol_fork_aware(this); }
  ~ManagerSync() { withdraw_fork_aware(this); }

  void lock_for_fork() noexcept override {
    attach.lock();
    history.lock();
  }
  void unlock_after_fork() noexcept override {
    history.unlock();
    attach.unlock();
  }
  void recreate_locks_in_child() noexcept override {
    new (&attach) std::mutex();
    new (&history) std::mutex();
    new (&cleanup) std::mutex();
    new (&timer) std::mutex();
    new (&sink) std::mutex();
    new (&control) std::mutex();
    new (&wake) std::condition_variable();
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

/// The manager whose timer thread this is (null on every other thread).
inline const void*& manager_of_timer_thread() noexcept {
  static thread_local const void* owner = nullptr;
  return owner;
}

/// Whether T has `reclaimable()` returning something convertible to shared_ptr<Reclaimable>.
template <class T, class = void>
struct has_reclaimable : std::false_type {};
template <class T>
struct has_reclaimable<
    T, std::enable_if_t<std::is_convertible<decltype(std::declval<const T&>().reclaimable()),
                                            std::shared_ptr<Reclaimable>>::value>>
    : std::true_type {};

}  // namespace detail

inline std::string LeakReport::to_string() const {
  std::string out;
  if (records.empty()) {
    out = "no outstanding leases";
  } else {
    std::size_t leases = 0;
    for (const auto& r : records) leases += r.leases;
    out = std::to_string(leases) + " outstanding lease(s), " + detail::format_bytes(total_bytes()) +
          ":";
    for (const auto& r : records) {
      out += "\n  " + r.resource + ": ";
      if (r.leases != 1) out += std::to_string(r.leases) + " leases, ";
      out += detail::format_bytes(r.bytes) + " taken at " +
             (r.file.empty() ? std::string("(untracked)") : r.file + ":" + std::to_string(r.line));
      if (!r.tag.empty()) out += " [" + r.tag + "]";
      if (r.age_known) out += ", " + detail::format_age(r.age) + " ago";
    }
  }
  if (!untracked.empty()) {
    out += "\n  not tracked (no LeakReporter):";
    for (const auto& n : untracked) out += " " + n;
  }
  return out;
}

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
      : options_(validate(std::move(options))),
        created_(std::chrono::steady_clock::now()),
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
  void attach(std::shared_ptr<Reclaimable> resource) {
    if (!resource)
      throw InvalidArgument("MemoryManager '" + options_.name +
                            "': attach(nullptr): nothing to attach; pass pool.reclaimable() or "
                            "the pool itself");
    std::lock_guard<std::mutex> lock(sync_.attach);
    prune_locked();
    for (const auto& w : attached_)
      if (same_owner(w, resource)) return;
    attached_.push_back(std::weak_ptr<Reclaimable>(resource));
  }

  /// Attaches a pool, cache or anything with `reclaimable()`.
  template <class T, std::enable_if_t<detail::has_reclaimable<T>::value, int> = 0>
  void attach(const T& x) {
    attach(std::shared_ptr<Reclaimable>(x.reclaimable()));
  }

  /// Detaches a resource; returns whether it was attached. Never throws.
  bool detach(const std::shared_ptr<Reclaimable>& resource) noexcept {
    if (!resource) return false;
    std::lock_guard<std::mutex> lock(sync_.attach);
    const auto before = attached_.size();
    attached_.erase(std::remove_if(attached_.begin(), attached_.end(),
                                   [&](const auto& w) { return same_owner(w, resource); }),
                    attached_.end());
    prune_locked();
    return attached_.size() != before;
  }

  template <class T, std::enable_if_t<detail::has_reclaimable<T>::value, int> = 0>
  bool detach(const T& x) noexcept {
    try {
      return detach(std::shared_ptr<Reclaimable>(x.reclaimable()));
    } catch (...) {
      return false;
    }
  }

  /// Attached resources still alive.
  std::size_t attached_count() const noexcept {
    std::lock_guard<std::mutex> lock(sync_.attach);
    std::size_t n = 0;
    for (const auto& w : attached_) n += w.expired() ? 0 : 1;
    return n;
  }

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
    CleanupFrame frame(this);
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
    if (interval.count() <= 0)
      throw InvalidArgument(what +
                            ": the interval must be positive; set "
                            "MemoryManagerOptions::cleanup_interval or pass one");
    if (interval > Options::kMaxCleanupInterval)
      throw InvalidArgument(what +
                            ": the interval is longer than 24 h; pass at most 24 h "
                            "(MemoryManagerOptions::kMaxCleanupInterval), or call cleanup() "
                            "yourself for longer periods");
    if (process_is_exiting())
      throw ShuttingDown(what + ": the process is exiting; start the timer before exit begins");
    std::lock_guard<std::mutex> control(sync_.control);
    forget_foreign_timer();
    if (timer_.joinable()) {
      std::lock_guard<std::mutex> lock(sync_.timer);
      if (!stop_requested_) return;  // running
      if (!timer_loop_ended_) {
        // Stopped from one of its own cleanups and not yet out of its loop: it keeps running.
        stop_requested_ = false;
        interval_ = interval;
        timer_running_.store(true, std::memory_order_release);
        return;
      }
    }
    if (timer_.joinable()) timer_.join();  // its loop has ended: nothing left to wait for
    {
      std::lock_guard<std::mutex> lock(sync_.timer);
      stop_requested_ = false;
      timer_loop_ended_ = false;
      interval_ = interval;
    }
    timer_pid_.store(::getpid(), std::memory_order_relaxed);  // before the thread reads it
    try {
      timer_ = std::thread([this] { timer_loop(); });
    } catch (const std::system_error& e) {
      throw RuntimeFailure(what + ": could not create the timer thread (" + e.what() +
                           "); call on_frame() from your loop instead");
    }
    timer_running_.store(true, std::memory_order_release);
  }

  /// Stops the timer thread and joins it (wakes it at once). Called on the timer thread itself
  /// (from a cleanup), it only ends the loop: the thread is joined later by stop(), start() or
  /// the destructor. In a forked child the parent's timer thread is forgotten, never touched.
  /// Never throws.
  void stop() noexcept {
    if (on_own_timer_thread()) {
      end_timer_loop_from_inside();
      return;
    }
    std::lock_guard<std::mutex> control(sync_.control);
    stop_locked();
  }

  bool timer_running() const noexcept { return timer_running_.load(std::memory_order_acquire); }

  /// The orderly end: stops the timer, asks the attached resources to release everything they
  /// can (ReclaimLevel::shutdown), and logs the leak report once if leases are still out.
  /// Returns the bytes released. Never throws.
  std::size_t shutdown() noexcept {
    stop();
    log_leaks_once();  // first, so that the resources need not report the same leases again
    std::size_t released = 0;
    try {
      ReclaimRequest request;
      request.level = ReclaimLevel::shutdown;
      for (const auto& r : live_attached()) released += r->reclaim(request);
    } catch (...) {
    }
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

  /// A fresh snapshot and the counters as aligned text.
  std::string report() {
    const MemorySnapshot s = take_snapshot();
    const MemoryManagerStats st = stats();
    std::string out = "memory manager '" + options_.name + "': frame " + std::to_string(s.frame) +
                      ", " + fixed(s.time_s, 1) + " s\n";
    out += describe_device(s) + "\n";
    std::size_t width = 8;
    for (const auto& r : s.resources) width = std::max(width, r.name.size());
    out += pad("resource", width) + "  " + pad("cost", 16) + "  " + lpad("reserved", 11) + "  " +
           lpad("in use", 11) + "  " + lpad("items", 6) + "\n";
    for (const auto& r : s.resources) {
      out += pad(r.name, width) + "  " + pad(to_string(r.cost), 16) + "  " +
             lpad(detail::format_bytes(r.usage.bytes_reserved), 11) + "  " +
             lpad(detail::format_bytes(r.usage.bytes_in_use), 11) + "  " +
             lpad(std::to_string(r.usage.items), 6) + (r.attached ? "" : "  (global)") + "\n";
    }
    if (s.resources.empty()) out += "(no resources)\n";
    out += "cleanups: " + std::to_string(st.frame_cleanups) + " by frame, " +
           std::to_string(st.timer_cleanups) + " by timer, " + std::to_string(st.manual_cleanups) +
           " manual, " + std::to_string(st.skipped_cleanups) + " skipped; over threshold " +
           std::to_string(st.threshold_releases) + " time(s); released " +
           detail::format_bytes(st.bytes_released) + "\n";
    return out;
  }

  /// A fresh snapshot and the counters as one JSON object.
  std::string report_json() {
    const MemorySnapshot s = take_snapshot();
    const MemoryManagerStats st = stats();
    std::string out = "{\"name\":" + detail::json_string(options_.name);
    out += ",\"snapshot\":" + snapshot_json(s);
    out += ",\"threshold\":" + fixed(options_.release_threshold, 4);
    out += ",\"stats\":{\"frames\":" + std::to_string(st.frames) +
           ",\"frame_cleanups\":" + std::to_string(st.frame_cleanups) +
           ",\"timer_cleanups\":" + std::to_string(st.timer_cleanups) +
           ",\"manual_cleanups\":" + std::to_string(st.manual_cleanups) +
           ",\"skipped_cleanups\":" + std::to_string(st.skipped_cleanups) +
           ",\"threshold_releases\":" + std::to_string(st.threshold_releases) +
           ",\"bytes_released\":" + std::to_string(st.bytes_released) +
           ",\"timer_running\":" + (st.timer_running ? "true" : "false") +
           ",\"attached\":" + std::to_string(st.attached) +
           ",\"history_size\":" + std::to_string(st.history_size) + "}}";
    return out;
  }

  /// The history as CSV: time_s, frame, device_used_bytes, device_total_bytes, then
  /// `<name>_reserved_bytes` and `<name>_in_use_bytes` for every resource seen (empty where a
  /// snapshot does not have it).
  std::string history_csv() const {
    const auto snaps = history();
    std::vector<std::string> keys;
    std::vector<std::vector<std::string>> keyed(snaps.size());
    for (std::size_t i = 0; i < snaps.size(); ++i) {
      for (const auto& r : snaps[i].resources) {
        std::string key = r.name;
        // Two resources with one name get "name#2", ... so their columns stay apart.
        for (int k = 2; std::count(keyed[i].begin(), keyed[i].end(), key) != 0; ++k)
          key = r.name + "#" + std::to_string(k);
        keyed[i].push_back(key);
        if (std::find(keys.begin(), keys.end(), key) == keys.end()) keys.push_back(key);
      }
    }
    std::string out = "time_s,frame,device_used_bytes,device_total_bytes";
    for (const auto& k : keys)
      out += "," + detail::csv_field(k + "_reserved_bytes") + "," +
             detail::csv_field(k + "_in_use_bytes");
    out += "\n";
    for (std::size_t i = 0; i < snaps.size(); ++i) {
      const auto& s = snaps[i];
      out += fixed(s.time_s, 3) + "," + std::to_string(s.frame) + "," +
             std::to_string(s.device_used_bytes) + "," + std::to_string(s.device_total_bytes);
      for (const auto& k : keys) {
        const auto it = std::find(keyed[i].begin(), keyed[i].end(), k);
        if (it == keyed[i].end()) {
          out += ",,";
        } else {
          const auto& u = s.resources[static_cast<std::size_t>(it - keyed[i].begin())].usage;
          out += "," + std::to_string(u.bytes_reserved) + "," + std::to_string(u.bytes_in_use);
        }
      }
      out += "\n";
    }
    return out;
  }

  /// Outstanding leases of the attached resources that implement LeakReporter. May throw
  /// std::bad_alloc.
  LeakReport leak_report() const {
    LeakReport report;
    for (const auto& r : live_attached()) {
      if (const auto* reporter = dynamic_cast<const LeakReporter*>(r.get())) {
        auto records = reporter->leak_records();
        report.records.insert(report.records.end(), std::make_move_iterator(records.begin()),
                              std::make_move_iterator(records.end()));
      } else if (r->reclaim_cost() == ReclaimCost::idle_memory) {
        report.untracked.emplace_back(r->reclaimable_name());
      }
    }
    std::stable_sort(report.records.begin(), report.records.end(),
                     [](const LeakRecord& a, const LeakRecord& b) { return a.age > b.age; });
    return report;
  }

 private:
  static constexpr std::uint64_t kNever = std::numeric_limits<std::uint64_t>::max();

  /// The manager's entry in the global registry: gpusafe::shutdown() stops its timer first.
  class Controller final : public Reclaimable {
   public:
    explicit Controller(BasicMemoryManager* owner) noexcept : owner_(owner) {}
    std::size_t reclaim(const ReclaimRequest& request) noexcept override {
      if (request.level == ReclaimLevel::shutdown) {
        owner_->stop();
        owner_->log_leaks_once();
      }
      return 0;
    }
    ReclaimCost reclaim_cost() const noexcept override { return ReclaimCost::controller; }
    const char* reclaimable_name() const noexcept override { return owner_->options_.name.c_str(); }

   private:
    BasicMemoryManager* owner_;
  };

  static Options validate(Options o) {
    const std::string what = "MemoryManager '" + o.name + "'";
    if (!(o.release_threshold >= 0.0 && o.release_threshold <= 1.0))
      throw InvalidArgument(what + ": release_threshold " + std::to_string(o.release_threshold) +
                            " is outside 0..1; it is the fraction of device memory in use above "
                            "which memory is released (0.9 = 90%), or 0 to turn it off");
    if (o.cleanup_interval.count() < 0)
      throw InvalidArgument(what + ": cleanup_interval " +
                            std::to_string(o.cleanup_interval.count()) +
                            " ms is negative; pass a positive period, or 0 for no timer");
    if (o.cleanup_interval > Options::kMaxCleanupInterval)
      throw InvalidArgument(what + ": cleanup_interval " +
                            std::to_string(o.cleanup_interval.count()) +
                            " ms is longer than 24 h; pass a period of at most 24 h "
                            "(MemoryManagerOptions::kMaxCleanupInterval), or 0 for no timer");
    if (o.device < 0)
      throw InvalidArgument(what + ": device " + std::to_string(o.device) +
                            " is negative; pass the CUDA device index (0 on a CPU-only machine)");
    if (o.history_length == 0)
      throw InvalidArgument(what +
                            ": history_length is 0; the history must hold at least one "
                            "snapshot (the default keeps 256)");
    return o;
  }

  static bool same_owner(const std::weak_ptr<Reclaimable>& w,
                         const std::shared_ptr<Reclaimable>& p) noexcept {
    return !w.owner_before(p) && !p.owner_before(w);
  }

  void prune_locked() noexcept {
    attached_.erase(std::remove_if(attached_.begin(), attached_.end(),
                                   [](const auto& w) { return w.expired(); }),
                    attached_.end());
  }

  /// The attached resources alive now, held so they cannot die while used.
  std::vector<std::shared_ptr<Reclaimable>> live_attached() const {
    std::vector<std::shared_ptr<Reclaimable>> out;
    std::lock_guard<std::mutex> lock(sync_.attach);
    out.reserve(attached_.size());
    for (const auto& w : attached_)
      if (auto p = w.lock()) out.push_back(std::move(p));
    return out;
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
    if (in_own_cleanup()) {
      log_lazy(LogLevel::debug, [&] {
        return "MemoryManager '" + options_.name +
               "': cleanup() called from inside its own cleanup (a resource's reclaim()); skipped";
      });
      skipped_cleanups_.fetch_add(1, std::memory_order_relaxed);
      return 0;
    }
    std::unique_lock<std::mutex> lock(sync_.cleanup, std::try_to_lock);
    if (!lock.owns_lock()) {
      skipped_cleanups_.fetch_add(1, std::memory_order_relaxed);
      return 0;
    }
    CleanupFrame frame(this);
    counter.fetch_add(1, std::memory_order_relaxed);
    std::size_t released = 0;
    try {
      // Light: everything cached and idle goes back (no goal); evicting warm models and freeing
      // preallocated slabs is left to the threshold release (heavy).
      ReclaimRequest request;
      request.level = ReclaimLevel::light;
      request.device = request_device();
      for (const auto& r : live_attached()) released += r->reclaim(request);
      bytes_released_.fetch_add(released, std::memory_order_relaxed);
      released += release_locked().bytes_freed;
      record(take_snapshot());
    } catch (...) {
      if (cleanup_failed_.first())
        emit(LogLevel::warning, "MemoryManager '" + options_.name +
                                    "': out of memory during a cleanup; part of it skipped");
    }
    return released;
  }

  /// The device to put in reclaim requests: -1 (every resource) when the watched memory is the
  /// host's, since pools that fell back to host memory serve no device.
  int request_device() const noexcept { return Runtime::gpu_available() ? options_.device : -1; }

  /// Reads the watched device's memory (the cache's watermarks read it the same way); warns once
  /// while the runtime's call fails.
  bool read_memory(std::size_t& free_bytes, std::size_t& total_bytes, bool& is_gpu) noexcept {
    const detail::MemoryReading m = detail::read_device_memory<Runtime>(options_.device);
    free_bytes = m.free_bytes;
    total_bytes = m.total_bytes;
    is_gpu = m.is_gpu;
    if (!m.status.ok() && memory_info_failed_.first())
      emit(LogLevel::warning, "MemoryManager '" + options_.name + "': reading memory of device " +
                                  std::to_string(options_.device) + " failed: " +
                                  m.status.describe() +
                                  "; threshold releases are skipped while it fails");
    return m.known;
  }

  ReleaseResult release_locked() noexcept {
    ReleaseResult result;
    try {
      if (options_.release_threshold <= 0.0) {
        result.target_reached = true;
        result.note = "no threshold set";
        return result;
      }
      std::size_t free_bytes = 0, total = 0;
      bool is_gpu = false;
      if (!read_memory(free_bytes, total, is_gpu)) {
        result.note = "device memory could not be read";
        return result;
      }
      result.checked = true;
      result.total_bytes = total;
      result.used_before = detail::used_bytes(free_bytes, total);
      result.target_bytes =
          static_cast<std::size_t>(options_.release_threshold * static_cast<double>(total));
      std::size_t used = result.used_before;
      result.used_after = used;
      if (used <= result.target_bytes) {
        result.target_reached = true;
        return result;
      }
      result.was_over = true;
      threshold_releases_.fetch_add(1, std::memory_order_relaxed);
      const std::string reason =
          "device " + std::to_string(options_.device) + " at " +
          fixed(100.0 * static_cast<double>(used) / static_cast<double>(total), 1) +
          "% > threshold " + fixed(100.0 * options_.release_threshold, 1) + "%";

      auto resources = live_attached();
      std::stable_sort(resources.begin(), resources.end(), [](const auto& a, const auto& b) {
        return a->reclaim_cost() < b->reclaim_cost();
      });
      auto ask = [&](Reclaimable& r) {
        ReclaimRequest request;
        request.level = ReclaimLevel::heavy;
        request.device = request_device();
        request.bytes_goal = used - result.target_bytes;
        const std::size_t freed = r.reclaim(request);
        if (freed > 0) {
          result.released.push_back({r.reclaimable_name(), r.reclaim_cost(), freed, reason});
          result.bytes_freed += freed;
        }
        // Host memory freed to malloc may not show in the runtime's figures: count what the
        // resource reported even when the measurement lags.
        std::size_t f = 0, t = 0;
        bool g = false;
        std::size_t measured = read_memory(f, t, g) ? detail::used_bytes(f, t) : used;
        used = std::min(measured, used > freed ? used - freed : 0);
        return used <= result.target_bytes;
      };
      bool reached = false;
      for (const auto& r : resources) {
        if (r->reclaim_cost() == ReclaimCost::controller) continue;
        if ((reached = ask(*r))) break;
      }
      if (!reached) reached = for_each_unattached_framework_cache(resources, ask);
      result.used_after = used;
      result.target_reached = reached;
      bytes_released_.fetch_add(result.bytes_freed, std::memory_order_relaxed);
      // Still over with nothing left to free: warn once, then keep it at info level.
      emit(reached || !still_over_.first() ? LogLevel::info : LogLevel::warning,
           "MemoryManager '" + options_.name + "': " + reason + "; released " +
               detail::format_bytes(result.bytes_freed) + " from " +
               std::to_string(result.released.size()) + " resource(s); " +
               (reached ? "now under the threshold"
                        : "still over the threshold (nothing more to release)"));
    } catch (...) {
      result.note = "out of memory during the release";
    }
    return result;
  }

  MemorySnapshot take_snapshot() {
    MemorySnapshot s;
    const auto now = std::chrono::steady_clock::now();
    s.time_s = std::chrono::duration<double>(now - created_).count();
    s.wall_time = std::chrono::system_clock::now();
    s.frame = frames();
    s.device = options_.device;
    s.memory_known = read_memory(s.device_free_bytes, s.device_total_bytes, s.device_is_gpu);
    if (s.memory_known)
      s.device_used_bytes = detail::used_bytes(s.device_free_bytes, s.device_total_bytes);
    const auto resources = live_attached();
    for (const auto& r : resources)
      s.resources.push_back({r->reclaimable_name(), r->reclaim_cost(), r->usage(), true});
    for_each_unattached_framework_cache(resources, [&](Reclaimable& r) {
      s.resources.push_back({r.reclaimable_name(), ReclaimCost::framework_cache, r.usage(), false});
      return false;
    });
    return s;
  }

  /// Calls fn(resource) for each framework cache (LibTorch's allocator) that is in the global
  /// registry but not in `attached`, under its registry entry's lock (so that unregistering
  /// waits), until fn returns true. Returns whether one did.
  template <class Fn>
  static bool for_each_unattached_framework_cache(
      const std::vector<std::shared_ptr<Reclaimable>>& attached, Fn&& fn) {
    for (const auto& entry : detail::registry_snapshot()) {
      if (entry->cost != ReclaimCost::framework_cache) continue;
      std::lock_guard<std::recursive_mutex> lock(entry->mutex);
      if (!entry->target) continue;
      const bool is_attached = std::any_of(attached.begin(), attached.end(),
                                           [&](const auto& r) { return r.get() == entry->target; });
      if (!is_attached && fn(*entry->target)) return true;
    }
    return false;
  }

  void record(const MemorySnapshot& s) {
    std::lock_guard<std::mutex> lock(sync_.history);
    history_.push_back(s);
    while (history_.size() > options_.history_length) history_.pop_front();
  }

  // ---- timer internals -----------------------------------------------------------------------

  void timer_loop() noexcept {
    detail::manager_of_timer_thread() = this;
    std::unique_lock<std::mutex> lock(sync_.timer);
    while (!stop_requested_) {
      if (sync_.wake.wait_for(lock, interval_, [this] { return stop_requested_; })) break;
      // Once exiting, only sleep: the runtime may be torn down, and whoever destroys the
      // manager joins this thread. A timer started in a forked child does run there: its
      // cleanups make no runtime call (read_memory and every release path check the process).
      if (process_is_exiting()) continue;
      lock.unlock();
      run_cleanup(timer_cleanups_);
      lock.lock();
    }
    timer_loop_ended_ = true;
  }

  /// In a forked child the timer thread does not exist (fork copies only the calling thread).
  /// Its handle is forgotten without any call on it: joining would wait forever, detaching
  /// touches a thread descriptor that the child's C library has reclaimed (a crash), and
  /// destroying a joinable std::thread calls std::terminate. So an empty handle is built over it
  /// and the old one's destructor never runs.
  void forget_foreign_timer() noexcept {
    if (timer_.joinable() && timer_pid_.load(std::memory_order_relaxed) != ::getpid()) {
      new (&timer_) std::thread();
      timer_running_.store(false, std::memory_order_release);
    }
  }

  /// Whether this is this manager's timer thread (in this process).
  bool on_own_timer_thread() const noexcept {
    return detail::manager_of_timer_thread() == this &&
           timer_pid_.load(std::memory_order_relaxed) == ::getpid();
  }

  /// stop() from one of the timer's own cleanups: the loop ends after it; the thread is joined
  /// by whoever calls stop(), start() or the destructor next. No control lock: another thread may
  /// hold it while joining this one.
  void end_timer_loop_from_inside() noexcept {
    {
      std::lock_guard<std::mutex> lock(sync_.timer);
      stop_requested_ = true;
    }
    timer_running_.store(false, std::memory_order_release);
  }

  // ---- re-entrance ---------------------------------------------------------------------------

  /// Marks this thread as running a cleanup or release of this manager for its scope.
  class CleanupFrame {
   public:
    explicit CleanupFrame(const BasicMemoryManager* m) noexcept
        : frame_{m, detail::manager_cleanup_frames()} {
      detail::manager_cleanup_frames() = &frame_;
    }
    ~CleanupFrame() { detail::manager_cleanup_frames() = frame_.outer; }
    CleanupFrame(const CleanupFrame&) = delete;
    CleanupFrame& operator=(const CleanupFrame&) = delete;

   private:
    detail::ManagerCleanupFrame frame_;
  };

  bool in_own_cleanup() const noexcept {
    for (auto* f = detail::manager_cleanup_frames(); f; f = f->outer)
      if (f->manager == this) return true;
    return false;
  }

  ReleaseResult skip_nested_release() noexcept {
    ReleaseResult result;
    try {
      result.note =
          "skipped: called from inside this manager's own cleanup (a resource's reclaim()); "
          "the cleanup running on this thread goes on";
      log(LogLevel::debug,
          "MemoryManager '" + options_.name + "': release_if_over_threshold() " + result.note);
    } catch (...) {
    }
    return result;
  }

  void stop_locked() noexcept {
    forget_foreign_timer();
    if (!timer_.joinable()) return;
    {
      std::lock_guard<std::mutex> lock(sync_.timer);
      stop_requested_ = true;
    }
    sync_.wake.notify_all();
    timer_running_.store(false, std::memory_order_release);
    if (timer_.get_id() == std::this_thread::get_id()) return;  // called from a cleanup: it ends
    timer_.join();
  }

  // ---- logging -------------------------------------------------------------------------------

  void emit(LogLevel level, const std::string& message) noexcept {
    if (!options_.log_sink) {
      log(level, message);
      return;
    }
    try {
      std::lock_guard<std::mutex> lock(sync_.sink);
      options_.log_sink(level, message);
    } catch (...) {
    }
  }

  void log_leaks_once() noexcept {
    try {
      const LeakReport report = leak_report();
      if (report.empty() || !leaks_logged_.first()) return;
      emit(LogLevel::warning,
           "MemoryManager '" + options_.name + "' at shutdown: " + report.to_string());
      for (const auto& r : live_attached())
        if (auto* reporter = dynamic_cast<LeakReporter*>(r.get())) reporter->note_leaks_reported();
    } catch (...) {
    }
  }

  // ---- formatting ----------------------------------------------------------------------------

  static std::string fixed(double v, int digits) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", digits, std::isfinite(v) ? v : 0.0);
    return buf;
  }
  static std::string pad(const std::string& s, std::size_t w) {
    return s.size() >= w ? s : s + std::string(w - s.size(), ' ');
  }
  static std::string lpad(const std::string& s, std::size_t w) {
    return s.size() >= w ? s : std::string(w - s.size(), ' ') + s;
  }

  std::string describe_device(const MemorySnapshot& s) const {
    std::string out = "device " + std::to_string(s.device) + " (" +
                      (s.device_is_gpu ? std::string(Runtime::name()) : std::string("host")) +
                      "): ";
    if (!s.memory_known) {
      out += "memory unknown";
    } else {
      out += "used " + detail::format_bytes(s.device_used_bytes) + " of " +
             detail::format_bytes(s.device_total_bytes) + " (" +
             fixed(100.0 * static_cast<double>(s.device_used_bytes) /
                       static_cast<double>(s.device_total_bytes),
                   1) +
             "%), free " + detail::format_bytes(s.device_free_bytes);
    }
    out += "; threshold " + (options_.release_threshold > 0
                                 ? fixed(100.0 * options_.release_threshold, 1) + "%"
                                 : std::string("off"));
    return out;
  }

  static std::string snapshot_json(const MemorySnapshot& s) {
    std::string out =
        "{\"time_s\":" + fixed(s.time_s, 6) + ",\"unix_time_ms\":" +
        std::to_string(
            std::chrono::duration_cast<std::chrono::milliseconds>(s.wall_time.time_since_epoch())
                .count()) +
        ",\"frame\":" + std::to_string(s.frame) + ",\"device\":" + std::to_string(s.device) +
        ",\"device_is_gpu\":" + (s.device_is_gpu ? "true" : "false") +
        ",\"memory_known\":" + (s.memory_known ? "true" : "false") +
        ",\"total_bytes\":" + std::to_string(s.device_total_bytes) +
        ",\"free_bytes\":" + std::to_string(s.device_free_bytes) +
        ",\"used_bytes\":" + std::to_string(s.device_used_bytes) + ",\"resources\":[";
    for (std::size_t i = 0; i < s.resources.size(); ++i) {
      const auto& r = s.resources[i];
      if (i) out += ",";
      out += "{\"name\":" + detail::json_string(r.name) + ",\"cost\":\"" + to_string(r.cost) +
             "\",\"attached\":" + (r.attached ? "true" : "false") +
             ",\"reserved_bytes\":" + std::to_string(r.usage.bytes_reserved) +
             ",\"in_use_bytes\":" + std::to_string(r.usage.bytes_in_use) +
             ",\"items\":" + std::to_string(r.usage.items) +
             ",\"device\":" + std::to_string(r.usage.device) + "}";
    }
    return out + "]}";
  }

  // ---- state ---------------------------------------------------------------------------------

  // The frame counter and the next cleanup frame sit on their own cache line: on_frame() touches
  // nothing else.
  alignas(64) std::atomic<std::uint64_t> frames_{0};
  std::atomic<std::uint64_t> next_cleanup_{kNever};
  alignas(64) Options options_;
  const std::chrono::steady_clock::time_point created_;

  mutable detail::ManagerSync sync_;
  std::vector<std::weak_ptr<Reclaimable>> attached_;
  std::deque<MemorySnapshot> history_;

  std::thread timer_;
  std::atomic<pid_t> timer_pid_{0};
  bool stop_requested_ = false;    // guarded by sync_.timer
  bool timer_loop_ended_ = false;  // guarded by sync_.timer: the thread is past its loop
  std::chrono::milliseconds interval_{0};
  std::atomic<bool> timer_running_{false};

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

  Controller controller_;
  ReclaimRegistration registration_;  // last: unregistered first by the destructor
};

/// The manager on the default runtime (CUDA when compiled in and usable, else the host).
using MemoryManager = BasicMemoryManager<DefaultRuntime>;

GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_MEMORY_MANAGER_HPP
