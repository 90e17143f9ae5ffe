// SPDX-License-Identifier: MIT
// gpusafe/testing/fake_runtime.hpp: FakeRuntime, a simulated GPU runtime for tests.
//
// It models N devices with a capacity each (real host memory behind every allocation), counts
// every call, and injects the failures real CUDA shows at the worst moments: per-call faults
// (fail the k-th call of an operation with any code) and whole-runtime modes (unloading = 4,
// context destroyed = 709, sticky = 700, no driver = 35, no device = 100, forked child = 3,
// trap = abort on any call). Like cudart, it registers its own teardown with atexit at its first
// call, whoever makes it, and knows nothing of gpusafe: it never arms gpusafe's exit flag. After
// that teardown every call fails with 4, or aborts when trap_after_teardown is on (except
// initialize(), the probe that real CUDA answers with 4), which is how tests prove that nothing
// calls the runtime once it is torn down.
// Streams and events are simulated and belong to the device that was current when they were
// made, as in CUDA: recording an event on a stream of another device fails with 400. Each device
// has a null (default) stream, which can be busy like any other: work enqueued on a stream
// completes when the test says so. Handles of handles.hpp (streams, graphs, library handles,
// communicators) are simulated too (handle_create / handle_destroy / ...), belong to the device
// current at their creation, and a communicator's finalisation can be made to hang until aborted.
//
// Like cudart, it only reports what happened: a sticky code is returned, and recording it against
// the device is left to the library's calls (detail::RuntimeCalls), as for any Runtime. The
// simulated state, and the allocation and handle tables' bookkeeping, live in
// gpusafe/testing/fake_state.hpp.
//
// Thread safety: all members may be called from any thread. Teardown: its state is leaked on
// purpose and stays valid; in a forked child its lock is re-created and calls fail with 3, as
// CUDA does in a child.
#ifndef GPUSAFE_TESTING_FAKE_RUNTIME_HPP
#define GPUSAFE_TESTING_FAKE_RUNTIME_HPP

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>
#include <vector>

#include "gpusafe/config.hpp"
#include "gpusafe/detail/host_memory.hpp"
#include "gpusafe/detail/no_destructor.hpp"
#include "gpusafe/detail/process_state.hpp"
#include "gpusafe/error.hpp"
#include "gpusafe/runtime.hpp"
#include "gpusafe/testing/fake_state.hpp"

GPUSAFE_NAMESPACE_BEGIN
namespace testing {

/// A simulated GPU runtime (see the header comment). Configuration functions are for tests; the
/// rest is the Runtime concept, as in HostRuntime.
class FakeRuntime {
 public:
  using State = detail_fake::State;

  // ---- configuration -------------------------------------------------------------------------

  /// Starts over: `devices` devices of `capacity` bytes, normal mode, no faults, zero counters.
  /// Live allocations stay valid (and still count against their device).
  static void reset(int devices = 1, std::size_t capacity = std::size_t{1} << 30) {
    if (devices < 0)
      GPUSAFE_THROW(InvalidArgument("FakeRuntime::reset: negative device count; pass 0 or more"));
    State& st = state();
    std::lock_guard<std::mutex> lock(st.mutex);
    std::vector<std::size_t> used(static_cast<std::size_t>(devices), 0);
    for (const auto& a : st.allocations)
      if (a.second.kind == MemoryKind::device && a.second.device < devices)
        used[static_cast<std::size_t>(a.second.device)] += a.second.bytes;
    st.devices.assign(static_cast<std::size_t>(devices), detail_fake::Device{capacity});
    for (int i = 0; i < devices; ++i)
      st.devices[static_cast<std::size_t>(i)].used = used[static_cast<std::size_t>(i)];
    st.device_count.store(devices);
    st.mode.store(0);
    st.faults.clear();
    for (auto& c : st.calls) c.store(0);
    st.calls_after_teardown.store(0);
    st.invalid_frees.store(0);
    st.trap_after_teardown.store(false);
    st.protect_device.store(false);
    st.hang_finalize.store(false);
    st.invalid_handle_destroys.store(0);
    for (auto& ns : st.null_streams) ns.completed.store(ns.enqueued.load());
    detail_fake::current_device = 0;
  }

  /// Every call fails with the mode's code from now on (trap: aborts).
  static void set_mode(FakeMode mode) noexcept { state().mode.store(static_cast<int>(mode)); }
  static FakeMode mode() noexcept { return static_cast<FakeMode>(state().mode.load()); }

