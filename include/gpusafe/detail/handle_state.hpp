// SPDX-License-Identifier: MIT
// gpusafe/detail/handle_state.hpp: the process-wide bookkeeping of GPU handles (handles.hpp):
// which kinds exist, how many of each were created, destroyed, aborted, leaked on purpose (and
// why) or failed to be destroyed, and, when tracking is on, which handles are alive and where
// they were made (for MemoryManager's leak report).
//
// One copy per process (DESIGN rule 11): counters and the tracker live in gpusafe::process_v1
// behind accessors with default visibility, so handles made by several shared libraries (each
// with its own copy of the headers) are counted together. The tracker's lock is re-created in a
// forked child (it is a ForkAware object).
#ifndef GPUSAFE_DETAIL_HANDLE_STATE_HPP
#define GPUSAFE_DETAIL_HANDLE_STATE_HPP

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>
#include <vector>

#include "gpusafe/config.hpp"
#include "gpusafe/detail/no_destructor.hpp"
#include "gpusafe/lifecycle.hpp"

GPUSAFE_PROCESS_NAMESPACE_BEGIN

/// The kinds of handle gpusafe owns. The values are stable (FakeRuntime sees them as ints).
enum class HandleKind : int {
  stream = 0,  ///< cudaStream_t
  event,       ///< cudaEvent_t
  graph_exec,  ///< cudaGraphExec_t
  cublas,      ///< cublasHandle_t
  cublaslt,    ///< cublasLtHandle_t
  cudnn,       ///< cudnnHandle_t
  cufft,       ///< cufftHandle (a plan)
  nccl,        ///< ncclComm_t
  count_
};

constexpr int kHandleKinds = static_cast<int>(HandleKind::count_);

/// The public name of the handle type of a kind ("Stream", "CublasHandle", ...).
constexpr const char* to_string(HandleKind kind) noexcept {
  constexpr const char* names[] = {"Stream",         "Event",       "GraphExec", "CublasHandle",
                                   "CublasLtHandle", "CudnnHandle", "CufftPlan", "NcclComm"};
  return kind < HandleKind::count_ && static_cast<int>(kind) >= 0 ? names[static_cast<int>(kind)]
                                                                  : "?";
}

/// Why a handle was left to the OS instead of destroyed (DESIGN section 3).
enum class LeakReason : int {
  exiting = 0,   ///< the process is exiting: the runtime may be torn down (rule 1)
  forked_child,  ///< a child of fork(): no runtime call there (rule 5)
  poisoned,      ///< its device hit a sticky error (rule 6)
  device_reset,  ///< its device was reset since it was made: the handle is dangling (rule 6)
  count_
};

constexpr int kLeakReasons = static_cast<int>(LeakReason::count_);

struct HandleCounters {
  std::atomic<std::uint64_t> created{0};
  std::atomic<std::uint64_t> destroyed{0};
  std::atomic<std::uint64_t> aborted{0};
  std::atomic<std::uint64_t> destroy_failures{0};
  std::atomic<std::uint64_t> leaked[kLeakReasons] = {};
};

struct HandleCounterTable {
  HandleCounters kinds[kHandleKinds];
};

GPUSAFE_PROCESS_WIDE inline HandleCounters* handle_counters() noexcept {
  static NoDestructor<HandleCounterTable> table;
  return table.get().kinds;
}

/// One live handle, as the tracker remembers it.
struct HandleTrackRecord {
  HandleKind kind = HandleKind::stream;
  int device = 0;
  std::string file;
  int line = 0;
  std::string tag;
  std::chrono::steady_clock::time_point made;
};

/// Live handles made while tracking was on. Its lock is a leaf lock.
struct HandleTracker final : ForkAware {
  std::atomic<bool> enabled{false};
  std::atomic<std::uint64_t> next_id{1};
  std::mutex mutex;
  std::unordered_map<std::uint64_t, HandleTrackRecord> live;

  HandleTracker() noexcept { enrol_fork_aware(this); }
  void lock_for_fork() noexcept override { mutex.lock(); }
  void unlock_after_fork() noexcept override { mutex.unlock(); }
  void recreate_locks_in_child() noexcept override { new (&mutex) std::mutex(); }
};

GPUSAFE_PROCESS_WIDE inline HandleTracker& handle_tracker() noexcept {
  static NoDestructor<HandleTracker> tracker;
  return tracker.get();
}

GPUSAFE_PROCESS_NAMESPACE_END

GPUSAFE_NAMESPACE_BEGIN

using process_v1::HandleKind;
using process_v1::LeakReason;
using process_v1::to_string;

constexpr const char* to_string(LeakReason reason) noexcept {
  switch (reason) {
    case LeakReason::exiting:
      return "exiting";
    case LeakReason::forked_child:
      return "forked_child";
    case LeakReason::poisoned:
      return "poisoned";
    case LeakReason::device_reset:
      return "device_reset";
    case LeakReason::count_:
      break;
  }
  return "?";
}

/// What happened to the handles of one kind, process-wide, since the start.
struct HandleStats {
  std::uint64_t created = 0;
  std::uint64_t destroyed = 0;         ///< destroyed through the runtime
  std::uint64_t aborted = 0;           ///< communicators aborted instead of destroyed
  std::uint64_t destroy_failures = 0;  ///< the destroy call failed (logged once per kind)
  std::uint64_t leaked[process_v1::kLeakReasons] = {};  ///< left to the OS on purpose, by reason

