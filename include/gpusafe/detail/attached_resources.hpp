// SPDX-License-Identifier: MIT
// gpusafe/detail/attached_resources.hpp: what a MemoryManager watches. AttachedResources is its
// list of attached Reclaimables, held weakly (an attached object may die first); the functions
// below walk those resources and the framework caches of the global registry for snapshots and
// leak reports.
//
// Thread safety: AttachedResources guards its list with a mutex that its owner provides (the
// manager's, held across fork() with its other data locks and rebuilt in a forked child); every
// member may be called from any thread. The resources are used through shared handles taken
// under the lock, so none dies while used. Teardown: nothing is owned but weak handles; nothing
// here calls the runtime.
#ifndef GPUSAFE_DETAIL_ATTACHED_RESOURCES_HPP
#define GPUSAFE_DETAIL_ATTACHED_RESOURCES_HPP

#include <algorithm>
#include <iterator>
#include <memory>
#include <mutex>
#include <type_traits>
#include <utility>
#include <vector>

#include "gpusafe/config.hpp"
#include "gpusafe/detail/thread_annotations.hpp"
#include "gpusafe/memory_report.hpp"
#include "gpusafe/reclaim.hpp"

GPUSAFE_NAMESPACE_BEGIN
namespace detail {

/// Whether T has `reclaimable()` returning something convertible to shared_ptr<Reclaimable>.
template <class T, class = void>
struct has_reclaimable : std::false_type {};
template <class T>
struct has_reclaimable<
    T, std::enable_if_t<std::is_convertible<decltype(std::declval<const T&>().reclaimable()),
                                            std::shared_ptr<Reclaimable>>::value>>
    : std::true_type {};

/// Resources held weakly, each once.
class AttachedResources {
 public:
  explicit AttachedResources(Mutex& mutex) noexcept : mutex_(mutex) {}

  /// Adds `resource` unless it is there already. May throw std::bad_alloc.
  void add(const std::shared_ptr<Reclaimable>& resource) {
    MutexLock lock(mutex_);
    prune_locked();
    for (const auto& w : list_)
      if (same_owner(w, resource)) return;
    list_.push_back(std::weak_ptr<Reclaimable>(resource));
  }

  /// Removes `resource`; returns whether it was there.
  bool remove(const std::shared_ptr<Reclaimable>& resource) noexcept {
    MutexLock lock(mutex_);
    const auto before = list_.size();
    list_.erase(std::remove_if(list_.begin(), list_.end(),
                               [&](const auto& w) { return same_owner(w, resource); }),
                list_.end());
    prune_locked();
    return list_.size() != before;
  }

  /// The resources still alive.
  std::size_t alive() const noexcept {
    MutexLock lock(mutex_);
    std::size_t n = 0;
    for (const auto& w : list_)
      if (!w.expired()) ++n;
    return n;
  }

  /// The resources alive now, held so they cannot die while used. May throw std::bad_alloc.
  std::vector<std::shared_ptr<Reclaimable>> live() const {
    std::vector<std::shared_ptr<Reclaimable>> out;
    MutexLock lock(mutex_);
    out.reserve(list_.size());
    for (const auto& w : list_)
      if (auto p = w.lock()) out.push_back(std::move(p));
    return out;
  }

 private:
  static bool same_owner(const std::weak_ptr<Reclaimable>& w,
                         const std::shared_ptr<Reclaimable>& p) noexcept {
    return !w.owner_before(p) && !p.owner_before(w);
  }

  void prune_locked() noexcept GPUSAFE_REQUIRES(mutex_) {
    list_.erase(
        std::remove_if(list_.begin(), list_.end(), [](const auto& w) { return w.expired(); }),
        list_.end());
  }

  Mutex& mutex_;
  std::vector<std::weak_ptr<Reclaimable>> list_ GPUSAFE_GUARDED_BY(mutex_);
};

/// Calls fn(resource) for each framework cache (LibTorch's allocator) that is in the global
/// registry but not in `attached`, under its registry entry's lock (so that unregistering
/// waits), until fn returns true. Returns whether one did.
template <class Fn>
bool for_each_unattached_framework_cache(const std::vector<std::shared_ptr<Reclaimable>>& attached,
                                         Fn&& fn) {
  for (const auto& entry : registry_snapshot()) {
    if (entry->cost != ReclaimCost::framework_cache) continue;
    std::lock_guard<std::recursive_mutex> lock(entry->mutex);
    if (!entry->target) continue;
    const bool is_attached = std::any_of(attached.begin(), attached.end(),
                                         [&](const auto& r) { return r.get() == entry->target; });
    if (!is_attached && fn(*entry->target)) return true;
  }
  return false;
}

/// The usage of every attached resource, then of every framework cache of the global registry
/// that is not attached.
inline std::vector<ResourceSnapshot> snapshot_resources(
    const std::vector<std::shared_ptr<Reclaimable>>& attached) {
  std::vector<ResourceSnapshot> out;
  out.reserve(attached.size());
  for (const auto& r : attached)
    out.push_back({r->reclaimable_name(), r->reclaim_cost(), r->usage(), true});
  for_each_unattached_framework_cache(attached, [&](Reclaimable& r) {
    out.push_back({r.reclaimable_name(), ReclaimCost::framework_cache, r.usage(), false});
    return false;
  });
  return out;
}

/// The outstanding leases of `resources` that implement LeakReporter, oldest first; the
/// idle-memory resources that do not are listed as untracked.
inline LeakReport collect_leaks(const std::vector<std::shared_ptr<Reclaimable>>& resources) {
  LeakReport report;
  for (const auto& r : resources) {
    if (const LeakReporter* reporter = r->leak_reporter()) {
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

}  // namespace detail
GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_ATTACHED_RESOURCES_HPP
