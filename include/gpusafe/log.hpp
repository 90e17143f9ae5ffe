// SPDX-License-Identifier: MIT
// gpusafe/log.hpp: the library's diagnostics.
//
// Messages go to a replaceable sink; the default writes warnings and errors to stderr. Logging
// never throws and never allocates when the level filters the message out.
//
// Thread safety: every function may be called from any thread; the sink is called under a lock,
// one message at a time. Teardown: the logger is a leaked singleton, valid during static
// destruction; in a forked child its lock is re-created by the lifecycle layer. The level and the
// sink are process-wide: one per process, whatever configuration each library was built with.
#ifndef GPUSAFE_LOG_HPP
#define GPUSAFE_LOG_HPP

#include <atomic>
#include <cstdio>
#include <functional>
#include <mutex>
#include <new>
#include <string>
#include <string_view>
#include <utility>

#include "gpusafe/config.hpp"
#include "gpusafe/detail/no_destructor.hpp"

GPUSAFE_PROCESS_NAMESPACE_BEGIN

/// Severity of a log message; `off` as a threshold silences everything.
enum class LogLevel : int { trace = 0, debug = 1, info = 2, warning = 3, error = 4, off = 5 };

constexpr const char* to_string(LogLevel level) noexcept {
  switch (level) {
    case LogLevel::trace:
      return "trace";
    case LogLevel::debug:
      return "debug";
    case LogLevel::info:
      return "info";
    case LogLevel::warning:
      return "warning";
    case LogLevel::error:
      return "error";
    case LogLevel::off:
      return "off";
  }
  return "?";
}

/// A sink receives every message at or above the threshold. It should not throw; if it does,
/// the exception is swallowed.
using LogSink = std::function<void(LogLevel, std::string_view)>;

inline void stderr_sink(LogLevel level, std::string_view message) noexcept {
  std::fprintf(stderr, "[gpusafe] %s: %.*s\n", to_string(level), static_cast<int>(message.size()),
               message.data());
}

struct Logger {
  std::atomic<int> threshold{static_cast<int>(LogLevel::warning)};
  std::mutex mutex;
  LogSink sink;  // empty = stderr
};

GPUSAFE_PROCESS_WIDE inline Logger& logger() noexcept {
  static NoDestructor<Logger> instance;
  return instance.get();
}

/// Called in a forked child only: the parent's lock may have been held by a thread that does not
/// exist in the child, so the lock is built anew.
inline void reset_log_lock_in_child() noexcept { new (&logger().mutex) std::mutex(); }

GPUSAFE_PROCESS_NAMESPACE_END

GPUSAFE_NAMESPACE_BEGIN

using process_v1::LogLevel;
using process_v1::LogSink;
using process_v1::to_string;

namespace detail {
using process_v1::logger;
using process_v1::reset_log_lock_in_child;
using process_v1::stderr_sink;
}  // namespace detail

/// Sets the lowest level that reaches the sink.
inline void set_log_level(LogLevel level) noexcept {
  detail::logger().threshold.store(static_cast<int>(level), std::memory_order_relaxed);
}

inline LogLevel log_level() noexcept {
  return static_cast<LogLevel>(detail::logger().threshold.load(std::memory_order_relaxed));
}

/// Whether a message of `level` would be delivered.
inline bool log_enabled(LogLevel level) noexcept {
  return level != LogLevel::off &&
         static_cast<int>(level) >= detail::logger().threshold.load(std::memory_order_relaxed);
}

/// Replaces the sink (an empty function restores stderr). Returns the previous sink.
inline LogSink set_log_sink(LogSink sink) {
  auto& lg = detail::logger();
  std::lock_guard<std::mutex> lock(lg.mutex);
  std::swap(lg.sink, sink);
  return sink;
}

/// Delivers one message. Never throws.
inline void log(LogLevel level, std::string_view message) noexcept {
  if (!log_enabled(level)) return;
  auto& lg = detail::logger();
  GPUSAFE_TRY {
    std::lock_guard<std::mutex> lock(lg.mutex);
    if (lg.sink) {
      lg.sink(level, message);
    } else {
      detail::stderr_sink(level, message);
    }
  }
  GPUSAFE_CATCH_ALL {
    // A failing sink must not take the caller down; there is nowhere left to report to.
  }
}

/// Builds the message only when it will be delivered: `make` is called with no arguments and
/// returns something convertible to std::string_view.
template <class MakeMessage>
void log_lazy(LogLevel level, MakeMessage&& make) noexcept {
  if (!log_enabled(level)) return;
  GPUSAFE_TRY {
    const std::string message = std::forward<MakeMessage>(make)();
    log(level, message);
  }
  GPUSAFE_CATCH_ALL {}
}

/// A flag that lets a resource log a given problem once in its life (DESIGN rule 2).
class LogOnce {
 public:
  /// True the first time only.
  bool first() noexcept { return !done_.exchange(true, std::memory_order_relaxed); }
  void operator()(LogLevel level, std::string_view message) noexcept {
    if (first()) log(level, message);
  }

 private:
  std::atomic<bool> done_{false};
};

GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_LOG_HPP
