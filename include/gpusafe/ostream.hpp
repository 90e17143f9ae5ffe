// SPDX-License-Identifier: MIT
// gpusafe/ostream.hpp: operator<< for gpusafe's enums, statistics and report types, so that they
// can be written to a log stream, a test failure message or std::cout as they are.
//
// Enums print their short name (the one to_string() gives where there is a to_string(): "device",
// "pool_exhausted", "idle_memory", ...). Records print as `Type{field=value, ...}` on one line,
// every figure exact (bytes in bytes, durations in milliseconds), lists in brackets; a
// LeakReport prints its to_string(), an Error its code and message, a Status its describe().
// Covered: MemoryKind, Fallback, ErrorClass, CudaStatus, Status, DeviceInfo (runtime.hpp);
// ErrorCode, Error (error.hpp); LogLevel (log.hpp); ReclaimCost, ReclaimLevel, ReclaimRequest,
// ResourceUsage, LeakRecord (reclaim.hpp; also BufferPool's OutstandingLease); OverflowPolicy,
// SizeClass, SizeClassStats, BufferPoolStats (buffer_pool.hpp); ResourceSnapshot, MemorySnapshot,
// ReleaseEntry, ReleaseResult, MemoryManagerStats, LeakReport (memory_manager.hpp); Residency,
// EvictReason, OversizePolicy, ModelCacheStats (model_cache.hpp). Each operator lives in its
// type's namespace, so argument-dependent lookup finds it from any namespace.
//
// Thread safety: the operators only read the value given (stats and reports are snapshots,
// copies owned by the caller); writing one stream from several threads needs the caller's own
// synchronisation, as for any std::ostream.
//
// Teardown: nothing is held; the operators make no runtime call and may run at any time,
// during exit or in a forked child included.
#ifndef GPUSAFE_OSTREAM_HPP
#define GPUSAFE_OSTREAM_HPP

#include <chrono>
#include <cstddef>
#include <limits>
#include <ostream>
#include <vector>

#include "gpusafe/buffer_pool.hpp"
#include "gpusafe/config.hpp"
#include "gpusafe/error.hpp"
#include "gpusafe/log.hpp"
#include "gpusafe/memory_manager.hpp"
#include "gpusafe/model_cache.hpp"
#include "gpusafe/reclaim.hpp"
#include "gpusafe/runtime.hpp"

GPUSAFE_NAMESPACE_BEGIN
namespace detail {

/// Writes `name=[a, b, ...]`, each element by its operator<<.
template <class T>
void write_list(std::ostream& os, const char* name, const std::vector<T>& items) {
  os << name << "=[";
  const char* sep = "";
  for (const auto& item : items) {
    os << sep << item;
    sep = ", ";
  }
  os << ']';
}

inline double ostream_ms(std::chrono::nanoseconds d) noexcept {
  return std::chrono::duration<double, std::milli>(d).count();
}

constexpr const char* bool_name(bool b) noexcept { return b ? "true" : "false"; }

}  // namespace detail

// ---- runtime.hpp -----------------------------------------------------------------------------

inline std::ostream& operator<<(std::ostream& os, MemoryKind kind) { return os << to_string(kind); }

inline std::ostream& operator<<(std::ostream& os, Fallback fallback) {
  switch (fallback) {
    case Fallback::host:
      return os << "host";
    case Fallback::error:
      return os << "error";
  }
  return os << "Fallback(" << static_cast<int>(fallback) << ')';
}

inline std::ostream& operator<<(std::ostream& os, ErrorClass c) { return os << to_string(c); }

inline std::ostream& operator<<(std::ostream& os, CudaStatus s) { return os << to_string(s); }

inline std::ostream& operator<<(std::ostream& os, const Status& s) { return os << s.describe(); }

inline std::ostream& operator<<(std::ostream& os, const DeviceInfo& d) {
  return os << "DeviceInfo{index=" << d.index << ", is_gpu=" << detail::bool_name(d.is_gpu)
            << ", name='" << d.name << "', compute=" << d.compute_major << '.' << d.compute_minor
            << ", multiprocessors=" << d.multiprocessors << ", total_memory=" << d.total_memory
            << ", free_memory=" << d.free_memory << '}';
}

// ---- error.hpp -------------------------------------------------------------------------------

inline std::ostream& operator<<(std::ostream& os, ErrorCode code) { return os << to_string(code); }

/// "pool_exhausted: <message>", with " (runtime code N)" when a runtime status caused it.
inline std::ostream& operator<<(std::ostream& os, const Error& e) {
  os << e.code() << ": " << e.what();
  if (e.runtime_code() != 0) os << " (runtime code " << e.runtime_code() << ')';
  return os;
}

