// SPDX-License-Identifier: MIT
// gpusafe/memory_report.hpp: what a MemoryManager observes (snapshots, counters, release
// results, leak reports) and their text, JSON and CSV forms, as free functions.
//
// MemoryManager's report(), report_json(), history_csv() and LeakReport::to_string() call these;
// they also format snapshots kept elsewhere (a history saved with history(), a snapshot sent to
// another process).
//
// Thread safety: the functions only read their arguments; call them from any thread. Teardown:
// nothing to tear down; nothing here calls the runtime.
#ifndef GPUSAFE_MEMORY_REPORT_HPP
#define GPUSAFE_MEMORY_REPORT_HPP

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "gpusafe/config.hpp"
#include "gpusafe/detail/report_format.hpp"
#include "gpusafe/reclaim.hpp"

GPUSAFE_NAMESPACE_BEGIN

/// One resource in a snapshot.
struct ResourceSnapshot {
  std::string name;
  ReclaimCost cost = ReclaimCost::idle_memory;
  ResourceUsage usage;
  bool attached = true;  ///< false: a framework cache seen through the global registry
};

/// Memory of the watched device and of every resource at one moment.
struct MemorySnapshot {
  double time_s = 0;  ///< seconds since the manager was created
  std::chrono::system_clock::time_point wall_time{};
  std::uint64_t frame = 0;  ///< on_frame() calls so far
  int device = 0;
  bool device_is_gpu = false;  ///< false: host memory figures (/proc/meminfo)
  bool memory_known = false;   ///< false when the runtime could not (or must not) be asked
  std::size_t device_total_bytes = 0;
  std::size_t device_free_bytes = 0;
  std::size_t device_used_bytes = 0;
  std::vector<ResourceSnapshot> resources;
};

/// What one resource gave back during a threshold release.
struct ReleaseEntry {
  std::string resource;
  ReclaimCost cost = ReclaimCost::idle_memory;
  std::size_t bytes = 0;
  std::string reason;
};

/// Outcome of release_if_over_threshold().
struct ReleaseResult {
  bool checked = false;         ///< memory was read and a threshold is set
  bool was_over = false;        ///< usage was above the threshold when checked
  bool target_reached = false;  ///< usage is (now) at or under the threshold
  std::size_t total_bytes = 0;
  std::size_t used_before = 0;
  std::size_t used_after = 0;  ///< measured, or estimated from what the resources reported
  std::size_t target_bytes = 0;
  std::size_t bytes_freed = 0;
  std::vector<ReleaseEntry> released;  ///< in the order they were asked, those that gave bytes
  std::string note;                    ///< why nothing was checked, when so
};

/// Counters of a manager's activity.
struct MemoryManagerStats {
  std::uint64_t frames = 0;
  std::uint64_t frame_cleanups = 0;      ///< cleanups triggered by on_frame()
  std::uint64_t timer_cleanups = 0;      ///< cleanups run by the timer thread
  std::uint64_t manual_cleanups = 0;     ///< cleanup() called directly
  std::uint64_t skipped_cleanups = 0;    ///< skipped because another one was running
  std::uint64_t threshold_releases = 0;  ///< times usage was found over the threshold
  std::uint64_t bytes_released = 0;      ///< by cleanups and releases, in total
  bool timer_running = false;
  std::size_t attached = 0;  ///< attached resources still alive
  std::size_t history_size = 0;
};

/// Outstanding leases of the attached resources.
struct LeakReport {
  std::vector<LeakRecord> records;
  /// Resources attached that do not implement LeakReporter (their leases are not listed).
  std::vector<std::string> untracked;
  bool empty() const noexcept { return records.empty(); }
  std::size_t total_bytes() const noexcept {
    std::size_t n = 0;
    for (const auto& r : records) n += r.bytes;
    return n;
  }
  /// One line per outstanding lease (format_leak_report()).
  std::string to_string() const;
};

/// Whose snapshot a report shows: the manager's name and threshold, and the name of its runtime
/// (shown for a GPU device; a host device shows "host").
struct MemoryReportSubject {
  std::string manager;
  double release_threshold = 0.0;  ///< 0 = off
  std::string runtime = "cuda";
};

// ---- leaks ---------------------------------------------------------------------------------

/// "N outstanding lease(s), X:" then one line per record, or "no outstanding leases"; then the
/// resources that do not report their leases.
inline std::string format_leak_report(const LeakReport& report) {
  std::string out;
  if (report.records.empty()) {
    out = "no outstanding leases";
  } else {
    std::size_t leases = 0;
    for (const auto& r : report.records) leases += r.leases;
    out = std::to_string(leases) + " outstanding lease(s), " +
          detail::format_bytes(report.total_bytes()) + ":";
    for (const auto& r : report.records) out += "\n  " + detail::describe_leak(r);
  }
  if (!report.untracked.empty()) {
    out += "\n  not tracked (no LeakReporter):";
    for (const auto& n : report.untracked) out += " " + n;
  }
  return out;
}

inline std::string LeakReport::to_string() const { return format_leak_report(*this); }

// ---- releases ------------------------------------------------------------------------------

