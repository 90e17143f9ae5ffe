// SPDX-License-Identifier: MIT
// gpusafe/detail/pool/core.hpp: PoolCore<Runtime>, the shared state of a BasicBufferPool: acquire
// and release (per-thread magazines in front of the slabs' bitmaps), waiting, stream-ordered
// release, statistics, the lease report, reclaim and fork handling, and the core's lifetime.
//
// Lifetime (DESIGN rule 4, without a reference count per lease): `life_` counts the owners as one
// unit (the pool and its reclaimable handles share it through a shared_ptr whose deleter drops
// the unit), one unit per thread cache, and one for each release that runs without a cache of its
// thread. Acquire and release counts live in the thread caches and are folded into the core's
// totals when a cache is retired. The holder of the last unit deletes the core when no lease is
// out (folded acquires == folded releases, no overflow buffer live: exact, since no cache is left),
// deciding while it still holds its unit and claiming the core by a CAS from 1 to a dead mark, so
// that a release that holds anew meanwhile makes the claim fail and decides itself later.
//
// Thread safety: acquire*, release, stats, trim and the reports may run from any threads at once.
// Teardown: see gpusafe/buffer_pool.hpp.
#ifndef GPUSAFE_DETAIL_POOL_CORE_HPP
#define GPUSAFE_DETAIL_POOL_CORE_HPP

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "gpusafe/buffer_lease.hpp"
#include "gpusafe/config.hpp"
#include "gpusafe/detail/pool/free_slots.hpp"
#include "gpusafe/detail/pool/lease_tracker.hpp"
#include "gpusafe/detail/pool/options.hpp"
#include "gpusafe/detail/pool/slab.hpp"
#include "gpusafe/lifecycle.hpp"
#include "gpusafe/log.hpp"
#include "gpusafe/runtime.hpp"

GPUSAFE_NAMESPACE_BEGIN
namespace detail {

template <class Runtime>
class PoolCore final : public PoolCoreBase, public PoolCacheOwner, private PoolSlabs<Runtime> {
  using Slabs = PoolSlabs<Runtime>;
  using Slabs::classes_;
  using Slabs::fell_back_;
  using Slabs::gpu_;
  using Slabs::kind_;
  using Slabs::max_class_bytes_;
  using Slabs::nclasses_;
  using Slabs::options_;

 public:
  enum class Mode { throwing, trying, waiting };

  /// Drops the owners' unit when the last shared_ptr to the core goes (pool, reclaimable handles).
  struct OwnersRelease {
    void operator()(PoolCore* core) const noexcept { core->drop(); }
  };

  /// Builds a core owned by the returned shared_ptr; throws with nothing leaked.
  static std::shared_ptr<PoolCore> create(BufferPoolOptions options) {
    PoolCore* core = new PoolCore(std::move(options));
    return std::shared_ptr<PoolCore>(core, OwnersRelease{});  // on bad_alloc it calls drop()
  }

  PoolCore(const PoolCore&) = delete;
  PoolCore& operator=(const PoolCore&) = delete;

  // ---- acquire -------------------------------------------------------------------------------

  BufferLease acquire(std::size_t bytes, LeaseTag tag, Mode mode,
                      std::chrono::steady_clock::time_point deadline) {
    if (GPUSAFE_UNLIKELY(bytes - 1 >= max_class_bytes_)) return acquire_unusual(bytes, tag);
    std::uint32_t ci = 0;
    while (classes_[ci].bytes < bytes) ++ci;
    PoolClass& c = classes_[ci];
    if (gpu_ && GPUSAFE_UNLIKELY(process_hazard(options_.device))) check_admission(bytes);
    ThreadCache* tc = find_thread_cache(this);
    if (GPUSAFE_LIKELY(tc != nullptr)) {
      Magazine& m = tc->magazine(ci);
      if (GPUSAFE_LIKELY(m.count() != 0) && GPUSAFE_LIKELY(!options_.track_leases)) {
        const SlotRef r = m.pop();
        PoolSlab& s = *static_cast<PoolSlab*>(r.slab);
        if (GPUSAFE_LIKELY(!this->slab_is_stale(s))) {
          bump(m.acquires);
          return lease_of(c, ci, s, r.slot, bytes);
        }
        // A slot of a slab from before a device reset: never handed out again, just forgotten.
      }
    }
    return acquire_more(tc, c, ci, bytes, tag, mode, deadline);
  }

