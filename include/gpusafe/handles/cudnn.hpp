// SPDX-License-Identifier: MIT
// gpusafe/handles/cudnn.hpp: an owning cuDNN handle with gpusafe's teardown rules.
//
//   thread_local gpusafe::CudnnHandle dnn = gpusafe::CudnnHandle::create();
//   cudnnSetStream(dnn.get(), stream.get());
//
// CudnnHandle exists when cuDNN is available: GPUSAFE_WITH_CUDNN is 1 when the build defines it
// (the gpusafe::cudnn target does), or, when it is not defined, when the CUDA headers and
// <cudnn.h> are found (link libcudnn yourself then). The traits and BasicCudnnHandle<Runtime>
// always compile, so code can be tested on testing::FakeRuntime without cuDNN.
//
// Thread safety: as any handle (handles.hpp); cuDNN wants one handle per thread and device.
// Teardown: as handles.hpp; cudnnDestroy is never called at exit, in a forked child, on a
// poisoned device or after a reset of the handle's device (the handle is left to the OS).
#ifndef GPUSAFE_HANDLES_CUDNN_HPP
#define GPUSAFE_HANDLES_CUDNN_HPP

#include <string>

#include "gpusafe/handles.hpp"

#ifndef GPUSAFE_WITH_CUDNN
#if GPUSAFE_WITH_CUDA && defined(__has_include)
#if __has_include(<cudnn.h>)
#define GPUSAFE_WITH_CUDNN 1
#endif
#endif
#endif
#ifndef GPUSAFE_WITH_CUDNN
#define GPUSAFE_WITH_CUDNN 0
#endif

#if GPUSAFE_WITH_CUDNN
#include <cudnn.h>
#endif

GPUSAFE_NAMESPACE_BEGIN

namespace detail {

/// A cudnnStatus_t as a gpusafe Status. cuDNN 9 numbers its codes by category (1xxx: not
/// initialised, 2xxx: bad parameter, 3xxx: not supported, 4xxx: internal, 5xxx: execution).
constexpr Status cudnn_status(int rc) noexcept {
  if (rc == 0) return {codes::success};
  if (rc == 4000) return {codes::memory_allocation};  // CUDNN_STATUS_ALLOC_FAILED
  switch (rc / 1000) {
    case 1:
      return {codes::initialization_error};
    case 2:
      return {codes::invalid_value};
    default:
      return {codes::unknown};
  }
}

}  // namespace detail

/// How a cuDNN handle is made: nothing to choose (bind a stream with cudnnSetStream).
struct CudnnParams {};

/// The cuDNN handles' traits (cudnnCreate / cudnnDestroy).
struct CudnnTraits {
  static constexpr HandleKind kind = HandleKind::cudnn;
  static constexpr bool kAbortsWhenPoisoned = false;
  static constexpr const char* create_call = "cudnnCreate";
  static constexpr const char* destroy_call = "cudnnDestroy";
  using Params = CudnnParams;
#if GPUSAFE_WITH_CUDNN
  template <class R>
  using Native = std::conditional_t<detail::kIsCudaRuntime<R>, cudnnHandle_t, void*>;
#else
  template <class R>
  using Native = void*;
#endif
  static std::string describe(const Params&) { return {}; }
  static void check(const Params&, const std::string&) {}
  static std::string fix_hint(Status) { return {}; }

  template <class R>
  static Status create(const Params&, Native<R>& out) noexcept {
    if constexpr (detail::kSimulatesHandles<R>) {
      return detail::RuntimeCalls<R>::handle_create(static_cast<int>(kind), &out);
#if GPUSAFE_WITH_CUDNN
    } else if constexpr (detail::kIsCudaRuntime<R>) {
      return detail::cudnn_status(static_cast<int>(cudnnCreate(&out)));
#endif
    } else {
      out = {};
      return {codes::no_device};
    }
  }
  template <class R>
  static DestroyResult destroy(Native<R> h, const Params&, bool) noexcept {
    if constexpr (detail::kSimulatesHandles<R>) {
      return detail::destroy_result(detail::RuntimeCalls<R>::handle_destroy(h));
#if GPUSAFE_WITH_CUDNN
    } else if constexpr (detail::kIsCudaRuntime<R>) {
      return detail::destroy_result(detail::cudnn_status(static_cast<int>(cudnnDestroy(h))));
#endif
    } else {
      (void)h;
      return detail::destroy_result({codes::no_device});
    }
  }
};

template <class Runtime>
using BasicCudnnHandle = BasicGpuHandle<CudnnTraits, Runtime>;

#if GPUSAFE_WITH_CUDNN && GPUSAFE_WITH_CUDA
/// A cuDNN handle (cudnnHandle_t) on the CUDA runtime.
using CudnnHandle = BasicCudnnHandle<DefaultRuntime>;
#endif

GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_HANDLES_CUDNN_HPP
