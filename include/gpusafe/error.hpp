// gpusafe/error.hpp: the exception family thrown by acquire-side calls.
//
// Every failure a caller can cause or meet is a gpusafe::Error with an ErrorCode; the message
// says what was asked, what was wrong and how to fix it. Release paths never throw.
//
// Thread safety: exceptions are values. Teardown: nothing to tear down.
#ifndef GPUSAFE_ERROR_HPP
#define GPUSAFE_ERROR_HPP

#include <stdexcept>
#include <string>

#include "gpusafe/config.hpp"

GPUSAFE_NAMESPACE_BEGIN

/// What kind of failure an Error reports.
enum class ErrorCode {
  invalid_argument,  ///< the request itself is malformed (zero size, bad index, ...)
  out_of_memory,     ///< the runtime could not allocate
  pool_exhausted,    ///< every buffer of the size class is leased
  no_gpu,            ///< a GPU was required and there is none usable
  forked_child,      ///< a GPU request in a process forked after CUDA was used
  shutting_down,     ///< a GPU request after the process began to exit
  device_poisoned,   ///< a sticky CUDA error: the context is unusable until a reset
  runtime_error,     ///< any other runtime failure
  duplicate_key,     ///< a key registered twice
  unknown_key,       ///< a key never registered
  load_failed,       ///< a model loader threw or returned nothing
  budget_exceeded,   ///< a model bigger than the cache's budget
  timeout,           ///< a bounded wait ran out
};

/// Short stable name of an ErrorCode ("pool_exhausted", ...).
constexpr const char* to_string(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::invalid_argument:
      return "invalid_argument";
    case ErrorCode::out_of_memory:
      return "out_of_memory";
    case ErrorCode::pool_exhausted:
      return "pool_exhausted";
    case ErrorCode::no_gpu:
      return "no_gpu";
    case ErrorCode::forked_child:
      return "forked_child";
    case ErrorCode::shutting_down:
      return "shutting_down";
    case ErrorCode::device_poisoned:
      return "device_poisoned";
    case ErrorCode::runtime_error:
      return "runtime_error";
    case ErrorCode::duplicate_key:
      return "duplicate_key";
    case ErrorCode::unknown_key:
      return "unknown_key";
    case ErrorCode::load_failed:
      return "load_failed";
    case ErrorCode::budget_exceeded:
      return "budget_exceeded";
    case ErrorCode::timeout:
      return "timeout";
  }
  return "unknown";
}

/// Root of every exception gpusafe throws.
class Error : public std::runtime_error {
 public:
  /// `runtime_code` is the CUDA-style status that caused it, 0 when none.
  Error(ErrorCode code, const std::string& message, int runtime_code = 0)
      : std::runtime_error(message), code_(code), runtime_code_(runtime_code) {}
  ErrorCode code() const noexcept { return code_; }
  int runtime_code() const noexcept { return runtime_code_; }

 private:
  ErrorCode code_;
  int runtime_code_;
};

/// Declares a subclass of Error bound to one ErrorCode.
#define GPUSAFE_DETAIL_ERROR_TYPE(Name, Code)                       \
  class Name : public Error {                                       \
   public:                                                          \
    explicit Name(const std::string& message, int runtime_code = 0) \
        : Error(ErrorCode::Code, message, runtime_code) {}          \
  }

GPUSAFE_DETAIL_ERROR_TYPE(InvalidArgument, invalid_argument);
GPUSAFE_DETAIL_ERROR_TYPE(OutOfMemory, out_of_memory);
GPUSAFE_DETAIL_ERROR_TYPE(PoolExhausted, pool_exhausted);
GPUSAFE_DETAIL_ERROR_TYPE(NoGpu, no_gpu);
GPUSAFE_DETAIL_ERROR_TYPE(ForkedChild, forked_child);
GPUSAFE_DETAIL_ERROR_TYPE(ShuttingDown, shutting_down);
GPUSAFE_DETAIL_ERROR_TYPE(DevicePoisoned, device_poisoned);
GPUSAFE_DETAIL_ERROR_TYPE(RuntimeFailure, runtime_error);
GPUSAFE_DETAIL_ERROR_TYPE(DuplicateKey, duplicate_key);
GPUSAFE_DETAIL_ERROR_TYPE(UnknownKey, unknown_key);
GPUSAFE_DETAIL_ERROR_TYPE(LoadFailed, load_failed);
GPUSAFE_DETAIL_ERROR_TYPE(BudgetExceeded, budget_exceeded);
GPUSAFE_DETAIL_ERROR_TYPE(Timeout, timeout);

#undef GPUSAFE_DETAIL_ERROR_TYPE

GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_ERROR_HPP
