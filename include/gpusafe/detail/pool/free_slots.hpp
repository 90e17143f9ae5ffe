// SPDX-License-Identifier: MIT
// gpusafe/detail/pool/free_slots.hpp: the free-slot structure of BufferPool: a shared bitmap of
// atomic 64-bit words per slab, and in front of it per-thread magazines (small stacks of free
// slots per size class) kept in a thread-local table.
//
// Thread safety: SlotBitmap may be used from any thread at once (one CAS takes up to a batch of
// slots of one word, one fetch_or gives slots back). A Magazine and a ThreadCache belong to one
// thread; other threads only read their counters (relaxed atomics) for statistics.
//
// Teardown: the thread-local table flushes every cache back to its owner when the thread exits
// (including the main thread at process exit); after that, lookups return null and callers take
// the shared path. The owner (the pool core) is reached through PoolCacheOwner and stays alive
// while a thread caches for it (each ThreadCache holds one unit of the core's lifetime count).
#ifndef GPUSAFE_DETAIL_POOL_FREE_SLOTS_HPP
#define GPUSAFE_DETAIL_POOL_FREE_SLOTS_HPP

#include <pthread.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "gpusafe/config.hpp"

#if defined(__GNUC__) || defined(__clang__)
#define GPUSAFE_POOL_INLINE inline __attribute__((always_inline))
#define GPUSAFE_POOL_NOINLINE __attribute__((noinline))
#else
#define GPUSAFE_POOL_INLINE inline
#define GPUSAFE_POOL_NOINLINE
#endif

GPUSAFE_NAMESPACE_BEGIN
namespace detail {

constexpr std::size_t kPoolCacheLine = 64;
/// Most slots one thread caches per size class.
constexpr std::uint32_t kMagazineMax = 16;
/// Pools one thread keeps caches for at once; the least recently used is flushed beyond that.
constexpr std::uint32_t kThreadCacheEntries = 8;

/// The free bits of the `count` slots of a slab that live in word `w`.
inline std::uint64_t word_mask(std::size_t count, std::uint32_t w) noexcept {
  const std::size_t first = static_cast<std::size_t>(w) * 64;
  const std::size_t n = count - first >= 64 ? 64 : count - first;
  return n == 64 ? ~std::uint64_t{0} : ((std::uint64_t{1} << n) - 1);
}

inline int popcount64(std::uint64_t v) noexcept {
#if defined(__POPCNT__) && (defined(__GNUC__) || defined(__clang__))
  return __builtin_popcountll(v);
#else
  // Without -mpopcnt the builtin is a library call; this stays inline.
  v = v - ((v >> 1) & 0x5555555555555555ull);
  v = (v & 0x3333333333333333ull) + ((v >> 2) & 0x3333333333333333ull);
  v = (v + (v >> 4)) & 0x0f0f0f0f0f0f0f0full;
  return static_cast<int>((v * 0x0101010101010101ull) >> 56);
#endif
}

inline int ctz64(std::uint64_t v) noexcept {
#if defined(__GNUC__) || defined(__clang__)
  return __builtin_ctzll(v);
#else
  int n = 0;
  while (!(v & 1)) {
    v >>= 1;
    ++n;
  }
  return n;
#endif
}

/// The `n` lowest set bits of `v` (all of them when it has fewer).
inline std::uint64_t lowest_bits(std::uint64_t v, std::uint32_t n) noexcept {
  std::uint64_t out = 0;
  for (; v && n; --n) {
    const std::uint64_t bit = v & (~v + 1);
    out |= bit;
    v &= v - 1;
  }
  return out;
}

/// Spreads threads over the words of a bitmap; never 0.
inline std::uint32_t thread_hint() noexcept {
  static std::atomic<std::uint32_t> counter{0};
  static thread_local std::uint32_t hint = 0;
  if (GPUSAFE_UNLIKELY(hint == 0))
    hint = (counter.fetch_add(1, std::memory_order_relaxed) * 2654435761u) | 1u;
  return hint;
}

/// One 64-slot group: bit set in `free_bits` = slot free; bit set in `pending` = an event was
/// recorded at the slot's last release. One cache line per word.
struct alignas(kPoolCacheLine) PoolWord {
  std::atomic<std::uint64_t> free_bits{0};
  std::atomic<std::uint64_t> pending{0};
};

/// The shared free slots of one slab. Exact capacity, no ABA (bits, not pointers).
class SlotBitmap {
 public:
  /// Sizes the bitmap for `count` slots, all closed (taken). Throws std::bad_alloc.
  void init(std::size_t count) {
    count_ = count;
    nwords_ = static_cast<std::uint32_t>((count + 63) / 64);
    words_.reset(new PoolWord[nwords_]);
  }
  std::size_t count() const noexcept { return count_; }
  std::uint32_t nwords() const noexcept { return nwords_; }
  PoolWord& word(std::uint32_t w) noexcept { return words_[w]; }

