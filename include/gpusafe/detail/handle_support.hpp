// SPDX-License-Identifier: MIT
// gpusafe/detail/handle_support.hpp: the pieces of gpusafe/handles.hpp that the handle template
// and the traits share: release outcomes, the traits' destroy result, the Runtime kind tests
// (simulated handles, CUDA), the NoGpu error naming its cause, and the once-per-kind log lines.
// The device switch is detail::DeviceSwitch (gpusafe/detail/runtime_calls.hpp). Include
// gpusafe/handles.hpp rather than this header.
//
// Thread safety: stateless, except the once-per-kind log flags (atomic). Teardown: nothing here
// calls the runtime unless admitted by the caller's gate.
#ifndef GPUSAFE_DETAIL_HANDLE_SUPPORT_HPP
#define GPUSAFE_DETAIL_HANDLE_SUPPORT_HPP

#include <string>
#include <type_traits>

#include "gpusafe/config.hpp"
#include "gpusafe/detail/handle_state.hpp"
#include "gpusafe/detail/release_log.hpp"
#include "gpusafe/detail/runtime_calls.hpp"
#include "gpusafe/error.hpp"
#include "gpusafe/log.hpp"
#include "gpusafe/runtime.hpp"

GPUSAFE_NAMESPACE_BEGIN

/// The device argument meaning "the device current on the calling thread".
constexpr int kCurrentDevice = -1;

/// What a handle's release did.
enum class ReleaseOutcome {
  none,       ///< the handle was empty
  destroyed,  ///< destroyed through the runtime
  aborted,    ///< a communicator aborted instead of destroyed (error, timeout, poisoned device)
  leaked,     ///< left to the OS on purpose (exiting, forked child, poisoned device, reset)
  failed,     ///< the destroy call failed (logged once per kind); the handle is forgotten
};

constexpr const char* to_string(ReleaseOutcome o) noexcept {
  switch (o) {
    case ReleaseOutcome::none:
      return "none";
    case ReleaseOutcome::destroyed:
      return "destroyed";
    case ReleaseOutcome::aborted:
      return "aborted";
    case ReleaseOutcome::leaked:
      return "leaked";
    case ReleaseOutcome::failed:
      return "failed";
  }
  return "?";
}

/// What a traits' destroy() reports.
struct DestroyResult {
  Status status;           ///< of the last call (destroy or abort)
  bool aborted = false;    ///< the handle was aborted rather than destroyed
  Status cause;            ///< why it was aborted (timeout = not_ready, an asynchronous error)
  bool abandoned = false;  ///< exit began during the release: left to the OS, no more calls
};

namespace detail {

template <class Runtime, class = void>
struct SimulatesHandles : std::false_type {};
template <class Runtime>
struct SimulatesHandles<Runtime, std::void_t<decltype(Runtime::handle_create(0, nullptr))>>
    : std::true_type {};

/// Whether Runtime simulates handles (testing::FakeRuntime): traits then call its handle_*().
template <class Runtime>
constexpr bool kSimulatesHandles = SimulatesHandles<Runtime>::value;

#if GPUSAFE_WITH_CUDA
/// Whether Runtime is the CUDA runtime: traits then call the CUDA and library APIs.
template <class Runtime>
constexpr bool kIsCudaRuntime = std::is_same_v<Runtime, CudaRuntime>;
#else
template <class Runtime>
constexpr bool kIsCudaRuntime = false;
#endif

/// A DestroyResult of a plain destroy call.
inline DestroyResult destroy_result(Status s) noexcept {
  DestroyResult r;
  r.status = s;
  return r;
}

/// Throws NoGpu naming why Runtime has no usable GPU ("no driver", "no device visible", ...), or
/// ShuttingDown / ForkedChild when that is why the GPU became unusable.
template <class Runtime>
[[noreturn]] void throw_no_gpu(const std::string& what) {
  // Exit or fork may have begun since the caller's check: say so (ShuttingDown, ForkedChild).
  if (is_forked_child() || is_exiting()) check_gpu_request(0, what);
  int code = codes::no_device;
  std::string cause;
#if GPUSAFE_WITH_CUDA
  if constexpr (kIsCudaRuntime<Runtime>) {
    const CudaStatus st = cuda_status();
    cause = to_string(st);
    code = st == CudaStatus::no_driver ? codes::insufficient_driver : codes::no_device;
  }
#endif
  if (cause.empty()) {
    BasicRuntimeCallGate<Runtime> gate;     // the exit handler waits for this call
    if (!gate) check_gpu_request(0, what);  // throws: refused only when exiting or forked
    int count = 0;
    const Status s = RuntimeCalls<Runtime>::device_count(count);
    if (!s.ok()) code = s.code;
    cause = s.ok() ? "no device" : s.describe();
  }
  GPUSAFE_THROW(NoGpu(
      what + ": no usable GPU on the " + RuntimeCalls<Runtime>::name() + " runtime (" + cause +
          "); GPU handles need a GPU: check the driver and CUDA_VISIBLE_DEVICES, or take "
          "the CPU path when gpusafe::is_cuda_available() is false",
      code));
}

/// Logs a failed destroy of a handle of Traits' kind, once per kind (rule 2).
template <class Traits>
void log_destroy_failure_once(int device, Status s, const char* call) noexcept {
  static LogOnce once;
  log_release_failure(&once, to_string(Traits::kind), call, device, s,
                      "the handle is forgotten (further failures of this kind are not logged)");
}

/// Logs, once per kind, that a handle was aborted instead of destroyed and why.
template <class Traits>
void log_abort_once(int device, Status cause) noexcept {
  static LogOnce once;
  if (!once.first()) return;
  log_lazy(LogLevel::warning, [&] {
    return std::string(to_string(Traits::kind)) + " on device " + std::to_string(device) +
           ": the orderly release did not complete (" +
           (cause.code == codes::not_ready ? std::string("still in progress when its bound passed")
                                           : cause.describe()) +
           "); aborted instead (further aborts of this kind are not logged)";
  });
}

}  // namespace detail

GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_HANDLE_SUPPORT_HPP
