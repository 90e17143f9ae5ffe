// SPDX-License-Identifier: MIT
// gpusafe/detail/cache/stats.hpp: why models leave a ModelCache and the counters it reports
// (public types, declared here so that the cache's parts can use them; include
// gpusafe/model_cache.hpp to use them).
//
// Purpose: EvictReason (passed to on_evict), ModelCacheStats (the snapshot stats() returns) and
// CacheCounters, the events a cache counts while it runs.
//
// Thread safety: plain values; a cache updates its CacheCounters under its writer lock.
// Teardown: nothing to release.
#ifndef GPUSAFE_DETAIL_CACHE_STATS_HPP
#define GPUSAFE_DETAIL_CACHE_STATS_HPP

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>

#include "gpusafe/config.hpp"

GPUSAFE_NAMESPACE_BEGIN

/// Why a model left the cache (passed to on_evict and counted in the stats).
enum class EvictReason : int {
  budget = 0,     ///< room for another model within the byte budget
  pressure = 1,   ///< device memory use went over the high watermark
  requested = 2,  ///< an explicit evict(bytes)
  clear = 3,      ///< clear()
  removed = 4,    ///< remove(key)
  shutdown = 5,   ///< gpusafe::shutdown() (a reclaim at shutdown level)
  reclaim = 6,    ///< a heavy reclaim (reclaim_all(), MemoryManager's threshold release)
};

/// Number of EvictReason values.
constexpr std::size_t kEvictReasonCount = 7;

constexpr const char* to_string(EvictReason r) noexcept {
  switch (r) {
    case EvictReason::budget:
      return "budget";
    case EvictReason::pressure:
      return "pressure";
    case EvictReason::requested:
      return "requested";
    case EvictReason::clear:
      return "clear";
    case EvictReason::removed:
      return "removed";
    case EvictReason::shutdown:
      return "shutdown";
    case EvictReason::reclaim:
      return "reclaim";
  }
  return "?";
}

/// A snapshot of a cache's counters.
struct ModelCacheStats {
  std::uint64_t hits = 0;            ///< get/try_get that found the model resident
  std::uint64_t misses = 0;          ///< get that did not
  std::uint64_t loads = 0;           ///< successful loader calls
  std::uint64_t load_failures = 0;   ///< loader threw, returned null, or the model did not fit
  std::uint64_t waits = 0;           ///< gets that waited for another thread's load
  std::uint64_t uncached_loads = 0;  ///< loads handed out without caching (OversizePolicy)
  std::array<std::uint64_t, kEvictReasonCount> evictions{};  ///< indexed by EvictReason
  std::size_t bytes_resident = 0;                            ///< cached models
  std::size_t bytes_pinned = 0;    ///< of which primary or pinned (not evictable)
  std::size_t bytes_reserved = 0;  ///< size hints of loads in progress
  std::size_t bytes_retired = 0;   ///< removed from the cache but still held by handles
  std::size_t byte_budget = 0;
  std::size_t models_registered = 0;
  std::size_t models_resident = 0;
  std::chrono::nanoseconds load_time{0};  ///< total time spent in loaders

  std::uint64_t evictions_for(EvictReason r) const noexcept {
    return evictions[static_cast<std::size_t>(r)];
  }
  std::uint64_t evictions_total() const noexcept {
    std::uint64_t n = 0;
    for (auto v : evictions) n += v;
    return n;
  }
  /// What counts against the budget.
  std::size_t bytes_charged() const noexcept {
    return bytes_resident + bytes_retired + bytes_reserved;
  }
};

namespace detail {

/// The load events a cache counts under its writer lock (hits are counted in the reader
/// stripes, evictions by the ResidentSet).
struct CacheCounters {
  std::uint64_t misses = 0;
  std::uint64_t loads = 0;
  std::uint64_t load_failures = 0;
  std::uint64_t waits = 0;
  std::uint64_t uncached_loads = 0;
  std::chrono::nanoseconds load_time{0};

  /// Copies the counters into `s` (its figures and eviction counts are left alone).
  void copy_to(ModelCacheStats& s) const noexcept {
    s.misses = misses;
    s.loads = loads;
    s.load_failures = load_failures;
    s.waits = waits;
    s.uncached_loads = uncached_loads;
    s.load_time = load_time;
  }
};

}  // namespace detail

GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_CACHE_STATS_HPP
