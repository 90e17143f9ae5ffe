// SPDX-License-Identifier: MIT
// gpusafe/detail/cache/striped_locks.hpp: StripedLocks, the reader/writer locking of ModelCache.
//
// Purpose: lets hits on several threads proceed without contending on one lock or writing one
// shared cache line. A reader (a lookup) takes one of kStripes mutexes, picked per thread, and
// records what it touched in that stripe's small buffer instead of relinking the shared LRU
// list; a writer takes the writer mutex and every stripe in use (in index order) and first
// applies every buffered touch, in order, so the writer sees the recency the readers produced.
// A reader whose buffer is full applies it itself under the touch mutex (taken under its
// stripe, never the other way round).
//
// Stripes in use: a stripe is enrolled (a bit in a mask) the first time a reader uses it, under
// the writer mutex; bits are never cleared. A writer holds the writer mutex for its whole
// section, so the mask cannot grow under it, and it locks only the enrolled stripes: a writer
// of a cache read by one thread takes 2 mutexes instead of kStripes + 0.
//
// Thread safety: every member is safe to call from any thread as documented per function; the
// lock order is the writer mutex, stripes by index, then the touch mutex (a reader enrolling
// takes the writer mutex alone, before its stripe). The owner's data guarded "by the writer"
// may be read under any one entered stripe and written only under lock_all().
//
// Teardown: holds no resources besides its mutexes. Around fork() the owner (a ForkAware) calls
// lock_for_fork()/unlock_after_fork(), and recreate_in_child() in the child; buffered touches
// stay valid there (the nodes are the child's copy).
#ifndef GPUSAFE_DETAIL_CACHE_STRIPED_LOCKS_HPP
#define GPUSAFE_DETAIL_CACHE_STRIPED_LOCKS_HPP

#include <atomic>
#include <cstdint>
#include <limits>
#include <mutex>
#include <new>

#include "gpusafe/config.hpp"

GPUSAFE_NAMESPACE_BEGIN
namespace detail {

/// The stripe a thread uses for lookups; fixed per thread (1-based counter, never 0).
inline unsigned striped_lock_thread_slot() noexcept {
  static std::atomic<unsigned> next{0};
  // Constant-initialised, so reading it needs no TLS guard call; 0 = not assigned yet.
  static thread_local unsigned slot = 0;
  if (GPUSAFE_UNLIKELY(slot == 0)) slot = next.fetch_add(1, std::memory_order_relaxed) + 1;
  return slot;
}

/// kStripes reader mutexes with per-stripe touch buffers of `Node*` and hit counters.
template <class Node, unsigned kStripes = 16, unsigned kTouchCapacity = 64>
class StripedLocks {
  static_assert(kStripes > 0 && kTouchCapacity > 0, "at least one stripe and one touch");
  static_assert(kStripes <= std::numeric_limits<std::uint64_t>::digits, "one mask bit a stripe");

 public:
  static constexpr unsigned stripes = kStripes;

  struct alignas(64) Stripe {
    std::mutex mutex;
    std::uint64_t hits = 0;  // guarded by mutex
    unsigned touched = 0;    // guarded by mutex
    Node* touches[kTouchCapacity] = {};
  };

  StripedLocks() = default;
  StripedLocks(const StripedLocks&) = delete;
  StripedLocks& operator=(const StripedLocks&) = delete;

  /// This thread's stripe (not locked, maybe not enrolled).
  Stripe& mine() noexcept { return stripes_[index_of_this_thread()]; }

  /// Enrols (once) and locks this thread's stripe; the reader side. Release with leave().
  Stripe& enter() {
    const unsigned i = index_of_this_thread();
    const std::uint64_t bit = std::uint64_t{1} << i;
    if (GPUSAFE_UNLIKELY((enrolled_.load(std::memory_order_acquire) & bit) == 0)) {
      std::lock_guard<std::mutex> w(writer_);  // no writer runs while the mask grows
      enrolled_.fetch_or(bit, std::memory_order_acq_rel);
    }
    Stripe& s = stripes_[i];
    s.mutex.lock();
    return s;
  }
  void leave(Stripe& s) noexcept { s.mutex.unlock(); }

  /// Holds this thread's stripe for its lifetime (see enter()).
  class Reader {
   public:
    explicit Reader(StripedLocks& locks) : locks_(locks), stripe_(locks.enter()) {}
    ~Reader() { locks_.leave(stripe_); }
    Reader(const Reader&) = delete;
    Reader& operator=(const Reader&) = delete;
    Stripe& stripe() const noexcept { return stripe_; }

