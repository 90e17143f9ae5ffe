// gpusafe/detail/cache/entry.hpp: the bookkeeping of one registered model in ModelCache.
//
// Purpose: CacheEntry (key, loader, residency, the cached handle, pin and LRU links, the load in
// progress), CacheLoadOp (what a load shares with the threads that wait for it), and the handles
// the cache gives out: each wraps the model with a deleter (RetiringRelease) that, when the cache
// let go of the model while handles held it, takes its bytes off the shared count of retired
// bytes once the last handle drops.
//
// Thread safety: an entry's mutable fields are guarded by its cache's locks (all stripes; the
// LRU links as StripedLocks documents). ModelCacheAccounting is atomic and shared with every
// handle. Teardown: the last handle destroys its model, wherever and whenever it drops; the
// accounting block lives as long as any handle.
#ifndef GPUSAFE_DETAIL_CACHE_ENTRY_HPP
#define GPUSAFE_DETAIL_CACHE_ENTRY_HPP

#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>
#include <utility>

#include "gpusafe/config.hpp"
#include "gpusafe/detail/cache/load_failure.hpp"
#include "gpusafe/detail/cache/lru_list.hpp"
#include "gpusafe/detail/cache/options.hpp"
#include "gpusafe/detail/cache/single_flight.hpp"

GPUSAFE_NAMESPACE_BEGIN
namespace detail {

/// Shared with every handle: bytes of models removed from the cache but still held.
struct ModelCacheAccounting {
  std::atomic<std::size_t> retired{0};
};

/// Deleter of the handles: the last handle destroys the model and un-charges its bytes.
template <class Model>
struct RetiringRelease {
  std::shared_ptr<Model> original;
  std::shared_ptr<ModelCacheAccounting> acct;
  std::size_t retired_bytes = 0;  // set under the lock when the cache lets go while held
  void operator()(Model*) noexcept {
    original.reset();
    if (retired_bytes != 0) acct->retired.fetch_sub(retired_bytes, std::memory_order_acq_rel);
  }
};

/// A handle to `model` that reports to `acct` (see RetiringRelease). Throws std::bad_alloc.
template <class Model>
std::shared_ptr<Model> wrap_model(const std::shared_ptr<Model>& model,
                                  const std::shared_ptr<ModelCacheAccounting>& acct) {
  return std::shared_ptr<Model>(model.get(), RetiringRelease<Model>{model, acct, 0});
}

/// One load in progress, shared by the loading thread and the threads waiting for it.
template <class Model>
struct CacheLoadOp : LoadOpBase {
  std::size_t reserved = 0;  // bytes of the budget held while it runs; set under the lock
  std::shared_ptr<Model> result;
  LoadFailure failure;
};

/// One registered model.
template <class Key, class Model>
struct CacheEntry : LruHook<CacheEntry<Key, Model>>,
                    std::enable_shared_from_this<CacheEntry<Key, Model>> {
  using Handle = std::shared_ptr<Model>;
  using Loader = std::function<Loaded<Model>()>;
  using LoadOp = CacheLoadOp<Model>;

  CacheEntry(const Key& k, Loader l, Residency r, std::size_t hint)
      : key(k), loader(std::move(l)), residency(r), size_hint(hint) {}

  const Key key;
  const Loader loader;
  const Residency residency;
  const std::size_t size_hint;
  Handle cached;  // non-null while resident
  std::size_t bytes = 0;
  bool pinned = false;
  bool removed = false;
  std::shared_ptr<LoadOp> op;

  /// Resident, secondary and not pinned: a candidate of LRU eviction.
  bool evictable() const noexcept { return cached && residency == Residency::secondary && !pinned; }

  /// Whether a handle besides the cache's own holds the model.
  bool in_use() const noexcept { return cached.use_count() > 1; }

  /// Before the cache drops its reference: when handles still hold the model, its bytes are
  /// charged to `acct` until the last of them drops.
  void charge_retired(ModelCacheAccounting& acct) noexcept {
    auto* d = std::get_deleter<RetiringRelease<Model>>(cached);
    if (d && in_use()) {
      d->retired_bytes = bytes;
      acct.retired.fetch_add(bytes, std::memory_order_acq_rel);
    }
  }
};

}  // namespace detail
GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_CACHE_ENTRY_HPP
