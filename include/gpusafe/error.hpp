// SPDX-License-Identifier: MIT
// gpusafe/error.hpp: the exception family thrown by acquire-side calls, and the error handler
// that takes their place in a build without exceptions.
//
// Every failure a caller can cause or meet is a gpusafe::Error with an ErrorCode; the message
// says what was asked, what was wrong and how to fix it. Release paths never throw. Built with
// -fno-exceptions, an acquire-side failure calls the ErrorHandler instead (default: log, abort);
// see the README, "Builds without exceptions".
//
// Thread safety: exceptions are values. Teardown: nothing to tear down.
#ifndef GPUSAFE_ERROR_HPP
#define GPUSAFE_ERROR_HPP

#include <atomic>
#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "gpusafe/config.hpp"
#include "gpusafe/log.hpp"

GPUSAFE_NAMESPACE_BEGIN

/// The one list of error codes: X(ExceptionType, code, description). It generates the ErrorCode
/// enum, to_string(ErrorCode), the exception types and detail::visit_error_type.
#define GPUSAFE_ERROR_CODES(X)                                                                   \
  X(InvalidArgument, invalid_argument, "the request itself is malformed (zero size, bad index)") \
  X(OutOfMemory, out_of_memory, "the runtime could not allocate")                                \
  X(PoolExhausted, pool_exhausted, "every buffer of the size class is leased")                   \
  X(NoGpu, no_gpu, "a GPU was required and there is none usable")                                \
  X(ForkedChild, forked_child, "a GPU request in a process forked after CUDA was used")          \
  X(ShuttingDown, shutting_down, "a GPU request after the process began to exit")                \
  X(DevicePoisoned, device_poisoned, "a sticky CUDA error: the context is unusable until reset") \
  X(RuntimeFailure, runtime_error, "any other runtime failure")                                  \
  X(DuplicateKey, duplicate_key, "a key registered twice")                                       \
  X(UnknownKey, unknown_key, "a key never registered")                                           \
  X(LoadFailed, load_failed, "a model loader threw or returned nothing")                         \
  X(BudgetExceeded, budget_exceeded, "a model bigger than the cache's budget")                   \
  X(Timeout, timeout, "a bounded wait ran out")

/// What kind of failure an Error reports (see GPUSAFE_ERROR_CODES for each one's meaning).
enum class ErrorCode {
#define GPUSAFE_DETAIL_ERROR_ENUM(Type, code, doc) code,
  GPUSAFE_ERROR_CODES(GPUSAFE_DETAIL_ERROR_ENUM)
#undef GPUSAFE_DETAIL_ERROR_ENUM
};

