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

#include <pthread.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "gpusafe/config.hpp"
#include "gpusafe/detail/cache/lru_list.hpp"
#include "gpusafe/detail/cache/single_flight.hpp"
#include "gpusafe/detail/cache/striped_locks.hpp"
#include "gpusafe/detail/device_memory.hpp"
#include "gpusafe/lifecycle.hpp"
#include "gpusafe/log.hpp"
#include "gpusafe/runtime.hpp"

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

/// Why a model left the cache (passed to on_evict and counted in the stats).
enum class EvictReason : int {
  budget = 0,     ///< room for another model within the byte budget
  pressure = 1,   ///< device memory use went over the high watermark
  requested = 2,  ///< an explicit evict(bytes)
  clear = 3,      ///< clear()
  removed = 4,    ///< remove(key)
  shutdown = 5,   ///< gpusafe::shutdown() (a reclaim at shutdown level)
  reclaim = 6,    ///< a heavy reclaim (reclaim_all(), MemoryManager's threshold release)
};

/// Number of EvictReason values.
constexpr std::size_t kEvictReasonCount = 7;

constexpr const char* to_string(EvictReason r) noexcept {
  switch (r) {
    case EvictReason::budget:
      return "budget";
    case EvictReason::pressure:
      return "pressure";
    case EvictReason::requested:
      return "requested";
    case EvictReason::clear:
      return "clear";
    case EvictReason::removed:
      return "removed";
    case EvictReason::shutdown:
      return "shutdown";
    case EvictReason::reclaim:
      return "reclaim";
  }
  return "?";
}

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

/// A snapshot of a cache's counters.
struct ModelCacheStats {
  std::uint64_t hits = 0;            ///< get/try_get that found the model resident
  std::uint64_t misses = 0;          ///< get that did not
  std::uint64_t loads = 0;           ///< successful loader calls
  std::uint64_t load_failures = 0;   ///< loader threw, returned null, or the model did not fit
  std::uint64_t waits = 0;           ///< gets that waited for another thread's load
  std::uint64_t uncached_loads = 0;  ///< loads handed out without caching (OversizePolicy)
  std::array<std::uint64_t, kEvictReasonCount> evictions{};  ///< indexed by EvictReason
  std::size_t bytes_resident = 0;                            ///< cached models
  std::size_t bytes_pinned = 0;    ///< of which primary or pinned (not evictable)
  std::size_t bytes_reserved = 0;  ///< size hints of loads in progress
  std::size_t bytes_retired = 0;   ///< removed from the cache but still held by handles
  std::size_t byte_budget = 0;
  std::size_t models_registered = 0;
  std::size_t models_resident = 0;
  std::chrono::nanoseconds load_time{0};  ///< total time spent in loaders

  std::uint64_t evictions_for(EvictReason r) const noexcept {
    return evictions[static_cast<std::size_t>(r)];
  }
  std::uint64_t evictions_total() const noexcept {
    std::uint64_t n = 0;
    for (auto v : evictions) n += v;
    return n;
  }
  /// What counts against the budget.
  std::size_t bytes_charged() const noexcept {
    return bytes_resident + bytes_retired + bytes_reserved;
  }
};

namespace detail {

template <class T, class = void>
struct model_cache_streamable : std::false_type {};
template <class T>
struct model_cache_streamable<
    T, std::void_t<decltype(std::declval<std::ostream&>() << std::declval<const T&>())>>
    : std::true_type {};

template <class Key>
std::string describe_cache_key(const Key& key) {
  if constexpr (model_cache_streamable<Key>::value) {
    std::ostringstream os;
    os << key;
    return "'" + os.str() + "'";
  } else {
    return "(key without operator<<)";
  }
}

template <class Key>
std::string describe_erased_cache_key(const void* key) {
  return describe_cache_key(*static_cast<const Key*>(key));
}

/// Shared with every handle: bytes of models removed from the cache but still held.
struct ModelCacheAccounting {
  std::atomic<std::size_t> retired{0};
};

/// The shared core of a ModelCache (the Reclaimable that the registry and reclaimable() see).
template <class Key, class Model, class Hash, class Runtime>
class ModelCacheCore final : public Reclaimable, public ForkAware {
 public:
  using Handle = std::shared_ptr<Model>;
  using Loader = std::function<Loaded<Model>()>;
  using EvictCallback = std::function<void(const Key&, std::size_t, EvictReason)>;

  explicit ModelCacheCore(ModelCacheOptions options)
      : options_(std::move(options)), acct_(std::make_shared<ModelCacheAccounting>()) {
    validate(options_);
    enrol_fork_aware(this);  // a forked child rebuilds its locks (rule 5)
  }