  /// Opens every slot, none pending (a fresh or re-allocated slab).
  void open_all() noexcept {
    for (std::uint32_t w = 0; w < nwords_; ++w) {
      words_[w].pending.store(0, std::memory_order_relaxed);
      words_[w].free_bits.store(word_mask(count_, w), std::memory_order_seq_cst);
    }
  }
  /// Reopens every slot, keeping the pending marks (undoes close_if_all_free).
  void reopen_all() noexcept {
    for (std::uint32_t w = 0; w < nwords_; ++w)
      words_[w].free_bits.fetch_or(word_mask(count_, w), std::memory_order_seq_cst);
  }
  /// Closes every slot for good (a retired slab).
  void close_all() noexcept {
    for (std::uint32_t w = 0; w < nwords_; ++w)
      words_[w].free_bits.store(0, std::memory_order_seq_cst);
  }
  /// Closes every slot if all are free; otherwise changes nothing and returns false.
  bool close_if_all_free() noexcept {
    std::uint32_t closed = 0;
    for (; closed < nwords_; ++closed) {
      std::uint64_t expected = word_mask(count_, closed);
      if (!words_[closed].free_bits.compare_exchange_strong(expected, 0, std::memory_order_acq_rel))
        break;
    }
    if (closed == nwords_) return true;
    for (std::uint32_t w = 0; w < closed; ++w)
      words_[w].free_bits.fetch_or(word_mask(count_, w), std::memory_order_seq_cst);
    return false;
  }

  /// Takes up to `max` free slots into `out` (one CAS per word visited), starting at the
  /// thread's word. A slot marked pending is taken only when idle(slot) says its stream work has
  /// finished (its pending mark is then cleared). Returns how many were taken.
  template <class Idle>
  std::uint32_t take(std::uint32_t max, std::uint32_t* out, Idle&& idle) noexcept {
    std::uint32_t got = 0;
    std::uint32_t w = nwords_ == 1 ? 0 : thread_hint() % nwords_;
    for (std::uint32_t i = 0; i < nwords_ && got < max; ++i, w = (w + 1 == nwords_ ? 0 : w + 1))
      got += take_from_word(w, max - got, out + got, idle);
    return got;
  }

  /// Gives one slot back (seq_cst: pairs with a waiter's scan).
  void give(std::uint32_t slot) noexcept {
    words_[slot / 64].free_bits.fetch_or(std::uint64_t{1} << (slot % 64),
                                         std::memory_order_seq_cst);
  }
  /// Gives slots of one word back at once.
  void give_bits(std::uint32_t w, std::uint64_t bits) noexcept {
    words_[w].free_bits.fetch_or(bits, std::memory_order_seq_cst);
  }
  /// Marks a slot pending (an event was recorded at its release), before giving it back.
  void mark_pending(std::uint32_t slot) noexcept {
    words_[slot / 64].pending.fetch_or(std::uint64_t{1} << (slot % 64), std::memory_order_relaxed);
  }

  std::size_t free_count() const noexcept {
    std::size_t n = 0;
    for (std::uint32_t w = 0; w < nwords_; ++w)
      n +=
          static_cast<std::size_t>(popcount64(words_[w].free_bits.load(std::memory_order_relaxed)));
    return n;
  }
  /// Free slots whose release event may still be pending.
  std::size_t pending_count() const noexcept {
    std::size_t n = 0;
    for (std::uint32_t w = 0; w < nwords_; ++w)
      n += static_cast<std::size_t>(popcount64(words_[w].free_bits.load(std::memory_order_relaxed) &
                                               words_[w].pending.load(std::memory_order_relaxed)));
    return n;
  }
  /// Whether a free slot without a pending mark is visible (seq_cst: a waiter's scan).
  bool idle_slot_visible() const noexcept {
    for (std::uint32_t w = 0; w < nwords_; ++w) {
      const std::uint64_t f = words_[w].free_bits.load(std::memory_order_seq_cst);
      if ((f & ~words_[w].pending.load(std::memory_order_seq_cst)) != 0) return true;
    }
    return false;
  }

