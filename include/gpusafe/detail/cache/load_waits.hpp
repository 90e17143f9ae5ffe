// SPDX-License-Identifier: MIT
// gpusafe/detail/cache/load_waits.hpp: where the callers of one ModelCache wait for its loads.
//
// Purpose: a get that misses while another thread loads its key waits for that load; a get whose
// model does not fit beside the room that other loads hold waits until one of them ends. Both
// wait on the cache's LoadBoard, after checking the process-wide wait graph that such a wait can
// end. LoadWaits also knows, under the cache's writer lock, whether anyone waits for a load (the
// joiners it counts in the load, the room waiters it counts here), so that a load nobody waits
// for is published without taking the board's lock or waking anyone.
//
// Thread safety: join(), count_room_waiter() and watched() are called under the cache's writer
// lock; the waits and publish() with no lock of the cache held (the board's lock is a leaf).
// Teardown: holds no resources besides the board's mutex and condition variable, which a forked
// child re-creates (recreate_in_child) before any other use.
#ifndef GPUSAFE_DETAIL_CACHE_LOAD_WAITS_HPP
#define GPUSAFE_DETAIL_CACHE_LOAD_WAITS_HPP

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "gpusafe/config.hpp"
#include "gpusafe/detail/cache/single_flight.hpp"

GPUSAFE_NAMESPACE_BEGIN
namespace detail {

/// The waits of one cache's callers. `LoadOp` derives from LoadOpBase and has a `waiters` count.
template <class LoadOp>
class LoadWaits {
 public:
  LoadWaits() = default;
  LoadWaits(const LoadWaits&) = delete;
  LoadWaits& operator=(const LoadWaits&) = delete;

  /// Under the writer lock: this thread will wait for `op`.
  static void join(LoadOp& op) noexcept { ++op.waiters; }

  /// Under the writer lock: this thread will wait for room (wait_for_room takes it back), and
  /// the generation it waits to change.
  std::uint64_t count_room_waiter() {
    const std::uint64_t seen = board_.generation();
    room_waiters_.fetch_add(1, std::memory_order_relaxed);
    return seen;
  }

  /// Under the writer lock, once no thread can join `op` any more: whether anyone waits for it
  /// or for room.
  bool watched(const LoadOp& op) const noexcept {
    return op.waiters != 0 || room_waiters_.load(std::memory_order_relaxed) != 0;
  }

  /// Waits until `op` is published. Returns null, or, without waiting, the load of this thread
  /// that `op` waits for (directly or through other loads): that wait would never end.
  const LoadOpBase* wait_for_load(const LoadOp& op) {
    LoadWait wait;
    wait.one = &op;
    if (const LoadOpBase* mine = begin_load_wait(std::move(wait))) return mine;
    LoadWaitScope scope;
    board_.wait_done(op);
    return nullptr;
  }

  /// For a thread counted by count_room_waiter(): waits until one of `others` finishes (or any
  /// load did since `seen`), unless every one of them waits, directly or through other waits,
  /// for a load of this thread: then returns false at once, since waiting would never end.
  bool wait_for_room(const std::vector<std::shared_ptr<LoadOp>>& others, std::uint64_t seen) {
    RoomWaiter counted{room_waiters_};
    LoadWait wait;
    wait.any.reserve(others.size());
    for (const auto& op : others) wait.any.push_back(op.get());
    if (begin_load_wait(std::move(wait))) return false;
    LoadWaitScope scope;
    board_.wait_generation(seen);
    return true;
  }

  /// Marks `op` finished; wakes the waiters when watched() said there are any.
  void publish(LoadOp& op, bool watched) noexcept {
    if (watched)
      board_.publish(op);
    else
      board_.publish_unwatched(op);
  }

  /// In a forked child, before any other use.
  void recreate_in_child() noexcept { board_.recreate_in_child(); }

 private:
  struct RoomWaiter {
    std::atomic<std::size_t>& count;
    ~RoomWaiter() { count.fetch_sub(1, std::memory_order_relaxed); }
  };

  LoadBoard board_;  // where the waiters sleep
  std::atomic<std::size_t> room_waiters_{0};
};

}  // namespace detail
GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_CACHE_LOAD_WAITS_HPP