  ~ModelCacheCore() override { withdraw_fork_aware(this); }

  ModelCacheCore(const ModelCacheCore&) = delete;
  ModelCacheCore& operator=(const ModelCacheCore&) = delete;

  const ModelCacheOptions& options() const noexcept { return options_; }

  void add(const Key& key, Loader loader, Residency residency, std::size_t size_hint) {
    if (!loader)
      throw InvalidArgument(prefix("add") + describe_cache_key(key) +
                            ": the loader is empty; pass a callable returning Loaded<Model>");
    auto entry = std::make_shared<Entry>(key, std::move(loader), residency, size_hint);
    Exclusive lock(*this);
    check_alive(lock, "add");
    if (map_.count(key) != 0)
      throw DuplicateKey(prefix("add") + describe_cache_key(key) +
                         ": key already registered; remove(key) first or use another key");
    map_.emplace(key, std::move(entry));
  }

  Handle get(const Key& key) {
    if (Handle h = lookup(key)) return h;
    return get_slow(key);
  }

  Handle try_get(const Key& key) { return lookup(key); }

  bool prefetch(const Key& key) noexcept {
    try {
      get(key);
      return is_resident(key);
    } catch (const std::exception& e) {
      log_prefetch_failure(e.what());
    } catch (...) {
      log_prefetch_failure("a non-std exception");
    }
    return false;
  }

  void preload() {
    std::vector<Key> keys;
    {
      Exclusive lock(*this);
      for (const auto& kv : map_)
        if (kv.second->residency == Residency::primary && !kv.second->cached)
          keys.push_back(kv.first);
    }
    for (const auto& k : keys) get(k);
  }

  void pin(const Key& key) {
    Exclusive lock(*this);
    Entry& e = find_or_throw(key, "pin");
    e.pinned = true;
    if (e.in_lru) lru_remove(e);
  }

  void unpin(const Key& key) {
    Exclusive lock(*this);
    Entry& e = find_or_throw(key, "unpin");
    e.pinned = false;
    if (e.cached && e.residency == Residency::secondary && !e.in_lru) lru_push_front(e);
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
    Graveyard g(*this);
    {
      Exclusive lock(*this);
      g.callback = callback_;
      evict_lru(bytes, EvictReason::requested, 0, g);
    }
    return g.finish();
  }

  std::size_t check_pressure() {
    Graveyard g(*this);
    evict_for_pressure(g);
    return g.finish();
  }

  void remove(const Key& key) {
    Graveyard g(*this);
    {
      Exclusive lock(*this);
      auto it = map_.find(key);
      if (it == map_.end()) throw UnknownKey(unknown_key_message("remove", key));
      g.reserve(1);
      g.entries.reserve(1);
      g.callback = callback_;
      std::shared_ptr<Entry> entry = it->second;
      if (entry->cached) retire(*entry, EvictReason::removed, g);
      entry->removed = true;
      g.entries.push_back(entry);
      map_.erase(it);
    }
    g.finish();
  }

  std::size_t clear() {
    Graveyard g(*this);
    {
      Exclusive lock(*this);
      g.callback = callback_;
      g.reserve(resident_count_);
      for (auto& kv : map_)
        if (kv.second->cached) retire(*kv.second, EvictReason::clear, g);
    }
    return g.finish();
  }

  void on_evict(EvictCallback callback) {
    auto cb = callback ? std::make_shared<const EvictCallback>(std::move(callback)) : nullptr;
    std::shared_ptr<const EvictCallback> old;
    {
      Exclusive lock(*this);
      old = std::move(callback_);
      callback_ = std::move(cb);
    }
  }

  ModelCacheStats stats() const {
    ModelCacheStats s;
    Exclusive lock(const_cast<ModelCacheCore&>(*this));
    s = counters_;
    s.hits += locks_.hits();
    s.bytes_resident = resident_;
    s.bytes_pinned = resident_ - lru_.bytes();
    s.bytes_reserved = reserved_;
    s.bytes_retired = acct_->retired.load(std::memory_order_acquire);
    s.byte_budget = options_.byte_budget;
    s.models_registered = map_.size();
    s.models_resident = resident_count_;
    return s;
  }

  // Reclaimable

