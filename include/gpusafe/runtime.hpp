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
#include "gpusafe/detail/host_memory.hpp"
#include "gpusafe/detail/process_state.hpp"
#include "gpusafe/error.hpp"
#include "gpusafe/log.hpp"

#if GPUSAFE_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

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

/// Records a sticky error against the device so later requests fail clearly (rule 6 clears it).
inline Status note_status(Status s, int device) noexcept {
  if (s.error_class() == ErrorClass::sticky) mark_poisoned(device);
  return s;
}

/// Bytes in use from a memory_info() reading (free above total counts as none used).
constexpr std::size_t used_bytes(std::size_t free_bytes, std::size_t total_bytes) noexcept {
  return total_bytes - (free_bytes < total_bytes ? free_bytes : total_bytes);
}

}  // namespace detail

/// The CPU fallback: every kind of memory is aligned host memory; no devices, no streams.
/// This struct is also the reference for the Runtime concept's members.
struct HostRuntime {
  static constexpr const char* name() noexcept { return "host"; }
  /// Optional member: makes sure the runtime is initialised, so that its own teardown (if it
  /// registers one) is registered before gpusafe's exit handler. Must be safe to call at any
  /// time, even after that teardown, when it returns codes::cudart_unloading.
  static Status initialize() noexcept { return {}; }
  /// Whether device memory can be served right now.
  static bool gpu_available() noexcept { return false; }
  static Status device_count(int& count) noexcept {
    count = 0;
    return {};
  }
  static Status allocate(MemoryKind, int, std::size_t bytes, void** out) noexcept {
    *out = detail::host_allocate(bytes);
    return {*out ? codes::success : codes::memory_allocation};
  }
  static Status deallocate(MemoryKind, int, void* p) noexcept {
    detail::host_free(p);
    return {};
  }
  static Status memory_info(int, std::size_t& free_bytes, std::size_t& total_bytes) noexcept {
    detail::host_memory_figures(total_bytes, free_bytes);
    return {};
  }
  static Status synchronize(int) noexcept { return {}; }
  static Status get_device(int& device) noexcept {
    device = 0;
    return {};
  }
  static Status set_device(int device) noexcept {
    return {device == 0 ? codes::success : codes::invalid_device};
  }
  static Status device_properties(int, DeviceProperties&) noexcept { return {codes::no_device}; }
  static Status event_create(EventHandle& event) noexcept {
    event = nullptr;
    return {};
  }
  static Status event_destroy(EventHandle) noexcept { return {}; }
  static Status event_record(EventHandle, StreamHandle) noexcept { return {}; }
  /// success when the recorded work is done, not_ready while pending.
  static Status event_query(EventHandle) noexcept { return {}; }
};

namespace detail {

template <class R, class = void>
struct HasRuntimeMembers : std::false_type {};
template <class R>
struct HasRuntimeMembers<
    R, std::void_t<
           decltype(R::name()), decltype(R::gpu_available()),
           decltype(R::device_count(std::declval<int&>())),
           decltype(R::allocate(MemoryKind::host, 0, std::size_t{}, std::declval<void**>())),
           decltype(R::deallocate(MemoryKind::host, 0, std::declval<void*>())),
           decltype(R::memory_info(0, std::declval<std::size_t&>(), std::declval<std::size_t&>())),
           decltype(R::synchronize(0)), decltype(R::get_device(std::declval<int&>())),
           decltype(R::set_device(0)),
           decltype(R::device_properties(0, std::declval<DeviceProperties&>())),
           decltype(R::event_create(std::declval<EventHandle&>())),
           decltype(R::event_destroy(EventHandle{})),
           decltype(R::event_record(EventHandle{}, StreamHandle{})),
           decltype(R::event_query(EventHandle{}))>> : std::true_type {};

template <class R, bool = HasRuntimeMembers<R>::value>
struct RuntimeMembersFit : std::false_type {};
template <class R>
struct RuntimeMembersFit<R, true>
    : std::bool_constant<
          std::is_same_v<decltype(R::allocate(MemoryKind::host, 0, std::size_t{},
                                              std::declval<void**>())),
                         Status> &&
          std::is_same_v<decltype(R::deallocate(MemoryKind::host, 0, std::declval<void*>())),
                         Status> &&
          std::is_same_v<decltype(R::event_query(EventHandle{})), Status>&& noexcept(R::deallocate(MemoryKind::host, 0, std::declval<void*>()))&& noexcept(
              R::event_destroy(
                  EventHandle{}))&& noexcept(R::
                                                 set_device(
                                                     0))&& noexcept(R::
                                                                        get_device(
                                                                            std::declval<
                                                                                int&>()))&& noexcept(R::
                                                                                                         synchronize(
                                                                                                             0))&& noexcept(R::gpu_available())> {
};

}  // namespace detail

/// Whether R models the Runtime concept (docs/runtime.md): the static members of HostRuntime,
/// returning Status, with every release-side member noexcept.
template <class R>
inline constexpr bool is_runtime_v = detail::RuntimeMembersFit<R>::value;