  // ---- release (noexcept) --------------------------------------------------------------------

  void release_lease(void* data, std::size_t bytes, LeaseState& st) noexcept override {
    if (GPUSAFE_UNLIKELY(st.track_id != 0)) tracker_.untrack(st.track_id);
    if (GPUSAFE_UNLIKELY(st.slab == nullptr)) {
      release_overflow(data, bytes, st);
      return;
    }
    PoolClass& c = classes_[st.cls];
    PoolSlab& s = *static_cast<PoolSlab*>(st.slab);
    ThreadCache* tc = find_thread_cache(this);
    // The lease is not counted as released yet, so making a cache cannot let the core die.
    if (GPUSAFE_UNLIKELY(tc == nullptr) && !orphaned_.load(std::memory_order_relaxed))
      tc = make_thread_cache();
    if (GPUSAFE_LIKELY(tc != nullptr) && GPUSAFE_LIKELY(!unusual_release(c, s, st))) {
      Magazine& m = tc->magazine(st.cls);
      bump(m.releases);
      if (GPUSAFE_LIKELY(m.capacity != 0)) {
        if (GPUSAFE_UNLIKELY(m.full())) flush(c, m, (m.capacity + 1) / 2);
        m.push(&s, st.slot);
        return;
      }
      s.bitmap.give(st.slot);
      notify_waiters(c);
      return;
    }
    release_shared(tc, c, s, st);
  }

  // ---- maintenance ---------------------------------------------------------------------------

  /// Gives this thread's cached slots back, then frees idle slabs. Slots cached by other live
  /// threads keep their slabs resident.
  /// With `grown_only`, keeps every class's preallocated slab (the light reclaim level).
  std::size_t trim(bool grown_only = false) noexcept {
    if (ThreadCache* tc = find_thread_cache(this)) flush_all(*tc);
    std::size_t released = 0;
    for (std::size_t i = 0; i < nclasses_; ++i)
      released += this->trim_class(classes_[i], grown_only);
    return released;
  }

  /// The pool object died: reclaim() returns 0 from now on, this thread's cache is dropped, idle
  /// slabs are freed now and the others as their last lease returns.
  void detach() noexcept {
    orphaned_.store(true, std::memory_order_seq_cst);
    drop_thread_cache(this);
    (void)trim();
  }

  BufferPoolStats stats() const;

  std::vector<OutstandingLease> outstanding() const { return tracker_.outstanding(); }

  std::vector<LeakRecord> leak_records() const override {
    if (options_.track_leases) return tracker_.outstanding();
    // Without the tracker the counts and sizes are known, not where or when: one record per
    // class with leases out, and one for overflow buffers.
    std::vector<LeakRecord> out;
    const BufferPoolStats st = stats();
    for (const auto& c : st.classes)
      if (c.in_use > 0) out.push_back(untracked_record(c.in_use, c.in_use * c.bytes));
    if (st.overflow_live > 0)
      out.push_back(untracked_record(st.overflow_live, st.overflow_bytes_live));
    return out;
  }
  void note_leaks_reported() noexcept override { (void)report_logged_.first(); }

  std::string leak_report() const {
    const BufferPoolStats st = stats();
    const std::size_t out_now = st.totals.in_use + st.overflow_live;
    std::string r =
        "BufferPool '" + options_.name + "': " + std::to_string(out_now) + " lease(s) outstanding";
    if (!options_.track_leases) {
      if (out_now != 0)
        r += " (enable BufferPoolOptions::track_leases to see where they were taken)";
      return r + "\n";
    }
    return r + "\n" + tracker_.report_lines();
  }

  // ---- Reclaimable ---------------------------------------------------------------------------

  std::size_t reclaim(const ReclaimRequest& request) noexcept override {
    if (orphaned_.load(std::memory_order_acquire)) return 0;
    if (request.device != -1 && (!gpu_ || request.device != options_.device)) return 0;
    // Light: only what growth added (overflow buffers are freed at release, never cached).
    const std::size_t released = trim(request.level == ReclaimLevel::light);
    if (request.level == ReclaimLevel::shutdown) log_outstanding_once();
    return released;
  }
  ReclaimCost reclaim_cost() const noexcept override { return ReclaimCost::idle_memory; }
  const char* reclaimable_name() const noexcept override { return options_.name.c_str(); }
  ResourceUsage usage() const noexcept override {
    ResourceUsage u;
    u.device = gpu_ ? options_.device : -1;
    GPUSAFE_TRY {
      const BufferPoolStats st = stats();
      u.bytes_reserved = st.totals.bytes_reserved;
      u.bytes_in_use = st.overflow_bytes_live;
      for (const auto& cs : st.classes) u.bytes_in_use += cs.in_use * cs.bytes;
      u.items = st.totals.in_use + st.overflow_live;
    }
    GPUSAFE_CATCH_ALL {}
    return u;
  }