  /// The calls of `op` after the first `skip` fail with `code`, `times` times (-1 = forever).
  static void fail_call(FakeOp op, int code, std::uint64_t skip = 0, std::int64_t times = 1) {
    if (times == 0 || times < -1)
      GPUSAFE_THROW(InvalidArgument("FakeRuntime::fail_call(" + std::string(to_string(op)) + ", " +
                                    std::to_string(code) + "): times is " + std::to_string(times) +
                                    "; pass 1 or more, or -1 for every call"));
    State& st = state();
    std::lock_guard<std::mutex> lock(st.mutex);
    st.faults.push_back({op, code, st.calls[static_cast<int>(op)].load() + skip, times});
  }

  /// The k-th allocation from now (1-based) fails with `code` (default: out of memory).
  static void fail_nth_allocation(std::uint64_t k, int code = codes::memory_allocation) {
    if (k == 0)
      GPUSAFE_THROW(
          InvalidArgument("FakeRuntime::fail_nth_allocation(0): k is 1-based; pass 1 or more"));
    fail_call(FakeOp::allocate, code, k - 1, 1);
  }

  static void clear_faults() {
    State& st = state();
    std::lock_guard<std::mutex> lock(st.mutex);
    st.faults.clear();
  }

  /// memory_info() of `device` reports these figures instead of capacity and use.
  static void set_memory_info(int device, std::size_t free_bytes, std::size_t total_bytes) {
    State& st = state();
    std::lock_guard<std::mutex> lock(st.mutex);
    auto& d = st.devices[checked_index(device, "set_memory_info")];
    d.override_info = true;
    d.info_free = free_bytes;
    d.info_total = total_bytes;
  }
  static void clear_memory_info(int device) {
    State& st = state();
    std::lock_guard<std::mutex> lock(st.mutex);
    st.devices[checked_index(device, "clear_memory_info")].override_info = false;
  }

  /// Device allocations become inaccessible to the host (PROT_NONE pages), as real device memory
  /// is: host code that reads or writes a device buffer crashes here as it would on a GPU.
  static void protect_device_memory(bool on = true) noexcept { state().protect_device.store(on); }

  /// After the runtime's teardown, any call aborts the process (with a message on stderr).
  static void trap_after_teardown(bool on = true) noexcept {
    state().trap_after_teardown.store(on);
  }
  static bool torn_down() noexcept { return state().torn_down.load(); }
  /// Whether the first call (which registers the teardown) has happened.
  static bool started() noexcept { return state().started.load(); }

  // ---- observation ---------------------------------------------------------------------------

  static std::uint64_t calls(FakeOp op) noexcept {
    return state().calls[static_cast<int>(op)].load();
  }
  static std::uint64_t total_calls() noexcept {
    std::uint64_t n = 0;
    for (const auto& c : state().calls) n += c.load();
    return n;
  }
  static std::uint64_t calls_after_teardown() noexcept {
    return state().calls_after_teardown.load();
  }
  /// deallocate() of a pointer that is not live (a double free, or a foreign pointer).
  static std::uint64_t invalid_frees() noexcept { return state().invalid_frees.load(); }
  static std::size_t live_allocations() {
    State& st = state();
    std::lock_guard<std::mutex> lock(st.mutex);
    return st.allocations.size();
  }
  static std::size_t bytes_in_use(int device) {
    State& st = state();
    std::lock_guard<std::mutex> lock(st.mutex);
    return st.devices[checked_index(device, "bytes_in_use")].used;
  }

  // ---- simulated streams ---------------------------------------------------------------------

  /// A stream of the current device.
  static StreamHandle create_stream() {
    auto* stream = new detail_fake::Stream();
    stream->device = detail_fake::current_device;
    return stream;
  }
  static void destroy_stream(StreamHandle s) noexcept {
    delete static_cast<detail_fake::Stream*>(s);
  }
  /// Simulates a kernel launched on `s` (null: the current device's null stream): events
  /// recorded after it stay pending until completion.
  static void enqueue_work(StreamHandle s) noexcept { ++detail_fake::stream_of(s)->enqueued; }
  /// All work enqueued on `s` (null: the current device's null stream) so far is done.
  static void complete_stream(StreamHandle s) noexcept {
    auto* st = detail_fake::stream_of(s);
    st->completed.store(st->enqueued.load());
  }
  /// The device a stream or event belongs to.
  static int stream_device(StreamHandle s) noexcept { return detail_fake::stream_of(s)->device; }
  static int event_device(EventHandle e) noexcept {
    return e ? static_cast<detail_fake::Event*>(e)->device : -1;
  }