  /// Handles left to the OS on purpose, all reasons together.
  std::uint64_t leaked_total() const noexcept {
    std::uint64_t n = 0;
    for (auto v : leaked) n += v;
    return n;
  }
  /// Handles still owned by a live object.
  std::uint64_t live() const noexcept {
    return created - destroyed - aborted - destroy_failures - leaked_total();
  }
};

/// The counters of `kind`. Never throws.
inline HandleStats handle_stats(HandleKind kind) noexcept {
  HandleStats s;
  if (kind >= HandleKind::count_ || static_cast<int>(kind) < 0) return s;
  const auto& c = process_v1::handle_counters()[static_cast<int>(kind)];
  s.created = c.created.load(std::memory_order_relaxed);
  s.destroyed = c.destroyed.load(std::memory_order_relaxed);
  s.aborted = c.aborted.load(std::memory_order_relaxed);
  s.destroy_failures = c.destroy_failures.load(std::memory_order_relaxed);
  for (int r = 0; r < process_v1::kLeakReasons; ++r)
    s.leaked[r] = c.leaked[r].load(std::memory_order_relaxed);
  return s;
}

/// Handles of every kind deliberately left to the OS (exit, fork, poisoned device, reset).
inline std::uint64_t leaked_handle_count() noexcept {
  std::uint64_t n = 0;
  for (int k = 0; k < process_v1::kHandleKinds; ++k)
    n += handle_stats(static_cast<HandleKind>(k)).leaked_total();
  return n;
}

/// Handles of `kind` deliberately left to the OS.
inline std::uint64_t leaked_handle_count(HandleKind kind) noexcept {
  return handle_stats(kind).leaked_total();
}

/// Turns the tracking of live handles on or off (off by default: it costs a lock and an
/// allocation per handle). Only handles made while it is on are tracked.
inline void set_handle_tracking(bool on) noexcept {
  process_v1::handle_tracker().enabled.store(on, std::memory_order_relaxed);
}

/// Where a handle was made, for the leak report (file, line, tag); empty when not given.
struct HandleSite {
  const char* file = nullptr;
  int line = 0;
  const char* tag = nullptr;
};

/// Records a handle at the call site: `gpusafe::Stream s(params, GPUSAFE_HANDLE_SITE("decode"))`.
#define GPUSAFE_HANDLE_SITE(tag) (::gpusafe::HandleSite{__FILE__, __LINE__, (tag)})

namespace detail {

inline process_v1::HandleCounters& counters_of(HandleKind kind) noexcept {
  return process_v1::handle_counters()[static_cast<int>(kind)];
}

/// Adds a live handle to the tracker when tracking is on; returns its id (0 = untracked).
inline std::uint64_t track_handle(HandleKind kind, int device, const HandleSite& site) noexcept {
  auto& t = process_v1::handle_tracker();
  if (!t.enabled.load(std::memory_order_relaxed)) return 0;
  GPUSAFE_TRY {
    process_v1::HandleTrackRecord r;
    r.kind = kind;
    r.device = device;
    if (site.file) r.file = site.file;
    r.line = site.line;
    if (site.tag) r.tag = site.tag;
    r.made = std::chrono::steady_clock::now();
    const std::uint64_t id = t.next_id.fetch_add(1, std::memory_order_relaxed);
    std::lock_guard<std::mutex> lock(t.mutex);
    t.live.emplace(id, std::move(r));
    return id;
  }
  GPUSAFE_CATCH_ALL {
    return 0;  // out of memory: the handle works, it is only missing from the report
  }
}

inline void untrack_handle(std::uint64_t id) noexcept {
  if (id == 0) return;
  auto& t = process_v1::handle_tracker();
  std::lock_guard<std::mutex> lock(t.mutex);
  t.live.erase(id);
}

}  // namespace detail

/// A Reclaimable that reclaims nothing and lists the live tracked handles as leak records, so
/// that MemoryManager::leak_report() shows them: `manager.attach(gpusafe::handle_leak_reporter())`.
class HandleLeakReporter final : public Reclaimable, public LeakReporter {
 public:
  std::size_t reclaim(const ReclaimRequest&) noexcept override { return 0; }
  ReclaimCost reclaim_cost() const noexcept override { return ReclaimCost::controller; }
  const char* reclaimable_name() const noexcept override { return "gpu handles"; }
  LeakReporter* leak_reporter() noexcept override { return this; }
  ResourceUsage usage() const noexcept override {
    ResourceUsage u;
    auto& t = process_v1::handle_tracker();
    std::lock_guard<std::mutex> lock(t.mutex);
    u.items = t.live.size();
    return u;
  }
  std::vector<LeakRecord> leak_records() const override {
    std::vector<LeakRecord> out;
    auto& t = process_v1::handle_tracker();
    const auto now = std::chrono::steady_clock::now();
    const auto system_now = std::chrono::system_clock::now();
    std::lock_guard<std::mutex> lock(t.mutex);
    out.reserve(t.live.size());
    for (const auto& entry : t.live) {
      const auto& r = entry.second;
      LeakRecord rec;
      rec.resource = std::string(to_string(r.kind)) + " on device " + std::to_string(r.device);
      rec.file = r.file;
      rec.line = r.line;
      rec.tag = r.tag;
      rec.age = std::chrono::duration_cast<std::chrono::nanoseconds>(now - r.made);
      rec.acquired =
          system_now - std::chrono::duration_cast<std::chrono::system_clock::duration>(rec.age);
      out.push_back(std::move(rec));
    }
    return out;
  }
};

/// The reporter to attach to a MemoryManager (a new object each call; all report the same).
inline std::shared_ptr<HandleLeakReporter> handle_leak_reporter() {
  return std::make_shared<HandleLeakReporter>();
}

GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_HANDLE_STATE_HPP