  const char* pool_name() const noexcept override { return options_.name.c_str(); }

  // ---- fork ----------------------------------------------------------------------------------

  void lock_for_fork() noexcept override { caches_mutex_.lock(); }
  void unlock_after_fork() noexcept override { caches_mutex_.unlock(); }
  void recreate_locks_in_child() noexcept override {
    for (std::size_t i = 0; i < nclasses_; ++i) {
      PoolClass& c = classes_[i];
      new (&c.mutex) std::mutex();
      new (&c.wait_mutex) std::mutex();
      new (&c.cv) std::condition_variable();
      c.waiters.store(0, std::memory_order_relaxed);  // those threads do not exist here
    }
    tracker_.recreate_lock_in_child();
    new (&caches_mutex_) std::mutex();
    reclaim_lost_caches();
  }

  // ---- thread caches -------------------------------------------------------------------------

  void retire_thread_cache(ThreadCache* tc) noexcept override {
    flush_all(*tc);
    {
      std::lock_guard<std::mutex> lock(caches_mutex_);
      fold_counters(*tc);
      unlink(tc);
    }
    delete tc;
    if (orphaned_.load(std::memory_order_acquire)) (void)trim();
    drop();  // last: may delete this
  }
  bool cache_owner_orphaned() const noexcept override {
    return orphaned_.load(std::memory_order_relaxed);
  }

  const BufferPoolOptions& options() const noexcept { return options_; }
  MemoryKind kind() const noexcept { return kind_; }
  bool fell_back() const noexcept { return fell_back_; }

 private:
  explicit PoolCore(BufferPoolOptions options);
  ~PoolCore() override {
    withdraw_fork_aware(this);
    this->free_all_slabs();
    while (ThreadCache* tc = lost_) {
      lost_ = tc->next;
      delete tc;
    }
  }

  // ---- lifetime ------------------------------------------------------------------------------

  static constexpr std::int64_t kDead = std::numeric_limits<std::int64_t>::min() / 2;

  void hold() noexcept { life_.fetch_add(1, std::memory_order_seq_cst); }

  /// Releases one unit. The holder of the last unit looks at the counts while it still holds
  /// it, and either deletes the core (no lease out: the unit becomes the dead mark) or leaves
  /// zero; a thread that holds anew meanwhile makes the CAS fail, and decides when it drops.
  void drop() noexcept {
    std::int64_t v = life_.load(std::memory_order_seq_cst);
    for (;;) {
      if (v != 1) {
        if (life_.compare_exchange_weak(v, v - 1, std::memory_order_seq_cst)) return;
        continue;
      }
      const bool idle = !leases_out() && overflow_live_.load(std::memory_order_seq_cst) == 0;
      if (life_.compare_exchange_weak(v, idle ? kDead : 0, std::memory_order_seq_cst)) {
        if (idle) delete this;
        return;  // otherwise the release of the last lease out gets here again
      }
    }
  }

  // ---- thread caches -------------------------------------------------------------------------

  /// This thread's cache of the core, made on first use; null when it cannot be made (no memory,
  /// or the thread is ending).
  ThreadCache* make_thread_cache() noexcept {
    ThreadCache* tc = nullptr;
    GPUSAFE_TRY { tc = new ThreadCache(this, nclasses_); }
    GPUSAFE_CATCH_ALL { return nullptr; }
    for (std::size_t i = 0; i < nclasses_; ++i)
      tc->magazine(i).capacity = classes_[i].cache_capacity;
    hold();
    {
      std::lock_guard<std::mutex> lock(caches_mutex_);
      link(tc);
    }
    if (!insert_thread_cache(tc)) {
      retire_thread_cache(tc);  // the caller still holds the core: this drop cannot delete it
      return nullptr;
    }
    return tc;
  }

