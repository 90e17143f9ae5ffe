// SPDX-License-Identifier: MIT
// gpusafe/lifecycle.hpp: the state of the process as it concerns GPU resources.
//
// - process_is_exiting(): set by an atexit handler that gpusafe registers at its first use, right
//   after making sure the runtime is initialised, so it runs before the runtime's own teardown
//   (DESIGN rule 1; docs/teardown.md).
// - in_forked_child(): set by a pthread_atfork child handler and a pid check (rule 5).
// - notify_device_reset(device): bumps the device's epoch; buffers of an older epoch are released
//   without runtime calls and never reused (rule 6).
// - shutdown(): the orderly end while CUDA is alive; it drains the registry of Reclaimable
//   resources (gpusafe/reclaim.hpp).
//
// Thread safety: everything here may be called from any thread. Teardown: all state is leaked on
// purpose; the registry's lock is re-created in a forked child, so it is never inherited held.
#ifndef GPUSAFE_LIFECYCLE_HPP
#define GPUSAFE_LIFECYCLE_HPP

#include <cstddef>
#include <cstdint>
#include <string>

#include "gpusafe/config.hpp"
#include "gpusafe/detail/fork.hpp"
#include "gpusafe/detail/process_state.hpp"
#include "gpusafe/log.hpp"
#include "gpusafe/reclaim.hpp"
#include "gpusafe/runtime.hpp"

GPUSAFE_NAMESPACE_BEGIN

/// True once the process has begun to exit (after main returns, exit() or quick_exit()), in
/// every build. gpusafe's exit handler is registered at its first use, after making sure the
/// runtime is initialised, so it runs before the runtime's teardown and before the destructors of
/// every static object built before that use; a first use that comes after the runtime's teardown
/// learns it from the runtime (cudaErrorCudartUnloading). `Runtime` is the runtime whose
/// teardown matters to the caller (the default one unless a test double is in use). See
/// docs/teardown.md.
template <class Runtime = DefaultRuntime>
inline bool process_is_exiting() noexcept {
  detail::arm_exit_flag<Runtime>();
  return detail::is_exiting();
}

/// True in a child created by fork() after gpusafe was loaded.
inline bool in_forked_child() noexcept { return detail::is_forked_child(); }

/// The reset epoch of `device`; it grows by one with every notify_device_reset(device).
inline std::uint32_t device_epoch(int device) noexcept { return detail::device_epoch(device); }

/// Whether a sticky error was seen on `device` since its last reset.
inline bool device_is_poisoned(int device) noexcept { return detail::is_poisoned(device); }

/// Tells gpusafe that `device` was reset (cudaDeviceReset) or its context re-created: buffers
/// allocated before are released without runtime calls and never reused. Clears the poisoned
/// mark. Throws InvalidArgument for a negative index.
inline void notify_device_reset(int device) {
  if (device < 0 || device >= detail::kMaxDevices)
    GPUSAFE_THROW(
        InvalidArgument("notify_device_reset(" + std::to_string(device) +
                        "): device index out of range; pass the index given to cudaSetDevice (0.." +
                        std::to_string(detail::kMaxDevices - 1) + ")"));
  detail::bump_epoch(device);
}

/// The orderly end while CUDA is still alive: stops managers' timers, releases idle pool memory,
/// evicts unpinned models and empties framework caches. Everything keeps working afterwards (on
/// the slow path) or reports a clear error. Returns the bytes released. Never throws.
inline std::size_t shutdown() noexcept {
  ReclaimRequest request;
  request.level = ReclaimLevel::shutdown;
  return reclaim_all(request);
}

GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_LIFECYCLE_HPP
