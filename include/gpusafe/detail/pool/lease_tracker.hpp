// SPDX-License-Identifier: MIT
// gpusafe/detail/pool/lease_tracker.hpp: the optional record of BufferPool's outstanding leases
// (where each was taken), behind BufferPoolOptions::track_leases, and the text of the leak report
// (each lease as a LeakRecord, in the line form of detail/report_format.hpp that
// MemoryManager's leak report uses too).
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
#include "gpusafe/lifecycle.hpp"

GPUSAFE_NAMESPACE_BEGIN
namespace detail {

class LeaseTracker {
 public:
  /// Records a lease; returns its id (never 0). Throws std::bad_alloc.
  std::uint64_t track(const std::string& pool, std::size_t bytes, std::size_t class_bytes,
                      LeaseTag tag, bool overflow) {
    OutstandingLease rec;
    rec.pool = pool;
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

  /// The leases out now, oldest first.
  std::vector<OutstandingLease> outstanding() const {
    std::vector<OutstandingLease> out;
    std::lock_guard<std::mutex> lock(mutex_);
    out.reserve(leases_.size());
    for (const auto& kv : leases_) out.push_back(kv.second);
    std::sort(out.begin(), out.end(), [](const OutstandingLease& a, const OutstandingLease& b) {
      return a.acquired < b.acquired;
    });
    return out;
  }

  /// The leases as leak records (MemoryManager::leak_report() and the pool's own report).
  std::vector<LeakRecord> leak_records() const {
    std::vector<LeakRecord> out;
    const auto now = std::chrono::system_clock::now();
    for (auto& lease : outstanding()) out.push_back(to_leak_record(std::move(lease), now));
    return out;
  }

  /// One line per lease, oldest first, in the manager's leak report form followed by its size
  /// class: "  pool: 1000 B taken at file:line [tag], 2.0 s ago (class 4096)".
  std::string report_lines() const {
    std::string r;
    const auto now = std::chrono::system_clock::now();
    for (auto& lease : outstanding()) {
      const std::string size_class =
          lease.overflow ? std::string("overflow") : "class " + std::to_string(lease.class_bytes);
      r += "  " + describe_leak(to_leak_record(std::move(lease), now)) + " (" + size_class + ")\n";
    }
    return r;
  }

  /// The leak record of one lease: an OutstandingLease says where and when (for the pool's own
  /// accessors); a LeakRecord says where and how long ago, as every LeakReporter does.
  static LeakRecord to_leak_record(OutstandingLease lease,
                                   std::chrono::system_clock::time_point now) {
    LeakRecord r;
    r.resource = std::move(lease.pool);
    r.file = std::move(lease.file);
    r.line = lease.line;
    r.tag = std::move(lease.tag);
    r.bytes = lease.bytes;
    r.age = std::chrono::duration_cast<std::chrono::nanoseconds>(now - lease.acquired);
    return r;
  }

  void recreate_lock_in_child() noexcept { new (&mutex_) std::mutex(); }

 private:
  mutable std::mutex mutex_;
  std::unordered_map<std::uint64_t, OutstandingLease> leases_;
  std::uint64_t next_id_ = 0;
};

}  // namespace detail
GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_POOL_LEASE_TRACKER_HPP
