// SPDX-License-Identifier: MIT
// gpusafe/detail/cache/single_flight.hpp: the single-flight load machinery of ModelCache.
//
// Purpose: one thread runs a key's loader while the other threads that want the key wait for it
// (LoadBoard), and a thread about to wait first checks that the wait can end (LoadWaitGraph):
// loaders that need each other, across threads and caches, fail instead of waiting forever.
// LoadFrame records, per thread, the loads running on it (nested gets inside loaders), so that a
// nested get neither waits for budget room its own outer load holds nor for itself.
//
// Thread safety: LoadBoard and the wait graph are safe from any thread; each has one leaf mutex,
// never held while taking another lock of the library (so fork()'s handler, which takes every
// fork-aware lock, cannot deadlock with them). LoadFrame stacks are thread-local.
//
// Teardown: the wait graph is a never-destroyed singleton (NoDestructor) so that loads waiting
// during static destruction still find it. In a forked child the graph is emptied (its waiting
// threads do not exist there) and a LoadBoard's mutex and condition variable are rebuilt by its
// owner (recreate_in_child).
#ifndef GPUSAFE_DETAIL_CACHE_SINGLE_FLIGHT_HPP
#define GPUSAFE_DETAIL_CACHE_SINGLE_FLIGHT_HPP

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "gpusafe/config.hpp"
#include "gpusafe/detail/no_destructor.hpp"
#include "gpusafe/detail/thread_annotations.hpp"
#include "gpusafe/lifecycle.hpp"

GPUSAFE_NAMESPACE_BEGIN
namespace detail {

/// What every in-flight load shares, so that a thread about to wait for a load can follow who
/// waits for whom across caches (see begin_load_wait).
struct LoadOpBase {
  const std::thread::id owner = std::this_thread::get_id();  // the thread running the loader
  std::atomic<bool> finished{false};  // published, or abandoned in a forked child
  bool done = false;                  // guarded by the LoadBoard's mutex
};

/// One load running on this thread (the frames form a stack through nested gets in loaders).
struct LoadFrame {
  const void* owner;  // the cache core that runs the load
  std::size_t reserved;
  LoadFrame* outer;
  const LoadOpBase* op;
  const void* key;
  std::string (*describe)(const void* key);  // describes `key` for messages
};

inline LoadFrame*& load_frames() noexcept {
  static thread_local LoadFrame* top = nullptr;
  return top;
}

/// Pushes a frame on this thread's load stack for its lifetime.
class LoadFrameScope {
 public:
  LoadFrameScope(const void* owner, std::size_t reserved, const LoadOpBase& op, const void* key,
                 std::string (*describe)(const void*)) noexcept
      : frame_{owner, reserved, load_frames(), &op, key, describe} {
    load_frames() = &frame_;
  }
  ~LoadFrameScope() { load_frames() = frame_.outer; }
  LoadFrameScope(const LoadFrameScope&) = delete;
  LoadFrameScope& operator=(const LoadFrameScope&) = delete;

 private:
  LoadFrame frame_;
};

/// Bytes reserved against `owner` by loads running on this thread, which a nested get must not
/// wait for: they end only after it returns.
inline std::size_t own_load_reservations(const void* owner) noexcept {
  std::size_t sum = 0;
  for (auto* f = load_frames(); f; f = f->outer)
    if (f->owner == owner) sum += f->reserved;
  return sum;
}

/// This thread's frame of the load `op`, or null.
inline const LoadFrame* load_frame_of(const LoadOpBase* op) noexcept {
  for (auto* f = load_frames(); f; f = f->outer)
    if (f->op == op) return f;
  return nullptr;
}

/// What a waiting thread waits for: one load (another thread's load of the key it wants), or any
/// one of several loads (room in the budget that their reservations hold).
struct LoadWait {
  const LoadOpBase* one = nullptr;
  std::vector<const LoadOpBase*> any;
};

/// What each waiting thread waits for. A thread about to wait follows who waits for whom (the
/// load's thread, what that thread waits for, ...); when every way leads back to a load of its
/// own, the loads wait for each other and would wait forever.
struct LoadWaitGraph final : ForkAware {
  Mutex mutex;
  std::unordered_map<std::thread::id, LoadWait> waits GPUSAFE_GUARDED_BY(mutex);

  LoadWaitGraph() noexcept { enrol_fork_aware(this); }
  // Taken before fork() and released after it, in other calls: beyond the analysis.
  void lock_for_fork() noexcept override GPUSAFE_NO_THREAD_SAFETY_ANALYSIS { mutex.lock(); }
  void unlock_after_fork() noexcept override GPUSAFE_NO_THREAD_SAFETY_ANALYSIS { mutex.unlock(); }
  // The child has one thread: no lock to take.
  void recreate_locks_in_child() noexcept override GPUSAFE_NO_THREAD_SAFETY_ANALYSIS {
    new (&mutex) Mutex();
    waits.clear();
  }