  // ---- simulated handles (handles.hpp) ------------------------------------------------------

  /// Communicators never finish finalising (handle_query answers not_ready) until aborted, as an
  /// NCCL communicator whose peer died: a bounded destroy must give up and abort.
  static void hang_handle_finalize(bool on = true) noexcept { state().hang_finalize.store(on); }
  /// The next handle_query() of `handle` answers `code` (an asynchronous error), until cleared
  /// with 0. Unknown handles are ignored.
  static void set_handle_async_error(void* handle, int code) {
    State& st = state();
    std::lock_guard<std::mutex> lock(st.mutex);
    const auto it = st.handles.find(handle);
    if (it != st.handles.end()) it->second->async_error = code;
  }
  /// Handles created and not yet destroyed or aborted (of `kind`, or of every kind with -1).
  static std::size_t live_handles(int kind = -1) {
    State& st = state();
    std::lock_guard<std::mutex> lock(st.mutex);
    std::size_t n = 0;
    for (const auto& h : st.handles) n += (kind < 0 || h.second->kind == kind) ? 1 : 0;
    return n;
  }
  /// The device a live handle belongs to, or -1.
  static int handle_device(void* handle) {
    State& st = state();
    std::lock_guard<std::mutex> lock(st.mutex);
    const auto it = st.handles.find(handle);
    return it == st.handles.end() ? -1 : it->second->device;
  }
  /// handle_destroy() or handle_abort() of a handle that is not live (a double destroy).
  static std::uint64_t invalid_handle_destroys() noexcept {
    return state().invalid_handle_destroys.load();
  }

  // ---- the Runtime concept -------------------------------------------------------------------

  static constexpr const char* name() noexcept { return "fake"; }

  /// The runtime's lazy initialisation (as cudaGetDeviceCount does it): registers its teardown
  /// at the first call; after that teardown answers 4 instead of trapping.
  static Status initialize() noexcept { return {detail_fake::enter_probe()}; }

  static bool gpu_available() noexcept {
    const State& st = state();
    return st.mode.load() == 0 && st.device_count.load() > 0 && !st.torn_down.load() &&
           !gpusafe::detail::is_forked_child() && !gpusafe::detail::is_exiting();
  }

  static Status device_count(int& count) noexcept {
    count = 0;
    return finish(FakeOp::device_count, [&] {
      count = state().device_count.load();
      return count > 0 ? codes::success : codes::no_device;
    });
  }

  static Status allocate(MemoryKind kind, int device, std::size_t bytes, void** out) noexcept {
    *out = nullptr;
    return finish(FakeOp::allocate,
                  [&] { return detail_fake::do_allocate(kind, device, bytes, out); });
  }

  static Status deallocate(MemoryKind kind, int, void* p) noexcept {
    return finish(FakeOp::deallocate, [&] { return detail_fake::do_deallocate(kind, p); });
  }

  static Status memory_info(int device, std::size_t& free_bytes,
                            std::size_t& total_bytes) noexcept {
    free_bytes = total_bytes = 0;
    return finish(FakeOp::memory_info, [&] {
      State& st = state();
      std::lock_guard<std::mutex> lock(st.mutex);
      const detail_fake::Device* d = detail_fake::device_locked(st, device);
      if (!d) return codes::invalid_device;
      total_bytes = d->override_info ? d->info_total : d->capacity;
      free_bytes = d->override_info ? d->info_free : d->capacity - d->used;
      return codes::success;
    });
  }

  static Status synchronize(int device) noexcept {
    return finish(FakeOp::synchronize, [&] {
      return detail_fake::valid_device(device) ? codes::success : codes::invalid_device;
    });
  }

  static Status get_device(int& device) noexcept {
    return finish(FakeOp::get_device, [&] {
      device = detail_fake::current_device;
      return codes::success;
    });
  }

  static Status set_device(int device) noexcept {
    return finish(FakeOp::set_device, [&] {
      if (!detail_fake::valid_device(device)) return codes::invalid_device;
      detail_fake::current_device = device;
      return codes::success;
    });
  }

