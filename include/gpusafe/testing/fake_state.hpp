// SPDX-License-Identifier: MIT
// gpusafe/testing/fake_state.hpp: the simulated state behind testing::FakeRuntime: its failure
// modes and operations (FakeMode, FakeOp), the simulated devices, allocations, streams, events and
// handles, the prologue every simulated call runs (counting, teardown, modes, faults), and the
// bodies of the calls that change the allocation and handle tables (allocate, deallocate, handle
// create/destroy/abort). Include gpusafe/testing/fake_runtime.hpp rather than this header.
//
// Thread safety: the state is guarded by its mutex and atomics; the current device is per thread,
// as in CUDA. Teardown: the state is leaked on purpose and stays valid; the simulated runtime's
// own teardown (registered with atexit at its first call) only flags it; in a forked child its
// lock is re-created.
#ifndef GPUSAFE_TESTING_FAKE_STATE_HPP
#define GPUSAFE_TESTING_FAKE_STATE_HPP

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

GPUSAFE_NAMESPACE_BEGIN
namespace testing {

/// Whole-runtime failure modes; the value is the code every call returns.
enum class FakeMode : int {
  normal = 0,
  forked_child = codes::initialization_error,       // 3
  runtime_unloading = codes::cudart_unloading,      // 4
  no_driver = codes::insufficient_driver,           // 35
  no_device = codes::no_device,                     // 100
  sticky = codes::illegal_address,                  // 700
  context_destroyed = codes::context_is_destroyed,  // 709
  trap = -1,                                        // abort() on any call
};

/// The operations of the Runtime concept, for counters and per-call faults.
enum class FakeOp : int {
  device_count,
  allocate,
  deallocate,
  memory_info,
  synchronize,
  get_device,
  set_device,
  device_properties,
  event_create,
  event_destroy,
  event_record,
  event_query,
  initialize,
  handle_create,  ///< a stream, graph, library handle or communicator (handles.hpp)
  handle_destroy,
  handle_finalize,  ///< the non-blocking finalisation of a communicator
  handle_query,     ///< a communicator's asynchronous error (in progress = not_ready)
  handle_abort,
  count_
};

constexpr const char* to_string(FakeOp op) noexcept {
  constexpr const char* names[] = {
      "device_count",    "allocate",     "deallocate",        "memory_info",   "synchronize",
      "get_device",      "set_device",   "device_properties", "event_create",  "event_destroy",
      "event_record",    "event_query",  "initialize",        "handle_create", "handle_destroy",
      "handle_finalize", "handle_query", "handle_abort"};
  return op < FakeOp::count_ ? names[static_cast<int>(op)] : "?";
}

namespace detail_fake {

constexpr int kOpCount = static_cast<int>(FakeOp::count_);

struct Device {
  std::size_t capacity = 0;
  std::size_t used = 0;
  bool override_info = false;
  std::size_t info_free = 0;
  std::size_t info_total = 0;
};

struct Allocation {
  std::size_t bytes;
  int device;
  MemoryKind kind;
  bool mapped;  // an inaccessible mapping (protect_device_memory), freed with munmap
};

inline std::size_t page_rounded(std::size_t bytes) noexcept {
  const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  return bytes == 0 ? page : (bytes + page - 1) / page * page;
}

struct Fault {
  FakeOp op;
  int code;
  std::uint64_t skip;  // calls of op to let through first
  std::int64_t times;  // failures left; -1 = forever
};

/// Devices with a null stream of their own; more than any test uses.
constexpr int kMaxFakeDevices = 64;

struct Stream {
  int device = 0;
  std::atomic<std::uint64_t> enqueued{0};
  std::atomic<std::uint64_t> completed{0};
};

struct Event {
  int device = 0;
  Stream* stream = nullptr;
  std::uint64_t ticket = 0;
};

/// A simulated handle of handles.hpp (a graph, a library handle, a communicator): it belongs to
/// the device current at its creation. Streams are simulated by `Stream` above.
struct Handle {
  int kind = 0;
  int device = 0;
  void* object = nullptr;  // the Stream of a stream handle, else the Handle itself
  bool finalizing = false;
  int async_error = 0;
};

/// The kind value handles.hpp passes for streams (HandleKind::stream).
constexpr int kStreamHandleKind = 0;

struct State {
  std::mutex mutex;
  std::unordered_map<void*, Handle*> handles;
  std::atomic<bool> hang_finalize{false};
  std::atomic<std::uint64_t> invalid_handle_destroys{0};
  std::atomic<bool> started{false};
  std::atomic<bool> torn_down{false};
  std::atomic<bool> trap_after_teardown{false};
  std::atomic<bool> protect_device{false};
  std::atomic<int> mode{0};
  std::atomic<int> device_count{1};
  std::vector<Device> devices{Device{std::size_t{1} << 30}};
  std::atomic<std::uint64_t> calls[kOpCount] = {};
  std::atomic<std::uint64_t> calls_after_teardown{0};
  std::atomic<std::uint64_t> invalid_frees{0};
  std::vector<Fault> faults;
  std::unordered_map<void*, Allocation> allocations;
  Stream null_streams[kMaxFakeDevices];
  pid_t pid = ::getpid();