  std::size_t reclaim(const ReclaimRequest& request) noexcept override {
    try {
      if (request.device >= 0 && request.device != options_.device) return 0;
      // Light gives back what is cached and idle; a cache holds none (every resident model is
      // warm, and one evicted while held can only be freed by its handles). Heavy evicts.
      if (request.level == ReclaimLevel::light) return 0;
      Graveyard g(*this);
      {
        Exclusive lock(*this);
        if (!alive_) return 0;
        g.callback = callback_;
        if (request.level == ReclaimLevel::shutdown) {
          g.reserve(resident_count_);
          for (auto& kv : map_) {
            Entry& e = *kv.second;
            if (e.cached && !e.pinned) retire(e, EvictReason::shutdown, g);
          }
        } else {
          evict_lru(request.bytes_goal, EvictReason::reclaim, 0, g);
        }
      }
      return g.finish();
    } catch (...) {
      log(LogLevel::error, "ModelCache reclaim: out of memory; nothing reclaimed");
      return 0;
    }
  }

  ReclaimCost reclaim_cost() const noexcept override { return ReclaimCost::evictable_models; }
  const char* reclaimable_name() const noexcept override { return options_.name.c_str(); }

  ResourceUsage usage() const noexcept override {
    ResourceUsage u;
    u.device = options_.device;
    try {
      Exclusive lock(const_cast<ModelCacheCore&>(*this));
      u.bytes_in_use = resident_;
      u.bytes_reserved = charged();
      u.items = resident_count_;
    } catch (...) {
    }
    return u;
  }

  /// Called by ~ModelCache: drops every reference (no callbacks); reclaim() returns 0 after.
  void close() noexcept {
    std::vector<std::shared_ptr<Entry>> entries;
    std::vector<Handle> models;
    std::shared_ptr<const EvictCallback> cb;
    try {
      Exclusive lock(*this);
      alive_ = false;
      entries.reserve(map_.size());
      models.reserve(resident_count_);
      for (auto& kv : map_) {
        Entry& e = *kv.second;
        if (e.cached) {
          if (e.in_lru) lru_remove(e);
          resident_ -= e.bytes;
          charge_retired(e);
          models.push_back(std::move(e.cached));
          e.bytes = 0;
          --resident_count_;
        }
        e.removed = true;
        entries.push_back(kv.second);
      }
      map_.clear();
      cb = std::move(callback_);
    } catch (...) {
      log(LogLevel::error, "ModelCache: out of memory while closing; models are leaked");
    }
  }

  // Around fork() the forking thread holds every stripe and the touch lock (in the order every
  // other path takes them: stripes by index, then the touch lock), so a child never copies the map,
  // the LRU links or a stripe's touch buffer half-changed.
  void lock_for_fork() noexcept override { locks_.lock_for_fork(); }
  void unlock_after_fork() noexcept override { locks_.unlock_after_fork(); }

  void recreate_locks_in_child() noexcept override {
    locks_.recreate_in_child();
    board_.recreate_in_child();
    abandon_foreign_loads_in_child();
  }

 private:
  // A failed load: the loading thread rethrows `original`; each waiting thread throws its own
  // copy (same type by ErrorCode, message and runtime code, same nested exception), so no
  // exception object is shared between threads: the op handed to waiters holds no `original`.
  struct Failure {
    std::exception_ptr original;
    ErrorCode code = ErrorCode::load_failed;
    std::string message;
    int runtime_code = 0;
    std::exception_ptr nested;
    bool failed = false;
    explicit operator bool() const noexcept { return failed; }
  };

  struct LoadOp : LoadOpBase {
    std::size_t reserved = 0;  // bytes of the budget held while it runs; set under the lock
    Handle result;
    Failure failure;
  };

  struct Entry : LruHook<Entry>, std::enable_shared_from_this<Entry> {
    Entry(const Key& k, Loader l, Residency r, std::size_t hint)
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
  };

  // Deleter of the handles: the last handle destroys the model and un-charges its bytes.
  struct Release {
    std::shared_ptr<Model> original;
    std::shared_ptr<ModelCacheAccounting> acct;
    std::size_t retired_bytes = 0;  // set under the lock when the cache lets go while held
    void operator()(Model*) noexcept {
      original.reset();
      if (retired_bytes != 0) acct->retired.fetch_sub(retired_bytes, std::memory_order_acq_rel);
    }
  };

  using Locks = StripedLocks<Entry>;
  using Stripe = typename Locks::Stripe;

  // Holds every stripe; applies the touches recorded by lookups first, in order.
  class Exclusive {
   public:
    explicit Exclusive(ModelCacheCore& core) : core_(core) { lock(); }
    ~Exclusive() {
      if (held_) unlock();
    }
    Exclusive(const Exclusive&) = delete;
    Exclusive& operator=(const Exclusive&) = delete;
    void lock() {
      core_.locks_.lock_all(TouchApplier{core_.lru_});
      held_ = true;
    }
    void unlock() noexcept {
      core_.locks_.unlock_all();
      held_ = false;
    }

