// SPDX-License-Identifier: MIT
// gpusafe/detail/process_state.hpp: the process-wide facts every layer consults: is the process
// exiting, is this a forked child, which reset epoch each device is in, is a device poisoned.
// Public access goes through gpusafe/lifecycle.hpp; the runtime layer needs these below it.
//
// One copy per process (DESIGN rule 11): the state lives in gpusafe::process_v1, which does not
// depend on the configuration, and its accessor has default visibility, so translation units and
// shared libraries that saw different features (CUDA headers or not, LibTorch or not, hidden
// visibility or not) all read and write the same flags.
#ifndef GPUSAFE_DETAIL_PROCESS_STATE_HPP
#define GPUSAFE_DETAIL_PROCESS_STATE_HPP

#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <thread>

#include "gpusafe/config.hpp"
#include "gpusafe/detail/no_destructor.hpp"
#include "gpusafe/log.hpp"

GPUSAFE_PROCESS_NAMESPACE_BEGIN

/// Devices beyond this index share the last epoch slot; no machine has that many GPUs.
constexpr int kMaxDevices = 64;
/// How long the exit handler waits for release calls already inside the runtime.
constexpr std::chrono::milliseconds kExitDrainBound{200};
/// Callbacks run in a forked child (re-create locks); fixed capacity, no allocation in the hook.
constexpr int kMaxChildHooks = 32;

struct ProcessState {
  std::atomic<bool> exiting{false};
  std::atomic<bool> forked_child{false};
  std::atomic<int> calls_in_flight{0};
  std::atomic<std::uint32_t> epochs[kMaxDevices] = {};
  std::atomic<bool> poisoned[kMaxDevices] = {};
  std::atomic<void (*)()> child_hooks[kMaxChildHooks] = {};
  pid_t pid = ::getpid();

  ProcessState() { ::pthread_atfork(nullptr, nullptr, &on_fork_child); }

  static void on_fork_child() noexcept;
};

GPUSAFE_PROCESS_WIDE inline ProcessState& process_state() noexcept {
  static NoDestructor<ProcessState> state;
  return state.get();
}

// Building the state at static-initialisation time installs the fork handler before main, so a
// fork is seen even when it happens before the first gpusafe call.
inline const bool process_state_installed = (process_state(), true);

inline int device_slot(int device) noexcept {
  return device < 0 ? 0 : (device >= kMaxDevices ? kMaxDevices - 1 : device);
}

inline void ProcessState::on_fork_child() noexcept {
  auto& st = process_state();
  st.forked_child.store(true, std::memory_order_seq_cst);
  st.calls_in_flight.store(0, std::memory_order_relaxed);  // those threads do not exist here
  reset_log_lock_in_child();
  for (auto& hook : st.child_hooks) {
    if (auto fn = hook.load(std::memory_order_acquire)) fn();
  }
}

/// Registers a function run in every forked child (before any other code of the child).
inline void add_fork_child_hook(void (*fn)()) noexcept {
  for (auto& hook : process_state().child_hooks) {
    void (*expected)() = nullptr;
    if (hook.load() == fn) return;
    if (hook.compare_exchange_strong(expected, fn)) return;
  }
}

inline bool is_forked_child() noexcept {
  auto& st = process_state();
  // The pid check covers forks that bypass pthread_atfork handlers (raw clone, vfork).
  return st.forked_child.load(std::memory_order_relaxed) || st.pid != ::getpid();
}

inline bool is_exiting() noexcept {
  return process_state().exiting.load(std::memory_order_acquire);
}

inline void mark_exiting() noexcept {
  auto& st = process_state();
  st.exiting.store(true, std::memory_order_seq_cst);
  // Release calls that entered the runtime before the flag flipped may finish; bounded wait.
  const auto deadline = std::chrono::steady_clock::now() + kExitDrainBound;
  while (st.calls_in_flight.load(std::memory_order_seq_cst) > 0 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

inline void exit_handler() { mark_exiting(); }

/// Registers the exit handler for exit() and quick_exit(). atexit handlers run in reverse order
/// of registration, so the handler runs before the teardown of every runtime initialised before
/// this call (rule 1). Registering it more than once is harmless: marking is idempotent.
inline void register_exit_handler() noexcept {
  std::atexit(&exit_handler);
  std::at_quick_exit(&exit_handler);
}

/// Enters a runtime call on a release path: false when it must be skipped (exiting or forked
/// child). While entered, the exit handler waits (bounded) for leave_runtime_call().
inline bool enter_runtime_call() noexcept {
  auto& st = process_state();
  if (is_forked_child() || st.exiting.load(std::memory_order_acquire)) return false;
  st.calls_in_flight.fetch_add(1, std::memory_order_seq_cst);
  if (st.exiting.load(std::memory_order_seq_cst)) {
    st.calls_in_flight.fetch_sub(1, std::memory_order_seq_cst);
    return false;
  }
  return true;
}

inline void leave_runtime_call() noexcept {
  process_state().calls_in_flight.fetch_sub(1, std::memory_order_seq_cst);
}

inline std::uint32_t device_epoch(int device) noexcept {
  return process_state().epochs[device_slot(device)].load(std::memory_order_acquire);
}

inline bool is_poisoned(int device) noexcept {
  return process_state().poisoned[device_slot(device)].load(std::memory_order_acquire);
}

inline void mark_poisoned(int device) noexcept {
  process_state().poisoned[device_slot(device)].store(true, std::memory_order_release);
}

inline void bump_epoch(int device) noexcept {
  auto& st = process_state();
  st.epochs[device_slot(device)].fetch_add(1, std::memory_order_acq_rel);
  st.poisoned[device_slot(device)].store(false, std::memory_order_release);
}

GPUSAFE_PROCESS_NAMESPACE_END

GPUSAFE_NAMESPACE_BEGIN
namespace detail {
using process_v1::add_fork_child_hook;
using process_v1::bump_epoch;
using process_v1::device_epoch;
using process_v1::device_slot;
using process_v1::enter_runtime_call;
using process_v1::exit_handler;
using process_v1::is_exiting;
using process_v1::is_forked_child;
using process_v1::is_poisoned;
using process_v1::kExitDrainBound;
using process_v1::kMaxChildHooks;
using process_v1::kMaxDevices;
using process_v1::leave_runtime_call;
using process_v1::mark_exiting;
using process_v1::mark_poisoned;
using process_v1::process_state;
using process_v1::ProcessState;
using process_v1::register_exit_handler;
}  // namespace detail
GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_PROCESS_STATE_HPP
