// SPDX-License-Identifier: MIT
// gpusafe/detail/default_runtime.hpp: CudaRuntime (the CUDA runtime API, when compiled in),
// DefaultRuntime, and the answers about CUDA's availability (cuda_status, is_cuda_available,
// cuda_device_count), with the gate and the "gone" test for the default runtime. Include
// gpusafe/runtime.hpp rather than this header.
//
// Thread safety: every function may be called from any thread; the probe runs once (atomics).
// Teardown: is_cuda_available() turns false when the process exits or forks; CudaRuntime itself
// makes every call it is asked for, release paths ask a RuntimeCallGate first.
#ifndef GPUSAFE_DETAIL_DEFAULT_RUNTIME_HPP
#define GPUSAFE_DETAIL_DEFAULT_RUNTIME_HPP

#include <atomic>
#include <cstddef>
#include <string>

#include "gpusafe/config.hpp"
#include "gpusafe/detail/host_runtime.hpp"
#include "gpusafe/detail/process_state.hpp"
#include "gpusafe/detail/runtime_calls.hpp"
#include "gpusafe/detail/runtime_gate.hpp"
#include "gpusafe/detail/runtime_status.hpp"

#if GPUSAFE_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

GPUSAFE_NAMESPACE_BEGIN

/// Why CUDA is or is not usable (the cached answer behind is_cuda_available()).
enum class CudaStatus {
  available,
  not_compiled,  ///< built without GPUSAFE_WITH_CUDA
  no_driver,     ///< no NVIDIA driver, or one too old for this runtime (35, 34)
  no_device,     ///< a driver but no visible device (100, CUDA_VISIBLE_DEVICES=)
  forked_child,  ///< this process was forked after gpusafe started; CUDA is unusable here
  exiting,       ///< the process is exiting; CUDA may already be torn down
  error,         ///< the probe failed with another error
};

constexpr const char* to_string(CudaStatus s) noexcept {
  switch (s) {
    case CudaStatus::available:
      return "available";
    case CudaStatus::not_compiled:
      return "not compiled (build without GPUSAFE_WITH_CUDA)";
    case CudaStatus::no_driver:
      return "no driver (no NVIDIA driver, or one too old)";
    case CudaStatus::no_device:
      return "no device visible";
    case CudaStatus::forked_child:
      return "forked child (CUDA cannot be used after fork)";
    case CudaStatus::exiting:
      return "process is exiting";
    case CudaStatus::error:
      return "runtime error while probing";
  }
  return "?";
}

namespace detail {

/// Cached answer of the CUDA probe; -1 = not probed yet. Not process-wide on purpose: it
/// depends on whether this configuration compiled CUDA in.
enum : int { kCudaUnknown = -1, kCudaForkedChild = 100, kCudaExiting = 101 };

inline std::atomic<int>& cuda_state() noexcept {
  static std::atomic<int> state{kCudaUnknown};
  return state;
}

inline CudaStatus cuda_status_from_state(int state) noexcept {
  switch (state) {
    case kCudaForkedChild:
      return CudaStatus::forked_child;
    case kCudaExiting:
      return CudaStatus::exiting;
    default:
      return static_cast<CudaStatus>(state);
  }
}

inline int probe_cuda() noexcept {
#if GPUSAFE_WITH_CUDA
  if (is_forked_child()) return kCudaForkedChild;
  if (is_exiting()) return kCudaExiting;
  int count = 0;
  // Initialises the runtime (which registers its own teardown) or, once that teardown ran,
  // answers cudaErrorCudartUnloading without touching a context, as PyTorch relies on.
  const cudaError_t rc = cudaGetDeviceCount(&count);
  if (rc == cudaSuccess && count > 0) return static_cast<int>(CudaStatus::available);
  (void)cudaGetLastError();  // clear the non-sticky error the probe left behind
  switch (classify(static_cast<int>(rc))) {
    case ErrorClass::benign_at_shutdown:
      mark_exiting();  // the first use came after the runtime's teardown: exit has begun
      return kCudaExiting;
    case ErrorClass::no_gpu:
      return static_cast<int>(rc == cudaErrorNoDevice ? CudaStatus::no_device
                                                      : CudaStatus::no_driver);
    case ErrorClass::success:
      return static_cast<int>(CudaStatus::no_device);
    default:
      return static_cast<int>(CudaStatus::error);
  }
#else
  return static_cast<int>(CudaStatus::not_compiled);
#endif
}

/// The probe's answer, probing once.
inline int cuda_probe_state() noexcept {
  auto& state = cuda_state();
  int s = state.load(std::memory_order_acquire);
  if (GPUSAFE_UNLIKELY(s == kCudaUnknown)) {
    const int probed = probe_cuda();
    if (state.compare_exchange_strong(s, probed, std::memory_order_acq_rel)) s = probed;
  }
  return s;
}

}  // namespace detail