/// Why a release runs: "device 0 at 95.0% > threshold 90.0%".
inline std::string format_threshold_crossing(int device, std::size_t used_bytes,
                                             std::size_t total_bytes, double threshold) {
  return "device " + std::to_string(device) + " at " +
         detail::format_fixed(
             100.0 * static_cast<double>(used_bytes) / static_cast<double>(total_bytes), 1) +
         "% > threshold " + detail::format_fixed(100.0 * threshold, 1) + "%";
}

/// The log line of a release: "MemoryManager 'name': <reason>; released X from N resource(s);
/// now under the threshold" (or still over).
inline std::string format_release_summary(const std::string& manager, const std::string& reason,
                                          const ReleaseResult& result) {
  return "MemoryManager '" + manager + "': " + reason + "; released " +
         detail::format_bytes(result.bytes_freed) + " from " +
         std::to_string(result.released.size()) + " resource(s); " +
         (result.target_reached ? "now under the threshold"
                                : "still over the threshold (nothing more to release)");
}

// ---- snapshots and counters as text --------------------------------------------------------

/// "device 0 (cuda): used X of Y (Z%), free W; threshold T%".
inline std::string format_device_line(const MemoryReportSubject& subject, const MemorySnapshot& s) {
  std::string out = "device " + std::to_string(s.device) + " (" +
                    (s.device_is_gpu ? subject.runtime : std::string("host")) + "): ";
  if (!s.memory_known) {
    out += "memory unknown";
  } else {
    out += "used " + detail::format_bytes(s.device_used_bytes) + " of " +
           detail::format_bytes(s.device_total_bytes) + " (" +
           detail::format_fixed(100.0 * static_cast<double>(s.device_used_bytes) /
                                    static_cast<double>(s.device_total_bytes),
                                1) +
           "%), free " + detail::format_bytes(s.device_free_bytes);
  }
  out += "; threshold " + (subject.release_threshold > 0
                               ? detail::format_fixed(100.0 * subject.release_threshold, 1) + "%"
                               : std::string("off"));
  return out;
}

/// The resources of a snapshot as an aligned table, header line included.
inline std::string format_resource_table(const MemorySnapshot& s) {
  using detail::pad_left;
  using detail::pad_right;
  std::size_t width = 8;
  for (const auto& r : s.resources) width = std::max(width, r.name.size());
  std::string out = pad_right("resource", width) + "  " + pad_right("cost", 16) + "  " +
                    pad_left("reserved", 11) + "  " + pad_left("in use", 11) + "  " +
                    pad_left("items", 6) + "\n";
  for (const auto& r : s.resources) {
    out += pad_right(r.name, width) + "  " + pad_right(to_string(r.cost), 16) + "  " +
           pad_left(detail::format_bytes(r.usage.bytes_reserved), 11) + "  " +
           pad_left(detail::format_bytes(r.usage.bytes_in_use), 11) + "  " +
           pad_left(std::to_string(r.usage.items), 6) + (r.attached ? "" : "  (global)") + "\n";
  }
  if (s.resources.empty()) out += "(no resources)\n";
  return out;
}

/// "cleanups: N by frame, ... released X".
inline std::string format_stats_line(const MemoryManagerStats& st) {
  return "cleanups: " + std::to_string(st.frame_cleanups) + " by frame, " +
         std::to_string(st.timer_cleanups) + " by timer, " + std::to_string(st.manual_cleanups) +
         " manual, " + std::to_string(st.skipped_cleanups) + " skipped; over threshold " +
         std::to_string(st.threshold_releases) + " time(s); released " +
         detail::format_bytes(st.bytes_released);
}

/// A snapshot and the counters as aligned text (MemoryManager::report()).
inline std::string format_memory_report(const MemoryReportSubject& subject, const MemorySnapshot& s,
                                        const MemoryManagerStats& st) {
  return "memory manager '" + subject.manager + "': frame " + std::to_string(s.frame) + ", " +
         detail::format_fixed(s.time_s, 1) + " s\n" + format_device_line(subject, s) + "\n" +
         format_resource_table(s) + format_stats_line(st) + "\n";
}

// ---- JSON ----------------------------------------------------------------------------------

namespace detail {
inline const char* json_bool(bool b) noexcept { return b ? "true" : "false"; }
}  // namespace detail

inline std::string format_resource_json(const ResourceSnapshot& r) {
  return "{\"name\":" + detail::json_string(r.name) + ",\"cost\":\"" + to_string(r.cost) +
         "\",\"attached\":" + detail::json_bool(r.attached) +
         ",\"reserved_bytes\":" + std::to_string(r.usage.bytes_reserved) +
         ",\"in_use_bytes\":" + std::to_string(r.usage.bytes_in_use) +
         ",\"items\":" + std::to_string(r.usage.items) +
         ",\"device\":" + std::to_string(r.usage.device) + "}";
}

