// SPDX-License-Identifier: MIT
// gpusafe/detail/cache/entry.hpp: the bookkeeping of one registered model in ModelCache.
//
// Purpose: CacheEntry (key, loader, residency, the cached handle, pin and LRU links, the load in
// progress) and CacheLoad, one allocation per load: what a load shares with the threads that
// wait for it, and the owner of the cached model that every handle aliases. When the cache let go
// of a model while handles held it, the last of them takes its bytes off the shared count of
// retired bytes.
//
// Thread safety: an entry's mutable fields are guarded by its cache's locks (all stripes; the
// LRU links as StripedLocks documents). ModelCacheAccounting is atomic and shared with every
// handle. Teardown: the last handle (or waiter of its load) destroys the model, wherever and
// whenever it drops; the accounting block lives as long as any handle of a retired model.
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

/// One load of a model, in one allocation: what the loading thread shares with the threads that
/// wait for it, and, once the model is cached, the owner of the model that every handle shares
/// (handles alias it). The last reference destroys the model and, when the cache let go of the
/// model while handles held it, un-charges its bytes from the retired count.
template <class Model>
struct CacheLoad : LoadOpBase {
  // User-provided, so that make_shared does not zero the whole block before the member
  // initializers run (a measurable part of every miss).
  CacheLoad() noexcept {}
  CacheLoad(const CacheLoad&) = delete;
  CacheLoad& operator=(const CacheLoad&) = delete;
  ~CacheLoad() {
    original.reset();
    if (retired_bytes != 0) acct->retired.fetch_sub(retired_bytes, std::memory_order_acq_rel);
  }

  /// The model for a caller: an alias of `load` once cached, the loaded model when handed out
  /// uncached, null when the load failed. Read after the load was published.
  static std::shared_ptr<Model> result(const std::shared_ptr<CacheLoad>& load) {
    if (load->uncached) return load->uncached;
    if (load->cached_result) return std::shared_ptr<Model>(load, load->original.get());
    return nullptr;
  }

  /// Takes the result back (a load abandoned after its loader ran).
  void drop_result() noexcept {
    cached_result = false;
    uncached.reset();
  }

  std::size_t reserved = 0;         // bytes of the budget held while it runs; set under the lock
  std::size_t waiters = 0;          // threads that joined it; under the cache's writer lock
  std::shared_ptr<Model> original;  // the cached model (set under the lock)
  bool cached_result = false;       // `original` is the result
  std::shared_ptr<Model> uncached;  // the result, handed out without caching
  LoadFailure failure;
  // Set under the cache's lock when it drops the model while handles hold it.
  std::shared_ptr<ModelCacheAccounting> acct;
  std::size_t retired_bytes = 0;
};

/// One registered model.
template <class Key, class Model>
struct CacheEntry : LruHook<CacheEntry<Key, Model>>,
                    std::enable_shared_from_this<CacheEntry<Key, Model>> {
  using Handle = std::shared_ptr<Model>;
  using Loader = std::function<Loaded<Model>()>;
  using LoadOp = CacheLoad<Model>;

  CacheEntry(const Key& k, Loader l, Residency r, std::size_t hint)
      : key(k), loader(std::move(l)), residency(r), size_hint(hint) {}

  const Key key;
  const Loader loader;
  const Residency residency;
  const std::size_t size_hint;
  Handle cached;           // non-null while resident (an alias of `load`)
  LoadOp* load = nullptr;  // the load that `cached` aliases
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
  void charge_retired(const std::shared_ptr<ModelCacheAccounting>& acct) noexcept {
    if (!in_use()) return;
    load->acct = acct;
    load->retired_bytes = bytes;
    acct->retired.fetch_add(bytes, std::memory_order_acq_rel);
  }
};

}  // namespace detail
GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_CACHE_ENTRY_HPP