inline CudaStatus cuda_status() noexcept;
inline bool is_cuda_available() noexcept;

#if GPUSAFE_WITH_CUDA
/// The CUDA runtime API. Without a usable GPU every device call fails with CUDA's own code;
/// host memory needs no CUDA call. Like any Runtime it only reports: a sticky code is returned,
/// and detail::RuntimeCalls records it against the device.
struct CudaRuntime {
  static constexpr const char* name() noexcept { return "cuda"; }
  /// Makes sure the runtime is initialised (one cudaGetDeviceCount, cached); after the runtime's
  /// teardown answers cudaErrorCudartUnloading without touching a context.
  static Status initialize() noexcept {
    return {detail::cuda_probe_state() == detail::kCudaExiting && detail::is_exiting()
                ? codes::cudart_unloading
                : codes::success};
  }
  static bool gpu_available() noexcept { return is_cuda_available(); }

  static Status device_count(int& count) noexcept {
    count = 0;
    if (!gpu_available()) return {codes::no_device};
    return call(cudaGetDeviceCount(&count));
  }
  static Status allocate(MemoryKind kind, int device, std::size_t bytes, void** out) noexcept {
    *out = nullptr;
    switch (kind) {
      case MemoryKind::host:
        return HostRuntime::allocate(kind, device, bytes, out);
      case MemoryKind::pinned_host:
        return call(cudaMallocHost(out, bytes));
      case MemoryKind::device:
        return call(cudaMalloc(out, bytes));
    }
    return {codes::invalid_value};
  }
  static Status deallocate(MemoryKind kind, int device, void* p) noexcept {
    switch (kind) {
      case MemoryKind::host:
        return HostRuntime::deallocate(kind, device, p);
      case MemoryKind::pinned_host:
        return call(cudaFreeHost(p));
      case MemoryKind::device:
        return call(cudaFree(p));
    }
    return {codes::invalid_value};
  }
  static Status memory_info(int device, std::size_t& free_bytes,
                            std::size_t& total_bytes) noexcept {
    free_bytes = total_bytes = 0;
    detail::BasicDeviceSwitch<CudaRuntime> on(device);
    if (!on.ok()) return on.status();
    return call(cudaMemGetInfo(&free_bytes, &total_bytes));
  }
  static Status synchronize(int device) noexcept {
    detail::BasicDeviceSwitch<CudaRuntime> on(device);
    if (!on.ok()) return on.status();
    return call(cudaDeviceSynchronize());
  }
  static Status get_device(int& device) noexcept { return call(cudaGetDevice(&device)); }
  static Status set_device(int device) noexcept { return call(cudaSetDevice(device)); }
  static Status device_properties(int device, DeviceProperties& props) noexcept {
    cudaDeviceProp p{};
    const Status s = call(cudaGetDeviceProperties(&p, device));
    if (!s.ok()) return s;
    GPUSAFE_TRY { props.name = p.name; }
    GPUSAFE_CATCH_ALL { return {codes::memory_allocation}; }
    props.compute_major = p.major;
    props.compute_minor = p.minor;
    props.multiprocessors = p.multiProcessorCount;
    return s;
  }
  static Status event_create(EventHandle& event) noexcept {
    cudaEvent_t e = nullptr;
    const Status s = call(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    event = e;
    return s;
  }
  static Status event_destroy(EventHandle event) noexcept {
    return call(cudaEventDestroy(static_cast<cudaEvent_t>(event)));
  }
  static Status event_record(EventHandle event, StreamHandle stream) noexcept {
    return call(
        cudaEventRecord(static_cast<cudaEvent_t>(event), static_cast<cudaStream_t>(stream)));
  }
  static Status event_query(EventHandle event) noexcept {
    return call(cudaEventQuery(static_cast<cudaEvent_t>(event)));
  }

 private:
  /// The Status of a CUDA call, clearing the (non-sticky) error it left behind. Recording a
  /// sticky error against its device is left to detail::RuntimeCalls, as for every Runtime.
  static Status call(cudaError_t rc) noexcept {
    if (rc != cudaSuccess && rc != cudaErrorNotReady) (void)cudaGetLastError();
    return {static_cast<int>(rc)};
  }
};
using DefaultRuntime = CudaRuntime;
#else
using DefaultRuntime = HostRuntime;
#endif

namespace detail {

/// Whether runtime calls on `Runtime` must be avoided from now on (exiting or forked child).
template <class Runtime = DefaultRuntime>
inline bool runtime_is_gone() noexcept {
  arm_exit_flag<Runtime>();
  return is_exiting() || is_forked_child();
}

/// The gate for the default runtime.
class RuntimeCallGate : public BasicRuntimeCallGate<DefaultRuntime> {};

}  // namespace detail

/// Release paths of your own resources: construct a gate before a runtime call and make the call
/// only when it admits (`if (gate) Runtime::deallocate(...)`); otherwise leak on purpose. It arms
/// gpusafe's exit flag for `Runtime`, refuses when the process is exiting or is a forked child,
/// and lets the exit handler wait (bounded) for the admitted call. See docs/runtime.md.
template <class Runtime>
using BasicRuntimeCallGate = detail::BasicRuntimeCallGate<Runtime>;
/// BasicRuntimeCallGate for the default runtime.
using RuntimeCallGate = detail::RuntimeCallGate;

/// Whether calls into `Runtime` must be avoided from now on (the process is exiting or is a
/// forked child); arms gpusafe's exit flag for `Runtime` first. For release code of your own.
template <class Runtime = DefaultRuntime>
inline bool runtime_is_gone() noexcept {
  return detail::runtime_is_gone<Runtime>();
}

/// Why CUDA is or is not usable. The first call probes (one cudaGetDeviceCount); later calls are
/// two atomic loads. Turns to forked_child / exiting when the process forks or exits.
inline CudaStatus cuda_status() noexcept {
  detail::arm_exit_flag<DefaultRuntime>();
  if (detail::process_state().forked_child.load(std::memory_order_relaxed))
    return CudaStatus::forked_child;
  if (detail::is_exiting()) return CudaStatus::exiting;
  return detail::cuda_status_from_state(detail::cuda_probe_state());
}

/// True when CUDA is compiled in, a driver and a device are present, and the process is neither
/// a forked child nor exiting. A few atomic loads after the first call.
inline bool is_cuda_available() noexcept {
  const int s = detail::cuda_state().load(std::memory_order_acquire);
  if (GPUSAFE_LIKELY(s != detail::kCudaUnknown)) {
    return s == static_cast<int>(CudaStatus::available) &&
           !detail::process_state().forked_child.load(std::memory_order_relaxed) &&
           !detail::is_exiting();
  }
  return cuda_status() == CudaStatus::available;
}

/// Number of usable CUDA devices; 0 without CUDA, driver or device, in a forked child, or exiting.
inline int cuda_device_count() noexcept {
  if (!is_cuda_available()) return 0;
  int count = 0;
  return detail::RuntimeCalls<DefaultRuntime>::device_count(count).ok() ? count : 0;
}

GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_DEFAULT_RUNTIME_HPP
