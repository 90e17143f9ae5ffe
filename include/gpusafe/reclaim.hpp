// SPDX-License-Identifier: MIT
// gpusafe/reclaim.hpp: the reclaim contract and the registry of reclaimable resources.
//
// A Reclaimable (a pool, a cache, a manager's controller, LibTorch's caching allocator) gives
// memory back on request, at a ReclaimLevel (light, heavy, shutdown), cheapest ReclaimCost first.
// Resources enrol in the process-wide registry with a ReclaimRegistration; reclaim_all() asks
// them all (safe_cuda_empty_cache() at the light level, gpusafe::shutdown() at shutdown). A
// resource that tracks what it handed out implements LeakReporter for leak reports.
//
// Thread safety: everything here may be called from any thread; unregistering waits for a reclaim
// of the same resource running on another thread. Teardown: the registry is process-wide (one
// per process, whatever configuration each library saw), leaked on purpose, held across fork()
// and rebuilt in the child.
#ifndef GPUSAFE_RECLAIM_HPP
#define GPUSAFE_RECLAIM_HPP

#include <algorithm>
#include <cstddef>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "gpusafe/config.hpp"
#include "gpusafe/detail/fork.hpp"
#include "gpusafe/detail/no_destructor.hpp"
#include "gpusafe/leak_record.hpp"
#include "gpusafe/log.hpp"

// The registry and the types it holds are process-wide (DESIGN rule 11): every configuration of
// the headers shares them.
GPUSAFE_PROCESS_NAMESPACE_BEGIN

/// How much a reclaim may cost, from the cheapest to drop to the dearest.
enum class ReclaimCost {
  controller = 0,        ///< stops timers and other activity (managers); frees nothing itself
  idle_memory = 1,       ///< pool memory nobody uses
  evictable_models = 2,  ///< secondary models in caches
  framework_cache = 3,   ///< a framework's caching allocator (LibTorch)
};

constexpr const char* to_string(ReclaimCost cost) noexcept {
  switch (cost) {
    case ReclaimCost::controller:
      return "controller";
    case ReclaimCost::idle_memory:
      return "idle_memory";
    case ReclaimCost::evictable_models:
      return "evictable_models";
    case ReclaimCost::framework_cache:
      return "framework_cache";
  }
  return "?";
}

/// How hard a reclaim should try. Each level does what the levels before it do, and more.
/// What the built-in resources do at each level:
///
/// - BufferPool: light = idle overflow buffers and grown slabs; heavy = also idle preallocated
///   slabs; shutdown = heavy, then logs leases still out.
/// - ModelCache: light = nothing; heavy = evicts unpinned secondary models no handle holds, least
///   recently used first, until bytes_goal; shutdown = evicts every unpinned model.
/// - LibTorch's caching allocator (torch.hpp): emptyCache() at every level.
/// - MemoryManager (its registry entry): shutdown = stops its timer and logs its leak report.
///
/// A model cache gives nothing back at light: it holds no memory that is cached but idle. Every
/// resident model is warm (getting it back costs a reload), and a model evicted while a handle
/// holds it can be freed by nobody but that handle.
enum class ReclaimLevel {
  /// Give back memory that is cached and idle and costs nothing to lose: framework caches
  /// (LibTorch's caching allocator), a pool's idle overflow buffers and grown slabs. Run by
  /// every periodic cleanup (MemoryManager::on_frame(), its timer) and by
  /// safe_cuda_empty_cache(), like torch.cuda.empty_cache().
  light,
  /// Also give back what is warm but idle and costs a reload or a re-allocation: unpinned
  /// secondary models (LRU first) and idle preallocated pool slabs. MemoryManager's threshold
  /// release and reclaim_all()'s default request use it.
  heavy,
  /// Deprecated: the former name of `heavy` (same value), kept so existing code compiles.
  trim = heavy,
  /// The orderly end: stop timers, give back everything that can be given back.
  shutdown,
};

struct ReclaimRequest {
  ReclaimLevel level = ReclaimLevel::heavy;
  /// Stop once this many bytes were released (reclaim_all); a resource may release more.
  std::size_t bytes_goal = std::numeric_limits<std::size_t>::max();
  /// Only resources on this device; -1 = all.
  int device = -1;
};