  State() {
    for (int d = 0; d < kMaxFakeDevices; ++d) null_streams[d].device = d;
  }
};

inline State& state() noexcept {
  static NoDestructor<State> instance;
  return instance.get();
}

inline thread_local int current_device = 0;

/// The stream a handle names: a created stream, or the current device's null stream.
inline Stream* stream_of(StreamHandle s) noexcept {
  if (s) return static_cast<Stream*>(s);
  const int d = current_device;
  return &state().null_streams[d < 0 || d >= kMaxFakeDevices ? 0 : d];
}

inline void teardown() noexcept { state().torn_down.store(true, std::memory_order_seq_cst); }

inline void reset_lock_in_child() noexcept { new (&state().mutex) std::mutex(); }

[[noreturn]] inline void trap(FakeOp op, const char* why) noexcept {
  std::fprintf(stderr, "FakeRuntime trap: %s called %s\n", to_string(op), why);
  std::fflush(stderr);
  std::abort();
}

/// The code of the first per-call fault that matches the nth call of `op`, or 0.
inline int injected_fault(State& st, FakeOp op, std::uint64_t nth) noexcept {
  std::lock_guard<std::mutex> lock(st.mutex);
  for (auto it = st.faults.begin(); it != st.faults.end(); ++it) {
    if (it->op != op) continue;
    if (nth < it->skip) continue;
    const int code = it->code;
    if (it->times > 0 && --it->times == 0) st.faults.erase(it);
    return code;
  }
  return 0;
}

/// Like cudart's lazy initialisation: the first call of any kind, by anyone, registers the
/// runtime's own teardown with atexit.
inline void start_once(State& st) noexcept {
  if (st.started.exchange(true)) return;
  std::atexit(&teardown);
  gpusafe::detail::add_fork_child_hook(&reset_lock_in_child);
}

/// The prologue of initialize(): the probe real CUDA answers safely at any time (4 after its
/// teardown), so it never traps.
inline int enter_probe() noexcept {
  State& st = state();
  start_once(st);
  const std::uint64_t nth =
      st.calls[static_cast<int>(FakeOp::initialize)].fetch_add(1, std::memory_order_relaxed);
  if (st.torn_down.load(std::memory_order_seq_cst)) return codes::cudart_unloading;
  if (st.pid != ::getpid()) return codes::initialization_error;
  const int mode = st.mode.load(std::memory_order_acquire);
  if (mode != 0 && mode != static_cast<int>(FakeMode::trap)) return mode;
  return injected_fault(st, FakeOp::initialize, nth);
}

/// The common prologue of every call: counting, teardown, modes, child, faults. Returns the code
/// the call must fail with, or 0 to go on.
inline int enter(FakeOp op) noexcept {
  State& st = state();
  start_once(st);
  const std::uint64_t nth = st.calls[static_cast<int>(op)].fetch_add(1, std::memory_order_relaxed);
  if (st.torn_down.load(std::memory_order_seq_cst)) {
    st.calls_after_teardown.fetch_add(1, std::memory_order_relaxed);
    if (st.trap_after_teardown.load()) trap(op, "after the runtime's teardown");
    return codes::cudart_unloading;
  }
  const int mode = st.mode.load(std::memory_order_acquire);
  if (mode == static_cast<int>(FakeMode::trap)) trap(op, "in trap mode");
  if (st.pid != ::getpid()) return codes::initialization_error;
  if (mode != 0) return mode;
  return injected_fault(st, op, nth);
}

inline bool valid_device(int device) noexcept {
  return device >= 0 && device < state().device_count.load();
}

/// The simulated device `device`, or null when there is none; st.mutex must be held (a reset()
/// on another thread may change the number of devices).
inline Device* device_locked(State& st, int device) noexcept {
  if (device < 0 || static_cast<std::size_t>(device) >= st.devices.size()) return nullptr;
  return &st.devices[static_cast<std::size_t>(device)];
}

// ---- the bodies of the calls that change the allocation and handle tables ------------------
// (after enter(): FakeRuntime::allocate, deallocate, handle_create, handle_destroy, handle_abort)

inline void* map_inaccessible(std::size_t bytes) noexcept {
  void* p = ::mmap(nullptr, page_rounded(bytes), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? nullptr : p;
}

inline void release_memory(void* p, std::size_t bytes, bool mapped) noexcept {
  if (mapped) {
    ::munmap(p, page_rounded(bytes));
  } else {
    gpusafe::detail::host_free(p);
  }
}

inline int do_handle_create(int kind, void** out) noexcept {
  State& st = state();
  auto* h = new (std::nothrow) Handle();
  if (!h) return codes::memory_allocation;
  h->kind = kind;
  h->device = current_device;
  h->object = h;
  if (kind == kStreamHandleKind) {
    auto* stream = new (std::nothrow) Stream();
    if (!stream) {
      delete h;
      return codes::memory_allocation;
    }
    stream->device = h->device;
    h->object = stream;
  }
  std::lock_guard<std::mutex> lock(st.mutex);
  GPUSAFE_TRY { st.handles.emplace(h->object, h); }
  GPUSAFE_CATCH_ALL {
    if (h->object != h) delete static_cast<Stream*>(h->object);
    delete h;
    return codes::memory_allocation;
  }
  *out = h->object;
  return codes::success;
}

inline int do_handle_release(void* handle) noexcept {
  State& st = state();
  Handle* h = nullptr;
  {
    std::lock_guard<std::mutex> lock(st.mutex);
    const auto it = st.handles.find(handle);
    if (it == st.handles.end()) {
      st.invalid_handle_destroys.fetch_add(1);
      return codes::invalid_resource_handle;
    }
    h = it->second;
    st.handles.erase(it);
  }
  if (h->object != h) delete static_cast<Stream*>(h->object);
  delete h;
  return codes::success;
}

inline int do_allocate(MemoryKind kind, int device, std::size_t bytes, void** out) noexcept {
  State& st = state();
  const bool on_device = kind == MemoryKind::device;
  std::lock_guard<std::mutex> lock(st.mutex);
  if (on_device) {
    const Device* d = device_locked(st, device);
    if (!d) return codes::invalid_device;
    if (bytes > d->capacity - d->used) return codes::memory_allocation;
  }
  const bool mapped = on_device && st.protect_device.load();
  void* p = mapped ? map_inaccessible(bytes) : gpusafe::detail::host_allocate(bytes);
  if (!p) return codes::memory_allocation;
  GPUSAFE_TRY { st.allocations.emplace(p, Allocation{bytes, device, kind, mapped}); }
  GPUSAFE_CATCH_ALL {
    release_memory(p, bytes, mapped);
    return codes::memory_allocation;
  }
  if (on_device) st.devices[static_cast<std::size_t>(device)].used += bytes;
  *out = p;
  return codes::success;
}

inline int do_deallocate(MemoryKind kind, void* p) noexcept {
  if (!p) return codes::success;
  State& st = state();
  std::lock_guard<std::mutex> lock(st.mutex);
  const auto it = st.allocations.find(p);
  if (it == st.allocations.end() || it->second.kind != kind) {
    st.invalid_frees.fetch_add(1);
    return codes::invalid_value;
  }
  if (kind == MemoryKind::device && it->second.device < static_cast<int>(st.devices.size()))
    st.devices[static_cast<std::size_t>(it->second.device)].used -= it->second.bytes;
  release_memory(p, it->second.bytes, it->second.mapped);
  st.allocations.erase(it);
  return codes::success;
}

}  // namespace detail_fake

}  // namespace testing
GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_TESTING_FAKE_STATE_HPP