  void link(ThreadCache* tc) noexcept {
    tc->next = caches_;
    if (caches_) caches_->prev = tc;
    caches_ = tc;
  }
  void unlink(ThreadCache* tc) noexcept {
    if (tc->prev) tc->prev->next = tc->next;
    if (tc->next) tc->next->prev = tc->prev;
    if (caches_ == tc) caches_ = tc->next;
    tc->prev = tc->next = nullptr;
  }
  void fold_counters(const ThreadCache& tc) noexcept {
    for (std::size_t i = 0; i < nclasses_; ++i) {
      classes_[i].acquired.fetch_add(tc.magazine(i).acquires.load(std::memory_order_relaxed),
                                     std::memory_order_seq_cst);
      classes_[i].released.fetch_add(tc.magazine(i).releases.load(std::memory_order_relaxed),
                                     std::memory_order_seq_cst);
    }
  }

  /// Exact once no thread cache is left (every count folded): some lease is out.
  bool leases_out() const noexcept {
    std::uint64_t acquired = 0, released = 0;
    for (std::size_t i = 0; i < nclasses_; ++i) {
      acquired += classes_[i].acquired.load(std::memory_order_seq_cst);
      released += classes_[i].released.load(std::memory_order_seq_cst);
    }
    return acquired != released;
  }

  /// In a forked child: the caches of the parent's other threads are unreachable; their slots go
  /// back to the bitmaps, their counts to the totals, their units are given up.
  void reclaim_lost_caches() noexcept {
    const pthread_t self = ::pthread_self();
    for (ThreadCache* tc = caches_; tc;) {
      ThreadCache* next = tc->next;
      if (!::pthread_equal(tc->thread(), self)) {
        flush_all(*tc);
        fold_counters(*tc);
        unlink(tc);
        tc->next = lost_;  // freed with the core: no allocator call in a fork handler
        lost_ = tc;
        life_.fetch_sub(1, std::memory_order_seq_cst);  // the owners still hold the core
      }
      tc = next;
    }
  }

  /// Takes a slot from the thread's magazine, refilling it from the bitmap in a batch.
  bool take_cached(PoolClass& c, Magazine& m, SlotRef& r) noexcept {
    while (m.count() != 0) {
      r = m.pop();
      if (GPUSAFE_LIKELY(!this->slab_is_stale(*static_cast<PoolSlab*>(r.slab)))) return true;
      // A slot of a slab from before a device reset: never handed out again, just forgotten.
    }
    if (m.capacity == 0) return false;
    std::uint32_t slots[kMagazineMax];
    const std::uint32_t n = c.slab_count();
    for (std::uint32_t k = 0; k < n; ++k) {
      PoolSlab& s = *c.slab(k);
      if (this->slab_is_stale(s)) continue;
      const std::uint32_t got = take_from(c, s, (m.capacity + 1) / 2, slots);
      if (got == 0) continue;
      for (std::uint32_t i = 1; i < got; ++i) m.push(&s, slots[i]);
      r = {&s, slots[0]};
      return true;
    }
    return false;
  }

  /// Takes one slot from the bitmaps (no cache).
  bool take_shared(PoolClass& c, SlotRef& r) noexcept {
    const std::uint32_t n = c.slab_count();
    for (std::uint32_t k = 0; k < n; ++k) {
      PoolSlab& s = *c.slab(k);
      if (this->slab_is_stale(s)) continue;
      std::uint32_t slot = 0;
      if (take_from(c, s, 1, &slot) != 0) {
        r = {&s, slot};
        return true;
      }
    }
    return false;
  }

  std::uint32_t take_from(PoolClass& c, PoolSlab& s, std::uint32_t max,
                          std::uint32_t* out) noexcept {
    const std::uint32_t got = s.bitmap.take(max, out, [&s](std::uint32_t slot) {
      return s.events != nullptr && Slabs::event_done(s.events[slot]);
    });
    if (got != 0) note_high_water(c);
    return got;
  }

  /// Buffers out of the shared bitmaps now (leased or cached): the high-water sample.
  void note_high_water(PoolClass& c) noexcept {
    std::size_t capacity = 0, free_now = 0;
    for (std::uint32_t k = 0, n = c.slab_count(); k < n; ++k) {
      PoolSlab& s = *c.slab(k);
      if (s.retired.load(std::memory_order_relaxed) || !s.resident.load(std::memory_order_relaxed))
        continue;
      capacity += s.bitmap.count();
      free_now += s.bitmap.free_count();
    }
    const std::size_t out = capacity > free_now ? capacity - free_now : 0;
    std::size_t hw = c.high_water.load(std::memory_order_relaxed);
    while (out > hw && !c.high_water.compare_exchange_weak(hw, out, std::memory_order_relaxed)) {
    }
  }