/// What a resource holds, as shown by monitoring (MemoryManager::snapshot()).
struct ResourceUsage {
  std::size_t bytes_reserved = 0;  ///< memory the resource holds (in use or idle)
  std::size_t bytes_in_use = 0;    ///< of which handed out or resident
  std::size_t items = 0;           ///< buffers, models, ... (resource-specific)
  int device = -1;                 ///< -1 = host or several
};

class LeakReporter;

/// A resource that can give memory back on request. reclaim() must not throw and must not call
/// the runtime when the process is exiting or forked (use detail::RuntimeCallGate).
class Reclaimable {
 public:
  virtual ~Reclaimable() = default;
  /// Releases what the request allows; returns the bytes released.
  virtual std::size_t reclaim(const ReclaimRequest& request) noexcept = 0;
  virtual ReclaimCost reclaim_cost() const noexcept { return ReclaimCost::idle_memory; }
  virtual const char* reclaimable_name() const noexcept { return "reclaimable"; }
  /// Current holdings, for monitoring. Never throws.
  virtual ResourceUsage usage() const noexcept { return {}; }
  /// The LeakReporter side of this resource, or null when it reports no leases. A class that
  /// implements both returns `this`, so that no RTTI is needed; the default finds it with
  /// dynamic_cast when RTTI is on, and returns null without RTTI. (Last, so that the slots
  /// before it keep their places.)
  virtual LeakReporter* leak_reporter() noexcept;
};

/// Optional interface for a Reclaimable that tracks what it handed out (a pool with its lease
/// tracker on). MemoryManager::leak_report() asks every attached resource that implements it.
class LeakReporter {
 public:
  virtual ~LeakReporter() = default;
  /// What is handed out right now. May throw std::bad_alloc.
  virtual std::vector<LeakRecord> leak_records() const = 0;
  /// Someone (a MemoryManager) has just reported these leaks: the resource need not log them
  /// again at shutdown, so each leak is reported once.
  virtual void note_leaks_reported() noexcept {}
};

inline LeakReporter* Reclaimable::leak_reporter() noexcept {
#if defined(__GXX_RTTI) || defined(_CPPRTTI)
  return dynamic_cast<LeakReporter*>(this);
#else
  return nullptr;
#endif
}

struct RegistryEntry {
  // Recursive: a reclaim() may unregister or re-register its own resource.
  std::recursive_mutex mutex;
  // A resource registered by reference: reclaimed under `mutex`, so that unregistering waits.
  Reclaimable* target = nullptr;
  // A resource registered by shared handle: reclaimed with no registry lock held, so that its
  // callbacks and destructors may take the program's own locks.
  std::weak_ptr<Reclaimable> shared_target;
  ReclaimCost cost = ReclaimCost::idle_memory;
};

/// The reclaim registry. Its list lock is a leaf lock (nothing is locked under it, and it is
/// never taken under another library lock), so it joins the fork-aware objects: held across
/// fork() so that the child never copies the list half-changed, then re-created there.
struct Registry final : ForkAware {
  std::mutex mutex;
  std::vector<std::shared_ptr<RegistryEntry>> entries;

  Registry() noexcept { enrol_fork_aware(this); }

  void lock_for_fork() noexcept override { mutex.lock(); }
  void unlock_after_fork() noexcept override { mutex.unlock(); }
  void recreate_locks_in_child() noexcept override {
    new (&mutex) std::mutex();
    // Entry locks are rebuilt too: a reclaim running on another thread at fork time held one.
    for (auto& e : entries) new (&e->mutex) std::recursive_mutex();
  }
};

GPUSAFE_PROCESS_WIDE inline Registry& registry() noexcept {
  static NoDestructor<Registry> instance;
  return instance.get();
}

inline std::vector<std::shared_ptr<RegistryEntry>> registry_snapshot() {
  auto& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mutex);
  auto copy = reg.entries;
  std::stable_sort(copy.begin(), copy.end(),
                   [](const auto& a, const auto& b) { return a->cost < b->cost; });
  return copy;
}

