// SPDX-License-Identifier: MIT
// gpusafe/config.hpp: feature detection, the ABI namespace and the exception switches.
//
// GPUSAFE_WITH_CUDA is 1 when the CUDA runtime headers can be included (or when the build
// defines it), 0 otherwise; GPUSAFE_WITH_TORCH is 1 only when the build defines it (target
// gpusafe::torch). Code whose definition depends on the features lives in gpusafe::<abi>, where
// <abi> names the version and the features, so two builds with different features never share
// such a symbol. The process-wide state (exit and fork flags, reset epochs, poison marks, the
// reclaim registry, the log) is the opposite: one copy per process whatever each translation
// unit or shared library saw (DESIGN rule 11). It lives in gpusafe::process_v1, a namespace that
// names only the layout of that state, with default visibility, so that shared libraries built
// with -fvisibility=hidden share it too.
//
// Thread safety: compile-time only. Teardown: nothing to tear down.
#ifndef GPUSAFE_CONFIG_HPP
#define GPUSAFE_CONFIG_HPP

#include <cstdlib>

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

// GPUSAFE_HAS_EXCEPTIONS is 0 when the compiler was told not to support exceptions
// (-fno-exceptions, or MSVC without /EHsc); acquire-side errors then go to the error handler of
// gpusafe/error.hpp instead of being thrown.
#ifndef GPUSAFE_HAS_EXCEPTIONS
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS) || defined(_CPPUNWIND)
#define GPUSAFE_HAS_EXCEPTIONS 1
#else
#define GPUSAFE_HAS_EXCEPTIONS 0
#endif
#endif

#if GPUSAFE_WITH_CUDA && GPUSAFE_WITH_TORCH
#define GPUSAFE_DETAIL_ABI_FEATURES v0_1_cuda_torch
#elif GPUSAFE_WITH_CUDA
#define GPUSAFE_DETAIL_ABI_FEATURES v0_1_cuda
#elif GPUSAFE_WITH_TORCH
#define GPUSAFE_DETAIL_ABI_FEATURES v0_1_torch
#else
#define GPUSAFE_DETAIL_ABI_FEATURES v0_1_core
#endif
#define GPUSAFE_DETAIL_PASTE(a, b) a##b
#define GPUSAFE_DETAIL_PASTE_EXPANDED(a, b) GPUSAFE_DETAIL_PASTE(a, b)
// A build without exceptions gets its own namespace: its functions report errors differently, so
// the linker must not merge them with a build that throws.
#if GPUSAFE_HAS_EXCEPTIONS
#define GPUSAFE_ABI_NAMESPACE GPUSAFE_DETAIL_ABI_FEATURES
#else
#define GPUSAFE_ABI_NAMESPACE GPUSAFE_DETAIL_PASTE_EXPANDED(GPUSAFE_DETAIL_ABI_FEATURES, _noexcept)
#endif

#define GPUSAFE_NAMESPACE_BEGIN \
  namespace gpusafe {           \
  inline namespace GPUSAFE_ABI_NAMESPACE {
#define GPUSAFE_NAMESPACE_END \
  }                           \
  }

/// The namespace of the process-wide state; its number changes whenever that state's layout does.
#define GPUSAFE_PROCESS_NAMESPACE_BEGIN \
  namespace gpusafe {                   \
  namespace process_v1 {
#define GPUSAFE_PROCESS_NAMESPACE_END \
  }                                   \
  }

#if defined(__GNUC__) || defined(__clang__)
/// Marks a function whose static local is process-wide state: default visibility, so every
/// shared library of the process binds to one copy even when built with -fvisibility=hidden.
#define GPUSAFE_PROCESS_WIDE __attribute__((visibility("default")))
#define GPUSAFE_NOINLINE __attribute__((noinline))
#else
#define GPUSAFE_PROCESS_WIDE
#define GPUSAFE_NOINLINE
#endif

#if defined(__GNUC__) || defined(__clang__)
#define GPUSAFE_LIKELY(x) __builtin_expect(!!(x), 1)
#define GPUSAFE_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define GPUSAFE_LIKELY(x) (x)
#define GPUSAFE_UNLIKELY(x) (x)
#endif

// try, catch (...) and a rethrow that compile without exceptions: the protected block then
// always runs and the handler is dead code (nothing can throw; errors end in the error handler).
#if GPUSAFE_HAS_EXCEPTIONS
#define GPUSAFE_TRY try
#define GPUSAFE_CATCH_ALL catch (...)
#define GPUSAFE_RETHROW throw
#else
#define GPUSAFE_TRY if (true)
#define GPUSAFE_CATCH_ALL else
#define GPUSAFE_RETHROW std::abort()
#endif

#endif  // GPUSAFE_CONFIG_HPP