   private:
    ModelCacheCore& core_;
    bool held_ = false;
  };

  // Applies a recorded touch: the entry, when still listed, becomes the most recent.
  struct TouchApplier {
    LruList<Entry>& lru;
    void operator()(Entry& e) const noexcept {
      if (e.in_lru) lru.move_to_front(e);
    }
  };

  struct Evicted {
    std::shared_ptr<Entry> entry;
    Handle model;
    std::size_t bytes;
    EvictReason reason;
  };

  // What a locked section removed; released (and reported) after unlocking. The first eviction
  // is kept in place (the common case, one budget eviction per miss, allocates nothing).
  struct Graveyard {
    explicit Graveyard(ModelCacheCore& c) noexcept : core(c) {}
    Graveyard(const Graveyard&) = delete;
    Graveyard& operator=(const Graveyard&) = delete;

    ModelCacheCore& core;
    std::optional<Evicted> first;
    std::vector<Evicted> evicted;  // the evictions after `first`, in order
    std::vector<std::shared_ptr<Entry>> entries;
    std::shared_ptr<const EvictCallback> callback;

    // Makes room for `more` evictions, so that add() cannot throw. Throws std::bad_alloc.
    void reserve(std::size_t more) {
      const std::size_t in_vector = first ? evicted.size() + more : (more > 0 ? more - 1 : 0);
      if (in_vector > evicted.capacity()) evicted.reserve(in_vector);
    }
    void add(Evicted&& v) noexcept {
      if (!first)
        first.emplace(std::move(v));
      else
        evicted.push_back(std::move(v));  // reserve() made room
    }

    std::size_t finish() noexcept {
      std::size_t bytes = 0;
      if (first) bytes += report(*first);
      first.reset();
      for (auto& v : evicted) bytes += report(v);
      evicted.clear();
      entries.clear();
      callback.reset();
      return bytes;
    }
    ~Graveyard() { finish(); }

   private:
    std::size_t report(Evicted& v) noexcept {
      v.model.reset();
      if (callback && *callback) {
        try {
          (*callback)(v.entry->key, v.bytes, v.reason);
        } catch (const std::exception& e) {
          core.log_callback_failure(v, e.what());
        } catch (...) {
          core.log_callback_failure(v, "a non-std exception");
        }
      }
      v.entry.reset();
      return v.bytes;
    }
  };

  // An on_evict callback that throws: logged once per cache (an error), naming the key; later
  // ones at debug level, since a callback that throws usually throws on every eviction.
  void log_callback_failure(const Evicted& v, const char* what) noexcept {
    const LogLevel level = callback_log_.first() ? LogLevel::error : LogLevel::debug;
    log_lazy(level, [&] {
      const std::string key = model_cache_streamable<Key>::value ? describe_cache_key(v.entry->key)
                                                                 : std::string("<key>");
      return prefix("on_evict") + "callback threw for key " + key + " (evicted by " +
             to_string(v.reason) + ", " + std::to_string(v.bytes) + " bytes): " + what +
             "; the eviction stands. Later exceptions from on_evict in this cache are logged at "
             "debug level only; make the callback catch its own errors";
    });
  }

  // The first failure is a warning, later ones are debug messages.
  void log_prefetch_failure(const char* what) noexcept {
    const LogLevel level = prefetch_log_.first() ? LogLevel::warning : LogLevel::debug;
    log_lazy(level, [&] { return std::string("prefetch failed: ") + what; });
  }

  static void validate(const ModelCacheOptions& o) {
    const double hi = o.high_watermark, lo = o.low_watermark;
    if (!(hi >= 0.0 && hi <= 1.0 && lo >= 0.0 && lo <= 1.0) || lo > hi)
      throw InvalidArgument("ModelCache '" + o.name + "': watermarks high=" + std::to_string(hi) +
                            " low=" + std::to_string(lo) +
                            " are invalid; both must lie in [0, 1] with low <= high "
                            "(both 0 turns pressure eviction off)");
    if (o.device < 0)
      throw InvalidArgument("ModelCache '" + o.name + "': device " + std::to_string(o.device) +
                            " is negative; pass a device index");
  }

  std::string prefix(const char* op) const {
    return "ModelCache '" + options_.name + "': " + op + " ";
  }