/// Use in every template that takes a Runtime, so that a wrong one fails at the user's line.
#define GPUSAFE_CHECK_RUNTIME(R)                                                                  \
  static_assert(::gpusafe::is_runtime_v<R>,                                                       \
                "gpusafe: the Runtime argument does not model the Runtime concept: it needs the " \
                "static members of gpusafe::HostRuntime (name, gpu_available, device_count, "     \
                "allocate, deallocate, memory_info, synchronize, get_device, set_device, "        \
                "device_properties, event_create/destroy/record/query), returning "               \
                "gpusafe::Status, the release-side ones noexcept; see docs/runtime.md")

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
/// host memory needs no CUDA call.
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
    return call(cudaGetDeviceCount(&count), -1);
  }
  static Status allocate(MemoryKind kind, int device, std::size_t bytes, void** out) noexcept {
    *out = nullptr;
    switch (kind) {
      case MemoryKind::host:
        return HostRuntime::allocate(kind, device, bytes, out);
      case MemoryKind::pinned_host:
        return call(cudaMallocHost(out, bytes), device);
      case MemoryKind::device:
        return call(cudaMalloc(out, bytes), device);
    }
    return {codes::invalid_value};
  }
  static Status deallocate(MemoryKind kind, int device, void* p) noexcept {
    switch (kind) {
      case MemoryKind::host:
        return HostRuntime::deallocate(kind, device, p);
      case MemoryKind::pinned_host:
        return call(cudaFreeHost(p), device);
      case MemoryKind::device:
        return call(cudaFree(p), device);
    }
    return {codes::invalid_value};
  }
  static Status memory_info(int device, std::size_t& free_bytes,
                            std::size_t& total_bytes) noexcept {
    free_bytes = total_bytes = 0;
    int previous = 0;
    if (cudaGetDevice(&previous) != cudaSuccess) return call(cudaGetLastError(), device);
    if (previous != device) {
      const Status s = call(cudaSetDevice(device), device);
      if (!s.ok()) return s;
    }
    const Status s = call(cudaMemGetInfo(&free_bytes, &total_bytes), device);
    if (previous != device) (void)cudaSetDevice(previous);
    return s;
  }
  static Status synchronize(int device) noexcept {
    int previous = 0;
    if (cudaGetDevice(&previous) != cudaSuccess) return call(cudaGetLastError(), device);
    if (previous != device && cudaSetDevice(device) != cudaSuccess)
      return call(cudaGetLastError(), device);
    const Status s = call(cudaDeviceSynchronize(), device);
    if (previous != device) (void)cudaSetDevice(previous);
    return s;
  }
  static Status get_device(int& device) noexcept { return call(cudaGetDevice(&device), -1); }
  static Status set_device(int device) noexcept { return call(cudaSetDevice(device), device); }
  static Status device_properties(int device, DeviceProperties& props) noexcept {
    cudaDeviceProp p{};
    const Status s = call(cudaGetDeviceProperties(&p, device), device);
    if (!s.ok()) return s;
    try {
      props.name = p.name;
    } catch (...) {
      return {codes::memory_allocation};
    }
    props.compute_major = p.major;
    props.compute_minor = p.minor;
    props.multiprocessors = p.multiProcessorCount;
    return s;
  }
  static Status event_create(EventHandle& event) noexcept {
    cudaEvent_t e = nullptr;
    const Status s = call(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), -1);
    event = e;
    return s;
  }
  static Status event_destroy(EventHandle event) noexcept {
    return call(cudaEventDestroy(static_cast<cudaEvent_t>(event)), -1);
  }
  static Status event_record(EventHandle event, StreamHandle stream) noexcept {
    return call(cudaEventRecord(static_cast<cudaEvent_t>(event), static_cast<cudaStream_t>(stream)),
                -1);
  }
  static Status event_query(EventHandle event) noexcept {
    return call(cudaEventQuery(static_cast<cudaEvent_t>(event)), -1);
  }

 private:
  static Status call(cudaError_t rc, int device) noexcept {
    if (rc == cudaSuccess || rc == cudaErrorNotReady) return {static_cast<int>(rc)};
    (void)cudaGetLastError();
    // A call that names no device acted on the current one; a sticky error poisons that.
    if (device < 0 && cudaGetDevice(&device) != cudaSuccess) device = 0;
    return detail::note_status({static_cast<int>(rc)}, device);
  }
};
using DefaultRuntime = CudaRuntime;
#else
using DefaultRuntime = HostRuntime;
#endif

