// SPDX-License-Identifier: MIT
// gpusafe/detail/runtime_status.hpp: the vocabulary of the Runtime seam: memory kinds, the
// fallback policy, CUDA's error codes and their classes, Status, device properties and the opaque
// stream and event handles. Include gpusafe/runtime.hpp rather than this header.
//
// Thread safety: constants and value types only. Teardown: nothing here holds state or calls a
// runtime.
#ifndef GPUSAFE_DETAIL_RUNTIME_STATUS_HPP
#define GPUSAFE_DETAIL_RUNTIME_STATUS_HPP

#include <cstddef>
#include <string>

#include "gpusafe/config.hpp"

GPUSAFE_NAMESPACE_BEGIN

/// Where a buffer lives.
enum class MemoryKind { device, pinned_host, host };

constexpr const char* to_string(MemoryKind kind) noexcept {
  switch (kind) {
    case MemoryKind::device:
      return "device";
    case MemoryKind::pinned_host:
      return "pinned_host";
    case MemoryKind::host:
      return "host";
  }
  return "?";
}

/// What to do when device (or pinned) memory is asked for and there is no usable GPU.
enum class Fallback {
  host,   ///< serve it from host memory, flag it, log one line
  error,  ///< throw NoGpu
};

/// The CUDA error codes gpusafe reasons about (values of cudaError_t).
namespace codes {
constexpr int success = 0;
constexpr int invalid_value = 1;
constexpr int memory_allocation = 2;
constexpr int initialization_error = 3;
constexpr int cudart_unloading = 4;
constexpr int stub_library = 34;
constexpr int insufficient_driver = 35;
constexpr int no_device = 100;
constexpr int invalid_device = 101;
constexpr int device_uninitialized = 201;
constexpr int invalid_resource_handle = 400;
constexpr int not_ready = 600;
constexpr int illegal_address = 700;
constexpr int context_is_destroyed = 709;
constexpr int assert_triggered = 710;
constexpr int hardware_stack_error = 714;
constexpr int illegal_instruction = 715;
constexpr int misaligned_address = 716;
constexpr int invalid_address_space = 717;
constexpr int invalid_pc = 718;
constexpr int launch_failure = 719;
constexpr int unknown = 999;
}  // namespace codes

/// The class of a runtime status: how the library reacts to it.
enum class ErrorClass {
  success,
  not_ready,           ///< an event or stream has pending work
  benign_at_shutdown,  ///< the runtime is unloading or the context is gone (4, 709)
  no_gpu,              ///< no driver, no device, or a forked child's runtime (3, 34, 35, 100)
  out_of_memory,       ///< 2
  sticky,              ///< the context is poisoned until a device reset (700, 710, 714-719)
  usage,               ///< the call was wrong (invalid value, device, handle, context)
  other,
};

constexpr const char* to_string(ErrorClass c) noexcept {
  switch (c) {
    case ErrorClass::success:
      return "success";
    case ErrorClass::not_ready:
      return "not_ready";
    case ErrorClass::benign_at_shutdown:
      return "benign_at_shutdown";
    case ErrorClass::no_gpu:
      return "no_gpu";
    case ErrorClass::out_of_memory:
      return "out_of_memory";
    case ErrorClass::sticky:
      return "sticky";
    case ErrorClass::usage:
      return "usage";
    case ErrorClass::other:
      return "other";
  }
  return "?";
}

/// Classifies by code, never by message (messages change between CUDA versions).
constexpr ErrorClass classify(int code) noexcept {
  switch (code) {
    case codes::success:
      return ErrorClass::success;
    case codes::not_ready:
      return ErrorClass::not_ready;
    case codes::cudart_unloading:
    case codes::context_is_destroyed:
      return ErrorClass::benign_at_shutdown;
    case codes::initialization_error:
    case codes::stub_library:
    case codes::insufficient_driver:
    case codes::no_device:
      return ErrorClass::no_gpu;
    case codes::memory_allocation:
      return ErrorClass::out_of_memory;
    case codes::illegal_address:
    case codes::assert_triggered:
    case codes::hardware_stack_error:
    case codes::illegal_instruction:
    case codes::misaligned_address:
    case codes::invalid_address_space:
    case codes::invalid_pc:
    case codes::launch_failure:
      return ErrorClass::sticky;
    case codes::invalid_value:
    case codes::invalid_device:
    case codes::device_uninitialized:
    case codes::invalid_resource_handle:
      return ErrorClass::usage;
    default:
      return ErrorClass::other;
  }
}

/// A readable name for the codes above ("cudaErrorNoDevice"); "cudaError" for others.
constexpr const char* code_name(int code) noexcept {
  switch (code) {
    case codes::success:
      return "cudaSuccess";
    case codes::invalid_value:
      return "cudaErrorInvalidValue";
    case codes::memory_allocation:
      return "cudaErrorMemoryAllocation";
    case codes::initialization_error:
      return "cudaErrorInitializationError";
    case codes::cudart_unloading:
      return "cudaErrorCudartUnloading";
    case codes::stub_library:
      return "cudaErrorStubLibrary";
    case codes::insufficient_driver:
      return "cudaErrorInsufficientDriver";
    case codes::no_device:
      return "cudaErrorNoDevice";
    case codes::invalid_device:
      return "cudaErrorInvalidDevice";
    case codes::device_uninitialized:
      return "cudaErrorDeviceUninitialized";
    case codes::invalid_resource_handle:
      return "cudaErrorInvalidResourceHandle";
    case codes::not_ready:
      return "cudaErrorNotReady";
    case codes::illegal_address:
      return "cudaErrorIllegalAddress";
    case codes::context_is_destroyed:
      return "cudaErrorContextIsDestroyed";
    case codes::assert_triggered:
      return "cudaErrorAssert";
    case codes::hardware_stack_error:
      return "cudaErrorHardwareStackError";
    case codes::illegal_instruction:
      return "cudaErrorIllegalInstruction";
    case codes::misaligned_address:
      return "cudaErrorMisalignedAddress";
    case codes::invalid_address_space:
      return "cudaErrorInvalidAddressSpace";
    case codes::invalid_pc:
      return "cudaErrorInvalidPc";
    case codes::launch_failure:
      return "cudaErrorLaunchFailure";
    case codes::unknown:
      return "cudaErrorUnknown";
    default:
      return "cudaError";
  }
}

/// Result of a runtime primitive.
struct Status {
  int code = codes::success;
  constexpr bool ok() const noexcept { return code == codes::success; }
  constexpr ErrorClass error_class() const noexcept { return classify(code); }
  /// "cudaErrorNoDevice (100)"
  std::string describe() const {
    return std::string(code_name(code)) + " (" + std::to_string(code) + ")";
  }
};

/// Device facts a Runtime reports.
struct DeviceProperties {
  std::string name;
  int compute_major = 0;
  int compute_minor = 0;
  int multiprocessors = 0;
};

/// Opaque stream and event handles (cudaStream_t / cudaEvent_t on CUDA).
using StreamHandle = void*;
using EventHandle = void*;

namespace detail {

/// Bytes in use from a memory_info() reading (free above total counts as none used).
constexpr std::size_t used_bytes(std::size_t free_bytes, std::size_t total_bytes) noexcept {
  return total_bytes - (free_bytes < total_bytes ? free_bytes : total_bytes);
}

}  // namespace detail

GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_RUNTIME_STATUS_HPP