  /// Gives `n` slots of the magazine back to the bitmaps (stale ones are forgotten).
  void flush(PoolClass& c, Magazine& m, std::uint32_t n) noexcept {
    for (; n != 0 && m.count() != 0; --n) {
      const SlotRef r = m.pop();
      PoolSlab& s = *static_cast<PoolSlab*>(r.slab);
      if (!this->slab_is_stale(s)) s.bitmap.give(r.slot);
    }
    notify_waiters(c);
  }

  void flush_all(ThreadCache& tc) noexcept {
    for (std::size_t i = 0; i < nclasses_; ++i) {
      Magazine& m = tc.magazine(i);
      if (m.count() != 0) flush(classes_[i], m, m.count());
    }
  }

  // ---- release helpers -----------------------------------------------------------------------

  /// A release that cannot go to the thread's cache: pool gone, waiters, stream work, or a slab
  /// that is stale or on a poisoned device.
  bool unusual_release(PoolClass& c, PoolSlab& s, const LeaseState& st) const noexcept {
    return orphaned_.load(std::memory_order_relaxed) ||
           c.waiters.load(std::memory_order_relaxed) != 0 || (st.has_stream && s.events) ||
           (gpu_ && (s.retired.load(std::memory_order_relaxed) ||
                     Slabs::slab_epoch(s) != device_epoch(options_.device) ||
                     is_poisoned(options_.device)));
  }

  void release_shared(ThreadCache* tc, PoolClass& c, PoolSlab& s, LeaseState& st) noexcept {
    if (tc) {
      bump(tc->magazine(st.cls).releases);
    } else {
      hold();  // no cache of this thread holds the core while it is used below
      c.released.fetch_add(1, std::memory_order_seq_cst);
    }
    give_back(c, s, st);
    if (orphaned_.load(std::memory_order_seq_cst)) {
      (void)this->trim_class(c);  // the pool is gone: give the memory back once the class is idle
      if (tc) {
        drop_thread_cache(this);  // its unit is the last thing this thread holds
        return;
      }
    }
    if (!tc) drop();  // last: may delete this
  }

  void give_back(PoolClass& c, PoolSlab& s, const LeaseState& st) noexcept {
    if (gpu_ &&
        (s.retired.load(std::memory_order_acquire) ||
         Slabs::slab_epoch(s) != device_epoch(options_.device) || is_poisoned(options_.device))) {
      c.dropped.fetch_add(1, std::memory_order_relaxed);  // never reused, never freed
      return;
    }
    if (st.has_stream && s.events) {
      if (!record_release_event(c, s, st)) return;
      s.bitmap.mark_pending(st.slot);
    }
    s.bitmap.give(st.slot);
    notify_waiters(c);
  }

