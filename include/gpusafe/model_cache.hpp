// SPDX-License-Identifier: MIT
// gpusafe/model_cache.hpp: ModelCache, an LRU cache of loaded models under a byte budget.
//
// Models are registered with a loader and a residency: `primary` models are loaded on first use
// (or by preload()) and never evicted; `secondary` models are loaded on demand and evicted,
// least recently used first, to stay within the byte budget and, optionally, to bring the
// device's memory use back under a low watermark once it went over a high one. `get()` returns a
// std::shared_ptr; a model evicted while a handle holds it stays alive until the last handle
// drops. Concurrent gets of a missing key run the loader once; the other callers wait for it.
//
// Thread safety: every member function may be called from any thread. A hit takes one of 16
// striped locks (picked per thread) and no shared write, so hits on several threads scale;
// everything else takes the writer lock and every stripe that readers use (detail/cache/
// striped_locks.hpp). No loader, on_evict callback or model destructor ever runs
// under a lock, so they may call back into the cache (or into reclaim_all()). Loaders that wait
// for each other (A's loader gets B while another thread's loader of B gets A, or each waits for
// budget room the other's load holds) fail instead of waiting forever.
//
// Fork: a forked child re-creates the cache's locks, and abandons the loads that other threads of
// the parent were running (their room in the budget is given back; the key loads anew there).
//
// Teardown: the cache makes no runtime calls of its own (only memory_info() when watermarks are
// set, on the acquire side). Destroying the cache drops its references without callbacks;
// handles alive at that point keep their models (and a small accounting block) alive. A model
// whose destructor frees GPU memory must do it through gpusafe-aware types (a BufferLease, or a
// release path that takes detail::RuntimeCallGate), because a cache in a static object is
// destroyed after the runtime may have been torn down.
#ifndef GPUSAFE_MODEL_CACHE_HPP
#define GPUSAFE_MODEL_CACHE_HPP

#include <cstddef>
#include <functional>
#include <memory>
#include <utility>

#include "gpusafe/config.hpp"
#include "gpusafe/detail/cache/core.hpp"
#include "gpusafe/detail/cache/options.hpp"
#include "gpusafe/detail/cache/stats.hpp"
#include "gpusafe/reclaim.hpp"
#include "gpusafe/runtime.hpp"

GPUSAFE_NAMESPACE_BEGIN

/// An LRU cache of models under a byte budget (see the top of this header).
///
/// `Key` must be copyable, hashable with `Hash` and comparable with ==. `Model` is any type;
/// handles are `std::shared_ptr<Model>`. `Runtime` is only asked for memory_info() (pressure
/// eviction). The cache registers itself with gpusafe's reclaim registry: a light reclaim
/// (safe_cuda_empty_cache(), periodic cleanups) evicts nothing, a heavy one (reclaim_all(),
/// threshold releases) evicts unpinned secondary models LRU-first, shutdown() evicts every
/// unpinned model.
template <class Runtime, class Key, class Model, class Hash = std::hash<Key>>
class BasicModelCache {
  GPUSAFE_CHECK_RUNTIME(Runtime);

  using Core = detail::ModelCacheCore<Key, Model, Hash, Runtime>;

 public:
  using Handle = std::shared_ptr<Model>;
  /// Called on a miss, outside every lock; may throw (the error reaches every waiting caller).
  using Loader = std::function<Loaded<Model>()>;
  /// (key, bytes, reason), called after a model left the cache, outside every lock.
  using EvictCallback = std::function<void(const Key&, std::size_t, EvictReason)>;

  /// Throws InvalidArgument for watermarks outside [0, 1] or out of order, or a negative device.
  explicit BasicModelCache(ModelCacheOptions options = {})
      : core_(std::make_shared<Core>(std::move(options))), registration_(core_) {}

  /// Drops the cache's references without on_evict callbacks; outstanding handles stay valid.
  ~BasicModelCache() {
    registration_.reset();
    core_->close();
  }