  static Status device_properties(int device, DeviceProperties& props) noexcept {
    return finish(FakeOp::device_properties, [&] {
      if (!detail_fake::valid_device(device)) return codes::invalid_device;
      GPUSAFE_TRY { props.name = "FakeRuntime device " + std::to_string(device); }
      GPUSAFE_CATCH_ALL { return codes::memory_allocation; }
      props.compute_major = 9;
      props.compute_minor = 0;
      props.multiprocessors = 132;
      return codes::success;
    });
  }

  static Status event_create(EventHandle& event) noexcept {
    event = nullptr;
    return finish(FakeOp::event_create, [&] {
      auto* e = new (std::nothrow) detail_fake::Event();
      if (!e) return codes::memory_allocation;
      e->device = detail_fake::current_device;
      event = e;
      return codes::success;
    });
  }
  static Status event_destroy(EventHandle event) noexcept {
    return finish(FakeOp::event_destroy, [&] {
      delete static_cast<detail_fake::Event*>(event);
      return codes::success;
    });
  }
  static Status event_record(EventHandle event, StreamHandle stream) noexcept {
    return finish(FakeOp::event_record, [&] {
      auto* e = static_cast<detail_fake::Event*>(event);
      if (!e) return codes::invalid_resource_handle;
      detail_fake::Stream* target = detail_fake::stream_of(stream);
      // CUDA: the event and the stream must belong to the same device (context).
      if (target->device != e->device) return codes::invalid_resource_handle;
      e->stream = target;
      e->ticket = target->enqueued.load();
      return codes::success;
    });
  }
  static Status event_query(EventHandle event) noexcept {
    return finish(FakeOp::event_query, [&] {
      auto* e = static_cast<detail_fake::Event*>(event);
      if (!e) return codes::invalid_resource_handle;
      const bool done = !e->stream || e->stream->completed.load() >= e->ticket;
      return done ? codes::success : codes::not_ready;
    });
  }

  /// Creates a handle of `kind` (a HandleKind value of handles.hpp) on the current device. A
  /// stream handle is a simulated stream (usable with event_record); others are opaque.
  static Status handle_create(int kind, void** out) noexcept {
    *out = nullptr;
    return finish(FakeOp::handle_create, [&] { return detail_fake::do_handle_create(kind, out); });
  }
  static Status handle_destroy(void* handle) noexcept {
    return finish(FakeOp::handle_destroy, [&] { return detail_fake::do_handle_release(handle); });
  }
  /// Starts a communicator's finalisation; it is in progress (not_ready) until handle_query says
  /// otherwise.
  static Status handle_finalize(void* handle) noexcept {
    return finish(FakeOp::handle_finalize, [&] {
      State& st = state();
      std::lock_guard<std::mutex> lock(st.mutex);
      const auto it = st.handles.find(handle);
      if (it == st.handles.end()) return codes::invalid_resource_handle;
      it->second->finalizing = true;
      return codes::not_ready;
    });
  }
  /// A communicator's state: its asynchronous error, not_ready while a finalisation hangs,
  /// success otherwise.
  static Status handle_query(void* handle) noexcept {
    return finish(FakeOp::handle_query, [&] {
      State& st = state();
      std::lock_guard<std::mutex> lock(st.mutex);
      const auto it = st.handles.find(handle);
      if (it == st.handles.end()) return codes::invalid_resource_handle;
      if (it->second->async_error != 0) return it->second->async_error;
      if (it->second->finalizing && st.hang_finalize.load()) return codes::not_ready;
      return codes::success;
    });
  }
  /// Aborts a communicator (frees it whatever state it is in).
  static Status handle_abort(void* handle) noexcept {
    return finish(FakeOp::handle_abort, [&] { return detail_fake::do_handle_release(handle); });
  }

 private:
  static State& state() noexcept { return detail_fake::state(); }

  /// `device` as an index into the device table; InvalidArgument when out of range.
  static std::size_t checked_index(int device, const char* what) {
    const int n = state().device_count.load();
    if (device < 0 || device >= n)
      GPUSAFE_THROW(
          InvalidArgument(std::string("FakeRuntime::") + what + "(" + std::to_string(device) +
                          "): no such simulated device; valid indices are 0.." +
                          std::to_string(n - 1) + " (FakeRuntime::reset sets the count)"));
    return static_cast<std::size_t>(device);
  }

  template <class Body>
  static Status finish(FakeOp op, Body&& body) noexcept {
    int code = detail_fake::enter(op);
    if (code == 0) code = body();
    return {code};
  }
};

}  // namespace testing
GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_TESTING_FAKE_RUNTIME_HPP
