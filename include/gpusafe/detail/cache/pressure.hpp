// SPDX-License-Identifier: MIT
// gpusafe/detail/cache/pressure.hpp: how much ModelCache evicts for device memory pressure.
//
// Purpose: with watermarks set, a cache reads its device's memory use before every load (and in
// check_pressure()); above the high watermark it evicts until use is under the low one.
// pressure_excess_of is that rule on given figures; CachePressure reads the device and applies
// it, logging a failed read once per cache.
//
// Thread safety: pure functions and a read of the device (any thread; the read goes through the
// runtime call gate). Teardown: the read is skipped while the process exits or in a forked child
// (the reading is then unknown and nothing is evicted).
#ifndef GPUSAFE_DETAIL_CACHE_PRESSURE_HPP
#define GPUSAFE_DETAIL_CACHE_PRESSURE_HPP

#include <cmath>
#include <cstddef>

#include "gpusafe/config.hpp"
#include "gpusafe/detail/cache/messages.hpp"
#include "gpusafe/detail/cache/options.hpp"
#include "gpusafe/detail/device_memory.hpp"
#include "gpusafe/log.hpp"

GPUSAFE_NAMESPACE_BEGIN
namespace detail {

/// Bytes to free to bring `used` of `total` under the `low` fraction; 0 when `used` is not over
/// the `high` fraction.
inline std::size_t pressure_excess_of(std::size_t used, std::size_t total, double high,
                                      double low) noexcept {
  const auto total_bytes = static_cast<double>(total);
  if (static_cast<double>(used) <= high * total_bytes) return 0;
  const auto low_bytes = static_cast<std::size_t>(std::floor(low * total_bytes));
  return used >= low_bytes ? used - low_bytes + 1 : 0;
}

/// The pressure rule of one cache.
template <class Runtime>
class CachePressure {
 public:
  CachePressure(const ModelCacheOptions& options, const CacheMessages& messages) noexcept
      : options_(options), messages_(messages) {}

  bool enabled() const noexcept { return options_.high_watermark > 0.0; }

  /// Bytes to free now; 0 when off, under the high watermark, or when the read failed.
  std::size_t excess() noexcept {
    if (!enabled()) return 0;
    const MemoryReading m = read_device_memory<Runtime>(options_.device);
    if (!m.known) {
      if (!m.status.ok() && read_failure_log_.first()) log_read_failure(m);
      return 0;
    }
    return pressure_excess_of(m.used_bytes(), m.total_bytes, options_.high_watermark,
                              options_.low_watermark);
  }

 private:
  void log_read_failure(const MemoryReading& m) noexcept {
    log_lazy(LogLevel::warning,
             [&] { return messages_.memory_read_failed(options_.device, m.status.describe()); });
  }

  const ModelCacheOptions& options_;
  const CacheMessages& messages_;
  LogOnce read_failure_log_;
};

}  // namespace detail
GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_CACHE_PRESSURE_HPP
