// SPDX-License-Identifier: MIT
// gpusafe/detail/runtime_errors.hpp: the one mapping from a failed runtime Status to a typed
// gpusafe::Error (throw_status, throw_on_failure), the acquire-side admission of GPU requests
// (check_gpu_request), and the two refinements every component shares: an allocation that
// failed (or returned no memory) and a device that could not be made current (a bad index
// becomes InvalidArgument naming the valid ones). Include gpusafe/runtime.hpp rather than this.
//
// Thread safety: stateless. Teardown: only the device-failure mapping makes a runtime call (one
// device count, through RuntimeCalls), and only on the acquire side.
#ifndef GPUSAFE_DETAIL_RUNTIME_ERRORS_HPP
#define GPUSAFE_DETAIL_RUNTIME_ERRORS_HPP

#include <string>

#include "gpusafe/config.hpp"
#include "gpusafe/detail/default_runtime.hpp"
#include "gpusafe/detail/process_state.hpp"
#include "gpusafe/detail/runtime_calls.hpp"
#include "gpusafe/detail/runtime_status.hpp"
#include "gpusafe/error.hpp"

GPUSAFE_NAMESPACE_BEGIN

/// Throws the Error subclass that matches a failed Status. `what` names the request.
[[noreturn]] inline void throw_status(Status s, const std::string& what,
                                      const std::string& fix = {}) {
  std::string message = what + ": " + s.describe();
  switch (s.error_class()) {
    case ErrorClass::out_of_memory:
      GPUSAFE_THROW(OutOfMemory(
          message + "; " + (fix.empty() ? "free memory or ask for less" : fix), s.code));
    case ErrorClass::no_gpu:
      GPUSAFE_THROW(
          NoGpu(message + "; no usable GPU (check the driver and CUDA_VISIBLE_DEVICES)", s.code));
    case ErrorClass::sticky:
      GPUSAFE_THROW(DevicePoisoned(message +
                                       "; the CUDA context is poisoned by an earlier kernel fault: "
                                       "reset the device and call gpusafe::notify_device_reset()",
                                   s.code));
    case ErrorClass::benign_at_shutdown:
      GPUSAFE_THROW(ShuttingDown(message + "; the CUDA runtime is shutting down", s.code));
    case ErrorClass::usage:
      GPUSAFE_THROW(InvalidArgument(message + (fix.empty() ? "" : "; " + fix), s.code));
    default:
      GPUSAFE_THROW(RuntimeFailure(message + (fix.empty() ? "" : "; " + fix), s.code));
  }
}

/// Throws when `s` failed; returns otherwise.
inline void throw_on_failure(Status s, const std::string& what, const std::string& fix = {}) {
  if (GPUSAFE_UNLIKELY(!s.ok())) throw_status(s, what, fix);
}

namespace detail {

/// Whether check_gpu_request would throw: a cheap test that needs no message.
inline bool gpu_request_refused(int device) noexcept {
  return runtime_is_gone<>() || is_poisoned(device);
}

}  // namespace detail

/// Acquire-side admission for a GPU request: throws ForkedChild, ShuttingDown or DevicePoisoned
/// with a message naming `what`.
inline void check_gpu_request(int device, const std::string& what) {
  if (detail::is_forked_child())
    GPUSAFE_THROW(ForkedChild(what +
                              ": this process was forked after gpusafe started; CUDA cannot be "
                              "used in a forked child. Use CPU paths here, or create GPU resources "
                              "only after fork (or use spawn/exec instead)"));
  if (detail::is_exiting())
    GPUSAFE_THROW(ShuttingDown(what +
                               ": the process is exiting and the GPU runtime may already be torn "
                               "down; create GPU resources before exit begins"));
  if (detail::is_poisoned(device))
    GPUSAFE_THROW(
        DevicePoisoned(what + ": device " + std::to_string(device) +
                       " hit a sticky CUDA error earlier; reset it (cudaDeviceReset) and call "
                       "gpusafe::notify_device_reset(" +
                       std::to_string(device) + ")"));
}

namespace detail {

/// Throws for an allocation that failed, or that succeeded without returning memory (then as
/// out of memory). `fix` is the remedy the OutOfMemory message suggests.
[[noreturn]] inline void throw_allocation_failure(Status s, const std::string& what,
                                                  const std::string& fix) {
  throw_status(s.ok() ? Status{codes::memory_allocation} : s, what, fix);
}

/// Throws for a device that could not be made current: InvalidArgument naming the valid indices
/// when the index does not exist, else the Error of `s` for "`what`: `step`".
template <class Runtime>
[[noreturn]] void throw_device_failure(Status s, const std::string& what, const std::string& step) {
  int count = 0;
  if (s.code == codes::invalid_device && RuntimeCalls<Runtime>::device_count(count).ok())
    GPUSAFE_THROW(InvalidArgument(what + ": no such device; this machine has " +
                                      std::to_string(count) + " GPU(s), valid indices are 0.." +
                                      std::to_string(count - 1),
                                  s.code));
  throw_status(s, what + ": " + step);
}

}  // namespace detail

GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_RUNTIME_ERRORS_HPP
