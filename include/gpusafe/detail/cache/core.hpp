// SPDX-License-Identifier: MIT
// gpusafe/detail/cache/core.hpp: ModelCacheCore, the shared core behind a ModelCache.
//
// Purpose: adds to the CacheTable (registrations, residency, locks) the miss path and the
// process-wide roles of a cache: a miss claims the key's load under the writer lock (or joins
// the load in progress: single flight), runs the loader with no lock held, and installs the
// model in a second writer section, evicting for room in the budget; other callers wait through
// LoadWaits, and a load that nobody waits for is published without waking anyone. The core is
// the Reclaimable that the reclaim registry holds and a ForkAware.
//
// Thread safety: every public member may be called from any thread. No loader, on_evict
// callback or model destructor runs under a lock; loaders that wait for each other fail instead
// of waiting forever (detail/cache/single_flight.hpp).
//
// Teardown: owned by the front and by whoever holds reclaimable(); after close() reclaim()
// returns 0. Reads device memory only when watermarks are set (through the runtime call gate).
// In a forked child its locks are re-created and the loads of the parent's other threads are
// abandoned (their budget room given back; the key loads anew).
#ifndef GPUSAFE_DETAIL_CACHE_CORE_HPP
#define GPUSAFE_DETAIL_CACHE_CORE_HPP

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gpusafe/config.hpp"
#include "gpusafe/detail/cache/load_failure.hpp"
#include "gpusafe/detail/cache/load_waits.hpp"
#include "gpusafe/detail/cache/pressure.hpp"
#include "gpusafe/detail/cache/single_flight.hpp"
#include "gpusafe/detail/cache/table.hpp"
#include "gpusafe/lifecycle.hpp"
#include "gpusafe/log.hpp"
#include "gpusafe/reclaim.hpp"

