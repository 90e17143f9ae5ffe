// SPDX-License-Identifier: MIT
// gpusafe/detail/cache/table.hpp: CacheTable, the registered models of ModelCache and the locks
// that guard them.
//
// Purpose: the map from key to entry, the resident set (budget, LRU order, eviction counts), the
// load counters and the eviction callback, behind StripedLocks: a lookup (a hit) takes its
// thread's stripe only; every other operation is a writer section (Exclusive: the writer lock and
// every stripe in use, applying the touches readers recorded). The operations that need no load
// live here (add, pin, evict, remove, clear, stats, close); the cache's core adds the miss path.
//
// Thread safety: every public member may be called from any thread. What a writer section evicts
// goes to a Graveyard and is released, and reported to on_evict, after the section unlocks, so
// callbacks and model destructors never run under a lock.
//
// Teardown: close() (the front's destructor) drops every reference without callbacks; handles
// alive then keep their models and the accounting block. The locks are re-created in a forked
// child by the core (a ForkAware).
#ifndef GPUSAFE_DETAIL_CACHE_TABLE_HPP
#define GPUSAFE_DETAIL_CACHE_TABLE_HPP

#include <cstddef>
#include <functional>
#include <memory>
#include <unordered_map>
#include <utility>
#include <vector>

#include "gpusafe/config.hpp"
#include "gpusafe/detail/cache/entry.hpp"
#include "gpusafe/detail/cache/graveyard.hpp"
#include "gpusafe/detail/cache/messages.hpp"
#include "gpusafe/detail/cache/options.hpp"
#include "gpusafe/detail/cache/resident_set.hpp"
#include "gpusafe/detail/cache/stats.hpp"
#include "gpusafe/detail/cache/striped_locks.hpp"
#include "gpusafe/error.hpp"
#include "gpusafe/log.hpp"

GPUSAFE_NAMESPACE_BEGIN
namespace detail {

template <class Key, class Model, class Hash>
class CacheTable {
 public:
  using Entry = CacheEntry<Key, Model>;
  using Handle = typename Entry::Handle;
  using Loader = typename Entry::Loader;
  using EvictCallback = std::function<void(const Key&, std::size_t, EvictReason)>;

  explicit CacheTable(ModelCacheOptions options)
      : options_(validated(std::move(options))),
        messages_(options_.name),
        callback_failures_(messages_),
        set_(options_.byte_budget, options_.max_evictions_per_call) {}
  CacheTable(const CacheTable&) = delete;
  CacheTable& operator=(const CacheTable&) = delete;

  const ModelCacheOptions& options() const noexcept { return options_; }

  void add(const Key& key, Loader loader, Residency residency, std::size_t size_hint) {
    if (!loader) GPUSAFE_THROW(InvalidArgument(messages_.empty_loader(key)));
    auto entry = std::make_shared<Entry>(key, std::move(loader), residency, size_hint);
    Exclusive lock(*this);
    if (!alive_) GPUSAFE_THROW(InvalidArgument(messages_.destroyed("add")));
    if (map_.count(key) != 0) GPUSAFE_THROW(DuplicateKey(messages_.duplicate_key(key)));
    map_.emplace(key, std::move(entry));
  }

  Handle try_get(const Key& key) { return lookup(key); }

  void pin(const Key& key) {
    Exclusive lock(*this);
    set_.pin(find_or_throw(key, "pin"));
  }

  void unpin(const Key& key) {
    Exclusive lock(*this);
    set_.unpin(find_or_throw(key, "unpin"));
  }

  bool is_pinned(const Key& key) {
    Exclusive lock(*this);
    return find_or_throw(key, "is_pinned").pinned;
  }

  bool contains(const Key& key) {
    Exclusive lock(*this);
    return map_.count(key) != 0;
  }

  bool is_resident(const Key& key) {
    Exclusive lock(*this);
    auto it = map_.find(key);
    return it != map_.end() && it->second->cached != nullptr;
  }

  std::size_t evict(std::size_t bytes) {
    Grave g(callback_failures_);
    {
      Exclusive lock(*this);
      g.set_callback(callback_);
      set_.evict_lru(bytes, EvictReason::requested, 0, g);
    }
    return g.finish();
  }

  void remove(const Key& key) {
    Grave g(callback_failures_);
    {
      Exclusive lock(*this);
      auto it = map_.find(key);
      if (it == map_.end()) GPUSAFE_THROW(UnknownKey(messages_.unknown_key("remove", key)));
      g.reserve(1);
      g.set_callback(callback_);
      g.keep(it->second);
      Entry& e = *it->second;
      if (e.cached) set_.retire(e, EvictReason::removed, g);
      e.removed = true;
      map_.erase(it);
    }
    g.finish();
  }

  std::size_t clear() {
    Grave g(callback_failures_);
    {
      Exclusive lock(*this);
      g.set_callback(callback_);
      g.reserve(set_.resident_count());
      for (auto& kv : map_)
        if (kv.second->cached) set_.retire(*kv.second, EvictReason::clear, g);
    }
    return g.finish();
  }