  std::string unknown_key_message(const char* op, const Key& key) const {
    return prefix(op) + describe_cache_key(key) +
           ": key is not registered; register it first with add(key, loader, "
           "Residency::secondary or Residency::primary, size_hint)";
  }

  void check_alive(Exclusive&, const char* op) const {
    if (!alive_) throw InvalidArgument(prefix(op) + ": the cache was destroyed");
  }

  Entry& find_or_throw(const Key& key, const char* op) {
    auto it = map_.find(key);
    if (it == map_.end()) throw UnknownKey(unknown_key_message(op, key));
    return *it->second;
  }

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
    if (e->in_lru) locks_.touch(s, e, TouchApplier{lru_});
    return e->cached;
  }

  void lru_push_front(Entry& e) noexcept { lru_.push_front(e, e.bytes); }
  void lru_remove(Entry& e) noexcept { lru_.remove(e); }

  static bool in_use(const Entry& e) noexcept { return e.cached.use_count() > 1; }

  std::size_t charged() const noexcept {
    return resident_ + acct_->retired.load(std::memory_order_acquire) + reserved_;
  }

  bool fits(std::size_t need) const noexcept {
    const std::size_t used = charged();
    return used <= options_.byte_budget && need <= options_.byte_budget - used;
  }

  // Un-charges the cache's own reference; charges `retired` when handles still hold it.
  void charge_retired(Entry& e) noexcept {
    auto* d = std::get_deleter<Release>(e.cached);
    if (d && in_use(e)) {
      d->retired_bytes = e.bytes;
      acct_->retired.fetch_add(e.bytes, std::memory_order_acq_rel);
    }
  }

  // Moves a resident entry to the graveyard, which must have room (no throw here).
  void retire(Entry& e, EvictReason reason, Graveyard& g) noexcept {
    if (e.in_lru) lru_remove(e);
    resident_ -= e.bytes;
    --resident_count_;
    charge_retired(e);
    ++counters_.evictions[static_cast<std::size_t>(reason)];
    g.add(Evicted{e.shared_from_this(), std::move(e.cached), e.bytes, reason});
    e.cached.reset();
    e.bytes = 0;
  }

  // Plans an LRU-first eviction of models no handle holds until `goal` bytes are freed, at most
  // `cap` models (0 = no cap). Returns the victims in order and the bytes they free.
  std::size_t plan(std::size_t goal, std::size_t cap, std::vector<Entry*>& victims) const {
    std::size_t freed = 0;
    for (Entry* e = lru_.tail(); e && freed < goal; e = LruList<Entry>::newer(*e)) {
      if (cap != 0 && victims.size() >= cap) break;
      if (in_use(*e)) continue;
      victims.push_back(e);
      freed += e->bytes;
    }
    return freed;
  }

  std::size_t evict_lru(std::size_t goal, EvictReason reason, std::size_t cap, Graveyard& g) {
    std::vector<Entry*>& victims = victims_;
    victims.clear();
    const std::size_t freed = plan(goal, cap, victims);
    retire_all(victims, reason, g);
    return freed;
  }

  void retire_all(const std::vector<Entry*>& victims, EvictReason reason, Graveyard& g) {
    g.reserve(victims.size());
    for (Entry* e : victims) retire(*e, reason, g);
  }

  // Makes `need` bytes fit by budget eviction, all or nothing. False: it cannot fit now.
  bool make_room(std::size_t need, Graveyard& g) {
    if (fits(need)) return true;
    const std::size_t budget = options_.byte_budget;
    if (need > budget) return false;
    const std::size_t used = charged();
    const std::size_t deficit = used - (budget - need);  // used + need - budget, no overflow
    std::vector<Entry*>& victims = victims_;
    victims.clear();
    if (plan(deficit, options_.max_evictions_per_call, victims) < deficit) return false;
    retire_all(victims, EvictReason::budget, g);
    return true;
  }

  bool pressure_enabled() const noexcept { return options_.high_watermark > 0.0; }

  // Bytes to free to bring the device under the low watermark; 0 when under the high one.
  std::size_t pressure_excess() noexcept {
    if (!pressure_enabled()) return 0;
    const detail::MemoryReading m = detail::read_device_memory<Runtime>(options_.device);
    if (!m.known) {
      if (!m.status.ok() && pressure_log_.first())
        log(LogLevel::warning, "ModelCache '" + options_.name + "': reading memory of device " +
                                   std::to_string(options_.device) + " failed: " +
                                   m.status.describe() + "; pressure eviction skipped");
      return 0;
    }
    const std::size_t used = m.used_bytes();
    const auto total = static_cast<double>(m.total_bytes);
    if (static_cast<double>(used) <= options_.high_watermark * total) return 0;
    const auto low_bytes = static_cast<std::size_t>(std::floor(options_.low_watermark * total));
    return used >= low_bytes ? used - low_bytes + 1 : 0;
  }

