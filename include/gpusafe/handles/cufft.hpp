// SPDX-License-Identifier: MIT
// gpusafe/handles/cufft.hpp: an owning cuFFT plan with gpusafe's teardown rules.
//
//   gpusafe::CufftPlan fft(gpusafe::CufftParams{1, {4096}, gpusafe::kCufftC2C, 64});
//   cufftSetStream(fft.get(), stream.get());
//
// CufftPlan exists when cuFFT is available: GPUSAFE_WITH_CUFFT is 1 when the build defines it (the
// gpusafe::cufft target does), or, when it is not defined, when the CUDA headers and <cufft.h>
// are found (link CUDA::cufft yourself then). The traits and BasicCufftPlan<Runtime> always
// compile, so code can be tested on testing::FakeRuntime without cuFFT.
//
// Thread safety: as any handle (handles.hpp). Teardown: as handles.hpp; cufftDestroy is never
// called at exit, in a forked child, on a poisoned device or after a reset of the plan's device.
#ifndef GPUSAFE_HANDLES_CUFFT_HPP
#define GPUSAFE_HANDLES_CUFFT_HPP

#include <string>

#include "gpusafe/handles.hpp"

#ifndef GPUSAFE_WITH_CUFFT
#if GPUSAFE_WITH_CUDA && defined(__has_include)
#if __has_include(<cufft.h>)
#define GPUSAFE_WITH_CUFFT 1
#endif
#endif
#endif
#ifndef GPUSAFE_WITH_CUFFT
#define GPUSAFE_WITH_CUFFT 0
#endif

#if GPUSAFE_WITH_CUFFT
#include <cufft.h>
#endif

GPUSAFE_NAMESPACE_BEGIN

/// Transform types (the values of cufftType).
constexpr int kCufftR2C = 0x2a;
constexpr int kCufftC2R = 0x2c;
constexpr int kCufftC2C = 0x29;
constexpr int kCufftD2Z = 0x6a;
constexpr int kCufftZ2D = 0x6c;
constexpr int kCufftZ2Z = 0x69;

namespace detail {

/// A cufftResult as a gpusafe Status.
constexpr Status cufft_status(int rc) noexcept {
  switch (rc) {
    case 0:  // CUFFT_SUCCESS
      return {codes::success};
    case 2:  // CUFFT_ALLOC_FAILED
      return {codes::memory_allocation};
    case 1:  // CUFFT_INVALID_PLAN
    case 3:  // CUFFT_INVALID_TYPE
    case 4:  // CUFFT_INVALID_VALUE
    case 8:  // CUFFT_INVALID_SIZE
      return {codes::invalid_value};
    case 7:  // CUFFT_SETUP_FAILED: the CUDA runtime could not be initialised
      return {codes::initialization_error};
    default:
      return {codes::unknown};
  }
}

constexpr bool known_cufft_type(int type) noexcept {
  return type == kCufftR2C || type == kCufftC2R || type == kCufftC2C || type == kCufftD2Z ||
         type == kCufftZ2D || type == kCufftZ2Z;
}

}  // namespace detail

/// The shape of a batched, contiguous cuFFT plan (cufftPlanMany with default layouts).
struct CufftParams {
  int rank = 1;             ///< 1, 2 or 3 dimensions
  int dims[3] = {0, 0, 0};  ///< the first `rank` sizes, each positive
  int type = kCufftC2C;     ///< one of kCufftR2C ... kCufftZ2Z
  int batch = 1;            ///< transforms per execution, positive
};

/// The cuFFT plans' traits (cufftPlanMany / cufftDestroy).
struct CufftTraits {
  static constexpr HandleKind kind = HandleKind::cufft;
  static constexpr bool kAbortsWhenPoisoned = false;
  static constexpr const char* create_call = "cufftPlanMany";
  static constexpr const char* destroy_call = "cufftDestroy";
  using Params = CufftParams;
#if GPUSAFE_WITH_CUFFT
  template <class R>
  using Native = std::conditional_t<detail::kIsCudaRuntime<R>, cufftHandle, void*>;
#else
  template <class R>
  using Native = void*;
#endif

  static std::string describe(const Params& p) {
    std::string s = "rank " + std::to_string(p.rank) + ", dims";
    for (int i = 0; i < p.rank && i < 3; ++i) s += " " + std::to_string(p.dims[i]);
    return s + ", type " + std::to_string(p.type) + ", batch " + std::to_string(p.batch);
  }
  static void check(const Params& p, const std::string& what) {
    if (p.rank < 1 || p.rank > 3)
      GPUSAFE_THROW(InvalidArgument(what + ": rank " + std::to_string(p.rank) +
                                    " is not supported; cuFFT plans have 1, 2 or 3 dimensions"));
    for (int i = 0; i < p.rank; ++i)
      if (p.dims[i] <= 0)
        GPUSAFE_THROW(InvalidArgument(what + ": dimension " + std::to_string(i) + " is " +
                                      std::to_string(p.dims[i]) + "; give each of the " +
                                      std::to_string(p.rank) + " sizes a positive value"));
    if (!detail::known_cufft_type(p.type))
      GPUSAFE_THROW(InvalidArgument(what + ": unknown transform type " + std::to_string(p.type) +
                                    "; pass one of kCufftR2C, kCufftC2R, kCufftC2C, kCufftD2Z, "
                                    "kCufftZ2D, kCufftZ2Z"));
    if (p.batch <= 0)
      GPUSAFE_THROW(InvalidArgument(what + ": batch " + std::to_string(p.batch) +
                                    " is not positive; pass 1 or more transforms per execution"));
  }
  static std::string fix_hint(Status) { return {}; }

  template <class R>
  static Status create(const Params& p, Native<R>& out) noexcept {
    if constexpr (detail::kSimulatesHandles<R>) {
      (void)p;
      return detail::RuntimeCalls<R>::handle_create(static_cast<int>(kind), &out);
#if GPUSAFE_WITH_CUFFT
    } else if constexpr (detail::kIsCudaRuntime<R>) {
      int dims[3] = {p.dims[0], p.dims[1], p.dims[2]};
      return detail::cufft_status(
          static_cast<int>(cufftPlanMany(&out, p.rank, dims, nullptr, 1, 0, nullptr, 1, 0,
                                         static_cast<cufftType>(p.type), p.batch)));
#endif
    } else {
      (void)p;
      out = {};
      return {codes::no_device};
    }
  }
  template <class R>
  static DestroyResult destroy(Native<R> h, const Params&, bool) noexcept {
    if constexpr (detail::kSimulatesHandles<R>) {
      return detail::destroy_result(detail::RuntimeCalls<R>::handle_destroy(h));
#if GPUSAFE_WITH_CUFFT
    } else if constexpr (detail::kIsCudaRuntime<R>) {
      return detail::destroy_result(detail::cufft_status(static_cast<int>(cufftDestroy(h))));
#endif
    } else {
      (void)h;
      return detail::destroy_result({codes::no_device});
    }
  }
};

template <class Runtime>
using BasicCufftPlan = BasicGpuHandle<CufftTraits, Runtime>;

#if GPUSAFE_WITH_CUFFT && GPUSAFE_WITH_CUDA
/// A cuFFT plan (cufftHandle) on the CUDA runtime.
using CufftPlan = BasicCufftPlan<DefaultRuntime>;
#endif

GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_HANDLES_CUFFT_HPP