  bool record_release_event(PoolClass& c, PoolSlab& s, const LeaseState& st) noexcept {
    BasicRuntimeCallGate<Runtime> gate;
    if (!gate) {
      c.dropped.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    PoolDeviceScope<Runtime> scope(gpu_, options_.device);  // the event belongs to that device
    const Status r = RuntimeCalls<Runtime>::event_record(s.events[st.slot], st.stream);
    if (r.ok()) return true;
    // Without the event the slot cannot be known idle: keep it out of circulation.
    c.dropped.fetch_add(1, std::memory_order_relaxed);
    log_release_failure(
        &event_failed_, [this] { return this->pool_label(); }, "recording the release event", -1, r,
        "the buffer is kept out of circulation");
    return false;
  }

  void notify_waiters(PoolClass& c) noexcept { Slabs::notify_waiters(c); }

  // ---- acquire helpers -----------------------------------------------------------------------

  /// Exiting, forked (as seen by the fork handler; the pid check is left to the slow path, it
  /// costs a system call) or poisoned: the hot path's one test for GPU pools.
  static bool process_hazard(int device) noexcept {
    auto& ps = process_state();
    return ps.exiting.load(std::memory_order_relaxed) ||
           ps.forked_child.load(std::memory_order_relaxed) || is_poisoned(device);
  }

  void check_admission(std::size_t bytes) const {
    if (GPUSAFE_LIKELY(!gpu_request_refused(options_.device))) return;
    check_gpu_request(options_.device,
                      "acquire(" + std::to_string(bytes) + " bytes) from " + this->pool_label());
  }

  /// Past the magazine: refill it, or take from the bitmaps, or the slow path.
  GPUSAFE_POOL_NOINLINE BufferLease acquire_more(ThreadCache* tc, PoolClass& c, std::uint32_t ci,
                                                 std::size_t bytes, LeaseTag tag, Mode mode,
                                                 std::chrono::steady_clock::time_point deadline) {
    if (tc == nullptr) tc = make_thread_cache();
    Magazine* m = tc ? &tc->magazine(ci) : nullptr;
    SlotRef r;
    if (m != nullptr && take_cached(c, *m, r)) return make_lease(c, ci, r, bytes, tag, m);
    if (take_shared(c, r)) return make_lease(c, ci, r, bytes, tag, m);
    return acquire_slow(c, ci, bytes, tag, mode, deadline, m);
  }

  GPUSAFE_POOL_INLINE BufferLease lease_of(PoolClass& c, std::uint32_t ci, PoolSlab& s,
                                           std::uint32_t slot, std::size_t bytes) noexcept {
    return BufferLease(this, s.base + static_cast<std::size_t>(slot) * c.stride, bytes, c.bytes, &s,
                       ci, slot, Slabs::slab_epoch(s), kind_, options_.device, fell_back_);
  }

  BufferLease make_lease(PoolClass& c, std::uint32_t ci, SlotRef r, std::size_t bytes, LeaseTag tag,
                         Magazine* m) {
    PoolSlab& s = *static_cast<PoolSlab*>(r.slab);
    std::uint64_t track_id = 0;
    if (GPUSAFE_UNLIKELY(options_.track_leases)) {
      GPUSAFE_TRY { track_id = tracker_.track(options_.name, bytes, c.bytes, tag, false); }
      GPUSAFE_CATCH_ALL {
        s.bitmap.give(r.slot);
        notify_waiters(c);
        GPUSAFE_RETHROW;
      }
    }
    if (GPUSAFE_LIKELY(m != nullptr)) {
      bump(m->acquires);
    } else {
      c.acquired.fetch_add(1, std::memory_order_seq_cst);
    }
    BufferLease lease = lease_of(c, ci, s, r.slot, bytes);
    lease.state_.track_id = track_id;
    return lease;
  }

  BufferLease acquire_slow(PoolClass& c, std::uint32_t ci, std::size_t bytes, LeaseTag tag,
                           Mode mode, std::chrono::steady_clock::time_point deadline, Magazine* m);
  bool take_locked(PoolClass& c, SlotRef& r);
  std::string exhausted_message(PoolClass& c, std::size_t bytes) const;
  BufferLease acquire_unusual(std::size_t bytes, LeaseTag tag);
  void check_device_exists() const;
  BufferLease allocate_overflow(PoolClass* c, std::uint32_t ci, std::size_t bytes, LeaseTag tag);
  void release_overflow(void* data, std::size_t bytes, LeaseState& st) noexcept;
  void validate() const;
  void log_outstanding_once() noexcept;
  LeakRecord untracked_record(std::size_t leases, std::size_t bytes) const {
    LeakRecord r;
    r.resource = options_.name;
    r.bytes = bytes;
    r.leases = leases;
    r.age_known = false;
    r.tag = "enable track_leases to see where";
    return r;
  }
  static void add_to_totals(SizeClassStats& t, const SizeClassStats& c) noexcept;

  LeaseTracker tracker_;
  std::atomic<bool> orphaned_{false};
  std::atomic<std::int64_t> life_{1};  // the owners' unit
  mutable std::mutex caches_mutex_;
  ThreadCache* caches_ = nullptr;  // every live cache of this core (caches_mutex_)
  ThreadCache* lost_ = nullptr;    // caches of threads a forked child does not have
  std::atomic<std::uint64_t> oversize_overflow_{0};
  std::atomic<std::size_t> overflow_live_{0};
  std::atomic<std::size_t> overflow_bytes_live_{0};
  LogOnce event_failed_;
  LogOnce report_logged_;
};

}  // namespace detail
GPUSAFE_NAMESPACE_END

#include "gpusafe/detail/pool/core_slow.hpp"

#endif  // GPUSAFE_DETAIL_POOL_CORE_HPP
