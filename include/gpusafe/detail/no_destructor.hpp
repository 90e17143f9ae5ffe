// SPDX-License-Identifier: MIT
// gpusafe/detail/no_destructor.hpp: NoDestructor<T>, storage for a global that is never destroyed.
#ifndef GPUSAFE_DETAIL_NO_DESTRUCTOR_HPP
#define GPUSAFE_DETAIL_NO_DESTRUCTOR_HPP

#include <new>
#include <utility>

#include "gpusafe/config.hpp"

GPUSAFE_PROCESS_NAMESPACE_BEGIN

/// Holds a T constructed in place and never destroyed, so it stays valid during every static
/// destructor and atexit handler of the program (DESIGN rule 3). The OS reclaims it at exit.
template <class T>
class NoDestructor {
 public:
  template <class... Args>
  explicit NoDestructor(Args&&... args) {
    new (storage_) T(std::forward<Args>(args)...);
  }
  NoDestructor(const NoDestructor&) = delete;
  NoDestructor& operator=(const NoDestructor&) = delete;
  ~NoDestructor() = default;

  T& get() noexcept { return *std::launder(reinterpret_cast<T*>(storage_)); }
  const T& get() const noexcept { return *std::launder(reinterpret_cast<const T*>(storage_)); }
  T* operator->() noexcept { return &get(); }
  T& operator*() noexcept { return get(); }

 private:
  alignas(T) unsigned char storage_[sizeof(T)];
};

GPUSAFE_PROCESS_NAMESPACE_END

GPUSAFE_NAMESPACE_BEGIN
using process_v1::NoDestructor;
GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_NO_DESTRUCTOR_HPP
