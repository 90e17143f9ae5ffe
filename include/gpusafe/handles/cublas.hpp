// SPDX-License-Identifier: MIT
// gpusafe/handles/cublas.hpp: owning cuBLAS and cuBLASLt handles with gpusafe's teardown rules.
//
//   thread_local gpusafe::CublasHandle blas = gpusafe::CublasHandle::create();
//   cublasSetStream(blas.get(), stream.get());
//
// The real handles (CublasHandle, CublasLtHandle) exist when cuBLAS is available:
// GPUSAFE_WITH_CUBLAS is 1 when the build defines it (the gpusafe::cublas target does), or, when
// it is not defined, when the CUDA headers and <cublas_v2.h>, <cublasLt.h> are found (link
// CUDA::cublas and CUDA::cublasLt yourself then). The traits and BasicCublasHandle<Runtime> always
// compile, so code can be tested on testing::FakeRuntime without cuBLAS.
//
// Thread safety: as any handle (handles.hpp): one owner; cuBLAS allows a handle to be used by one
// thread at a time, so a thread_local handle per worker is the usual pattern.
// Teardown: as handles.hpp; a thread_local handle of the main thread destroyed at exit after
// gpusafe's exit handler ran is left to the OS (cublasDestroy is never called then).
#ifndef GPUSAFE_HANDLES_CUBLAS_HPP
#define GPUSAFE_HANDLES_CUBLAS_HPP

#include <string>

#include "gpusafe/handles.hpp"

#ifndef GPUSAFE_WITH_CUBLAS
#if GPUSAFE_WITH_CUDA && defined(__has_include)
#if __has_include(<cublas_v2.h>) && __has_include(<cublasLt.h>)
#define GPUSAFE_WITH_CUBLAS 1
#endif
#endif
#endif
#ifndef GPUSAFE_WITH_CUBLAS
#define GPUSAFE_WITH_CUBLAS 0
#endif

#if GPUSAFE_WITH_CUBLAS
#include <cublasLt.h>
#include <cublas_v2.h>
#endif

GPUSAFE_NAMESPACE_BEGIN

namespace detail {

/// A cublasStatus_t as a gpusafe Status (classified by code: see runtime.hpp).
constexpr Status cublas_status(int rc) noexcept {
  switch (rc) {
    case 0:  // CUBLAS_STATUS_SUCCESS
      return {codes::success};
    case 1:  // CUBLAS_STATUS_NOT_INITIALIZED: the CUDA runtime could not be initialised
      return {codes::initialization_error};
    case 3:  // CUBLAS_STATUS_ALLOC_FAILED
      return {codes::memory_allocation};
    case 7:  // CUBLAS_STATUS_INVALID_VALUE
      return {codes::invalid_value};
    default:
      return {codes::unknown};
  }
}

}  // namespace detail

/// How a cuBLAS handle is made: nothing to choose (bind a stream with cublasSetStream).
struct CublasParams {};

/// The cuBLAS handles' traits (cublasCreate / cublasDestroy).
struct CublasTraits {
  static constexpr HandleKind kind = HandleKind::cublas;
  static constexpr bool kAbortsWhenPoisoned = false;
  static constexpr const char* create_call = "cublasCreate";
  static constexpr const char* destroy_call = "cublasDestroy";
  using Params = CublasParams;
#if GPUSAFE_WITH_CUBLAS
  template <class R>
  using Native = std::conditional_t<detail::kIsCudaRuntime<R>, cublasHandle_t, void*>;
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
#if GPUSAFE_WITH_CUBLAS
    } else if constexpr (detail::kIsCudaRuntime<R>) {
      return detail::cublas_status(static_cast<int>(cublasCreate(&out)));
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
#if GPUSAFE_WITH_CUBLAS
    } else if constexpr (detail::kIsCudaRuntime<R>) {
      return detail::destroy_result(detail::cublas_status(static_cast<int>(cublasDestroy(h))));
#endif
    } else {
      (void)h;
      return detail::destroy_result({codes::no_device});
    }
  }
};

/// How a cuBLASLt handle is made: nothing to choose.
struct CublasLtParams {};

/// The cuBLASLt handles' traits (cublasLtCreate / cublasLtDestroy).
struct CublasLtTraits {
  static constexpr HandleKind kind = HandleKind::cublaslt;
  static constexpr bool kAbortsWhenPoisoned = false;
  static constexpr const char* create_call = "cublasLtCreate";
  static constexpr const char* destroy_call = "cublasLtDestroy";
  using Params = CublasLtParams;
#if GPUSAFE_WITH_CUBLAS
  template <class R>
  using Native = std::conditional_t<detail::kIsCudaRuntime<R>, cublasLtHandle_t, void*>;
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
#if GPUSAFE_WITH_CUBLAS
    } else if constexpr (detail::kIsCudaRuntime<R>) {
      return detail::cublas_status(static_cast<int>(cublasLtCreate(&out)));
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
#if GPUSAFE_WITH_CUBLAS
    } else if constexpr (detail::kIsCudaRuntime<R>) {
      return detail::destroy_result(detail::cublas_status(static_cast<int>(cublasLtDestroy(h))));
#endif
    } else {
      (void)h;
      return detail::destroy_result({codes::no_device});
    }
  }
};

template <class Runtime>
using BasicCublasHandle = BasicGpuHandle<CublasTraits, Runtime>;
template <class Runtime>
using BasicCublasLtHandle = BasicGpuHandle<CublasLtTraits, Runtime>;

#if GPUSAFE_WITH_CUBLAS && GPUSAFE_WITH_CUDA
/// A cuBLAS handle (cublasHandle_t) on the CUDA runtime.
using CublasHandle = BasicCublasHandle<DefaultRuntime>;
/// A cuBLASLt handle (cublasLtHandle_t) on the CUDA runtime.
using CublasLtHandle = BasicCublasLtHandle<DefaultRuntime>;
#endif

GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_HANDLES_CUBLAS_HPP