 private:
  template <class Idle>
  std::uint32_t take_from_word(std::uint32_t w, std::uint32_t max, std::uint32_t* out,
                               Idle& idle) noexcept {
    std::atomic<std::uint64_t>& word = words_[w].free_bits;
    std::uint64_t v = word.load(std::memory_order_relaxed);
    std::uint64_t skip = 0;
    while ((v & ~skip) != 0) {
      const std::uint64_t pending = words_[w].pending.load(std::memory_order_relaxed);
      const std::uint64_t plain = v & ~skip & ~pending;
      if (plain != 0) {
        const std::uint64_t batch = lowest_bits(plain, max);
        if (!word.compare_exchange_weak(v, v & ~batch, std::memory_order_acquire,
                                        std::memory_order_relaxed))
          continue;
        std::uint32_t n = 0;
        for (std::uint64_t b = batch; b; b &= b - 1)
          out[n++] = w * 64 + static_cast<std::uint32_t>(ctz64(b));
        return n;
      }
      // Only slots with a pending release event are left: take one, ask whether it is idle.
      const std::uint64_t cand = v & ~skip;
      const std::uint64_t bit = cand & (~cand + 1);
      if (!word.compare_exchange_weak(v, v & ~bit, std::memory_order_acquire,
                                      std::memory_order_relaxed))
        continue;
      const std::uint32_t slot = w * 64 + static_cast<std::uint32_t>(ctz64(bit));
      if ((words_[w].pending.load(std::memory_order_relaxed) & bit) != 0) {
        if (!idle(slot)) {
          // Stream work still pending (or the query failed): give it back, try another.
          v = word.fetch_or(bit, std::memory_order_release) | bit;
          skip |= bit;
          continue;
        }
        words_[w].pending.fetch_and(~bit, std::memory_order_relaxed);
      }
      out[0] = slot;
      return 1;
    }
    return 0;
  }

