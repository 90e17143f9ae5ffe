// SPDX-License-Identifier: MIT
// gpusafe/detail/thread_annotations.hpp: Clang's thread-safety attributes behind macros, and a
// mutex and lock guard that carry them, so that "this member is guarded by that mutex" is
// checked by the compiler (clang++ -Wthread-safety) instead of stated in a comment. Other
// compilers see plain std::mutex behaviour and no attributes.
//
// Thread safety: Mutex is a std::mutex. Teardown: nothing process-wide.
#ifndef GPUSAFE_DETAIL_THREAD_ANNOTATIONS_HPP
#define GPUSAFE_DETAIL_THREAD_ANNOTATIONS_HPP

#include <mutex>

#include "gpusafe/config.hpp"

#if defined(__clang__)
#define GPUSAFE_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define GPUSAFE_THREAD_ANNOTATION(x)
#endif

#define GPUSAFE_CAPABILITY(name) GPUSAFE_THREAD_ANNOTATION(capability(name))
#define GPUSAFE_SCOPED_CAPABILITY GPUSAFE_THREAD_ANNOTATION(scoped_lockable)
#define GPUSAFE_GUARDED_BY(m) GPUSAFE_THREAD_ANNOTATION(guarded_by(m))
#define GPUSAFE_PT_GUARDED_BY(m) GPUSAFE_THREAD_ANNOTATION(pt_guarded_by(m))
#define GPUSAFE_REQUIRES(...) GPUSAFE_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define GPUSAFE_ACQUIRE(...) GPUSAFE_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define GPUSAFE_RELEASE(...) GPUSAFE_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define GPUSAFE_TRY_ACQUIRE(...) GPUSAFE_THREAD_ANNOTATION(try_acquire_capability(__VA_ARGS__))
#define GPUSAFE_EXCLUDES(...) GPUSAFE_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
/// For the few functions whose locking the analysis cannot follow (a lock taken in one function
/// and released in another); each use says why.
#define GPUSAFE_NO_THREAD_SAFETY_ANALYSIS GPUSAFE_THREAD_ANNOTATION(no_thread_safety_analysis)

GPUSAFE_NAMESPACE_BEGIN
namespace detail {

/// A std::mutex the analysis knows as a capability. `native()` is for condition variables.
class GPUSAFE_CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void lock() GPUSAFE_ACQUIRE() { mutex_.lock(); }
  void unlock() GPUSAFE_RELEASE() { mutex_.unlock(); }
  bool try_lock() GPUSAFE_TRY_ACQUIRE(true) { return mutex_.try_lock(); }
  std::mutex& native() noexcept { return mutex_; }

 private:
  std::mutex mutex_;
};

/// std::lock_guard for Mutex, visible to the analysis.
class GPUSAFE_SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& m) GPUSAFE_ACQUIRE(m) : mutex_(m) { mutex_.lock(); }
  ~MutexLock() GPUSAFE_RELEASE() { mutex_.unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex& mutex_;
};

}  // namespace detail
GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_THREAD_ANNOTATIONS_HPP
