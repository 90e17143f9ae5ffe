// SPDX-License-Identifier: MIT
// gpusafe/detail/pool/options.hpp: the options, statistics and report records of BufferPool
// (public types, declared here so that the pool's parts can use them; include
// gpusafe/buffer_pool.hpp to use them).
//
// Thread safety: plain values. Teardown: nothing to release.
#ifndef GPUSAFE_DETAIL_POOL_OPTIONS_HPP
#define GPUSAFE_DETAIL_POOL_OPTIONS_HPP

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "gpusafe/config.hpp"
#include "gpusafe/leak_record.hpp"
#include "gpusafe/runtime.hpp"

GPUSAFE_NAMESPACE_BEGIN

/// One size class: `count` buffers of `bytes` bytes each.
struct SizeClass {
  std::size_t bytes = 0;
  std::size_t count = 0;
};

/// What acquire does when a size class has no free buffer (or the request exceeds every class).
enum class OverflowPolicy {
  fail,      ///< acquire throws PoolExhausted, try_acquire returns an empty lease
  allocate,  ///< allocate outside the pool (a runtime call), counted in the stats
  grow,      ///< add a slab to the class (as many buffers as it has, so capacity doubles), up to
             ///< BufferPoolOptions::max_bytes of slabs in the pool; trim() gives idle slabs back
};

/// Construction options of a BasicBufferPool.
struct BufferPoolOptions {
  MemoryKind kind = MemoryKind::device;  ///< where the buffers live
  int device = 0;                        ///< device index for device and pinned memory
  std::vector<SizeClass> classes;        ///< strictly ascending by bytes, count > 0
  std::size_t alignment = 256;           ///< power of two; alignment of every buffer
  OverflowPolicy overflow = OverflowPolicy::fail;
  Fallback fallback = Fallback::host;  ///< device/pinned memory without a usable GPU
  bool track_leases = false;           ///< record where each lease was taken (costs)
  /// Most bytes of slabs the pool holds at once; required by OverflowPolicy::grow (0 = no cap
  /// otherwise). Must cover the first slab of every class.
  std::size_t max_bytes = 0;
  /// Most free buffers one thread keeps per class in front of the shared bitmap (at most 16), so
  /// that acquire and release on one thread write no shared memory. A class caches at most an
  /// eighth of its buffers per thread (none below 8 buffers); 0 turns caching off. Cached buffers
  /// count as available; other threads cannot take them until their thread releases, trims or
  /// exits.
  std::size_t thread_cache = 16;
  std::string name = "pool";  ///< names the pool in messages, stats, reports
};

/// Figures of one size class (or the totals of a pool).
struct SizeClassStats {
  std::size_t bytes = 0;           ///< class size (0 in the totals)
  std::size_t capacity = 0;        ///< buffers in the class (all its resident slabs)
  std::size_t in_use = 0;          ///< leases out now (overflow leases excluded)
  std::size_t available = 0;       ///< free buffers, in the shared bitmap or in thread caches
  std::size_t cached = 0;          ///< of which held in threads' caches
  std::size_t high_water = 0;      ///< most buffers out of the shared bitmap at once (leased or
                                   ///< cached), sampled when a thread takes from the bitmap
  std::uint64_t acquires = 0;      ///< buffers handed out from the slab
  std::uint64_t failures = 0;      ///< acquires refused (exhausted, timed out)
  std::uint64_t waits = 0;         ///< acquire_for calls that had to wait
  std::uint64_t overflow = 0;      ///< buffers allocated outside the pool
  std::uint64_t fallback = 0;      ///< acquires served from host memory instead of a GPU
  std::uint64_t dropped = 0;       ///< releases that dropped the buffer (reset, poison, exit)
  std::size_t bytes_reserved = 0;  ///< slab bytes held (0 after trim)
  std::size_t slabs = 0;           ///< resident slabs (more than 1 after OverflowPolicy::grow)
  bool resident = false;           ///< whether the first slab is allocated
};

/// stats() of a pool: one entry per class plus totals.
struct BufferPoolStats {
  std::string name;
  MemoryKind requested_kind = MemoryKind::device;
  MemoryKind kind = MemoryKind::device;  ///< what the buffers really are
  int device = 0;
  bool fallback = false;  ///< device/pinned memory served from the host
  std::vector<SizeClassStats> classes;
  SizeClassStats totals;          ///< sums; overflow includes requests beyond every class
  std::size_t overflow_live = 0;  ///< overflow leases out now
  std::size_t overflow_bytes_live = 0;
};

GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_POOL_OPTIONS_HPP
