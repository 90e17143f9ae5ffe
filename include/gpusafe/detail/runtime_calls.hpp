// SPDX-License-Identifier: MIT
// gpusafe/detail/runtime_calls.hpp: RuntimeCalls<Runtime>, the one way the library calls a
// Runtime, and DeviceSwitch, the one way it makes a device current for a scope.
//
// RuntimeCalls<Runtime> has the static members of the Runtime concept. Each one arms gpusafe's
// exit flag for Runtime (rule 1), forwards to Runtime, and records a sticky error against the
// device it concerns (the named device, or the current one for calls that name none), so that
// later requests on that device fail clearly until notify_device_reset(). A Runtime therefore
// only reports what happened; these duties are not its own (docs/runtime.md).
//
// Thread safety: stateless; the arming and the poisoned flags are atomics, a DeviceSwitch belongs
// to the thread that made it. Teardown: nothing here decides whether a call may be made; release
// paths hold a BasicRuntimeCallGate around these calls.
#ifndef GPUSAFE_DETAIL_RUNTIME_CALLS_HPP
#define GPUSAFE_DETAIL_RUNTIME_CALLS_HPP

#include <cstddef>

#include "gpusafe/config.hpp"
#include "gpusafe/detail/host_runtime.hpp"
#include "gpusafe/detail/process_state.hpp"
#include "gpusafe/detail/runtime_gate.hpp"
#include "gpusafe/detail/runtime_status.hpp"

GPUSAFE_NAMESPACE_BEGIN
namespace detail {

/// Records a sticky error against the device so later requests fail clearly (rule 6 clears it).
inline Status note_status(Status s, int device) noexcept {
  if (s.error_class() == ErrorClass::sticky) mark_poisoned(device);
  return s;
}

/// Makes `device` current for a scope and restores the caller's device; never throws. `Api` is
/// anything with the concept's get_device and set_device (RuntimeCalls<R>, or a Runtime itself
/// inside its own members). A negative device only reads the current one; an inactive switch
/// makes no call. Check ok() before relying on the switch.
template <class Api>
class BasicDeviceSwitch {
 public:
  explicit BasicDeviceSwitch(int device, bool active = true) noexcept : device_(device) {
    if (!active) return;
    status_ = Api::get_device(previous_);
    if (!status_.ok()) {
      failed_step_ = "reading the current device";
      return;
    }
    if (device_ < 0) device_ = previous_;
    if (device_ == previous_) return;
    status_ = Api::set_device(device_);
    switched_ = status_.ok();
    if (!switched_) failed_step_ = "switching device";
  }
  ~BasicDeviceSwitch() { (void)restore(); }
  BasicDeviceSwitch(const BasicDeviceSwitch&) = delete;
  BasicDeviceSwitch& operator=(const BasicDeviceSwitch&) = delete;

  /// Switches back to the caller's device now (nothing when no switch was made).
  Status restore() noexcept {
    if (!switched_) return {};
    switched_ = false;
    return Api::set_device(previous_);
  }
  /// Leaves the device switched: the owner restores previous() itself.
  void keep() noexcept { switched_ = false; }

  bool ok() const noexcept { return status_.ok(); }
  Status status() const noexcept { return status_; }
  /// What failed when !ok(): "reading the current device" or "switching device".
  const char* failed_step() const noexcept { return failed_step_; }
  /// The device made current (the current one for a negative device).
  int device() const noexcept { return device_; }
  /// The device current before.
  int previous() const noexcept { return previous_; }
  bool switched() const noexcept { return switched_; }

 private:
  int device_;
  int previous_ = 0;
  bool switched_ = false;
  const char* failed_step_ = "";
  Status status_;
};

/// The library's calls into Runtime (see the header comment). Same signatures as the concept's
/// members; FakeRuntime's simulated handle calls (handle_*) are forwarded the same way.
template <class Runtime>
struct RuntimeCalls {
  GPUSAFE_CHECK_RUNTIME(Runtime);

  static const char* name() { return Runtime::name(); }
  static bool gpu_available() noexcept {
    arm_exit_flag<Runtime>();
    return Runtime::gpu_available();
  }
  static Status device_count(int& count) noexcept {
    arm_exit_flag<Runtime>();
    return on_current(Runtime::device_count(count));
  }
  static Status allocate(MemoryKind kind, int device, std::size_t bytes, void** out) noexcept {
    arm_exit_flag<Runtime>();
    return note_status(Runtime::allocate(kind, device, bytes, out), device);
  }
  static Status deallocate(MemoryKind kind, int device, void* p) noexcept {
    arm_exit_flag<Runtime>();
    return note_status(Runtime::deallocate(kind, device, p), device);
  }
  static Status memory_info(int device, std::size_t& free_bytes,
                            std::size_t& total_bytes) noexcept {
    arm_exit_flag<Runtime>();
    return note_status(Runtime::memory_info(device, free_bytes, total_bytes), device);
  }
  static Status synchronize(int device) noexcept {
    arm_exit_flag<Runtime>();
    return note_status(Runtime::synchronize(device), device);
  }
  static Status get_device(int& device) noexcept {
    arm_exit_flag<Runtime>();
    return on_current(Runtime::get_device(device));
  }
  static Status set_device(int device) noexcept {
    arm_exit_flag<Runtime>();
    return note_status(Runtime::set_device(device), device);
  }
  static Status device_properties(int device, DeviceProperties& props) noexcept {
    arm_exit_flag<Runtime>();
    return note_status(Runtime::device_properties(device, props), device);
  }
  static Status event_create(EventHandle& event) noexcept {
    arm_exit_flag<Runtime>();
    return on_current(Runtime::event_create(event));
  }
  static Status event_destroy(EventHandle event) noexcept {
    arm_exit_flag<Runtime>();
    return on_current(Runtime::event_destroy(event));
  }
  static Status event_record(EventHandle event, StreamHandle stream) noexcept {
    arm_exit_flag<Runtime>();
    return on_current(Runtime::event_record(event, stream));
  }
  static Status event_query(EventHandle event) noexcept {
    arm_exit_flag<Runtime>();
    return on_current(Runtime::event_query(event));
  }

  // Simulated handles (only instantiated for a Runtime that has them).
  static Status handle_create(int kind, void** out) noexcept {
    arm_exit_flag<Runtime>();
    return on_current(Runtime::handle_create(kind, out));
  }
  static Status handle_destroy(void* handle) noexcept {
    arm_exit_flag<Runtime>();
    return on_current(Runtime::handle_destroy(handle));
  }
  static Status handle_finalize(void* handle) noexcept {
    arm_exit_flag<Runtime>();
    return on_current(Runtime::handle_finalize(handle));
  }
  static Status handle_query(void* handle) noexcept {
    arm_exit_flag<Runtime>();
    return on_current(Runtime::handle_query(handle));
  }
  static Status handle_abort(void* handle) noexcept {
    arm_exit_flag<Runtime>();
    return on_current(Runtime::handle_abort(handle));
  }

 private:
  /// A call that names no device acted on the current one: a sticky error poisons that (device
  /// 0 when even the current device cannot be read).
  static Status on_current(Status s) noexcept {
    if (GPUSAFE_LIKELY(s.error_class() != ErrorClass::sticky)) return s;
    int device = 0;
    if (!Runtime::get_device(device).ok() || device < 0) device = 0;
    return note_status(s, device);
  }
};

/// A device switch through RuntimeCalls<Runtime>: what the library's components use.
template <class Runtime>
using DeviceSwitch = BasicDeviceSwitch<RuntimeCalls<Runtime>>;

}  // namespace detail
GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_RUNTIME_CALLS_HPP
