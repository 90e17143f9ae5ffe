// SPDX-License-Identifier: MIT
// gpusafe/detail/report_format.hpp: the small text pieces of gpusafe's reports (byte counts,
// ages, fixed-point numbers, JSON strings, CSV fields) and the one line that describes a leak
// record (leak_record.hpp), shared by MemoryManager's leak report and BufferPool's.
//
// Thread safety: pure functions of their arguments. Teardown: nothing to tear down; nothing here
// calls the runtime.
#ifndef GPUSAFE_DETAIL_REPORT_FORMAT_HPP
#define GPUSAFE_DETAIL_REPORT_FORMAT_HPP

#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <string>

#include "gpusafe/config.hpp"
#include "gpusafe/leak_record.hpp"

GPUSAFE_NAMESPACE_BEGIN
namespace detail {

/// "12.0 MiB"
inline std::string format_bytes(std::size_t bytes) {
  static const char* const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 4) {
    v /= 1024.0;
    ++u;
  }
  char buf[32];
  if (u == 0) {
    std::snprintf(buf, sizeof buf, "%zu B", bytes);
  } else {
    std::snprintf(buf, sizeof buf, "%.1f %s", v, units[u]);
  }
  return buf;
}

/// "3.2 ms" under a second, else "2.0 s".
inline std::string format_age(std::chrono::nanoseconds age) {
  char buf[32];
  const double s = std::chrono::duration<double>(age).count();
  if (s < 1.0) {
    std::snprintf(buf, sizeof buf, "%.1f ms", s * 1e3);
  } else {
    std::snprintf(buf, sizeof buf, "%.1f s", s);
  }
  return buf;
}

/// `v` with `digits` decimals (0 for a value that is not finite).
inline std::string format_fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, std::isfinite(v) ? v : 0.0);
  return buf;
}

/// `s` padded with spaces on the right to `width`.
inline std::string pad_right(const std::string& s, std::size_t width) {
  return s.size() >= width ? s : s + std::string(width - s.size(), ' ');
}

/// `s` padded with spaces on the left to `width`.
inline std::string pad_left(const std::string& s, std::size_t width) {
  return s.size() >= width ? s : std::string(width - s.size(), ' ') + s;
}

/// The JSON escape of one character, or null when it stands for itself.
inline const char* json_escape(char c) noexcept {
  switch (c) {
    case '"':
      return "\\\"";
    case '\\':
      return "\\\\";
    case '\n':
      return "\\n";
    case '\r':
      return "\\r";
    case '\t':
      return "\\t";
    case '\b':
      return "\\b";
    case '\f':
      return "\\f";
    default:
      return nullptr;
  }
}

/// A JSON string literal, quotes included.
inline std::string json_string(const std::string& s) {
  std::string out;
  out.reserve(s.size() + 2);
  out += '"';
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (const char* escaped = json_escape(c)) {
      out += escaped;
    } else if (u < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", u);
      out += buf;
    } else {
      out += c;
    }
  }
  out += '"';
  return out;
}

/// A CSV field, quoted when it has to be.
inline std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

/// "file:line", or "(untracked)" when the record does not say where.
inline std::string leak_location(const LeakRecord& r) {
  return r.file.empty() ? std::string("(untracked)") : r.file + ":" + std::to_string(r.line);
}

/// One leak record: "pool: [N leases, ]1.0 KiB taken at file:line [tag], 2.0 s ago", followed
/// by the size class of a pool's lease: " (class 4096)" or " (overflow)".
inline std::string describe_leak(const LeakRecord& r) {
  std::string out = r.resource + ": ";
  if (r.leases != 1) out += std::to_string(r.leases) + " leases, ";
  out += format_bytes(r.bytes) + " taken at " + leak_location(r);
  if (!r.tag.empty()) out += " [" + r.tag + "]";
  if (r.age_known) out += ", " + format_age(r.age) + " ago";
  if (r.overflow) {
    out += " (overflow)";
  } else if (r.class_bytes != 0) {
    out += " (class " + std::to_string(r.class_bytes) + ")";
  }
  return out;
}

}  // namespace detail
GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_REPORT_FORMAT_HPP
