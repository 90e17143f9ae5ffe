// SPDX-License-Identifier: MIT
// gpusafe/detail/device_memory.hpp: the one reading of "how full is the watched memory" that the
// memory manager's threshold and the model cache's watermarks share: the Runtime's figures for a
// GPU, the host's (/proc/meminfo) when there is none, nothing while the runtime must not be
// called.
//
// Thread safety: stateless. Teardown: makes a runtime call only through the call gate.
#ifndef GPUSAFE_DETAIL_DEVICE_MEMORY_HPP
#define GPUSAFE_DETAIL_DEVICE_MEMORY_HPP

#include <cstddef>

#include "gpusafe/config.hpp"
#include "gpusafe/error.hpp"
#include "gpusafe/runtime.hpp"

GPUSAFE_NAMESPACE_BEGIN
namespace detail {

/// One reading of a device's memory. `known` is false when it could not be read; `status` then
/// says why when a runtime call failed (it is ok when the call was not made).
struct MemoryReading {
  bool known = false;
  bool is_gpu = false;  // figures of a GPU (false: the host's, for a process without one)
  std::size_t free_bytes = 0;
  std::size_t total_bytes = 0;
  Status status;

  std::size_t used_bytes() const noexcept { return detail::used_bytes(free_bytes, total_bytes); }
};

/// Reads `device`'s memory: the Runtime's figures, or the host's when there is no GPU (device 0
/// only: pools that fell back to host memory serve it). Unknown when the process is exiting or
/// is a forked child, or when the call fails.
template <class Runtime>
MemoryReading read_device_memory(int device) noexcept {
  MemoryReading r;
  r.is_gpu = RuntimeCalls<Runtime>::gpu_available();
  if (!r.is_gpu) {
    if (device != 0) return r;
    r.status = HostRuntime::memory_info(0, r.free_bytes, r.total_bytes);
  } else {
    BasicRuntimeCallGate<Runtime> gate;
    if (!gate) return r;
    r.status = RuntimeCalls<Runtime>::memory_info(device, r.free_bytes, r.total_bytes);
  }
  r.known = r.status.ok() && r.total_bytes > 0;
  return r;
}

}  // namespace detail
GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_DEVICE_MEMORY_HPP
