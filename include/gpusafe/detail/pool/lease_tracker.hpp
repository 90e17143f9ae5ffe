// gpusafe/detail/pool/lease_tracker.hpp: the optional record of BufferPool's outstanding leases
// (where each was taken), behind BufferPoolOptions::track_leases, and the text of the leak report.
//
// Thread safety: every member may be called from any thread at once (one mutex, taken only when
// tracking is on). Teardown: untrack() never throws; a forked child rebuilds the mutex
// (recreate_lock_in_child) since the thread that held it does not exist there.
#ifndef GPUSAFE_DETAIL_POOL_LEASE_TRACKER_HPP
#define GPUSAFE_DETAIL_POOL_LEASE_TRACKER_HPP

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "gpusafe/buffer_lease.hpp"
#include "gpusafe/config.hpp"
#include "gpusafe/detail/pool/options.hpp"
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

  /// The leases as the MemoryManager's leak report wants them.
  std::vector<LeakRecord> leak_records() const {
    std::vector<LeakRecord> out;
    const auto now = std::chrono::system_clock::now();
    for (auto& lease : outstanding()) {
      LeakRecord r;
      r.resource = std::move(lease.pool);
      r.file = std::move(lease.file);
      r.line = lease.line;
      r.tag = std::move(lease.tag);
      r.bytes = lease.bytes;
      r.age = std::chrono::duration_cast<std::chrono::nanoseconds>(now - lease.acquired);
      out.push_back(std::move(r));
    }
    return out;
  }

  /// One line per lease: "  <bytes> bytes (class N) taken at file:line [tag], <age> s ago".
  std::string report_lines() const {
    std::string r;
    const auto now = std::chrono::system_clock::now();
    for (const auto& l : outstanding()) {
      const double age = std::chrono::duration<double>(now - l.acquired).count();
      char age_text[32];
      std::snprintf(age_text, sizeof age_text, "%.3f", age);
      r += "  " + std::to_string(l.bytes) + " bytes (" +
           (l.overflow ? std::string("overflow") : "class " + std::to_string(l.class_bytes)) +
           ") taken at " + (l.file.empty() ? std::string("?") : l.file) + ":" +
           std::to_string(l.line) + (l.tag.empty() ? std::string() : " [" + l.tag + "]") + ", " +
           age_text + " s ago\n";
    }
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