/// One snapshot as a JSON object.
inline std::string format_snapshot_json(const MemorySnapshot& s) {
  const auto unix_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(s.wall_time.time_since_epoch());
  std::string out = "{\"time_s\":" + detail::format_fixed(s.time_s, 6) +
                    ",\"unix_time_ms\":" + std::to_string(unix_ms.count()) +
                    ",\"frame\":" + std::to_string(s.frame) +
                    ",\"device\":" + std::to_string(s.device) +
                    ",\"device_is_gpu\":" + detail::json_bool(s.device_is_gpu) +
                    ",\"memory_known\":" + detail::json_bool(s.memory_known) +
                    ",\"total_bytes\":" + std::to_string(s.device_total_bytes) +
                    ",\"free_bytes\":" + std::to_string(s.device_free_bytes) +
                    ",\"used_bytes\":" + std::to_string(s.device_used_bytes) + ",\"resources\":[";
  for (std::size_t i = 0; i < s.resources.size(); ++i) {
    if (i) out += ",";
    out += format_resource_json(s.resources[i]);
  }
  return out + "]}";
}

/// The counters as a JSON object.
inline std::string format_stats_json(const MemoryManagerStats& st) {
  return "{\"frames\":" + std::to_string(st.frames) +
         ",\"frame_cleanups\":" + std::to_string(st.frame_cleanups) +
         ",\"timer_cleanups\":" + std::to_string(st.timer_cleanups) +
         ",\"manual_cleanups\":" + std::to_string(st.manual_cleanups) +
         ",\"skipped_cleanups\":" + std::to_string(st.skipped_cleanups) +
         ",\"threshold_releases\":" + std::to_string(st.threshold_releases) +
         ",\"bytes_released\":" + std::to_string(st.bytes_released) +
         ",\"timer_running\":" + detail::json_bool(st.timer_running) +
         ",\"attached\":" + std::to_string(st.attached) +
         ",\"history_size\":" + std::to_string(st.history_size) + "}";
}

/// A snapshot and the counters as one JSON object (MemoryManager::report_json()).
inline std::string format_memory_report_json(const MemoryReportSubject& subject,
                                             const MemorySnapshot& s,
                                             const MemoryManagerStats& st) {
  return "{\"name\":" + detail::json_string(subject.manager) +
         ",\"snapshot\":" + format_snapshot_json(s) +
         ",\"threshold\":" + detail::format_fixed(subject.release_threshold, 4) +
         ",\"stats\":" + format_stats_json(st) + "}";
}

// ---- CSV -----------------------------------------------------------------------------------

namespace detail {

/// The column key of every resource of every snapshot: its name, or "name#2", ... for a second
/// resource of the same name in one snapshot, so that their columns stay apart.
inline std::vector<std::vector<std::string>> csv_resource_keys(
    const std::vector<MemorySnapshot>& snaps) {
  std::vector<std::vector<std::string>> keyed(snaps.size());
  for (std::size_t i = 0; i < snaps.size(); ++i) {
    for (const auto& r : snaps[i].resources) {
      std::string key = r.name;
      for (int k = 2; std::count(keyed[i].begin(), keyed[i].end(), key) != 0; ++k)
        key = r.name + "#" + std::to_string(k);
      keyed[i].push_back(key);
    }
  }
  return keyed;
}

/// Every key, in the order first seen.
inline std::vector<std::string> csv_columns(const std::vector<std::vector<std::string>>& keyed) {
  std::vector<std::string> keys;
  for (const auto& row : keyed)
    for (const auto& key : row)
      if (std::find(keys.begin(), keys.end(), key) == keys.end()) keys.push_back(key);
  return keys;
}

inline std::string csv_row(const MemorySnapshot& s, const std::vector<std::string>& row_keys,
                           const std::vector<std::string>& columns) {
  std::string out = format_fixed(s.time_s, 3) + "," + std::to_string(s.frame) + "," +
                    std::to_string(s.device_used_bytes) + "," +
                    std::to_string(s.device_total_bytes);
  for (const auto& k : columns) {
    const auto it = std::find(row_keys.begin(), row_keys.end(), k);
    if (it == row_keys.end()) {
      out += ",,";
    } else {
      const auto& u = s.resources[static_cast<std::size_t>(it - row_keys.begin())].usage;
      out += "," + std::to_string(u.bytes_reserved) + "," + std::to_string(u.bytes_in_use);
    }
  }
  return out + "\n";
}

}  // namespace detail

/// Snapshots as CSV: time_s, frame, device_used_bytes, device_total_bytes, then
/// `<name>_reserved_bytes` and `<name>_in_use_bytes` for every resource seen (empty where a
/// snapshot does not have it).
inline std::string format_history_csv(const std::vector<MemorySnapshot>& snaps) {
  const auto keyed = detail::csv_resource_keys(snaps);
  const auto columns = detail::csv_columns(keyed);
  std::string out = "time_s,frame,device_used_bytes,device_total_bytes";
  for (const auto& k : columns)
    out += "," + detail::csv_field(k + "_reserved_bytes") + "," +
           detail::csv_field(k + "_in_use_bytes");
  out += "\n";
  for (std::size_t i = 0; i < snaps.size(); ++i)
    out += detail::csv_row(snaps[i], keyed[i], columns);
  return out;
}

GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_MEMORY_REPORT_HPP
