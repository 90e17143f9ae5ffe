// SPDX-License-Identifier: MIT
// gpusafe/detail/fork.hpp: the fork-aware list. Objects whose locks a forked child must never
// inherit held (pools, caches, managers, the reclaim registry) enrol here; around fork() the
// forking thread takes their data locks and, in the child, every lock is built anew (DESIGN
// rule 5).
//
// Thread safety: enrolling and withdrawing may happen on any thread. Teardown: the list is
// process-wide (one per process, whatever configuration each library saw) and leaked on purpose.
#ifndef GPUSAFE_DETAIL_FORK_HPP
#define GPUSAFE_DETAIL_FORK_HPP

#include <pthread.h>

#include <mutex>
#include <new>

#include "gpusafe/config.hpp"
#include "gpusafe/detail/no_destructor.hpp"
#include "gpusafe/detail/process_state.hpp"

GPUSAFE_PROCESS_NAMESPACE_BEGIN

/// An object whose locks a forked child must never inherit held (rule 5). Around fork() the
/// forking thread takes each object's data locks (lock_for_fork: leaf locks only, so this cannot
/// deadlock) and releases them in the parent; in the child every lock is built anew, since a
/// thread that held one does not exist there. Objects enrol for their lifetime.
class ForkAware {
 public:
  virtual void lock_for_fork() noexcept {}
  virtual void unlock_after_fork() noexcept {}
  virtual void recreate_locks_in_child() noexcept = 0;

 protected:
  ForkAware() = default;
  ForkAware(const ForkAware&) = delete;
  ForkAware& operator=(const ForkAware&) = delete;
  // Virtual although no one deletes through this base: the list is a friend, so compilers
  // (-Wnon-virtual-dtor) cannot tell. Declared after the other virtual functions, it keeps their
  // places in this process-wide type's table.
  virtual ~ForkAware() = default;

 private:
  friend struct ForkAwareList;
  ForkAware* fork_prev_ = nullptr;
  ForkAware* fork_next_ = nullptr;
};

/// The enrolled objects of this copy of the headers (intrusive: enrolling never allocates).
struct ForkAwareList {
  std::mutex mutex;
  ForkAware* head = nullptr;

  void link(ForkAware* o) noexcept {
    o->fork_next_ = head;
    if (head) head->fork_prev_ = o;
    head = o;
  }
  void unlink(ForkAware* o) noexcept {
    if (o->fork_prev_) o->fork_prev_->fork_next_ = o->fork_next_;
    if (o->fork_next_) o->fork_next_->fork_prev_ = o->fork_prev_;
    if (head == o) head = o->fork_next_;
    o->fork_prev_ = o->fork_next_ = nullptr;
  }
  template <class Fn>
  void for_each(Fn fn) noexcept {
    for (ForkAware* o = head; o; o = o->fork_next_) fn(*o);
  }
};

GPUSAFE_PROCESS_WIDE inline ForkAwareList& fork_aware_list() noexcept {
  static NoDestructor<ForkAwareList> list;
  return list.get();
}

inline void lock_fork_aware_before_fork() noexcept {
  auto& list = fork_aware_list();
  list.mutex.lock();
  list.for_each([](ForkAware& o) { o.lock_for_fork(); });
}

inline void unlock_fork_aware_after_fork() noexcept {
  auto& list = fork_aware_list();
  list.for_each([](ForkAware& o) { o.unlock_after_fork(); });
  list.mutex.unlock();
}

inline void recreate_fork_aware_in_child() noexcept {
  auto& list = fork_aware_list();
  new (&list.mutex) std::mutex();
  list.for_each([](ForkAware& o) { o.recreate_locks_in_child(); });
}

inline void enrol_fork_aware(ForkAware* o) noexcept {
  static const bool installed =
      (::pthread_atfork(&lock_fork_aware_before_fork, &unlock_fork_aware_after_fork, nullptr),
       add_fork_child_hook(&recreate_fork_aware_in_child), true);
  (void)installed;
  auto& list = fork_aware_list();
  std::lock_guard<std::mutex> lock(list.mutex);
  list.link(o);
}

inline void withdraw_fork_aware(ForkAware* o) noexcept {
  auto& list = fork_aware_list();
  std::lock_guard<std::mutex> lock(list.mutex);
  list.unlink(o);
}

GPUSAFE_PROCESS_NAMESPACE_END

GPUSAFE_NAMESPACE_BEGIN
namespace detail {
using process_v1::enrol_fork_aware;
using process_v1::fork_aware_list;
using process_v1::ForkAware;
using process_v1::ForkAwareList;
using process_v1::withdraw_fork_aware;
}  // namespace detail
GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_FORK_HPP
