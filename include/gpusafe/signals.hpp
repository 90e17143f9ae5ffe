// SPDX-License-Identifier: MIT
// gpusafe/signals.hpp: stop a program on SIGINT / SIGTERM without losing its cleanup.
//
// The default action of SIGTERM and SIGINT kills the process at once: no destructor, no atexit
// handler, no SafeCudaCleanup runs. Calling exit() from a signal handler is worse (not
// async-signal-safe: it can deadlock or run destructors in the middle of the code the signal
// interrupted). The safe pattern is to let the handler only set a flag, let the main loop see it
// and leave, and return from main normally, so every cleanup the library promises runs:
//
//   int main() {
//     gpusafe::StopOnSignals stop;              // SIGINT and SIGTERM now only set a flag
//     while (!stop.requested()) train_step();   // each step ends at a safe point
//     save_checkpoint();
//     return 0;                                 // destructors, atexit handlers: all run
//   }
//
// StopOnSignals installs the handlers (sigaction, SA_RESTART) in its constructor and restores the
// previous ones in its destructor. The flag is a lock-free std::atomic<int> written by the handler
// (async-signal-safe); stop_requested() and stop_signal() read it from any thread. Several
// StopOnSignals may be alive at once (nested); each restores what it replaced, so destroy them in
// reverse order of construction.
//
// Thread safety: stop_requested()/stop_signal()/clear_stop_request() from any thread; construct and
// destroy a StopOnSignals on one thread (sigaction is process-wide). Teardown: nothing here calls a
// GPU runtime; a StopOnSignals destroyed during static destruction only restores handlers.
#ifndef GPUSAFE_SIGNALS_HPP
#define GPUSAFE_SIGNALS_HPP

#include <signal.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <initializer_list>
#include <string>
#include <vector>

#include "gpusafe/config.hpp"
#include "gpusafe/error.hpp"

GPUSAFE_PROCESS_NAMESPACE_BEGIN

/// The signal that asked the program to stop (0: none): one per process, whichever shared library
/// or configuration installed the handler. Constant-initialised and lock-free, so the handler may
/// write it at any moment, static initialisation and destruction included.
GPUSAFE_PROCESS_WIDE inline std::atomic<int>& stop_signal_flag() noexcept {
  static std::atomic<int> flag{0};
  return flag;
}

GPUSAFE_PROCESS_NAMESPACE_END

GPUSAFE_NAMESPACE_BEGIN

namespace detail {

static_assert(std::atomic<int>::is_always_lock_free,
              "the stop flag must be lock-free to be written from a signal handler");

inline void stop_signal_handler(int signal_number) {
  const int saved_errno = errno;
  process_v1::stop_signal_flag().store(signal_number, std::memory_order_relaxed);
  errno = saved_errno;
}

}  // namespace detail

/// Whether SIGINT or SIGTERM (or a signal given to StopOnSignals) arrived while a StopOnSignals was
/// installed. One atomic load; async-signal-safe; never throws.
inline bool stop_requested() noexcept {
  return process_v1::stop_signal_flag().load(std::memory_order_relaxed) != 0;
}

/// The signal that asked to stop (SIGINT, SIGTERM, ...), 0 when none did.
inline int stop_signal() noexcept {
  return process_v1::stop_signal_flag().load(std::memory_order_relaxed);
}

/// Forgets a stop request (for a program that handles one and goes on).
inline void clear_stop_request() noexcept {
  process_v1::stop_signal_flag().store(0, std::memory_order_relaxed);
}

/// RAII: while alive, the given signals (SIGINT and SIGTERM by default) only record a stop request
/// (stop_requested() becomes true) instead of killing the process; the destructor restores the
/// previous handlers. A second signal is recorded too: it does not kill the program, so make
/// sure the main loop checks requested() at bounded intervals.
class StopOnSignals {
 public:
  /// Installs the handler for SIGINT and SIGTERM. Throws InvalidArgument (naming the signal and
  /// errno) if sigaction fails; then nothing is installed.
  StopOnSignals() : StopOnSignals({SIGINT, SIGTERM}) {}

  /// Installs the handler for `signals` (e.g. {SIGINT, SIGTERM, SIGHUP}). SIGKILL and SIGSTOP
  /// cannot be caught: asking for them throws InvalidArgument.
  explicit StopOnSignals(std::initializer_list<int> signals) {
    saved_.reserve(signals.size());
    for (const int s : signals) {
      Saved saved;
      saved.signal_number = s;
      struct sigaction action {};
      action.sa_handler = &detail::stop_signal_handler;
      sigemptyset(&action.sa_mask);
      action.sa_flags = SA_RESTART;
      if (s == SIGKILL || s == SIGSTOP || ::sigaction(s, &action, &saved.previous) != 0) {
        const std::string reason =
            (s == SIGKILL || s == SIGSTOP) ? "it cannot be caught" : std::strerror(errno);
        restore();
        GPUSAFE_THROW(InvalidArgument("StopOnSignals: cannot install a handler for signal " +
                                      std::to_string(s) + " (" + reason +
                                      "); give catchable signals such as SIGINT and SIGTERM"));
      }
      saved_.push_back(saved);
    }
  }

  StopOnSignals(const StopOnSignals&) = delete;
  StopOnSignals& operator=(const StopOnSignals&) = delete;

  /// Restores the handlers that were installed before (the stop request stays recorded).
  ~StopOnSignals() { restore(); }

  /// Whether a stop was requested (same as gpusafe::stop_requested()).
  bool requested() const noexcept { return stop_requested(); }
  /// The signal that asked to stop, 0 when none did.
  int signal() const noexcept { return stop_signal(); }

 private:
  struct Saved {
    int signal_number = 0;
    struct sigaction previous {};
  };

  void restore() noexcept {
    for (auto it = saved_.rbegin(); it != saved_.rend(); ++it)
      (void)::sigaction(it->signal_number, &it->previous, nullptr);
    saved_.clear();
  }

  std::vector<Saved> saved_;
};

GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_SIGNALS_HPP