  /// The load of thread `me` that `op` waits for, directly or through other waits, so that it
  /// can never finish while `me` waits; null when it can (it finished, or some thread on the way
  /// runs). Called under `mutex`. `depth` stops at loops of other threads (each of those was
  /// checked by the thread that closed it).
  const LoadOpBase* closes_on(const LoadOpBase* op, std::thread::id me, std::size_t depth) const
      GPUSAFE_REQUIRES(mutex) {
    if (op->finished.load(std::memory_order_acquire)) return nullptr;
    if (op->owner == me) return op;
    if (depth > waits.size()) return nullptr;
    auto it = waits.find(op->owner);
    if (it == waits.end()) return nullptr;  // its thread runs: the load may finish
    if (it->second.one) return closes_on(it->second.one, me, depth + 1);
    return closes_on_all(it->second.any, me, depth + 1);
  }

  /// Like closes_on, for a thread that waits until any one of `ops` finishes: it is stuck only
  /// when every one of them is. Null for an empty list.
  const LoadOpBase* closes_on_all(const std::vector<const LoadOpBase*>& ops, std::thread::id me,
                                  std::size_t depth) const GPUSAFE_REQUIRES(mutex) {
    const LoadOpBase* mine = nullptr;
    for (const auto* op : ops) {
      const LoadOpBase* m = closes_on(op, me, depth);
      if (!m) return nullptr;
      if (!mine) mine = m;
    }
    return mine;
  }
};

inline LoadWaitGraph& load_wait_graph() noexcept {
  static NoDestructor<LoadWaitGraph> graph;
  return graph.get();
}

/// Records that this thread waits for `wait`, unless waiting would never end: then returns the
/// load of this thread that the waits lead back to (and records nothing). Throws std::bad_alloc.
inline const LoadOpBase* begin_load_wait(LoadWait wait) {
  auto& graph = load_wait_graph();
  const auto me = std::this_thread::get_id();
  MutexLock lock(graph.mutex);
  const LoadOpBase* mine =
      wait.one ? graph.closes_on(wait.one, me, 0) : graph.closes_on_all(wait.any, me, 0);
  if (mine) return mine;
  graph.waits[me] = std::move(wait);
  return nullptr;
}

inline void end_load_wait() noexcept {
  auto& graph = load_wait_graph();
  MutexLock lock(graph.mutex);
  graph.waits.erase(std::this_thread::get_id());
}

/// Keeps this thread registered in the wait graph for its lifetime (after begin_load_wait
/// returned null).
class LoadWaitScope {
 public:
  LoadWaitScope() = default;
  LoadWaitScope(const LoadWaitScope&) = delete;
  LoadWaitScope& operator=(const LoadWaitScope&) = delete;
  ~LoadWaitScope() { end_load_wait(); }
};

/// Where the waiters of one owner's loads sleep: a load is published once (done), and every
/// publication bumps a generation, for threads that wait for any load to end.
class LoadBoard {
 public:
  LoadBoard() = default;
  LoadBoard(const LoadBoard&) = delete;
  LoadBoard& operator=(const LoadBoard&) = delete;

  /// Marks `op` finished without waking anyone: for a load that no thread waits for, nor can
  /// wait for any more (its owner knows both under its own lock), and while no thread waits for a
  /// new generation. Takes no lock.
  void publish_unwatched(LoadOpBase& op) noexcept {
    op.done = true;
    op.finished.store(true, std::memory_order_release);
  }

  /// Marks `op` finished and wakes every waiter. Takes no other lock.
  void publish(LoadOpBase& op) noexcept {
    op.finished.store(true, std::memory_order_release);
    {
      MutexLock lk(mutex_);
      op.done = true;
      ++generation_;
    }
    cv_.notify_all();
  }

  /// Blocks until `op` was published.
  void wait_done(const LoadOpBase& op) {
    MutexLock lk(mutex_);
    while (!op.done) cv_.wait(mutex_);
  }

  /// Blocks until some load was published after generation `seen`.
  void wait_generation(std::uint64_t seen) {
    MutexLock lk(mutex_);
    while (generation_ == seen) cv_.wait(mutex_);
  }

  std::uint64_t generation() noexcept {
    MutexLock lk(mutex_);
    return generation_;
  }

  /// In a forked child, before any other use: marks `op` (a load of a thread that is gone) done
  /// without waking anyone (no thread of the child waits on it).
  static void abandon_in_child(LoadOpBase& op) noexcept {
    op.done = true;
    op.finished.store(true, std::memory_order_release);
  }

  /// In a forked child: fresh mutex and condition variable.
  void recreate_in_child() noexcept {
    new (&mutex_) Mutex();
    new (&cv_) std::condition_variable_any();
  }

 private:
  Mutex mutex_;
  std::condition_variable_any cv_;  // waits on mutex_ itself, so the analysis sees it held
  std::uint64_t generation_ GPUSAFE_GUARDED_BY(mutex_) = 0;
};

}  // namespace detail
GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_CACHE_SINGLE_FLIGHT_HPP