  void evict_for_pressure(Graveyard& g) {
    const std::size_t excess = pressure_excess();
    if (excess == 0) return;
    Exclusive lock(*this);
    if (!g.callback) g.callback = callback_;
    evict_lru(excess, EvictReason::pressure, options_.max_evictions_per_call, g);
  }

  Handle wrap(const std::shared_ptr<Model>& model) {
    return Handle(model.get(), Release{model, acct_, 0});
  }

  // In a forked child (the hook runs before any code of the child, every lock of this cache
  // rebuilt): the threads running other loads do not exist here, so their loads never finish.
  // Each is abandoned: its budget room is given back and the key loads anew on its next get().
  // A load of the forking thread itself goes on (it forked from inside its loader).
  void abandon_foreign_loads_in_child() noexcept {
    const auto me = std::this_thread::get_id();
    for (auto& kv : map_) {
      Entry& e = *kv.second;
      if (!e.op || e.op->owner == me) continue;
      reserved_ -= e.op->reserved;
      LoadBoard::abandon_in_child(*e.op);
      e.op.reset();
    }
  }

  // Waits for another thread's load of `key`; throws when that load waits for this thread's.
  void wait_for(const std::shared_ptr<LoadOp>& op, const Key& key) {
    LoadWait wait;
    wait.one = op.get();
    if (const LoadOpBase* mine = begin_load_wait(std::move(wait))) throw_cycle(key, mine);
    LoadWaitScope scope;
    board_.wait_done(*op);
  }

  [[noreturn]] void throw_cycle(const Key& key, const LoadOpBase* mine) const {
    const LoadFrame* f = load_frame_of(mine);
    const std::string own = f ? f->describe(f->key) : std::string("a model");
    throw InvalidArgument(
        prefix("get") + describe_cache_key(key) + ": called from the loader of " + own +
        ", while another thread loads " + describe_cache_key(key) +
        " and waits (directly or through other loads) for " + own +
        ": the two loaders need each other and would wait forever. Load one of the two models "
        "before the other's loader runs (get() it first), or let only one loader depend on the "
        "other");
  }

  // The loads of other threads that hold room in the budget (under the lock).
  std::vector<std::shared_ptr<LoadOp>> loads_holding_room() const {
    std::vector<std::shared_ptr<LoadOp>> ops;
    const auto me = std::this_thread::get_id();
    for (const auto& kv : map_) {
      const auto& op = kv.second->op;
      if (op && op->reserved != 0 && op->owner != me) ops.push_back(op);
    }
    return ops;
  }

  // Waits until one of `others` finishes (or any load did since `seen`), unless every one of
  // them waits, directly or through other waits, for a load of this thread: then returns false
  // at once, since waiting would never end.
  bool wait_for_room(const std::vector<std::shared_ptr<LoadOp>>& others, std::uint64_t seen) {
    LoadWait wait;
    wait.any.reserve(others.size());
    for (const auto& op : others) wait.any.push_back(op.get());
    if (begin_load_wait(std::move(wait))) return false;
    LoadWaitScope scope;
    board_.wait_generation(seen);
    return true;
  }

  void publish(const std::shared_ptr<LoadOp>& op) noexcept { board_.publish(*op); }

  [[noreturn]] void throw_budget(const Entry& e, std::size_t bytes, const char* when,
                                 const char* why_not_wait = "") const {
    const bool primary = e.residency == Residency::primary;
    std::string msg = prefix("get") + describe_cache_key(e.key) + ": " +
                      (primary ? "primary" : "secondary") + " model of " + std::to_string(bytes) +
                      " bytes (" + when + ") ";
    if (bytes > options_.byte_budget) {
      msg +=
          "is larger than the whole budget of " + std::to_string(options_.byte_budget) + " bytes";
    } else {
      msg += "does not fit the budget of " + std::to_string(options_.byte_budget) +
             " bytes beside " + std::to_string(resident_ - lru_.bytes()) +
             " bytes of primary/pinned models, " +
             std::to_string(acct_->retired.load(std::memory_order_acquire)) +
             " bytes held by handles after eviction and " + std::to_string(reserved_) +
             " bytes reserved by loads in progress (models in use are not evicted)" + why_not_wait;
    }
    msg += primary ? "; raise byte_budget or register the model as secondary"
                   : "; raise byte_budget, unpin models, drop handles, or set "
                     "OversizePolicy::load_uncached";
    throw BudgetExceeded(msg);
  }