// ---- buffer_pool.hpp -------------------------------------------------------------------------

inline std::ostream& operator<<(std::ostream& os, OverflowPolicy p) {
  switch (p) {
    case OverflowPolicy::fail:
      return os << "fail";
    case OverflowPolicy::allocate:
      return os << "allocate";
    case OverflowPolicy::grow:
      return os << "grow";
  }
  return os << "OverflowPolicy(" << static_cast<int>(p) << ')';
}

inline std::ostream& operator<<(std::ostream& os, const SizeClass& c) {
  return os << "SizeClass{bytes=" << c.bytes << ", count=" << c.count << '}';
}

inline std::ostream& operator<<(std::ostream& os, const SizeClassStats& s) {
  return os << "SizeClassStats{bytes=" << s.bytes << ", capacity=" << s.capacity
            << ", in_use=" << s.in_use << ", available=" << s.available << ", cached=" << s.cached
            << ", high_water=" << s.high_water << ", acquires=" << s.acquires
            << ", failures=" << s.failures << ", waits=" << s.waits << ", overflow=" << s.overflow
            << ", fallback=" << s.fallback << ", dropped=" << s.dropped
            << ", bytes_reserved=" << s.bytes_reserved << ", slabs=" << s.slabs
            << ", resident=" << detail::bool_name(s.resident) << '}';
}

inline std::ostream& operator<<(std::ostream& os, const BufferPoolStats& s) {
  os << "BufferPoolStats{name='" << s.name << "', kind=" << s.kind
     << ", requested_kind=" << s.requested_kind << ", device=" << s.device
     << ", fallback=" << detail::bool_name(s.fallback) << ", overflow_live=" << s.overflow_live
     << ", overflow_bytes_live=" << s.overflow_bytes_live << ", totals=" << s.totals << ", ";
  detail::write_list(os, "classes", s.classes);
  return os << '}';
}

GPUSAFE_NAMESPACE_END

// The enums and records of log.hpp and reclaim.hpp live in the process-wide namespace.

GPUSAFE_PROCESS_NAMESPACE_BEGIN

// ---- log.hpp ---------------------------------------------------------------------------------

inline std::ostream& operator<<(std::ostream& os, LogLevel level) { return os << to_string(level); }

// ---- reclaim.hpp -----------------------------------------------------------------------------

inline std::ostream& operator<<(std::ostream& os, ReclaimCost cost) {
  return os << to_string(cost);
}

/// `trim`, the former name of `heavy`, prints as "heavy".
inline std::ostream& operator<<(std::ostream& os, ReclaimLevel level) {
  switch (level) {
    case ReclaimLevel::light:
      return os << "light";
    case ReclaimLevel::heavy:
      return os << "heavy";
    case ReclaimLevel::shutdown:
      return os << "shutdown";
  }
  return os << "ReclaimLevel(" << static_cast<int>(level) << ')';
}

inline std::ostream& operator<<(std::ostream& os, const ReclaimRequest& r) {
  os << "ReclaimRequest{level=" << r.level << ", bytes_goal=";
  if (r.bytes_goal == std::numeric_limits<std::size_t>::max())
    os << "unlimited";
  else
    os << r.bytes_goal;
  return os << ", device=" << r.device << '}';
}

inline std::ostream& operator<<(std::ostream& os, const ResourceUsage& u) {
  return os << "ResourceUsage{bytes_reserved=" << u.bytes_reserved
            << ", bytes_in_use=" << u.bytes_in_use << ", items=" << u.items
            << ", device=" << u.device << '}';
}

inline std::ostream& operator<<(std::ostream& os, const LeakRecord& r) {
  os << "LeakRecord{resource='" << r.resource << "', leases=" << r.leases << ", bytes=" << r.bytes
     << ", at=";
  if (r.file.empty())
    os << "(untracked)";
  else
    os << r.file << ':' << r.line;
  if (!r.tag.empty()) os << ", tag='" << r.tag << '\'';
  if (r.age_known) os << ", age_ms=" << std::chrono::duration<double, std::milli>(r.age).count();
  if (r.class_bytes != 0 || r.overflow)
    os << ", class_bytes=" << r.class_bytes << ", overflow=" << (r.overflow ? "true" : "false");
  return os << '}';
}

GPUSAFE_PROCESS_NAMESPACE_END

GPUSAFE_NAMESPACE_BEGIN

// ---- memory_manager.hpp ----------------------------------------------------------------------