/// Short stable name of an ErrorCode ("pool_exhausted", ...).
constexpr const char* to_string(ErrorCode code) noexcept {
  switch (code) {
#define GPUSAFE_DETAIL_ERROR_NAME(Type, code, doc) \
  case ErrorCode::code:                            \
    return #code;
    GPUSAFE_ERROR_CODES(GPUSAFE_DETAIL_ERROR_NAME)
#undef GPUSAFE_DETAIL_ERROR_NAME
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
#define GPUSAFE_DETAIL_ERROR_TYPE(Type, code, doc)                  \
  class Type : public Error {                                       \
   public:                                                          \
    explicit Type(const std::string& message, int runtime_code = 0) \
        : Error(ErrorCode::code, message, runtime_code) {}          \
  };
GPUSAFE_ERROR_CODES(GPUSAFE_DETAIL_ERROR_TYPE)
#undef GPUSAFE_DETAIL_ERROR_TYPE

namespace detail {

/// Names an exception type as a value: `typename decltype(tag)::type`.
template <class E>
struct ErrorTypeTag {
  using type = E;
};

/// Calls `f(ErrorTypeTag<E>{})` with the exception type E of `code` and returns what it returns;
/// an out-of-range code gets ErrorTypeTag<Error> (f must then build the Error from the code).
template <class F>
decltype(auto) visit_error_type(ErrorCode code, F&& f) {
  switch (code) {
#define GPUSAFE_DETAIL_ERROR_VISIT(Type, code, doc) \
  case ErrorCode::code:                             \
    return f(ErrorTypeTag<Type>{});
    GPUSAFE_ERROR_CODES(GPUSAFE_DETAIL_ERROR_VISIT)
#undef GPUSAFE_DETAIL_ERROR_VISIT
  }
  return f(ErrorTypeTag<Error>{});
}

/// Makes the Error of the type that `code` names.
template <class E>
E make_error(ErrorCode code, const std::string& message, int runtime_code) {
  if constexpr (std::is_same<E, Error>::value)
    return Error(code, message, runtime_code);
  else
    return E(message, runtime_code);
}

}  // namespace detail

/// What a build without exceptions does where a build with them throws: the handler gets the
/// error that would have been thrown. It must not return: end the process (std::abort,
/// std::_Exit, std::quick_exit); if it returns, gpusafe aborts. Never consulted in a build with
/// exceptions.
using ErrorHandler = void (*)(const Error& error) noexcept;

/// The handler used until set_error_handler is called: logs the error at LogLevel::error (the
/// code's name and the message) and aborts.
[[noreturn]] inline void default_error_handler(const Error& error) noexcept {
  log_lazy(LogLevel::error, [&] {
    return std::string("unhandled ") + to_string(error.code()) + " error: " + error.what();
  });
  std::abort();
}

namespace detail {
inline std::atomic<ErrorHandler>& error_handler_slot() noexcept {
  static std::atomic<ErrorHandler> handler{nullptr};
  return handler;
}
}  // namespace detail

/// Installs `handler` (nullptr restores default_error_handler) and returns the previous one.
/// Thread-safe; the handler applies to the whole process, in builds without exceptions.
inline ErrorHandler set_error_handler(ErrorHandler handler) noexcept {
  ErrorHandler previous = detail::error_handler_slot().exchange(handler, std::memory_order_acq_rel);
  return previous ? previous : &default_error_handler;
}

namespace detail {

/// Hands `error` to the error handler; the no-exceptions form of `throw error`.
[[noreturn]] inline void raise_error(const Error& error) noexcept {
  const ErrorHandler handler = error_handler_slot().load(std::memory_order_acquire);
  (handler ? handler : &default_error_handler)(error);
  std::abort();  // a handler that returned
}

}  // namespace detail

GPUSAFE_NAMESPACE_END

/// `throw error`, or in a build without exceptions a call of the error handler (which does not
/// return). `error` is a gpusafe::Error.
#if GPUSAFE_HAS_EXCEPTIONS
#define GPUSAFE_THROW(error) throw error
#else
#define GPUSAFE_THROW(error) ::gpusafe::detail::raise_error(error)
#endif

GPUSAFE_NAMESPACE_BEGIN
namespace detail {

/// Throws a new exception of the type that `code` names, with `nested` (when set) nested inside
/// it as by std::throw_with_nested, so that each thread can throw its own copy of one failure.
[[noreturn]] inline void throw_error(ErrorCode code, const std::string& message, int runtime_code,
                                     std::exception_ptr nested = nullptr) {
  visit_error_type(code, [&](auto tag) {
    using E = typename decltype(tag)::type;
#if GPUSAFE_HAS_EXCEPTIONS
    if (!nested) throw make_error<E>(code, message, runtime_code);
    try {
      std::rethrow_exception(nested);
    } catch (...) {
      std::throw_with_nested(make_error<E>(code, message, runtime_code));
    }
#else
    (void)nested;
    raise_error(make_error<E>(code, message, runtime_code));
#endif
  });
  GPUSAFE_THROW(Error(code, message, runtime_code));  // not reached
}

/// The message of the exception being handled: what() of a std::exception, else a fixed text.
/// Call it only inside a catch block.
inline const char* current_exception_what() noexcept {
#if GPUSAFE_HAS_EXCEPTIONS
  try {
    throw;
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
  }
#endif
  return "a non-std exception";
}

}  // namespace detail

GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_ERROR_HPP