  Handle get_slow(const Key& key) {
    bool counted = false;
    bool room_wait_is_stuck = false;  // the loads holding room wait for this thread's
    for (;;) {
      Graveyard g(*this);
      std::shared_ptr<Entry> entry;
      std::shared_ptr<LoadOp> op;
      std::size_t reserved = 0;
      bool cache_it = true;
      bool i_load = false;
      {
        Exclusive lock(*this);
        auto it = map_.find(key);
        if (it == map_.end()) throw UnknownKey(unknown_key_message("get", key));
        entry = it->second;
        Entry& e = *entry;
        if (e.cached) {
          if (!counted) locks_.count_hit_exclusive();
          if (e.in_lru) lru_.move_to_front(e);
          return e.cached;
        }
        if (!counted) {
          ++counters_.misses;
          counted = true;
        }
        if (e.op) {
          if (e.op->owner == std::this_thread::get_id())
            throw InvalidArgument(prefix("get") + describe_cache_key(key) +
                                  ": called from its own loader; a loader must not get its key");
          ++counters_.waits;
          op = e.op;
        } else {
          g.callback = callback_;
          const std::size_t hint = e.size_hint;
          const bool must_cache =
              e.residency == Residency::primary || options_.oversize == OversizePolicy::throw_error;
          if (hint > options_.byte_budget || !make_room(hint, g)) {
            if (!room_wait_is_stuck && hint <= options_.byte_budget &&
                reserved_ > own_load_reservations(this)) {
              // Other threads' loads hold reservations; retry once one of them finishes. The
              // wait graph is checked with no lock of the cache held (its lock is a leaf).
              const auto others = loads_holding_room();
              const std::uint64_t gen = board_.generation();
              lock.unlock();
              g.finish();
              room_wait_is_stuck = !wait_for_room(others, gen);
              continue;
            }
            if (must_cache) {
              ++counters_.load_failures;
              throw_budget(e, hint, "size hint",
                           room_wait_is_stuck ? "; the loads in progress wait for this thread's "
                                                "own load, so waiting for them would never end"
                                              : "");
            }
            cache_it = false;
          }
          op = std::make_shared<LoadOp>();
          e.op = op;
          if (cache_it) {
            reserved = hint;
            reserved_ += hint;
            op->reserved = hint;
          }
          i_load = true;
        }
      }
      g.finish();
      if (i_load) return run_load(entry, op, reserved, cache_it);
      wait_for(op, key);
      if (op->failure) throw_copy(op->failure);
      if (op->result) return op->result;
    }
  }

  // Ends a load that an exception cut short after its loader ran: gives the reservation back,
  // detaches the op and wakes its waiters with a failure, so that no later get() waits forever.
  struct LoadGuard {
    ModelCacheCore& core;
    Entry& entry;
    const std::shared_ptr<LoadOp>& op;
    std::size_t reserved;
    bool settled = false;  // reservation and op already taken back
    bool published = false;
    ~LoadGuard() {
      if (!published) core.abandon_load(*this);
    }
  };

  void abandon_load(LoadGuard& guard) noexcept {
    {
      Exclusive lock(*this);
      if (!guard.settled) {
        reserved_ -= guard.reserved;
        if (guard.entry.op == guard.op) guard.entry.op.reset();
        ++counters_.load_failures;
      }
      LoadOp& op = *guard.op;
      if (!op.failure) {
        op.result.reset();
        op.failure.failed = true;
        op.failure.code = ErrorCode::load_failed;
        try {
          op.failure.message = "ModelCache: a load failed and its error could not be recorded";
        } catch (...) {
        }
      }
    }
    guard.published = true;
    publish(guard.op);
  }