  std::unique_ptr<PoolWord[]> words_;
  std::size_t count_ = 0;
  std::uint32_t nwords_ = 0;
};

/// A cached free slot: its slab (opaque here) and index.
struct SlotRef {
  void* slab = nullptr;
  std::uint32_t slot = 0;
};

/// Adds one to a counter that only its owning thread writes (no locked instruction).
inline void bump(std::atomic<std::uint64_t>& counter) noexcept {
  counter.store(counter.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

/// One thread's free slots of one size class, and its acquire/release counts of that class.
/// Written by the owning thread only; `size` and the counters are read by stats(). Cache-line
/// aligned, so that two threads' magazines never share a line.
struct alignas(kPoolCacheLine) Magazine {
  std::atomic<std::uint32_t> size{0};
  std::uint32_t capacity = 0;  // 0: caching off for the class
  std::atomic<std::uint64_t> acquires{0};
  std::atomic<std::uint64_t> releases{0};
  SlotRef slots[kMagazineMax];

  std::uint32_t count() const noexcept { return size.load(std::memory_order_relaxed); }
  bool full() const noexcept { return count() >= capacity; }
  // The magazine owns a slot only once `size` covers it, and gives it up before it goes elsewhere:
  // a fork between the two steps loses a slot at worst, never hands one out twice.
  void push(void* slab, std::uint32_t slot) noexcept {
    const std::uint32_t n = count();
    slots[n].slab = slab;
    slots[n].slot = slot;
    size.store(n + 1, std::memory_order_relaxed);
  }
  SlotRef pop() noexcept {
    const std::uint32_t n = count() - 1;
    const SlotRef r = slots[n];
    size.store(n, std::memory_order_relaxed);
    return r;
  }
};

class ThreadCache;

/// What a thread-local table needs from the core that owns a cache.
class PoolCacheOwner {
 public:
  /// Flushes the cache's slots back, folds its counters into the core's, unlinks and deletes it,
  /// and releases the core's lifetime unit it held (which may delete the core). Never throws.
  virtual void retire_thread_cache(ThreadCache* cache) noexcept = 0;
  /// True once the owning pool object died (its caches are then dropped at the next lookup).
  virtual bool cache_owner_orphaned() const noexcept = 0;

 protected:
  ~PoolCacheOwner() = default;
};

/// One thread's caches for one pool core: a magazine per size class. Linked into the core's list
/// (under the core's lock) so that stats() can sum the counters.
class ThreadCache {
 public:
  ThreadCache(PoolCacheOwner* owner, std::size_t nclasses)
      : owner_(owner),
        mags_(new Magazine[nclasses]),
        nclasses_(nclasses),
        thread_(::pthread_self()) {}
  PoolCacheOwner* owner() const noexcept { return owner_; }
  Magazine& magazine(std::size_t cls) noexcept { return mags_[cls]; }
  const Magazine& magazine(std::size_t cls) const noexcept { return mags_[cls]; }
  std::size_t nclasses() const noexcept { return nclasses_; }
  /// The thread that owns it (a forked child keeps only the forking thread's caches).
  pthread_t thread() const noexcept { return thread_; }

  ThreadCache* prev = nullptr;  // the core's list
  ThreadCache* next = nullptr;

 private:
  PoolCacheOwner* owner_;
  std::unique_ptr<Magazine[]> mags_;
  std::size_t nclasses_;
  pthread_t thread_;
};

/// This thread's caches, most recently used first. Trivially destructible, so that it may be read
/// after the thread's thread-local destructors ran (then `dead` is set and nothing is cached).
struct ThreadCacheTable {
  struct Entry {
    const PoolCacheOwner* owner;
    ThreadCache* cache;
  };
  Entry entries[kThreadCacheEntries];
  std::uint32_t size;
  bool dead;
  bool armed;
};

inline ThreadCacheTable& thread_cache_table() noexcept {
  static thread_local ThreadCacheTable table{};
  return table;
}

/// Removes entry `i` of the table and retires its cache (the owner may die in the call).
inline void evict_thread_cache(ThreadCacheTable& t, std::uint32_t i) noexcept {
  ThreadCache* cache = t.entries[i].cache;
  for (std::uint32_t k = i + 1; k < t.size; ++k) t.entries[k - 1] = t.entries[k];
  --t.size;
  cache->owner()->retire_thread_cache(cache);
}

/// Flushes every cache of the thread when it exits.
struct ThreadCacheReaper {
  ~ThreadCacheReaper() {
    ThreadCacheTable& t = thread_cache_table();
    t.dead = true;
    while (t.size != 0) evict_thread_cache(t, t.size - 1);
  }
};

/// Looks beyond the most recently used entry; moves the one found to the front.
GPUSAFE_POOL_NOINLINE inline ThreadCache* find_thread_cache_slow(
    const PoolCacheOwner* owner) noexcept {
  ThreadCacheTable& t = thread_cache_table();
  for (std::uint32_t i = 1; i < t.size; ++i) {
    if (t.entries[i].owner != owner) continue;
    const ThreadCacheTable::Entry e = t.entries[i];
    for (std::uint32_t k = i; k > 0; --k) t.entries[k] = t.entries[k - 1];
    t.entries[0] = e;
    return e.cache;
  }
  return nullptr;
}

/// The cache of `owner` on this thread, or null (none yet, or the thread is ending).
GPUSAFE_POOL_INLINE ThreadCache* find_thread_cache(const PoolCacheOwner* owner) noexcept {
  ThreadCacheTable& t = thread_cache_table();
  if (GPUSAFE_LIKELY(t.size != 0 && t.entries[0].owner == owner)) return t.entries[0].cache;
  return find_thread_cache_slow(owner);
}

/// Adds `cache` (made by `owner`, holding a lifetime unit of it) to this thread's table; drops
/// entries of dead pools and the least recently used one when full. Returns false (the caller
/// then retires the cache itself) when the thread is ending.
inline bool insert_thread_cache(ThreadCache* cache) noexcept {
  ThreadCacheTable& t = thread_cache_table();
  if (t.dead) return false;
  if (!t.armed) {
    GPUSAFE_TRY {
      static thread_local ThreadCacheReaper reaper;  // registers the thread-exit flush
      (void)&reaper;
    }
    GPUSAFE_CATCH_ALL { return false; }
    t.armed = true;
  }
  for (std::uint32_t i = t.size; i-- > 0;)
    if (t.entries[i].cache->owner()->cache_owner_orphaned()) evict_thread_cache(t, i);
  if (t.size == kThreadCacheEntries) evict_thread_cache(t, t.size - 1);
  for (std::uint32_t k = t.size; k > 0; --k) t.entries[k] = t.entries[k - 1];
  t.entries[0] = {cache->owner(), cache};
  ++t.size;
  return true;
}

/// Retires this thread's cache of `owner`, if any (the owner may die in the call).
inline void drop_thread_cache(const PoolCacheOwner* owner) noexcept {
  ThreadCacheTable& t = thread_cache_table();
  for (std::uint32_t i = 0; i < t.size; ++i) {
    if (t.entries[i].owner == owner) {
      evict_thread_cache(t, i);
      return;
    }
  }
}

}  // namespace detail
GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_POOL_FREE_SLOTS_HPP