namespace detail {

template <class Runtime, class = void>
struct HasInitialize : std::false_type {};
template <class Runtime>
struct HasInitialize<Runtime, std::void_t<decltype(Runtime::initialize())>> : std::true_type {};

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

/// Whether runtime calls on `Runtime` must be avoided from now on (exiting or forked child).
template <class Runtime = DefaultRuntime>
inline bool runtime_is_gone() noexcept {
  arm_exit_flag<Runtime>();
  return is_exiting() || is_forked_child();
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
  return DefaultRuntime::device_count(count).ok() ? count : 0;
}

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

/// Throws the Error subclass that matches a failed Status. `what` names the request.
[[noreturn]] inline void throw_status(Status s, const std::string& what,
                                      const std::string& fix = {}) {
  std::string message = what + ": " + s.describe();
  switch (s.error_class()) {
    case ErrorClass::out_of_memory:
      throw OutOfMemory(message + "; " + (fix.empty() ? "free memory or ask for less" : fix),
                        s.code);
    case ErrorClass::no_gpu:
      throw NoGpu(message + "; no usable GPU (check the driver and CUDA_VISIBLE_DEVICES)", s.code);
    case ErrorClass::sticky:
      throw DevicePoisoned(message +
                               "; the CUDA context is poisoned by an earlier kernel fault: "
                               "reset the device and call gpusafe::notify_device_reset()",
                           s.code);
    case ErrorClass::benign_at_shutdown:
      throw ShuttingDown(message + "; the CUDA runtime is shutting down", s.code);
    case ErrorClass::usage:
      throw InvalidArgument(message + (fix.empty() ? "" : "; " + fix), s.code);
    default:
      throw RuntimeFailure(message + (fix.empty() ? "" : "; " + fix), s.code);
  }
}

/// Throws when `s` failed; returns otherwise.
inline void throw_on_failure(Status s, const std::string& what, const std::string& fix = {}) {
  if (GPUSAFE_UNLIKELY(!s.ok())) throw_status(s, what, fix);
}

namespace detail {

/// Whether check_gpu_request would throw: a cheap test that needs no message.
inline bool gpu_request_refused(int device) noexcept {
  return runtime_is_gone<>() || is_poisoned(device);
}

}  // namespace detail

/// Acquire-side admission for a GPU request: throws ForkedChild, ShuttingDown or DevicePoisoned
/// with a message naming `what`.
inline void check_gpu_request(int device, const std::string& what) {
  if (detail::is_forked_child())
    throw ForkedChild(what +
                      ": this process was forked after gpusafe started; CUDA cannot be "
                      "used in a forked child. Use CPU paths here, or create GPU resources "
                      "only after fork (or use spawn/exec instead)");
  if (detail::is_exiting())
    throw ShuttingDown(what +
                       ": the process is exiting and the GPU runtime may already be torn "
                       "down; create GPU resources before exit begins");
  if (detail::is_poisoned(device))
    throw DevicePoisoned(what + ": device " + std::to_string(device) +
                         " hit a sticky CUDA error earlier; reset it (cudaDeviceReset) and call "
                         "gpusafe::notify_device_reset(" +
                         std::to_string(device) + ")");
}

/// What memory a request for `kind` really gets on Runtime: `kind` itself when the GPU is usable
/// or when host memory was asked for; host memory (with `*fell_back = true`) when `fallback`
/// allows it; otherwise NoGpu. `what` names the request for the message.
template <class Runtime>
MemoryKind resolve_memory_kind(MemoryKind kind, Fallback fallback, bool* fell_back,
                               const std::string& what) {
  GPUSAFE_CHECK_RUNTIME(Runtime);
  *fell_back = false;
  detail::arm_exit_flag<Runtime>();
  if (kind == MemoryKind::host) return kind;
  if (detail::runtime_is_gone<Runtime>()) check_gpu_request(0, what);
  if (Runtime::gpu_available()) return kind;
  if (fallback == Fallback::error)
    throw NoGpu(what + ": " + to_string(kind) + " memory was asked for with Fallback::error, but " +
                Runtime::name() + " has no usable GPU; use Fallback::host to run on the CPU");
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
  detail::arm_exit_flag<Runtime>();
  const std::string what = "get_device_info(" + std::to_string(device) + ")";
  if (!Runtime::gpu_available()) {
    if (device != 0)
      throw InvalidArgument(what + ": there is no GPU (" + Runtime::name() +
                            " runtime), so only index 0, the host, exists; pass 0");
    return detail::host_device_info();
  }
  // Each call below is admitted like a release call, so that a thread still asking while the
  // process exits gets a typed error instead of calling into a runtime being torn down.
  detail::BasicRuntimeCallGate<Runtime> gate;
  if (!gate) check_gpu_request(device, what);
  int count = 0;
  throw_on_failure(Runtime::device_count(count), what + ": counting devices");
  if (device < 0 || device >= count)
    throw InvalidArgument(what + ": no such device; this machine has " + std::to_string(count) +
                          " GPU(s), valid indices are 0.." + std::to_string(count - 1));
  DeviceProperties props;
  throw_on_failure(Runtime::device_properties(device, props), what + ": reading properties");
  DeviceInfo info;
  info.index = device;
  info.is_gpu = true;
  info.name = props.name;
  info.compute_major = props.compute_major;
  info.compute_minor = props.compute_minor;
  info.multiprocessors = props.multiprocessors;
  throw_on_failure(Runtime::memory_info(device, info.free_memory, info.total_memory),
                   what + ": reading memory info");
  return info;
}

GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_RUNTIME_HPP
