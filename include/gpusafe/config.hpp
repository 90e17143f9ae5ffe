// gpusafe/config.hpp: feature detection and the ABI namespace.
//
// GPUSAFE_WITH_CUDA is 1 when the CUDA runtime headers can be included (or when the build
// defines it), 0 otherwise; GPUSAFE_WITH_TORCH is 1 only when the build defines it (target
// gpusafe::torch). Every declaration lives in gpusafe::<abi> where <abi> names the version
// and the features, so two builds with different features never share a symbol.
//
// Thread safety: compile-time only. Teardown: nothing to tear down.
#ifndef GPUSAFE_CONFIG_HPP
#define GPUSAFE_CONFIG_HPP

#include "gpusafe/version.hpp"

#ifndef GPUSAFE_WITH_CUDA
#if defined(__has_include)
#if __has_include(<cuda_runtime_api.h>)
#define GPUSAFE_WITH_CUDA 1
#else
#define GPUSAFE_WITH_CUDA 0
#endif
#else
#define GPUSAFE_WITH_CUDA 0
#endif
#endif

#ifndef GPUSAFE_WITH_TORCH
#define GPUSAFE_WITH_TORCH 0
#endif

#if GPUSAFE_WITH_CUDA && GPUSAFE_WITH_TORCH
#define GPUSAFE_ABI_NAMESPACE v0_1_cuda_torch
#elif GPUSAFE_WITH_CUDA
#define GPUSAFE_ABI_NAMESPACE v0_1_cuda
#elif GPUSAFE_WITH_TORCH
#define GPUSAFE_ABI_NAMESPACE v0_1_torch
#else
#define GPUSAFE_ABI_NAMESPACE v0_1_core
#endif

#define GPUSAFE_NAMESPACE_BEGIN \
  namespace gpusafe {           \
  inline namespace GPUSAFE_ABI_NAMESPACE {
#define GPUSAFE_NAMESPACE_END \
  }                           \
  }

#if defined(__GNUC__) || defined(__clang__)
#define GPUSAFE_LIKELY(x) __builtin_expect(!!(x), 1)
#define GPUSAFE_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define GPUSAFE_LIKELY(x) (x)
#define GPUSAFE_UNLIKELY(x) (x)
#endif

#endif  // GPUSAFE_CONFIG_HPP