  void on_evict(EvictCallback callback) {
    auto cb = callback ? std::make_shared<const EvictCallback>(std::move(callback)) : nullptr;
    std::shared_ptr<const EvictCallback> old;  // dropped after unlocking
    Exclusive lock(*this);
    old = std::move(callback_);
    callback_ = std::move(cb);
    lock.unlock();
  }

  ModelCacheStats stats() const {
    ModelCacheStats s;
    Exclusive lock(const_cast<CacheTable&>(*this));
    counters_.copy_to(s);
    s.hits = locks_.hits();
    set_.fill_stats(s);
    s.models_registered = map_.size();
    return s;
  }

  /// Called by the front's destructor: drops every reference (no callbacks).
  void close() noexcept {
    std::vector<std::shared_ptr<Entry>> entries;
    std::vector<Handle> models;
    std::shared_ptr<const EvictCallback> cb;
    GPUSAFE_TRY {
      Exclusive lock(*this);
      alive_ = false;
      entries.reserve(map_.size());
      models.reserve(set_.resident_count());
      for (auto& kv : map_) {
        Entry& e = *kv.second;
        if (e.cached) models.push_back(set_.release(e));
        e.removed = true;
        entries.push_back(kv.second);
      }
      map_.clear();
      cb = std::move(callback_);
    }
    GPUSAFE_CATCH_ALL {
      log(LogLevel::error, "ModelCache: out of memory while closing; models are leaked");
    }
  }

 protected:
  using Locks = StripedLocks<Entry>;
  using Stripe = typename Locks::Stripe;
  using Grave = Graveyard<Entry>;

  ~CacheTable() = default;

  // Applies a recorded touch: the entry, when still listed, becomes the most recent.
  struct TouchApplier {
    LruList<Entry>& lru;
    void operator()(Entry& e) const noexcept {
      if (e.in_lru) lru.move_to_front(e);
    }
  };

  // Holds every stripe; applies the touches recorded by lookups first, in order.
  class Exclusive {
   public:
    explicit Exclusive(CacheTable& table) : table_(table) { lock(); }
    ~Exclusive() {
      if (held_) unlock();
    }
    Exclusive(const Exclusive&) = delete;
    Exclusive& operator=(const Exclusive&) = delete;
    void lock() {
      table_.locks_.lock_all(TouchApplier{table_.set_.lru()});
      held_ = true;
    }
    void unlock() noexcept {
      table_.locks_.unlock_all();
      held_ = false;
    }

   private:
    CacheTable& table_;
    bool held_ = false;
  };

  // Fast path: one stripe lock, no shared write. Returns null on a miss or unknown key. The
  // touch is recorded in the stripe and applied to the LRU list later, in order: by the next
  // exclusive section, or here under the touch lock when the stripe's buffer is full.
  Handle lookup(const Key& key) {
    typename Locks::Reader reader(locks_);
    Stripe& s = reader.stripe();
    auto it = map_.find(key);
    if (it == map_.end()) return nullptr;
    Entry* e = it->second.get();
    if (!e->cached) return nullptr;
    ++s.hits;
    if (e->in_lru) locks_.touch(s, e, TouchApplier{set_.lru()});
    return e->cached;
  }

  // Under Exclusive: a hit seen by a writer (counted, and the entry made the most recent).
  Handle hit_exclusive(Entry& e, bool count) noexcept {
    if (count) locks_.count_hit_exclusive();
    if (e.in_lru) set_.lru().move_to_front(e);
    return e.cached;
  }

  Entry& find_or_throw(const Key& key, const char* op) {
    auto it = map_.find(key);
    if (it == map_.end()) GPUSAFE_THROW(UnknownKey(messages_.unknown_key(op, key)));
    return *it->second;
  }

  // The primary models not resident now.
  std::vector<Key> primary_keys_not_loaded() {
    std::vector<Key> keys;
    Exclusive lock(*this);
    for (const auto& kv : map_)
      if (kv.second->residency == Residency::primary && !kv.second->cached)
        keys.push_back(kv.first);
    return keys;
  }

  // Under Exclusive: evicts every resident model that is not pinned (shutdown).
  void retire_unpinned(EvictReason reason, Grave& g) {
    g.reserve(set_.resident_count());
    for (auto& kv : map_) {
      Entry& e = *kv.second;
      if (e.cached && !e.pinned) set_.retire(e, reason, g);
    }
  }

  const ModelCacheOptions options_;
  const CacheMessages messages_;
  CallbackFailureLog callback_failures_;
  Locks locks_;
  // Everything below is guarded by all stripes (Exclusive); the LRU links also by one stripe
  // plus the touch lock (see StripedLocks).
  std::unordered_map<Key, std::shared_ptr<Entry>, Hash> map_;
  ResidentSet<Entry> set_;
  CacheCounters counters_;
  std::shared_ptr<const EvictCallback> callback_;
  bool alive_ = true;

 private:
  static ModelCacheOptions validated(ModelCacheOptions options) {
    validate_cache_options(options);
    return options;
  }
};

}  // namespace detail
GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_CACHE_TABLE_HPP
