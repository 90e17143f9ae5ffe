// SPDX-License-Identifier: MIT
// gpusafe/detail/threshold_release.hpp: the steps of MemoryManager's threshold release. Measure
// the watched device against the threshold; when over, ask the resources, cheapest first, at
// ReclaimLevel::heavy, re-measuring after each, until usage is back at the threshold.
//
// Thread safety: the functions hold no lock of their own; the manager runs them under its
// cleanup lock, one release at a time. The resources are held by shared handles while asked.
// Teardown: the runtime is read only through the caller's `read` (which checks the process
// state); a resource's reclaim() makes no runtime call once the process is exiting or forked.
#ifndef GPUSAFE_DETAIL_THRESHOLD_RELEASE_HPP
#define GPUSAFE_DETAIL_THRESHOLD_RELEASE_HPP

#include <algorithm>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "gpusafe/config.hpp"
#include "gpusafe/detail/attached_resources.hpp"
#include "gpusafe/detail/device_memory.hpp"
#include "gpusafe/memory_report.hpp"
#include "gpusafe/reclaim.hpp"

GPUSAFE_NAMESPACE_BEGIN
namespace detail {

/// Fills the figures of `result` (`read()` returns a MemoryReading; it is not called when no
/// threshold is set). Returns whether usage is over the threshold.
template <class Read>
bool measure_for_release(ReleaseResult& result, double threshold, Read&& read) {
  if (threshold <= 0.0) {
    result.target_reached = true;
    result.note = "no threshold set";
    return false;
  }
  const MemoryReading m = read();
  if (!m.known) {
    result.note = "device memory could not be read";
    return false;
  }
  result.checked = true;
  result.total_bytes = m.total_bytes;
  result.used_before = result.used_after = m.used_bytes();
  result.target_bytes = static_cast<std::size_t>(threshold * static_cast<double>(m.total_bytes));
  result.target_reached = result.used_before <= result.target_bytes;
  result.was_over = !result.target_reached;
  return result.was_over;
}

/// Asks `r` for what is over the target; records what it gave and updates `result.used_after`.
/// Returns whether usage is now at or under the target.
template <class Read>
bool ask_to_release(Reclaimable& r, ReleaseResult& result, const std::string& reason,
                    int request_device, Read&& read) {
  std::size_t& used = result.used_after;
  ReclaimRequest request;
  request.level = ReclaimLevel::heavy;
  request.device = request_device;
  request.bytes_goal = used - result.target_bytes;
  const std::size_t freed = r.reclaim(request);
  if (freed > 0) {
    result.released.push_back({r.reclaimable_name(), r.reclaim_cost(), freed, reason});
    result.bytes_freed += freed;
  }
  // Host memory freed to malloc may not show in the runtime's figures: count what the resource
  // reported even when the measurement lags.
  const MemoryReading m = read();
  const std::size_t measured = m.known ? m.used_bytes() : used;
  used = std::min(measured, used > freed ? used - freed : 0);
  return used <= result.target_bytes;
}

/// After measure_for_release() found usage over the threshold: asks `resources` cheapest first
/// (controllers skipped), then the framework caches of the global registry that are not among
/// them, until usage is at the target. Sets `result.target_reached`.
template <class Read>
void release_until_under_threshold(ReleaseResult& result, const std::string& reason,
                                   int request_device,
                                   std::vector<std::shared_ptr<Reclaimable>> resources,
                                   Read&& read) {
  std::stable_sort(resources.begin(), resources.end(), [](const auto& a, const auto& b) {
    return a->reclaim_cost() < b->reclaim_cost();
  });
  auto ask = [&](Reclaimable& r) {
    return ask_to_release(r, result, reason, request_device, read);
  };
  bool reached = false;
  for (const auto& r : resources) {
    if (r->reclaim_cost() == ReclaimCost::controller) continue;
    if ((reached = ask(*r))) break;
  }
  if (!reached) reached = for_each_unattached_framework_cache(resources, ask);
  result.target_reached = reached;
}

}  // namespace detail
GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_THRESHOLD_RELEASE_HPP
