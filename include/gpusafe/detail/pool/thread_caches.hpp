// SPDX-License-Identifier: MIT
// gpusafe/detail/pool/thread_caches.hpp: PoolThreadCaches<Runtime>, the part of the pool core that
// manages its per-thread caches: making a thread's cache, the list of every live cache (summed by
// stats()), refilling a magazine from the slabs' bitmaps and flushing it back, folding a retired
// cache's counters into the class totals, and, in a forked child, reclaiming the caches of the
// parent's other threads. The thread-local table that finds a thread's cache is in
// gpusafe/detail/pool/free_slots.hpp; the core's lifetime count stays in PoolCore.
//
// Thread safety: a cache's magazines are used by its own thread only; the list changes and is read
// under `caches_mutex_`. Taking from and giving to the bitmaps is lock-free (SlotBitmap).
//
// Teardown: a cache is flushed, folded and unlinked when its thread exits or its entry is evicted
// (PoolCore::retire_thread_cache). Caches reclaimed in a forked child are kept on a list and freed
// with the core, since a fork handler makes no allocator call.
#ifndef GPUSAFE_DETAIL_POOL_THREAD_CACHES_HPP
#define GPUSAFE_DETAIL_POOL_THREAD_CACHES_HPP

#include <pthread.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

#include "gpusafe/config.hpp"
#include "gpusafe/detail/pool/free_slots.hpp"
#include "gpusafe/detail/pool/options.hpp"
#include "gpusafe/detail/pool/slab.hpp"

GPUSAFE_NAMESPACE_BEGIN
namespace detail {

/// The thread-cache part of PoolCore<Runtime> (above its slabs).
template <class Runtime>
class PoolThreadCaches : protected PoolSlabs<Runtime> {
  using Slabs = PoolSlabs<Runtime>;

 protected:
  explicit PoolThreadCaches(BufferPoolOptions options) : Slabs(std::move(options)) {}
  ~PoolThreadCaches() {
    while (ThreadCache* tc = lost_) {
      lost_ = tc->next;
      delete tc;
    }
  }
  PoolThreadCaches(const PoolThreadCaches&) = delete;
  PoolThreadCaches& operator=(const PoolThreadCaches&) = delete;

  // ---- the cache list ------------------------------------------------------------------------

  /// A new cache of `owner` for this thread, with each class's magazine capacity; null when out
  /// of memory. Not linked yet.
  ThreadCache* new_thread_cache(PoolCacheOwner* owner) noexcept {
    ThreadCache* tc = nullptr;
    GPUSAFE_TRY { tc = new ThreadCache(owner, this->nclasses_); }
    GPUSAFE_CATCH_ALL { return nullptr; }
    for (std::size_t i = 0; i < this->nclasses_; ++i)
      tc->magazine(i).capacity = this->classes_[i].cache_capacity;
    return tc;
  }

  void link_thread_cache(ThreadCache* tc) noexcept {
    std::lock_guard<std::mutex> lock(caches_mutex_);
    link(tc);
  }

  /// Flushes the cache's slots back, folds its counters into the class totals, unlinks and
  /// deletes it.
  void free_thread_cache(ThreadCache* tc) noexcept {
    flush_all(*tc);
    {
      std::lock_guard<std::mutex> lock(caches_mutex_);
      fold_counters(*tc);
      unlink(tc);
    }
    delete tc;
  }

  /// Adds every live cache's counts of class i to acquired[i] and released[i], and its cached
  /// slots to cached[i], then the folded class totals to the first two (under the list's lock).
  void sum_counters(std::vector<std::uint64_t>& acquired, std::vector<std::uint64_t>& released,
                    std::vector<std::size_t>& cached) const {
    std::lock_guard<std::mutex> lock(caches_mutex_);
    for (const ThreadCache* tc = caches_; tc; tc = tc->next) {
      for (std::size_t i = 0; i < this->nclasses_; ++i) {
        const Magazine& m = tc->magazine(i);
        acquired[i] += m.acquires.load(std::memory_order_relaxed);
        released[i] += m.releases.load(std::memory_order_relaxed);
        cached[i] += m.count();
      }
    }
    for (std::size_t i = 0; i < this->nclasses_; ++i) {
      acquired[i] += this->classes_[i].acquired.load(std::memory_order_relaxed);
      released[i] += this->classes_[i].released.load(std::memory_order_relaxed);
    }
  }

  /// Exact once no thread cache is left (every count folded): some lease is out.
  bool leases_out() const noexcept {
    std::uint64_t acquired = 0, released = 0;
    for (std::size_t i = 0; i < this->nclasses_; ++i) {
      acquired += this->classes_[i].acquired.load(std::memory_order_seq_cst);
      released += this->classes_[i].released.load(std::memory_order_seq_cst);
    }
    return acquired != released;
  }

  // ---- fork ----------------------------------------------------------------------------------

  void lock_caches() noexcept { caches_mutex_.lock(); }
  void unlock_caches() noexcept { caches_mutex_.unlock(); }

  /// In a forked child: the caches of the parent's other threads are unreachable; their slots go
  /// back to the bitmaps, their counts to the totals. Re-creates the list's lock first. Returns
  /// how many caches were reclaimed (the caller gives up their lifetime units).
  std::int64_t reclaim_lost_caches_in_child() noexcept {
    new (&caches_mutex_) std::mutex();
    const pthread_t self = ::pthread_self();
    std::int64_t lost = 0;
    for (ThreadCache* tc = caches_; tc;) {
      ThreadCache* next = tc->next;
      if (!::pthread_equal(tc->thread(), self)) {
        flush_all(*tc);
        fold_counters(*tc);
        unlink(tc);
        tc->next = lost_;  // freed with the core: no allocator call in a fork handler
        lost_ = tc;
        ++lost;
      }
      tc = next;
    }
    return lost;
  }

  // ---- taking and giving slots ---------------------------------------------------------------

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

  /// Gives `n` slots of the magazine back to the bitmaps (stale ones are forgotten).
  void flush(PoolClass& c, Magazine& m, std::uint32_t n) noexcept {
    for (; n != 0 && m.count() != 0; --n) {
      const SlotRef r = m.pop();
      PoolSlab& s = *static_cast<PoolSlab*>(r.slab);
      if (!this->slab_is_stale(s)) s.bitmap.give(r.slot);
    }
    Slabs::notify_waiters(c);
  }

  void flush_all(ThreadCache& tc) noexcept {
    for (std::size_t i = 0; i < this->nclasses_; ++i) {
      Magazine& m = tc.magazine(i);
      if (m.count() != 0) flush(this->classes_[i], m, m.count());
    }
  }

 private:
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
    for (std::size_t i = 0; i < this->nclasses_; ++i) {
      this->classes_[i].acquired.fetch_add(tc.magazine(i).acquires.load(std::memory_order_relaxed),
                                           std::memory_order_seq_cst);
      this->classes_[i].released.fetch_add(tc.magazine(i).releases.load(std::memory_order_relaxed),
                                           std::memory_order_seq_cst);
    }
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

  mutable std::mutex caches_mutex_;
  ThreadCache* caches_ = nullptr;  // every live cache of this core (caches_mutex_)
  ThreadCache* lost_ = nullptr;    // caches of threads a forked child does not have
};

}  // namespace detail
GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_POOL_THREAD_CACHES_HPP
