// SPDX-License-Identifier: MIT
// gpusafe/leak_record.hpp: LeakRecord, the one record of an outstanding allocation (a lease
// nobody gave back yet), shared by every LeakReporter, MemoryManager's leak report and
// BufferPool's outstanding_leases() (where it is also named OutstandingLease). A header of its
// own so that the reclaim contract (reclaim.hpp) and the pool (buffer_pool.hpp) both declare it
// without including each other; either brings it in.
//
// The record is stored in and returned through the process-wide LeakReporter interface, so it
// lives in gpusafe::process_v1 (DESIGN rule 11) with a layout that depends on no feature.
//
// Thread safety: a plain value. Teardown: nothing to release.
#ifndef GPUSAFE_LEAK_RECORD_HPP
#define GPUSAFE_LEAK_RECORD_HPP

#include <chrono>
#include <cstddef>
#include <string>

#include "gpusafe/config.hpp"

GPUSAFE_PROCESS_NAMESPACE_BEGIN

/// One outstanding allocation (a lease nobody gave back yet), for leak reports: what every
/// LeakReporter says (resource, where, how long ago, how many leases), and what a pool knows
/// besides (when, size class, overflow). BufferPool's outstanding_leases() returns these too,
/// under the name OutstandingLease.
struct LeakRecord {
  std::string resource;  ///< the pool (or other resource) that handed it out
  std::string file;      ///< where it was taken; empty when not tracked
  int line = 0;
  std::string tag;                  ///< the caller's label, if any
  std::size_t bytes = 0;            ///< bytes of all the leases the record stands for
  std::chrono::nanoseconds age{0};  ///< how long ago it was taken (when age_known)
  std::size_t leases = 1;           ///< leases the record stands for (untracked: a whole class)
  bool age_known = true;            ///< false when the resource did not record when
  /// When it was taken (when age_known; the clock's epoch otherwise).
  std::chrono::system_clock::time_point acquired{};
  /// A pool lease's size class; 0 for an overflow lease beyond every class and for a record
  /// that is not a pool's lease.
  std::size_t class_bytes = 0;
  bool overflow = false;  ///< a pool lease allocated outside the pool's classes
};

GPUSAFE_PROCESS_NAMESPACE_END

GPUSAFE_NAMESPACE_BEGIN

using process_v1::LeakRecord;
/// A pool's lease still out (BufferPool::outstanding_leases()): the same record.
using OutstandingLease = LeakRecord;

GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_LEAK_RECORD_HPP