GPUSAFE_NAMESPACE_BEGIN
namespace detail {

template <class Key, class Model, class Hash, class Runtime>
class ModelCacheCore final : public CacheTable<Key, Model, Hash>,
                             public Reclaimable,
                             public ForkAware {
  using Table = CacheTable<Key, Model, Hash>;
  using typename Table::Entry;
  using typename Table::Exclusive;
  using typename Table::Grave;
  using LoadOp = typename Entry::LoadOp;
  using Table::alive_;
  using Table::callback_;
  using Table::callback_failures_;
  using Table::counters_;
  using Table::locks_;
  using Table::map_;
  using Table::messages_;
  using Table::options_;
  using Table::set_;

 public:
  using Handle = typename Table::Handle;

  explicit ModelCacheCore(ModelCacheOptions options)
      : Table(std::move(options)), pressure_(options_, messages_) {
    enrol_fork_aware(this);  // a forked child rebuilds its locks (rule 5)
  }
  ~ModelCacheCore() override { withdraw_fork_aware(this); }

  Handle get(const Key& key) {
    if (Handle h = this->lookup(key)) return h;
    return get_slow(key);
  }

  bool prefetch(const Key& key) noexcept {
    GPUSAFE_TRY {
      get(key);
      return this->is_resident(key);
    }
    GPUSAFE_CATCH_ALL { log_prefetch_failure(detail::current_exception_what()); }
    return false;
  }

  void preload() {
    for (const auto& k : this->primary_keys_not_loaded()) get(k);
  }

  std::size_t check_pressure() {
    Grave g(callback_failures_);
    evict_for_pressure(g);
    return g.finish();
  }

  // Reclaimable

  std::size_t reclaim(const ReclaimRequest& request) noexcept override {
    GPUSAFE_TRY {
      if (request.device >= 0 && request.device != options_.device) return 0;
      // Light gives back what is cached and idle; a cache holds none (every resident model is
      // warm, and one evicted while held can only be freed by its handles). Heavy evicts.
      if (request.level == ReclaimLevel::light) return 0;
      Grave g(callback_failures_);
      {
        Exclusive lock(*this);
        if (!alive_) return 0;
        g.set_callback(callback_);
        if (request.level == ReclaimLevel::shutdown)
          this->retire_unpinned(EvictReason::shutdown, g);
        else
          set_.evict_lru(request.bytes_goal, EvictReason::reclaim, 0, g);
      }
      return g.finish();
    }
    GPUSAFE_CATCH_ALL {
      log(LogLevel::error, "ModelCache reclaim: out of memory; nothing reclaimed");
      return 0;
    }
  }

  ReclaimCost reclaim_cost() const noexcept override { return ReclaimCost::evictable_models; }
  const char* reclaimable_name() const noexcept override { return options_.name.c_str(); }

  ResourceUsage usage() const noexcept override {
    ResourceUsage u;
    u.device = options_.device;
    GPUSAFE_TRY {
      Exclusive lock(const_cast<ModelCacheCore&>(*this));
      u.bytes_in_use = set_.resident_bytes();
      u.bytes_reserved = set_.charged();
      u.items = set_.resident_count();
    }
    GPUSAFE_CATCH_ALL {}
    return u;
  }

  // Around fork() the forking thread holds every stripe and the touch lock (in the order every
  // other path takes them: stripes by index, then the touch lock), so a child never copies the
  // map, the LRU links or a stripe's touch buffer half-changed.
  void lock_for_fork() noexcept override { locks_.lock_for_fork(); }
  void unlock_after_fork() noexcept override { locks_.unlock_after_fork(); }

  void recreate_locks_in_child() noexcept override {
    locks_.recreate_in_child();
    waits_.recreate_in_child();
    abandon_foreign_loads_in_child();
  }

 private:
  // What a get that missed does next, decided under the writer lock.
  struct Claim {
    Handle hit;  // resident after all
    std::shared_ptr<Entry> entry;
    // The load it runs or waits for. A waiter holds a reference in `op`; the loader's load is
    // owned by the entry (entry->op) until settle() moves that reference into `op`.
    LoadOp* load = nullptr;
    std::shared_ptr<LoadOp> op;
    std::size_t reserved = 0;
    bool cache_it = true;
    bool i_load = false;
    bool wait_for_room = false;  // other threads' loads hold the room it needs
    std::vector<std::shared_ptr<LoadOp>> room_holders;
    std::uint64_t generation = 0;
  };

  // Ends a load that an exception cut short after its loader ran: gives the reservation back,
  // detaches the op and wakes its waiters with a failure, so that no later get() waits forever.
  struct LoadGuard {
    ModelCacheCore& core;
    Claim& claim;
    bool settled = false;  // reservation and op already taken back
    bool published = false;
    ~LoadGuard() {
      if (!published) core.abandon_load(*this);
    }
  };

  Handle get_slow(const Key& key) {
    bool counted = false;
    bool room_wait_is_stuck = false;  // the loads holding room wait for this thread's
    for (;;) {
      Grave g(callback_failures_);
      Claim c = claim(key, counted, room_wait_is_stuck, g);
      g.finish();
      if (c.hit) return c.hit;
      if (c.wait_for_room) {
        room_wait_is_stuck = !waits_.wait_for_room(c.room_holders, c.generation);
        continue;
      }
      if (c.i_load) return run_load(c);
      if (const LoadOpBase* mine = waits_.wait_for_load(*c.op)) throw_cycle(key, mine);
      if (c.op->failure) throw_failure_copy(c.op->failure);
      if (Handle h = LoadOp::result(c.op)) return h;
    }
  }

  Claim claim(const Key& key, bool& counted, bool room_wait_is_stuck, Grave& g) {
    Claim c;
    Exclusive lock(*this);
    auto it = map_.find(key);
    if (it == map_.end()) GPUSAFE_THROW(UnknownKey(messages_.unknown_key("get", key)));
    Entry& e = *it->second;
    if (e.cached) {
      c.hit = this->hit_exclusive(e, !counted);
      return c;
    }
    if (!counted) {
      ++counters_.misses;
      counted = true;
    }
    c.entry = it->second;
    if (e.op)
      join_load(e, c);
    else
      start_load(e, room_wait_is_stuck, g, c);
    return c;
  }

  void join_load(const Entry& e, Claim& c) {
    if (e.op->owner == std::this_thread::get_id())
      GPUSAFE_THROW(InvalidArgument(messages_.own_loader_gets_its_key(e.key)));
    ++counters_.waits;
    waits_.join(*e.op);
    c.op = e.op;
    c.load = c.op.get();
  }

  void start_load(Entry& e, bool room_wait_is_stuck, Grave& g, Claim& c) {
    g.set_callback(callback_);
    const std::size_t hint = e.size_hint;
    if (hint > options_.byte_budget || !set_.make_room(hint, g)) {
      if (!room_wait_is_stuck && hint <= options_.byte_budget &&
          set_.reserved_bytes() > own_load_reservations(this)) {
        // Other threads' loads hold reservations; retry once one of them finishes. The wait
        // graph is checked with no lock of the cache held (its lock is a leaf).
        c.room_holders = loads_holding_room();
        c.generation = waits_.count_room_waiter();  // wait_for_room takes it back
        c.wait_for_room = true;
        return;
      }
      if (must_cache(e.residency, options_)) {
        ++counters_.load_failures;
        throw_budget(e, hint, "size hint",
                     room_wait_is_stuck ? "; the loads in progress wait for this thread's own "
                                          "load, so waiting for them would never end"
                                        : "");
      }
      c.cache_it = false;
    }
    e.op = std::make_shared<LoadOp>();
    c.load = e.op.get();
    if (c.cache_it) {
      c.reserved = hint;
      set_.reserve(hint);
      c.load->reserved = hint;
    }
    c.i_load = true;
  }

  Handle run_load(Claim& c) {
    LoadGuard guard{*this, c};
    relieve_pressure();
    Loaded<Model> loaded;
    LoadFailure error;
    const auto elapsed = call_loader(c, loaded, error);
    Grave g(callback_failures_);
    Handle result;
    std::exception_ptr original;
    bool failed = false;
    bool watched = true;
    {
      Exclusive lock(*this);
      settle(c, elapsed);
      guard.settled = true;
      if (!error) result = install(c, loaded, g, error);
      if (error) {
        ++counters_.load_failures;
        result.reset();
      }
      // Moved, not copied: nothing here may throw once the reservation was given back.
      original = std::move(error.original);
      failed = error.failed;
      c.load->failure = std::move(error);
      // Nobody joins the load after this section (the entry let go of it): whether anyone waits
      // is known here.
      watched = waits_.watched(*c.load);
    }
    guard.published = true;
    // The load is alive here: `c.op` holds it, or, once cached, `result` (an alias of it).
    waits_.publish(*c.load, watched);
    g.finish();
    loaded.model.reset();
    if (failed) std::rethrow_exception(original);
    return result;
  }

  // Pressure eviction before a load is best effort; the load goes on.
  void relieve_pressure() noexcept {
    if (!pressure_.enabled()) return;
    GPUSAFE_TRY {
      Grave pg(callback_failures_);
      evict_for_pressure(pg);
    }
    GPUSAFE_CATCH_ALL {}
  }

  // Runs the loader with no lock held; returns the time it took.
  std::chrono::steady_clock::duration call_loader(const Claim& c, Loaded<Model>& loaded,
                                                  LoadFailure& error) noexcept {
    const Entry& e = *c.entry;
    const auto t0 = std::chrono::steady_clock::now();
    GPUSAFE_TRY {
      LoadFrameScope frame(this, c.reserved, *c.load, &e.key, &describe_erased_cache_key<Key>);
      loaded = e.loader();
      if (!loaded.model) GPUSAFE_THROW(LoadFailed(messages_.null_model(e.key)));
    }
    GPUSAFE_CATCH_ALL { error = capture(e, "the loader threw"); }
    return std::chrono::steady_clock::now() - t0;
  }

  // Under the lock: gives the reservation back and detaches the op from its entry (its
  // reference moves to the claim, no count changes).
  void settle(Claim& c, std::chrono::steady_clock::duration elapsed) noexcept {
    set_.unreserve(c.reserved);
    counters_.load_time += std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed);
    c.op = std::move(c.entry->op);
  }