  BasicModelCache(const BasicModelCache&) = delete;
  BasicModelCache& operator=(const BasicModelCache&) = delete;

  /// Registers `key`. `size_hint` (bytes, 0 = unknown) is reserved against the budget while the
  /// loader runs; the loader's reported bytes replace it. Throws DuplicateKey, InvalidArgument
  /// (empty loader).
  void add(const Key& key, Loader loader, Residency residency = Residency::secondary,
           std::size_t size_hint = 0) {
    core_->add(key, std::move(loader), residency, size_hint);
  }

  /// The model for `key`, loading it on a miss (once, however many threads ask). Throws
  /// UnknownKey, LoadFailed (loader threw a non-gpusafe exception, nested inside, or returned
  /// null), the loader's own gpusafe::Error, or BudgetExceeded (see OversizePolicy). A failing
  /// get leaves every cached model in place.
  Handle get(const Key& key) { return core_->get(key); }

  /// The model when it is resident, else null. Never loads; null for an unknown key too.
  Handle try_get(const Key& key) { return core_->try_get(key); }

  /// Loads `key` if needed, synchronously on this thread, without throwing: returns whether the
  /// model is resident afterwards; a failure is logged (warning) and counted in the stats.
  bool prefetch(const Key& key) noexcept { return core_->prefetch(key); }

  /// Loads every primary model not yet resident. Throws the first failure (models loaded before
  /// it stay).
  void preload() { core_->preload(); }

  /// Keeps `key` out of every eviction except clear() and remove(); applies when it loads later
  /// too. Pins are flags, not counts. Throws UnknownKey.
  void pin(const Key& key) { core_->pin(key); }
  /// Makes a pinned secondary model evictable again (as the most recently used). Throws
  /// UnknownKey.
  void unpin(const Key& key) { core_->unpin(key); }
  bool is_pinned(const Key& key) { return core_->is_pinned(key); }

  /// Whether `key` is registered.
  bool contains(const Key& key) { return core_->contains(key); }
  /// Whether `key` is loaded and cached.
  bool is_resident(const Key& key) { return core_->is_resident(key); }

  /// Evicts unpinned secondary models that no handle holds, least recently used first, until
  /// at least `bytes` were evicted or none is left. Returns the bytes evicted.
  std::size_t evict(std::size_t bytes) { return core_->evict(bytes); }

  /// Reads the device's memory use and, above the high watermark, evicts towards the low one.
  /// Also done before every load. Returns the bytes evicted.
  std::size_t check_pressure() { return core_->check_pressure(); }

  /// Unregisters `key` (evicting it with reason `removed` when resident). A load of it in
  /// progress completes for its callers without being cached. Throws UnknownKey.
  void remove(const Key& key) { core_->remove(key); }

  /// Evicts every resident model, primary and pinned ones included (reason `clear`); the
  /// registrations and pins stay. Returns the bytes evicted.
  std::size_t clear() { return core_->clear(); }

  /// Sets (or, with an empty function, removes) the eviction callback. It runs outside every
  /// lock and may call into the cache; an exception from it is logged and swallowed.
  void on_evict(EvictCallback callback) { core_->on_evict(std::move(callback)); }

  ModelCacheStats stats() const { return core_->stats(); }
  const ModelCacheOptions& options() const noexcept { return core_->options(); }

  /// A handle to the cache's core as a Reclaimable; valid after the cache dies (reclaim() then
  /// returns 0).
  std::shared_ptr<Reclaimable> reclaimable() const { return core_; }

 private:
  std::shared_ptr<Core> core_;
  ReclaimRegistration registration_;
};

/// The cache on the default runtime (CUDA when built with it, else the CPU runtime).
template <class Key, class Model, class Hash = std::hash<Key>>
using ModelCache = BasicModelCache<DefaultRuntime, Key, Model, Hash>;

GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_MODEL_CACHE_HPP
