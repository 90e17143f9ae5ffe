// SPDX-License-Identifier: MIT
// gpusafe/detail/release_log.hpp: the one way a release path reports a runtime call that failed
// (DESIGN rule 2): "<who>: <call> on device <d> failed with <status> (<class>); <consequence>",
// once per flag, at debug level for codes that only say the runtime is gone or absent.
//
// Thread safety: the once flags are atomics; logging is serialised by the logger. Teardown:
// makes no runtime call; never throws.
#ifndef GPUSAFE_DETAIL_RELEASE_LOG_HPP
#define GPUSAFE_DETAIL_RELEASE_LOG_HPP

#include <string>
#include <type_traits>

#include "gpusafe/config.hpp"
#include "gpusafe/detail/runtime_status.hpp"
#include "gpusafe/log.hpp"

GPUSAFE_NAMESPACE_BEGIN
namespace detail {

/// How a release path treats codes that mean the runtime is unloading or its context is gone.
enum class BenignFailures {
  debug,     ///< logged at debug level (as no-GPU codes are), using up the once flag
  unlogged,  ///< not logged at all and the once flag kept for a real failure
};

/// The consequence of a failed call that changes nothing for the resource being released.
constexpr const char* kIgnoredOnRelease = "ignored on this release path";

/// Logs a failed release-path call: `who` (a string, or a callable returning one, evaluated only
/// when the line is written), the `call` that failed, the device (-1: none named), its status
/// and what became of the resource. With `once`, only the first failure it sees is logged.
template <class Who>
void log_release_failure(LogOnce* once, const Who& who, const char* call, int device, Status s,
                         const char* consequence,
                         BenignFailures benign = BenignFailures::debug) noexcept {
  const ErrorClass c = s.error_class();
  if (c == ErrorClass::benign_at_shutdown && benign == BenignFailures::unlogged) return;
  if (once != nullptr && !once->first()) return;
  const bool quiet = c == ErrorClass::benign_at_shutdown ||
                     (c == ErrorClass::no_gpu && benign == BenignFailures::debug);
  log_lazy(quiet ? LogLevel::debug : LogLevel::warning, [&] {
    std::string line;
    if constexpr (std::is_invocable_v<const Who&>) {
      line = who();
    } else {
      line = who;
    }
    line += std::string(": ") + call;
    if (device >= 0) line += " on device " + std::to_string(device);
    return line + " failed with " + s.describe() + " (" + to_string(c) + "); " + consequence;
  });
}

}  // namespace detail
GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_RELEASE_LOG_HPP
