// SPDX-License-Identifier: MIT
// gpusafe/runtime.hpp: the Runtime seam between gpusafe and the GPU (or its absence).
//
// A Runtime is a type with static, noexcept member functions that return a Status (CUDA's
// numbering: 0 = success) - see `HostRuntime` for the full list. Components are templates over
// a Runtime: `CudaRuntime` drives the CUDA runtime API, `HostRuntime` serves everything from host
// memory, `DefaultRuntime` is CUDA when compiled in (falling back to the host at run time when
// there is no driver or device) and the host otherwise, and `testing::FakeRuntime` simulates
// GPUs with fault injection. Runtime primitives never throw; the acquire-side helpers here
// (`throw_on_failure`, `check_gpu_request`) turn a Status into a typed gpusafe::Error.
//
// A Runtime only reports what happened. The library calls it through detail::RuntimeCalls, which
// arms gpusafe's exit flag at the first call and records sticky errors against their device, so a
// Runtime of your own need not do either (docs/runtime.md).
//
// The parts: detail/runtime_status.hpp (codes, Status), detail/host_runtime.hpp (HostRuntime and
// the concept check), detail/runtime_gate.hpp (exit arming, call gate), detail/runtime_calls.hpp
// (RuntimeCalls, DeviceSwitch), detail/default_runtime.hpp (CudaRuntime, DefaultRuntime, CUDA's
// availability), detail/runtime_errors.hpp (Status to Error), detail/release_log.hpp.
//
// Thread safety: every function may be called from any thread. Teardown: the first runtime call
// arms the exit flag of lifecycle.hpp (rule 1); `is_cuda_available()` turns false when the
// process exits or forks, and release-side code asks `detail::RuntimeCallGate` before a call.
#ifndef GPUSAFE_RUNTIME_HPP
#define GPUSAFE_RUNTIME_HPP

#include <atomic>
#include <cstddef>
#include <string>
#include <thread>
#include <type_traits>

#include "gpusafe/config.hpp"
#include "gpusafe/detail/default_runtime.hpp"
#include "gpusafe/detail/host_memory.hpp"
#include "gpusafe/detail/host_runtime.hpp"
#include "gpusafe/detail/process_state.hpp"
#include "gpusafe/detail/release_log.hpp"
#include "gpusafe/detail/runtime_calls.hpp"
#include "gpusafe/detail/runtime_errors.hpp"
#include "gpusafe/detail/runtime_gate.hpp"
#include "gpusafe/detail/runtime_status.hpp"
#include "gpusafe/error.hpp"
#include "gpusafe/log.hpp"

GPUSAFE_NAMESPACE_BEGIN

/// Facts about a device, or about the host when there is no GPU (`is_gpu == false`).
struct DeviceInfo {
  int index = 0;
  bool is_gpu = false;
  std::string name;
  int compute_major = 0;
  int compute_minor = 0;
  int multiprocessors = 0;  ///< streaming multiprocessors; host: hardware threads
  std::size_t total_memory = 0;
  std::size_t free_memory = 0;
};

namespace detail {

/// Why Runtime has no usable GPU, for messages: the CUDA probe's answer
/// (cuda_status()) on CUDA, what a device count answers on other runtimes. `*code` gets the
/// runtime status behind it (0 when none is known).
template <class Runtime>
std::string no_gpu_cause(int* code) {
  *code = 0;
#if GPUSAFE_WITH_CUDA
  if constexpr (std::is_same_v<Runtime, CudaRuntime>) {
    const CudaStatus st = cuda_status();
    if (st == CudaStatus::no_driver) *code = codes::insufficient_driver;
    if (st == CudaStatus::no_device) *code = codes::no_device;
    return to_string(st);
  }
#endif
  if constexpr (std::is_same_v<Runtime, HostRuntime>) {
#if GPUSAFE_WITH_CUDA
    return "the host runtime serves host memory only; use the CUDA runtime for GPU memory";
#else
    return to_string(CudaStatus::not_compiled);
#endif
  }
  int count = 0;
  const Status s = RuntimeCalls<Runtime>::device_count(count);
  *code = s.code;
  if (s.ok()) return count > 0 ? "the device is not usable" : "no device visible";
  switch (s.code) {
    case codes::no_device:
      return std::string(to_string(CudaStatus::no_device)) + ": " + s.describe();
    case codes::insufficient_driver:
    case codes::stub_library:
      return std::string(to_string(CudaStatus::no_driver)) + ": " + s.describe();
    default:
      return s.describe();
  }
}

}  // namespace detail