GPUSAFE_PROCESS_NAMESPACE_END

GPUSAFE_NAMESPACE_BEGIN

using process_v1::LeakReporter;
using process_v1::Reclaimable;
using process_v1::ReclaimCost;
using process_v1::ReclaimLevel;
using process_v1::ReclaimRequest;
using process_v1::ResourceUsage;

using process_v1::to_string;

namespace detail {
using process_v1::registry;
using process_v1::Registry;
using process_v1::registry_snapshot;
using process_v1::RegistryEntry;
}  // namespace detail

/// RAII registration in the reclaimable registry. Unregistering waits for a reclaim of the same
/// resource running on another thread, so the resource may be destroyed right after.
class ReclaimRegistration {
 public:
  ReclaimRegistration() = default;
  /// Registers `target` by reference: it must outlive the registration, whose reset() waits
  /// for a reclaim of it running on another thread.
  explicit ReclaimRegistration(Reclaimable& target) {
    auto entry = std::make_shared<detail::RegistryEntry>();
    entry->target = &target;
    add(std::move(entry), target.reclaim_cost());
  }
  /// Registers a shared resource: the registry holds it only while reclaiming it, and calls it
  /// with no lock of its own held (pools and caches, whose cores outlive their owners safely).
  explicit ReclaimRegistration(const std::shared_ptr<Reclaimable>& target) {
    auto entry = std::make_shared<detail::RegistryEntry>();
    entry->shared_target = target;
    add(std::move(entry), target->reclaim_cost());
  }
  ReclaimRegistration(ReclaimRegistration&& other) noexcept : entry_(std::move(other.entry_)) {}
  ReclaimRegistration& operator=(ReclaimRegistration&& other) noexcept {
    if (this != &other) {
      reset();
      entry_ = std::move(other.entry_);
    }
    return *this;
  }
  ~ReclaimRegistration() { reset(); }

  /// Removes the registration now. Never throws.
  void reset() noexcept {
    if (!entry_) return;
    {
      std::lock_guard<std::recursive_mutex> lock(entry_->mutex);
      entry_->target = nullptr;
      entry_->shared_target.reset();
    }
    auto& reg = detail::registry();
    {
      std::lock_guard<std::mutex> lock(reg.mutex);
      auto& v = reg.entries;
      v.erase(std::remove(v.begin(), v.end(), entry_), v.end());
    }
    entry_.reset();
  }
  bool active() const noexcept { return entry_ != nullptr; }

 private:
  void add(std::shared_ptr<detail::RegistryEntry> entry, ReclaimCost cost) {
    entry->cost = cost;
    auto& reg = detail::registry();
    std::lock_guard<std::mutex> lock(reg.mutex);
    reg.entries.push_back(entry);
    entry_ = std::move(entry);
  }

  std::shared_ptr<detail::RegistryEntry> entry_;
};

/// Asks every registered resource, cheapest first, to reclaim until `request.bytes_goal` bytes
/// were released. Returns the bytes released. Never throws.
inline std::size_t reclaim_all(const ReclaimRequest& request = {}) noexcept {
  std::size_t released = 0;
  GPUSAFE_TRY {
    for (const auto& entry : detail::registry_snapshot()) {
      if (released >= request.bytes_goal) break;
      ReclaimRequest remaining = request;
      remaining.bytes_goal = request.bytes_goal - released;
      std::shared_ptr<Reclaimable> shared;
      {
        std::lock_guard<std::recursive_mutex> lock(entry->mutex);
        if (entry->target) {
          released += entry->target->reclaim(remaining);
          continue;
        }
        shared = entry->shared_target.lock();
      }
      if (shared) released += shared->reclaim(remaining);
    }
  }
  GPUSAFE_CATCH_ALL {
    log(LogLevel::error, "reclaim_all: out of memory while listing resources; nothing reclaimed");
  }
  return released;
}

/// Number of resources in the registry (diagnostics and tests).
inline std::size_t registered_reclaimable_count() noexcept {
  auto& reg = detail::registry();
  std::lock_guard<std::mutex> lock(reg.mutex);
  return reg.entries.size();
}

GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_RECLAIM_HPP