  // Under the lock: caches the loaded model (evicting for room) or hands it out uncached.
  Handle install(Claim& c, Loaded<Model>& loaded, Grave& g, LoadFailure& error) noexcept {
    Entry& e = *c.entry;
    Handle result;
    GPUSAFE_TRY {
      bool installed = false;
      if (c.cache_it && !e.removed && alive_) {
        g.set_callback(callback_);
        if (set_.make_room(loaded.bytes, g)) {
          // The claim's reference becomes the cache's handle; `result` keeps the load alive
          // until it is published.
          set_.admit(e, std::move(c.op), std::move(loaded.model), loaded.bytes);
          result = e.cached;
          installed = true;
        } else if (must_cache(e.residency, options_)) {
          throw_budget(e, loaded.bytes, "as loaded");
        }
      }
      if (!installed) {
        ++counters_.uncached_loads;
        c.load->uncached = loaded.model;
        result = loaded.model;
      }
      ++counters_.loads;
    }
    GPUSAFE_CATCH_ALL {
      error = capture(e, "caching the model failed");
      result.reset();
    }
    return result;
  }

  void abandon_load(LoadGuard& guard) noexcept {
    Claim& c = guard.claim;
    {
      Exclusive lock(*this);
      if (!guard.settled) {
        set_.unreserve(c.reserved);
        // The entry holds the load until settled (only this thread detaches it).
        if (c.entry->op.get() == c.load) c.op = std::move(c.entry->op);
        ++counters_.load_failures;
      }
      if (!c.load->failure) c.load->drop_result();
      mark_unrecorded_failure(c.load->failure);
    }
    guard.published = true;
    waits_.publish(*c.load, true);
  }