/// What memory a request for `kind` really gets on Runtime: `kind` itself when the GPU is usable
/// or when host memory was asked for; host memory (with `*fell_back = true`) when `fallback`
/// allows it; otherwise NoGpu. `what` names the request for the message.
template <class Runtime>
MemoryKind resolve_memory_kind(MemoryKind kind, Fallback fallback, bool* fell_back,
                               const std::string& what) {
  GPUSAFE_CHECK_RUNTIME(Runtime);
  using Calls = detail::RuntimeCalls<Runtime>;
  *fell_back = false;
  detail::arm_exit_flag<Runtime>();
  if (kind == MemoryKind::host) return kind;
  if (detail::runtime_is_gone<Runtime>()) check_gpu_request(0, what);
  if (Calls::gpu_available()) return kind;
  if (fallback == Fallback::error) {
    int code = 0;
    const std::string cause = detail::no_gpu_cause<Runtime>(&code);
    GPUSAFE_THROW(NoGpu(what + ": " + to_string(kind) +
                            " memory was asked for with Fallback::error, but the " + Calls::name() +
                            " runtime has no usable GPU (" + cause +
                            "); fix that (check the driver and CUDA_VISIBLE_DEVICES) or use "
                            "Fallback::host to run on the CPU",
                        code));
  }
  *fell_back = true;
  return MemoryKind::host;
}

namespace detail {

inline DeviceInfo host_device_info() {
  DeviceInfo info;
  info.index = 0;
  info.is_gpu = false;
  info.name = host_cpu_name();
  info.multiprocessors = host_cpu_count();
  (void)HostRuntime::memory_info(0, info.free_memory, info.total_memory);
  return info;
}

}  // namespace detail

/// Facts about `device` on Runtime: its GPU when one is usable, else the host (index 0 only).
/// Throws InvalidArgument for an index that does not exist.
template <class Runtime = DefaultRuntime>
DeviceInfo get_device_info(int device = 0) {
  GPUSAFE_CHECK_RUNTIME(Runtime);
  using Calls = detail::RuntimeCalls<Runtime>;
  detail::arm_exit_flag<Runtime>();
  const std::string what = "get_device_info(" + std::to_string(device) + ")";
  if (!Calls::gpu_available()) {
    if (device != 0)
      GPUSAFE_THROW(InvalidArgument(what + ": there is no GPU (" + Calls::name() +
                                    " runtime), so only index 0, the host, exists; pass 0"));
    return detail::host_device_info();
  }
  // Each call below is admitted like a release call, so that a thread still asking while the
  // process exits gets a typed error instead of calling into a runtime being torn down.
  detail::BasicRuntimeCallGate<Runtime> gate;
  if (!gate) check_gpu_request(device, what);
  int count = 0;
  throw_on_failure(Calls::device_count(count), what + ": counting devices");
  if (device < 0 || device >= count)
    GPUSAFE_THROW(InvalidArgument(what + ": no such device; this machine has " +
                                  std::to_string(count) + " GPU(s), valid indices are 0.." +
                                  std::to_string(count - 1)));
  DeviceProperties props;
  throw_on_failure(Calls::device_properties(device, props), what + ": reading properties");
  DeviceInfo info;
  info.index = device;
  info.is_gpu = true;
  info.name = props.name;
  info.compute_major = props.compute_major;
  info.compute_minor = props.compute_minor;
  info.multiprocessors = props.multiprocessors;
  throw_on_failure(Calls::memory_info(device, info.free_memory, info.total_memory),
                   what + ": reading memory info");
  return info;
}

GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_RUNTIME_HPP
