// gpusafe/detail/cache/striped_locks.hpp: StripedLocks, the reader/writer locking of ModelCache.
//
// Purpose: lets hits on several threads proceed without contending on one lock or writing one
// shared cache line. A reader (a lookup) takes one of kStripes mutexes, picked per thread, and
// records what it touched in that stripe's small buffer instead of relinking the shared LRU
// list; a writer takes every stripe (in index order) and first applies every buffered touch, in
// order, so the writer sees the recency the readers produced. A reader whose buffer is full
// applies it itself under the touch mutex (taken under its stripe, never the other way round).
//
// Thread safety: every member is safe to call from any thread as documented per function; the
// lock order is stripes by index, then the touch mutex. The owner's data guarded "by all
// stripes" may be read under any one stripe and written only under all of them.
//
// Teardown: holds no resources besides its mutexes. Around fork() the owner (a ForkAware) calls
// lock_for_fork()/unlock_after_fork(), and recreate_in_child() in the child; buffered touches
// stay valid there (the nodes are the child's copy).
#ifndef GPUSAFE_DETAIL_CACHE_STRIPED_LOCKS_HPP
#define GPUSAFE_DETAIL_CACHE_STRIPED_LOCKS_HPP

#include <atomic>
#include <cstdint>
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

  /// This thread's stripe (not locked).
  Stripe& mine() noexcept { return stripes_[striped_lock_thread_slot() % kStripes]; }

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

  /// Takes every stripe in index order, then applies every buffered touch (stripe by stripe).
  template <class Apply>
  void lock_all(Apply&& apply) {
    for (auto& s : stripes_) s.mutex.lock();
    for (auto& s : stripes_) drain(s, apply);
  }

  /// Releases every stripe (reverse order).
  void unlock_all() noexcept {
    for (unsigned i = kStripes; i-- > 0;) stripes_[i].mutex.unlock();
  }

  /// Under all stripes: the hits counted by readers and writers.
  std::uint64_t hits() const noexcept {
    std::uint64_t n = 0;
    for (const auto& s : stripes_) n += s.hits;
    return n;
  }
  /// Under all stripes: counts a hit seen by a writer.
  void count_hit_exclusive() noexcept { ++stripes_[0].hits; }

  /// fork() support: the parent's forking thread holds every lock across fork().
  void lock_for_fork() noexcept {
    for (auto& s : stripes_) s.mutex.lock();
    touch_mutex_.lock();
  }
  void unlock_after_fork() noexcept {
    touch_mutex_.unlock();
    unlock_all();
  }
  /// In the child: fresh, unlocked mutexes (the copies may be held by threads that are gone).
  void recreate_in_child() noexcept {
    for (auto& s : stripes_) new (&s.mutex) std::mutex();
    new (&touch_mutex_) std::mutex();
  }

 private:
  template <class Apply>
  static void drain(Stripe& s, Apply& apply) {
    for (unsigned i = 0; i < s.touched; ++i) apply(*s.touches[i]);
    s.touched = 0;
  }

  Stripe stripes_[kStripes];
  std::mutex touch_mutex_;  // taken under one stripe to apply that stripe's touches
};

}  // namespace detail
GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_CACHE_STRIPED_LOCKS_HPP