  // Called inside a catch block: the failure in flight, described with the key.
  LoadFailure capture(const Entry& e, const char* context) const noexcept {
    return capture_load_failure(
        [&](const char* what) noexcept { return messages_.load_failure(e.key, context, what); });
  }

  [[noreturn]] void throw_budget(const Entry& e, std::size_t bytes, const char* when,
                                 const char* why_not_wait = "") const {
    GPUSAFE_THROW(BudgetExceeded(
        messages_.over_budget(e.key, e.residency, bytes, when, set_.figures(), why_not_wait)));
  }

  void evict_for_pressure(Grave& g) {
    const std::size_t excess = pressure_.excess();
    if (excess == 0) return;
    Exclusive lock(*this);
    g.set_callback(callback_);
    set_.evict_for_pressure(excess, g);
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
      set_.unreserve(e.op->reserved);
      LoadBoard::abandon_in_child(*e.op);
      e.op.reset();
    }
  }

  [[noreturn]] void throw_cycle(const Key& key, const LoadOpBase* mine) const {
    const LoadFrame* f = load_frame_of(mine);
    const std::string own = f ? f->describe(f->key) : std::string("a model");
    GPUSAFE_THROW(InvalidArgument(messages_.load_cycle(key, own)));
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

  // The first failure is a warning, later ones are debug messages.
  void log_prefetch_failure(const char* what) noexcept {
    const LogLevel level = prefetch_log_.first() ? LogLevel::warning : LogLevel::debug;
    log_lazy(level, [&] { return std::string("prefetch failed: ") + what; });
  }

  CachePressure<Runtime> pressure_;
  LogOnce prefetch_log_;
  LoadWaits<LoadOp> waits_;  // where callers wait for this cache's loads
};

}  // namespace detail
GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_CACHE_CORE_HPP