   private:
    StripedLocks& locks_;
    Stripe& stripe_;
  };

  /// Under `s.mutex`: counts a hit and records that `n` was used. When the buffer is full, first
  /// applies it (apply(Node&) for each recorded node, oldest first) under the touch mutex.
  /// A repeat of the last recorded node is not recorded again.
  template <class Apply>
  void touch(Stripe& s, Node* n, Apply&& apply) {
    if (s.touched != 0 && s.touches[s.touched - 1] == n) return;
    if (GPUSAFE_UNLIKELY(s.touched == kTouchCapacity)) {
      std::lock_guard<std::mutex> guard(touch_mutex_);
      drain(s, apply);
    }
    s.touches[s.touched++] = n;
  }

  /// The writer side: takes the writer mutex and every enrolled stripe in index order, then
  /// applies every buffered touch (stripe by stripe). Excludes every reader and writer.
  template <class Apply>
  void lock_all(Apply&& apply) {
    writer_.lock();
    const std::uint64_t mask = enrolled_.load(std::memory_order_relaxed);  // fixed while held
    for (std::uint64_t m = mask; m != 0; m &= m - 1) stripes_[lowest_index(m)].mutex.lock();
    for (std::uint64_t m = mask; m != 0; m &= m - 1) drain(stripes_[lowest_index(m)], apply);
  }

  /// Releases what lock_all() took.
  void unlock_all() noexcept {
    const std::uint64_t mask = enrolled_.load(std::memory_order_relaxed);
    for (std::uint64_t m = mask; m != 0; m &= m - 1) stripes_[lowest_index(m)].mutex.unlock();
    writer_.unlock();
  }

  /// How many stripes readers have used so far.
  unsigned enrolled_stripes() const noexcept {
    unsigned n = 0;
    for (std::uint64_t m = enrolled_.load(std::memory_order_acquire); m != 0; m &= m - 1) ++n;
    return n;
  }

  /// Under all stripes: the hits counted by readers and writers.
  std::uint64_t hits() const noexcept {
    std::uint64_t n = writer_hits_;
    for (const auto& s : stripes_) n += s.hits;
    return n;
  }
  /// Under lock_all(): counts a hit seen by a writer.
  void count_hit_exclusive() noexcept { ++writer_hits_; }

  /// fork() support: the parent's forking thread holds every lock across fork().
  void lock_for_fork() noexcept {
    writer_.lock();
    for (auto& s : stripes_) s.mutex.lock();
    touch_mutex_.lock();
  }
  void unlock_after_fork() noexcept {
    touch_mutex_.unlock();
    for (unsigned i = kStripes; i-- > 0;) stripes_[i].mutex.unlock();
    writer_.unlock();
  }
  /// In the child: fresh, unlocked mutexes (the copies may be held by threads that are gone).
  void recreate_in_child() noexcept {
    new (&writer_) std::mutex();
    for (auto& s : stripes_) new (&s.mutex) std::mutex();
    new (&touch_mutex_) std::mutex();
  }

 private:
  static unsigned index_of_this_thread() noexcept { return striped_lock_thread_slot() % kStripes; }

  // The index of the lowest set bit of `m` (not 0): walking the stripes in use in index order.
  static unsigned lowest_index(std::uint64_t m) noexcept {
#if defined(__GNUC__) || defined(__clang__)
    return static_cast<unsigned>(__builtin_ctzll(m));
#else
    unsigned i = 0;
    for (; (m & 1) == 0; m >>= 1) ++i;
    return i;
#endif
  }

  template <class Apply>
  static void drain(Stripe& s, Apply& apply) {
    for (unsigned i = 0; i < s.touched; ++i) apply(*s.touches[i]);
    s.touched = 0;
  }

  Stripe stripes_[kStripes];
  alignas(64) std::atomic<std::uint64_t> enrolled_{0};  // read by every reader, rarely written
  alignas(64) std::mutex writer_;  // held by writers, and by a reader enrolling its stripe
  std::uint64_t writer_hits_ = 0;  // guarded by writer_
  std::mutex touch_mutex_;         // taken under one stripe to apply that stripe's touches
};

}  // namespace detail
GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_CACHE_STRIPED_LOCKS_HPP
