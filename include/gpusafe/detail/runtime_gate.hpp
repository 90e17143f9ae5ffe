// SPDX-License-Identifier: MIT
// gpusafe/detail/runtime_gate.hpp: the exit arming (rule 1) and the call gate every release-side
// runtime call passes: arm_exit_flag<Runtime>() and BasicRuntimeCallGate<Runtime>. Include
// gpusafe/runtime.hpp rather than this header.
//
// Thread safety: arming is once per Runtime whichever thread comes first (the others wait for
// it); a gate belongs to the thread that made it. Teardown: the gate refuses once the process is
// exiting or is a forked child, and the exit handler waits (bounded) for admitted calls.
#ifndef GPUSAFE_DETAIL_RUNTIME_GATE_HPP
#define GPUSAFE_DETAIL_RUNTIME_GATE_HPP

#include <atomic>
#include <thread>

#include "gpusafe/config.hpp"
#include "gpusafe/detail/host_runtime.hpp"
#include "gpusafe/detail/process_state.hpp"
#include "gpusafe/detail/runtime_status.hpp"

GPUSAFE_NAMESPACE_BEGIN
namespace detail {

/// Per Runtime: 0 = gpusafe has not armed its exit handler for it yet, 1 = arming on some
/// thread, 2 = done.
template <class Runtime>
inline std::atomic<int> exit_arm_state{0};

template <class Runtime>
GPUSAFE_NOINLINE void arm_exit_flag_slow() noexcept {
  auto& state = exit_arm_state<Runtime>;
  int expected = 0;
  if (!state.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) {
    while (state.load(std::memory_order_acquire) == 1) std::this_thread::yield();
    return;
  }
  if (!is_forked_child() && !is_exiting()) {
    Status s;
    if constexpr (HasInitialize<Runtime>::value) s = Runtime::initialize();
    if (s.code == codes::cudart_unloading) {
      mark_exiting();  // first use after the runtime's teardown: the process is exiting
    } else {
      register_exit_handler();  // after the runtime's own teardown, so it runs before it
    }
  }
  state.store(2, std::memory_order_release);
}

/// Rule 1, at gpusafe's first use of any kind with `Runtime`, whoever made the first runtime
/// call: initialise the runtime (so its teardown is registered), then register the exit handler,
/// which therefore runs first at exit. When that first use comes after the runtime's teardown,
/// the runtime says so and the process is marked as exiting. One relaxed load afterwards.
template <class Runtime>
inline void arm_exit_flag() noexcept {
  if (GPUSAFE_LIKELY(exit_arm_state<Runtime>.load(std::memory_order_acquire) == 2)) return;
  arm_exit_flag_slow<Runtime>();
}

/// Admission to a runtime call on a release path: false when the call must be skipped (exiting
/// or forked child). While admitted, the exit handler waits (bounded) for the call to finish.
/// Arms the exit flag for `Runtime` first, so a release path may be gpusafe's first use.
template <class Runtime>
class BasicRuntimeCallGate {
  GPUSAFE_CHECK_RUNTIME(Runtime);

 public:
  BasicRuntimeCallGate() noexcept : admitted_((arm_exit_flag<Runtime>(), enter_runtime_call())) {}
  ~BasicRuntimeCallGate() {
    if (admitted_) leave_runtime_call();
  }
  BasicRuntimeCallGate(const BasicRuntimeCallGate&) = delete;
  BasicRuntimeCallGate& operator=(const BasicRuntimeCallGate&) = delete;
  explicit operator bool() const noexcept { return admitted_; }

 private:
  bool admitted_;
};

}  // namespace detail
GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_RUNTIME_GATE_HPP