  Handle run_load(const std::shared_ptr<Entry>& entry, const std::shared_ptr<LoadOp>& op,
                  std::size_t reserved, bool cache_it) noexcept(false) {
    const Entry& e = *entry;
    LoadGuard guard{*this, *entry, op, reserved};
    try {
      Graveyard pg(*this);
      evict_for_pressure(pg);
    } catch (...) {
      // Pressure eviction is best effort; the load goes on.
    }
    Loaded<Model> loaded;
    Failure error;
    const auto t0 = std::chrono::steady_clock::now();
    try {
      LoadFrameScope frame(this, reserved, *op, &e.key, &describe_erased_cache_key<Key>);
      loaded = e.loader();
      if (!loaded.model)
        throw LoadFailed(prefix("get") + describe_cache_key(e.key) +
                         ": the loader returned a null model; return "
                         "Loaded<Model>{std::make_shared<Model>(...), bytes} or throw");
    } catch (...) {
      error = capture(e, "the loader threw");
    }
    const auto elapsed = std::chrono::steady_clock::now() - t0;

    Handle wrapped;
    if (!error && cache_it) {
      try {
        wrapped = wrap(loaded.model);
      } catch (...) {
        error = capture(e, "caching the model failed");
      }
    }
    Graveyard g(*this);
    Handle result;
    std::exception_ptr original;
    bool failed = false;
    {
      Exclusive lock(*this);
      reserved_ -= reserved;
      counters_.load_time += std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed);
      entry->op.reset();
      guard.settled = true;
      if (!error) {
        try {
          bool installed = false;
          if (cache_it && !entry->removed && alive_) {
            g.callback = callback_;
            if (make_room(loaded.bytes, g)) {
              Entry& m = *entry;
              m.cached = wrapped;
              m.bytes = loaded.bytes;
              resident_ += loaded.bytes;
              ++resident_count_;
              if (m.residency == Residency::secondary && !m.pinned) lru_push_front(m);
              result = std::move(wrapped);
              installed = true;
            } else if (e.residency == Residency::primary ||
                       options_.oversize == OversizePolicy::throw_error) {
              throw_budget(e, loaded.bytes, "as loaded");
            }
          }
          if (!installed) {
            ++counters_.uncached_loads;
            result = loaded.model;
          }
          ++counters_.loads;
        } catch (...) {
          error = capture(e, "caching the model failed");
        }
      }
      if (error) {
        ++counters_.load_failures;
        result.reset();
      }
      // Moved, not copied: nothing here may throw once the reservation was given back.
      original = std::move(error.original);
      failed = error.failed;
      op->failure = std::move(error);
      op->result = result;
    }
    guard.published = true;
    publish(op);
    g.finish();
    wrapped.reset();
    loaded.model.reset();
    if (failed) std::rethrow_exception(original);
    return result;
  }

  // Called inside a catch block: describes the exception in flight. A gpusafe::Error stays as it
  // is; anything else becomes a LoadFailed naming the key, with the original nested. Never
  // throws, so that a failing load always reaches its waiters.
  Failure capture(const Entry& e, const char* context) const noexcept {
    Failure f;
    f.failed = true;
    f.code = ErrorCode::load_failed;
    try {
      throw;
    } catch (const Error& err) {
      f.original = std::current_exception();
      f.code = err.code();
      f.runtime_code = err.runtime_code();
      try {
        f.message = err.what();
      } catch (...) {
      }
      return f;
    } catch (const std::exception& ex) {
      f.message = failure_message(e, context, ex.what());
    } catch (...) {
      f.message = failure_message(e, context, "a non-std exception");
    }
    f.nested = std::current_exception();
    try {
      std::throw_with_nested(LoadFailed(f.message));
    } catch (...) {
      f.original = std::current_exception();
    }
    return f;
  }

  // The key's operator<< may throw, and building the text may run out of memory.
  std::string failure_message(const Entry& e, const char* context,
                              const char* what) const noexcept {
    try {
      return prefix("get") + describe_cache_key(e.key) + ": " + context + ": " + what;
    } catch (...) {
    }
    try {
      return prefix("get") + "(a key whose description failed): " + context + ": " + what;
    } catch (...) {
    }
    return std::string();
  }

  // A waiter's own copy of a failure: same type (by ErrorCode), message, runtime code and
  // nested exception.
  [[noreturn]] static void throw_copy(const Failure& f) {
    throw_error(f.code, f.message, f.runtime_code, f.nested);
  }

  ModelCacheOptions options_;
  std::shared_ptr<ModelCacheAccounting> acct_;
  Locks locks_;
  // Everything below is guarded by all stripes (Exclusive); the LRU links also by one stripe
  // plus the touch lock (see StripedLocks).
  std::unordered_map<Key, std::shared_ptr<Entry>, Hash> map_;
  LruList<Entry> lru_;
  std::vector<Entry*> victims_;  // eviction plans (kept for its capacity)
  std::size_t resident_ = 0;
  std::size_t resident_count_ = 0;
  std::size_t reserved_ = 0;
  bool alive_ = true;
  ModelCacheStats counters_;
  std::shared_ptr<const EvictCallback> callback_;
  LogOnce pressure_log_;
  LogOnce prefetch_log_;
  LogOnce callback_log_;
  LoadBoard board_;  // where waiters of this cache's loads sleep
};

}  // namespace detail

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
