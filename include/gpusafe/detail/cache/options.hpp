// SPDX-License-Identifier: MIT
// gpusafe/detail/cache/options.hpp: the construction options of ModelCache and their checks
// (public types, declared here so that the cache's parts can use them; include
// gpusafe/model_cache.hpp to use them).
//
// Purpose: what a loader returns (Loaded), how a model lives in the cache (Residency), what to do
// with a model that cannot be cached (OversizePolicy), ModelCacheOptions, and the check of an
// options value that a cache runs when it is built.
//
// Thread safety: plain values and a pure function. Teardown: nothing to release.
#ifndef GPUSAFE_DETAIL_CACHE_OPTIONS_HPP
#define GPUSAFE_DETAIL_CACHE_OPTIONS_HPP

#include <cstddef>
#include <limits>
#include <memory>
#include <string>

#include "gpusafe/config.hpp"
#include "gpusafe/error.hpp"

GPUSAFE_NAMESPACE_BEGIN

/// What a loader returns: the model and the bytes it occupies (counted against the budget).
template <class Model>
struct Loaded {
  std::shared_ptr<Model> model;
  std::size_t bytes = 0;
};

/// How a registered model lives in the cache.
enum class Residency {
  primary,    ///< loaded on first use or by preload(); never evicted by budget or pressure
  secondary,  ///< loaded on demand; evictable, least recently used first
};

/// What to do with a secondary model that cannot be cached: bigger than the whole budget, or
/// not fitting beside the primary, pinned and in-use models.
enum class OversizePolicy {
  throw_error,    ///< throw BudgetExceeded; nothing cached is evicted
  load_uncached,  ///< return it to the caller(s) without caching it (counted as uncached_loads)
};

/// Construction options of a ModelCache.
struct ModelCacheOptions {
  /// A budget of this value means "no byte limit" (the default).
  static constexpr std::size_t kUnlimited = std::numeric_limits<std::size_t>::max();

  /// Shown in messages, logs and as the reclaimable name.
  std::string name = "model_cache";
  /// Bytes of resident + in-use-after-eviction + being-loaded models. 0 is a real zero budget:
  /// secondary models follow `oversize`, primary models that report bytes fail to load.
  std::size_t byte_budget = kUnlimited;
  /// Fractions of the device's memory in use (Runtime::memory_info). When use is above `high`,
  /// secondary models are evicted until it is below `low`. Both 0 (the default) = off.
  double high_watermark = 0.0;
  double low_watermark = 0.0;
  /// Most models one budget or pressure eviction may remove; 0 = no cap.
  std::size_t max_evictions_per_call = 0;
  /// Device whose memory info drives pressure eviction and whose reclaim requests apply.
  int device = 0;
  OversizePolicy oversize = OversizePolicy::throw_error;
};

namespace detail {

/// Throws InvalidArgument for watermarks outside [0, 1] or out of order, or a negative device.
inline void validate_cache_options(const ModelCacheOptions& o) {
  const double hi = o.high_watermark, lo = o.low_watermark;
  if (!(hi >= 0.0 && hi <= 1.0 && lo >= 0.0 && lo <= 1.0) || lo > hi)
    GPUSAFE_THROW(InvalidArgument("ModelCache '" + o.name + "': watermarks high=" +
                                  std::to_string(hi) + " low=" + std::to_string(lo) +
                                  " are invalid; both must lie in [0, 1] with low <= high "
                                  "(both 0 turns pressure eviction off)"));
  if (o.device < 0)
    GPUSAFE_THROW(InvalidArgument("ModelCache '" + o.name + "': device " +
                                  std::to_string(o.device) + " is negative; pass a device index"));
}

/// Whether the cache must keep a model of this residency or fail (it may not hand it out
/// uncached).
inline bool must_cache(Residency residency, const ModelCacheOptions& o) noexcept {
  return residency == Residency::primary || o.oversize == OversizePolicy::throw_error;
}

}  // namespace detail

GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_CACHE_OPTIONS_HPP
