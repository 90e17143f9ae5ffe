// SPDX-License-Identifier: MIT
// gpusafe/detail/cache/load_failure.hpp: how ModelCache records a failed load and hands it on.
//
// Purpose: a load that fails is recorded once (LoadFailure, built inside the catch block by
// capture_load_failure) and reaches every caller: the loading thread rethrows the original
// exception, each waiting thread throws its own copy (same type by ErrorCode, message, runtime
// code and nested exception; throw_failure_copy), so no exception object is shared between
// threads. A gpusafe::Error stays as it is; anything else becomes a LoadFailed naming the key,
// with the original nested.
//
// Thread safety: a LoadFailure is written by the loading thread before the load is published and
// only read afterwards. Teardown: holds exception_ptrs only; nothing touches a runtime.
#ifndef GPUSAFE_DETAIL_CACHE_LOAD_FAILURE_HPP
#define GPUSAFE_DETAIL_CACHE_LOAD_FAILURE_HPP

#include <exception>
#include <string>
#include <utility>

#include "gpusafe/config.hpp"
#include "gpusafe/error.hpp"

GPUSAFE_NAMESPACE_BEGIN
namespace detail {

/// A failed load; `original` is for the loading thread only (waiters get copies).
struct LoadFailure {
  std::exception_ptr original;
  ErrorCode code = ErrorCode::load_failed;
  std::string message;
  int runtime_code = 0;
  std::exception_ptr nested;
  bool failed = false;
  explicit operator bool() const noexcept { return failed; }
};

/// Called inside a catch block: records the exception in flight. `describe(what)` builds the
/// message of a non-gpusafe exception and must not throw. Never throws, so that a failing load
/// always reaches its waiters.
template <class Describe>
LoadFailure capture_load_failure(Describe&& describe) noexcept {
  LoadFailure f;
  f.failed = true;
  f.code = ErrorCode::load_failed;
#if GPUSAFE_HAS_EXCEPTIONS
  try {
    throw;
  } catch (const Error& err) {
    f.original = std::current_exception();
    f.code = err.code();
    f.runtime_code = err.runtime_code();
    try {
      f.message = err.what();
    } catch (...) {
    }
    return f;
  } catch (...) {
    f.message = describe(current_exception_what());
  }
  f.nested = std::current_exception();
  try {
    std::throw_with_nested(LoadFailed(f.message));
  } catch (...) {
    f.original = std::current_exception();
  }
#else
  // Without exceptions nothing is ever caught, so this is never called.
  f.message = describe(current_exception_what());
#endif
  return f;
}

/// Marks `f` as a failure whose error could not be recorded (a load that an exception cut
/// short), unless it already holds one.
inline void mark_unrecorded_failure(LoadFailure& f) noexcept {
  if (f) return;
  f.failed = true;
  f.code = ErrorCode::load_failed;
  GPUSAFE_TRY { f.message = "ModelCache: a load failed and its error could not be recorded"; }
  GPUSAFE_CATCH_ALL {}
}

/// A waiter's own copy of a failure: same type (by ErrorCode), message, runtime code and
/// nested exception.
[[noreturn]] inline void throw_failure_copy(const LoadFailure& f) {
  throw_error(f.code, f.message, f.runtime_code, f.nested);
}

}  // namespace detail
GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_CACHE_LOAD_FAILURE_HPP