inline std::ostream& operator<<(std::ostream& os, const ResourceSnapshot& r) {
  return os << "ResourceSnapshot{name='" << r.name << "', cost=" << r.cost << ", usage=" << r.usage
            << ", attached=" << detail::bool_name(r.attached) << '}';
}

inline std::ostream& operator<<(std::ostream& os, const MemorySnapshot& s) {
  os << "MemorySnapshot{time_s=" << s.time_s << ", frame=" << s.frame << ", device=" << s.device
     << ", device_is_gpu=" << detail::bool_name(s.device_is_gpu)
     << ", memory_known=" << detail::bool_name(s.memory_known)
     << ", device_total_bytes=" << s.device_total_bytes
     << ", device_free_bytes=" << s.device_free_bytes
     << ", device_used_bytes=" << s.device_used_bytes << ", ";
  detail::write_list(os, "resources", s.resources);
  return os << '}';
}

inline std::ostream& operator<<(std::ostream& os, const ReleaseEntry& e) {
  os << "ReleaseEntry{resource='" << e.resource << "', cost=" << e.cost << ", bytes=" << e.bytes;
  if (!e.reason.empty()) os << ", reason='" << e.reason << '\'';
  return os << '}';
}

inline std::ostream& operator<<(std::ostream& os, const ReleaseResult& r) {
  os << "ReleaseResult{checked=" << detail::bool_name(r.checked)
     << ", was_over=" << detail::bool_name(r.was_over)
     << ", target_reached=" << detail::bool_name(r.target_reached)
     << ", total_bytes=" << r.total_bytes << ", used_before=" << r.used_before
     << ", used_after=" << r.used_after << ", target_bytes=" << r.target_bytes
     << ", bytes_freed=" << r.bytes_freed << ", ";
  detail::write_list(os, "released", r.released);
  if (!r.note.empty()) os << ", note='" << r.note << '\'';
  return os << '}';
}

inline std::ostream& operator<<(std::ostream& os, const MemoryManagerStats& s) {
  return os << "MemoryManagerStats{frames=" << s.frames << ", frame_cleanups=" << s.frame_cleanups
            << ", timer_cleanups=" << s.timer_cleanups << ", manual_cleanups=" << s.manual_cleanups
            << ", skipped_cleanups=" << s.skipped_cleanups
            << ", threshold_releases=" << s.threshold_releases
            << ", bytes_released=" << s.bytes_released
            << ", timer_running=" << detail::bool_name(s.timer_running)
            << ", attached=" << s.attached << ", history_size=" << s.history_size << '}';
}

/// The report's to_string(): one line per outstanding lease, or "no outstanding leases".
inline std::ostream& operator<<(std::ostream& os, const LeakReport& r) {
  return os << r.to_string();
}

// ---- model_cache.hpp -------------------------------------------------------------------------

inline std::ostream& operator<<(std::ostream& os, Residency r) {
  switch (r) {
    case Residency::primary:
      return os << "primary";
    case Residency::secondary:
      return os << "secondary";
  }
  return os << "Residency(" << static_cast<int>(r) << ')';
}

inline std::ostream& operator<<(std::ostream& os, EvictReason r) { return os << to_string(r); }

inline std::ostream& operator<<(std::ostream& os, OversizePolicy p) {
  switch (p) {
    case OversizePolicy::throw_error:
      return os << "throw_error";
    case OversizePolicy::load_uncached:
      return os << "load_uncached";
  }
  return os << "OversizePolicy(" << static_cast<int>(p) << ')';
}

inline std::ostream& operator<<(std::ostream& os, const ModelCacheStats& s) {
  os << "ModelCacheStats{hits=" << s.hits << ", misses=" << s.misses << ", loads=" << s.loads
     << ", load_failures=" << s.load_failures << ", waits=" << s.waits
     << ", uncached_loads=" << s.uncached_loads << ", evictions={";
  for (std::size_t i = 0; i < kEvictReasonCount; ++i)
    os << (i == 0 ? "" : ", ") << static_cast<EvictReason>(i) << '=' << s.evictions[i];
  os << "}, bytes_resident=" << s.bytes_resident << ", bytes_pinned=" << s.bytes_pinned
     << ", bytes_reserved=" << s.bytes_reserved << ", bytes_retired=" << s.bytes_retired
     << ", byte_budget=";
  if (s.byte_budget == ModelCacheOptions::kUnlimited)
    os << "unlimited";
  else
    os << s.byte_budget;
  return os << ", models_registered=" << s.models_registered
            << ", models_resident=" << s.models_resident
            << ", load_time_ms=" << detail::ostream_ms(s.load_time) << '}';
}

GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_OSTREAM_HPP
