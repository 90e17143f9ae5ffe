// SPDX-License-Identifier: MIT
// gpusafe/detail/pool/lease_tracker.hpp: the optional record of BufferPool's outstanding leases
// (each a LeakRecord: where and when it was taken, its size class), behind
// BufferPoolOptions::track_leases, and the text of the leak report (in the line form of
// detail/report_format.hpp that MemoryManager's leak report uses too).
//
// Thread safety: every member may be called from any thread at once (one mutex, taken only when
// tracking is on). Teardown: untrack() never throws; a forked child rebuilds the mutex
// (recreate_lock_in_child) since the thread that held it does not exist there.
#ifndef GPUSAFE_DETAIL_POOL_LEASE_TRACKER_HPP
#define GPUSAFE_DETAIL_POOL_LEASE_TRACKER_HPP

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "gpusafe/buffer_lease.hpp"
#include "gpusafe/config.hpp"
#include "gpusafe/detail/pool/options.hpp"
#include "gpusafe/detail/report_format.hpp"
#include "gpusafe/leak_record.hpp"
#include "gpusafe/lifecycle.hpp"

GPUSAFE_NAMESPACE_BEGIN
namespace detail {

class LeaseTracker {
 public:
  /// Records a lease; returns its id (never 0). Throws std::bad_alloc.
  std::uint64_t track(const std::string& pool, std::size_t bytes, std::size_t class_bytes,
                      LeaseTag tag, bool overflow) {
    LeakRecord rec;
    rec.resource = pool;
    rec.bytes = bytes;
    rec.class_bytes = class_bytes;
    if (tag.file) rec.file = tag.file;
    rec.line = tag.line;
    if (tag.tag) rec.tag = tag.tag;
    rec.acquired = std::chrono::system_clock::now();
    rec.overflow = overflow;
    std::lock_guard<std::mutex> lock(mutex_);
    const std::uint64_t id = ++next_id_;
    leases_.emplace(id, std::move(rec));
    return id;
  }

  void untrack(std::uint64_t id) noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    leases_.erase(id);
  }

  /// The leases out now, oldest first, each with its age at this call (BufferPool's
  /// outstanding_leases(), MemoryManager::leak_report() and the pool's own report).
  std::vector<LeakRecord> outstanding() const {
    std::vector<LeakRecord> out;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      out.reserve(leases_.size());
      for (const auto& kv : leases_) out.push_back(kv.second);
    }
    std::sort(out.begin(), out.end(),
              [](const LeakRecord& a, const LeakRecord& b) { return a.acquired < b.acquired; });
    const auto now = std::chrono::system_clock::now();
    for (auto& lease : out)
      lease.age = std::chrono::duration_cast<std::chrono::nanoseconds>(now - lease.acquired);
    return out;
  }

  /// One line per lease, oldest first, in the manager's leak report form (size class included):
  /// "  pool: 1000 B taken at file:line [tag], 2.0 s ago (class 4096)".
  std::string report_lines() const {
    std::string r;
    for (const auto& lease : outstanding()) r += "  " + describe_leak(lease) + "\n";
    return r;
  }

  void recreate_lock_in_child() noexcept { new (&mutex_) std::mutex(); }

 private:
  mutable std::mutex mutex_;
  std::unordered_map<std::uint64_t, LeakRecord> leases_;
  std::uint64_t next_id_ = 0;
};

}  // namespace detail
GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_POOL_LEASE_TRACKER_HPP
