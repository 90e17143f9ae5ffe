// SPDX-License-Identifier: MIT
// gpusafe/handles.hpp: owning handles of GPU resources other than memory: CUDA streams, events
// and graph executables here; cuBLAS, cuBLASLt, cuDNN, cuFFT and NCCL handles in
// gpusafe/handles/*.hpp. One template, BasicGpuHandle<Traits, Runtime>, owns any of them; the
// traits say how a kind is created and destroyed on a given Runtime (the CUDA API on CudaRuntime,
// simulated objects on testing::FakeRuntime).
//
//   gpusafe::Stream stream(gpusafe::StreamParams{});        // a non-blocking stream, current
//   device gpusafe::Event done(gpusafe::EventParams{}, /*device=*/1); thread_local
//   gpusafe::CublasHandle blas = gpusafe::CublasHandle::create();  // handles/cublas.hpp
//
// Thread safety: a handle is owned like a std::unique_ptr (move-only, one owner, not synchronized);
// the process-wide counters (handle_stats) may be read from any thread.
// Teardown: creation is acquire side and throws a typed gpusafe::Error (NoGpu naming the cause
// when there is no driver or device, ForkedChild, ShuttingDown, DevicePoisoned, InvalidArgument
// for bad parameters). Destruction is noexcept and follows DESIGN section 3: no runtime call once
// the process is exiting, in a forked child, on a poisoned device or after a reset of the
// handle's device (the handle is left to the OS on purpose and counted in handle_stats); the
// handle's device is made current around the destroy call and the caller's restored (rule 7); a
// failing destroy is logged once per kind. See docs/handles.md.
#ifndef GPUSAFE_HANDLES_HPP
#define GPUSAFE_HANDLES_HPP

#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>

#include "gpusafe/config.hpp"
#include "gpusafe/detail/handle_state.hpp"
#include "gpusafe/detail/handle_support.hpp"
#include "gpusafe/error.hpp"
#include "gpusafe/guards.hpp"
#include "gpusafe/lifecycle.hpp"
#include "gpusafe/log.hpp"
#include "gpusafe/runtime.hpp"

GPUSAFE_NAMESPACE_BEGIN

/// An owning handle of one GPU resource of the kind Traits describes, on Runtime. Move-only;
/// an empty handle (default-constructed or moved from) owns nothing.
///
/// Traits provide: `kind` (a HandleKind), `Params`, `template <class R> using Native`,
/// `static std::string describe(const Params&)`, `static void check(const Params&, const
/// std::string& what)` (throws InvalidArgument), `create_call` and `destroy_call` (names for
/// messages), `kAbortsWhenPoisoned`, and the noexcept
/// `template <class R> static Status create(const Params&, Native<R>&)` and
/// `template <class R> static DestroyResult destroy(Native<R>, const Params&, bool must_abort)`.
template <class Traits, class Runtime>
class BasicGpuHandle {
 public:
  using traits_type = Traits;
  using runtime_type = Runtime;
  using Params = typename Traits::Params;
  using native_type = typename Traits::template Native<Runtime>;
  static constexpr HandleKind kind = Traits::kind;

  /// An empty handle; no runtime call.
  BasicGpuHandle() noexcept = default;

  /// Creates the resource on `device` (kCurrentDevice: the calling thread's current device),
  /// which is made current during the call and restored after. Throws InvalidArgument for bad
  /// parameters or device index, NoGpu (naming the cause) without a usable GPU, ForkedChild,
  /// ShuttingDown, DevicePoisoned, or the Error that matches the runtime's status.
  explicit BasicGpuHandle(const Params& params, int device = kCurrentDevice, HandleSite site = {})
      : params_(params) {
    acquire(device, site);
  }

  /// The same as the constructor, as a factory: `auto s = Stream::create();`.
  static BasicGpuHandle create(const Params& params = {}, int device = kCurrentDevice,
                               HandleSite site = {}) {
    return BasicGpuHandle(params, device, site);
  }

  BasicGpuHandle(BasicGpuHandle&& other) noexcept { take(other); }
  BasicGpuHandle& operator=(BasicGpuHandle&& other) noexcept {
    if (this != &other) {
      (void)reset();
      take(other);
    }
    return *this;
  }
  BasicGpuHandle(const BasicGpuHandle&) = delete;
  BasicGpuHandle& operator=(const BasicGpuHandle&) = delete;

  ~BasicGpuHandle() { (void)reset(); }

  /// Releases the resource now under the teardown rules and leaves the handle empty. Never
  /// throws. Returns what was done.
  ReleaseOutcome reset() noexcept {
    if (!held_) return ReleaseOutcome::none;
    held_ = false;
    detail::untrack_handle(std::exchange(track_id_, 0));
    return release(native_);
  }

  /// The native handle (cudaStream_t, cublasHandle_t, ...; an opaque pointer on FakeRuntime).
  native_type get() const noexcept { return native_; }
  /// The device the resource belongs to.
  int device() const noexcept { return device_; }
  /// The device's reset epoch when the resource was made.
  std::uint32_t epoch() const noexcept { return epoch_; }
  const Params& params() const noexcept { return params_; }
  explicit operator bool() const noexcept { return held_; }
  /// Whether the resource can still be used: held, its device neither reset since nor poisoned,
  /// and the process neither exiting nor a forked child.
  bool usable() const noexcept {
    return held_ && detail::device_epoch(device_) == epoch_ && !detail::is_poisoned(device_) &&
           !detail::is_exiting() && !detail::is_forked_child();
  }

 protected:
  /// Empties the handle after a derived type released it itself (NcclComm::abort), counting
  /// an abort when `aborted`, else a failed destroy.
  void forget_after_abort(bool aborted) noexcept {
    held_ = false;
    detail::untrack_handle(std::exchange(track_id_, 0));
    auto& c = detail::counters_of(kind);
    (aborted ? c.aborted : c.destroy_failures).fetch_add(1, std::memory_order_relaxed);
  }

 private:
  std::string what(int device) const {
    return std::string(to_string(kind)) + "(" + Traits::describe(params_) + ", device " +
           (device == kCurrentDevice ? std::string("current") : std::to_string(device)) + ")";
  }

  void acquire(int device, const HandleSite& site) {
    detail::arm_exit_flag<Runtime>();
    const std::string w = what(device);
    if (device < kCurrentDevice)
      GPUSAFE_THROW(
          InvalidArgument(w + ": negative device index; pass kCurrentDevice (-1) or a GPU index"));
    Traits::check(params_, w);
    check_gpu_request(device < 0 ? 0 : device, w);
    if (!detail::RuntimeCalls<Runtime>::gpu_available()) detail::throw_no_gpu<Runtime>(w);
    detail::BasicRuntimeCallGate<Runtime> gate;  // the exit handler waits for these calls
    if (!gate) check_gpu_request(device < 0 ? 0 : device, w);
    detail::DeviceSwitch<Runtime> on(device);
    if (!on.ok()) detail::throw_device_failure<Runtime>(on.status(), w, "switching to the device");
    device_ = on.device();
    epoch_ = detail::device_epoch(device_);
    check_gpu_request(device_, w);  // the current device may be poisoned
    const Status s =
        detail::note_status(Traits::template create<Runtime>(params_, native_), device_);
    if (!s.ok()) throw_status(s, w + ": " + Traits::create_call, Traits::fix_hint(s));
    held_ = true;
    detail::counters_of(kind).created.fetch_add(1, std::memory_order_relaxed);
    track_id_ = detail::track_handle(kind, device_, site);
  }

  ReleaseOutcome leak(LeakReason reason) noexcept {
    // Left to the OS on purpose: LeakSanitizer is told so when the handle is a heap object.
    if constexpr (std::is_pointer_v<native_type>) detail::mark_deliberate_leak(native_);
    detail::counters_of(kind).leaked[static_cast<int>(reason)].fetch_add(1,
                                                                         std::memory_order_relaxed);
    return ReleaseOutcome::leaked;
  }

  ReleaseOutcome failed(Status s, const char* call) noexcept {
    detail::counters_of(kind).destroy_failures.fetch_add(1, std::memory_order_relaxed);
    detail::log_destroy_failure_once<Traits>(device_, s, call);
    return ReleaseOutcome::failed;
  }

  ReleaseOutcome release(native_type native) noexcept {
    detail::BasicRuntimeCallGate<Runtime> gate;
    if (!gate)
      return leak(detail::is_forked_child() ? LeakReason::forked_child : LeakReason::exiting);
    if (detail::device_epoch(device_) != epoch_) return leak(LeakReason::device_reset);
    const bool poisoned = detail::is_poisoned(device_);
    if (poisoned && !Traits::kAbortsWhenPoisoned) return leak(LeakReason::poisoned);
    detail::DeviceSwitch<Runtime> on(device_);  // rule 7: the handle's device, then the caller's
    if (!on.ok()) return failed(detail::note_status(on.status(), device_), "switching device");
    const DestroyResult r = Traits::template destroy<Runtime>(native, params_, poisoned);
    if (r.abandoned) return leak(LeakReason::exiting);
    const Status s = detail::note_status(r.status, device_);
    if (!s.ok()) return failed(s, r.aborted ? "abort" : Traits::destroy_call);
    if (!r.aborted) {
      detail::counters_of(kind).destroyed.fetch_add(1, std::memory_order_relaxed);
      return ReleaseOutcome::destroyed;
    }
    detail::counters_of(kind).aborted.fetch_add(1, std::memory_order_relaxed);
    if (!poisoned) detail::log_abort_once<Traits>(device_, r.cause);
    return ReleaseOutcome::aborted;
  }

  void take(BasicGpuHandle& other) noexcept {
    params_ = other.params_;
    native_ = other.native_;
    device_ = other.device_;
    epoch_ = other.epoch_;
    held_ = std::exchange(other.held_, false);
    track_id_ = std::exchange(other.track_id_, 0);
  }

  Params params_{};
  native_type native_{};
  int device_ = 0;
  std::uint32_t epoch_ = 0;
  bool held_ = false;
  std::uint64_t track_id_ = 0;
};

/// Admission for the caller's own runtime calls made with a handle (a kernel launch, a cuBLAS
/// call, a stream synchronize) on threads that may still run while the process exits:
///
///   gpusafe::RuntimeCallScope scope;
///   if (!scope) return;              // exiting or forked: make no call
///   cublasSgemm(blas.get(), ...);    // gpusafe's exit handler waits (at most 200 ms) for this
///
/// False when the process is exiting or is a forked child. Hold it only around short calls.
template <class Runtime>
class BasicRuntimeCallScope {
 public:
  BasicRuntimeCallScope() noexcept = default;
  BasicRuntimeCallScope(const BasicRuntimeCallScope&) = delete;
  BasicRuntimeCallScope& operator=(const BasicRuntimeCallScope&) = delete;
  explicit operator bool() const noexcept { return static_cast<bool>(gate_); }

 private:
  detail::BasicRuntimeCallGate<Runtime> gate_;
};

/// RuntimeCallScope on the default runtime.
using RuntimeCallScope = BasicRuntimeCallScope<DefaultRuntime>;

// ---- streams, events, graph executables -----------------------------------------------------

/// cudaStreamNonBlocking: the stream does not synchronize with the legacy null stream.
constexpr unsigned kStreamNonBlocking = 0x1;

/// How a Stream is made (cudaStreamCreateWithPriority).
struct StreamParams {
  /// 0 (cudaStreamDefault) or kStreamNonBlocking.
  unsigned flags = kStreamNonBlocking;
  /// Lower is more urgent; must lie in the device's range (cudaDeviceGetStreamPriorityRange,
  /// typically -5..0; FakeRuntime: -5..0).
  int priority = 0;
};

/// The streams' traits. On FakeRuntime the stream is a simulated one (FakeRuntime::enqueue_work
/// and event_record accept it).
struct StreamTraits {
  static constexpr HandleKind kind = HandleKind::stream;
  static constexpr bool kAbortsWhenPoisoned = false;
  static constexpr const char* create_call = "cudaStreamCreateWithPriority";
  static constexpr const char* destroy_call = "cudaStreamDestroy";
  using Params = StreamParams;
#if GPUSAFE_WITH_CUDA
  template <class R>
  using Native = std::conditional_t<detail::kIsCudaRuntime<R>, cudaStream_t, StreamHandle>;
#else
  template <class R>
  using Native = StreamHandle;
#endif
  static constexpr int kFakeLeastPriority = 0;
  static constexpr int kFakeGreatestPriority = -5;

  static std::string describe(const Params& p) {
    return "flags " + std::to_string(p.flags) + ", priority " + std::to_string(p.priority);
  }
  static void check(const Params& p, const std::string& what) {
    if ((p.flags & ~kStreamNonBlocking) != 0)
      GPUSAFE_THROW(InvalidArgument(what + ": unknown stream flags " + std::to_string(p.flags) +
                                    "; pass 0 (cudaStreamDefault) or kStreamNonBlocking (1)"));
  }
  static std::string fix_hint(Status s) {
    return s.code == codes::invalid_value
               ? "the priority must lie in the device's range "
                 "(cudaDeviceGetStreamPriorityRange; lower is more urgent)"
               : std::string();
  }

  template <class R>
  static Status create(const Params& p, Native<R>& out) noexcept {
    if constexpr (detail::kSimulatesHandles<R>) {
      if (p.priority > kFakeLeastPriority || p.priority < kFakeGreatestPriority)
        return {codes::invalid_value};
      void* h = nullptr;
      const Status s = detail::RuntimeCalls<R>::handle_create(static_cast<int>(kind), &h);
      out = h;
      return s;
#if GPUSAFE_WITH_CUDA
    } else if constexpr (detail::kIsCudaRuntime<R>) {
      int least = 0, greatest = 0;
      cudaError_t rc = cudaDeviceGetStreamPriorityRange(&least, &greatest);
      if (rc == cudaSuccess && (p.priority > least || p.priority < greatest))
        return {codes::invalid_value};
      if (rc == cudaSuccess) rc = cudaStreamCreateWithPriority(&out, p.flags, p.priority);
      if (rc != cudaSuccess) (void)cudaGetLastError();
      return {static_cast<int>(rc)};
#endif
    } else {
      (void)p;
      out = {};
      return {codes::no_device};
    }
  }

  template <class R>
  static DestroyResult destroy(Native<R> h, const Params&, bool) noexcept {
    if constexpr (detail::kSimulatesHandles<R>) {
      return detail::destroy_result(detail::RuntimeCalls<R>::handle_destroy(h));
#if GPUSAFE_WITH_CUDA
    } else if constexpr (detail::kIsCudaRuntime<R>) {
      const cudaError_t rc = cudaStreamDestroy(h);
      if (rc != cudaSuccess) (void)cudaGetLastError();
      return detail::destroy_result({static_cast<int>(rc)});
#endif
    } else {
      (void)h;
      return detail::destroy_result({codes::no_device});
    }
  }
};

/// Event flags (the values of cudaEventDefault, cudaEventBlockingSync, cudaEventDisableTiming,
/// cudaEventInterprocess).
constexpr unsigned kEventBlockingSync = 0x1;
constexpr unsigned kEventDisableTiming = 0x2;
constexpr unsigned kEventInterprocess = 0x4;

/// How an Event is made (cudaEventCreateWithFlags).
struct EventParams {
  /// A combination of kEventBlockingSync, kEventDisableTiming and kEventInterprocess
  /// (interprocess needs disable-timing). Default: no timing, the cheapest event.
  unsigned flags = kEventDisableTiming;
};

/// The events' traits. On FakeRuntime the event is made with Runtime::event_create (the flags
/// are checked, not simulated), so FakeRuntime's event_* faults apply.
struct EventTraits {
  static constexpr HandleKind kind = HandleKind::event;
  static constexpr bool kAbortsWhenPoisoned = false;
  static constexpr const char* create_call = "cudaEventCreateWithFlags";
  static constexpr const char* destroy_call = "cudaEventDestroy";
  using Params = EventParams;
#if GPUSAFE_WITH_CUDA
  template <class R>
  using Native = std::conditional_t<detail::kIsCudaRuntime<R>, cudaEvent_t, EventHandle>;
#else
  template <class R>
  using Native = EventHandle;
#endif

  static std::string describe(const Params& p) { return "flags " + std::to_string(p.flags); }
  static void check(const Params& p, const std::string& what) {
    constexpr unsigned known = kEventBlockingSync | kEventDisableTiming | kEventInterprocess;
    if ((p.flags & ~known) != 0)
      GPUSAFE_THROW(InvalidArgument(what + ": unknown event flags " + std::to_string(p.flags) +
                                    "; combine kEventBlockingSync (1), kEventDisableTiming (2) and "
                                    "kEventInterprocess (4)"));
    if ((p.flags & kEventInterprocess) && !(p.flags & kEventDisableTiming))
      GPUSAFE_THROW(InvalidArgument(what + ": an interprocess event cannot record timing; add "
                                           "kEventDisableTiming to the flags"));
  }
  static std::string fix_hint(Status) { return {}; }

  template <class R>
  static Status create(const Params& p, Native<R>& out) noexcept {
    if constexpr (detail::kSimulatesHandles<R>) {
      (void)p;
      EventHandle e = nullptr;
      const Status s = detail::RuntimeCalls<R>::event_create(e);
      out = e;
      return s;
#if GPUSAFE_WITH_CUDA
    } else if constexpr (detail::kIsCudaRuntime<R>) {
      const cudaError_t rc = cudaEventCreateWithFlags(&out, p.flags);
      if (rc != cudaSuccess) (void)cudaGetLastError();
      return {static_cast<int>(rc)};
#endif
    } else {
      (void)p;
      out = {};
      return {codes::no_device};
    }
  }

  template <class R>
  static DestroyResult destroy(Native<R> h, const Params&, bool) noexcept {
    if constexpr (detail::kSimulatesHandles<R>) {
      return detail::destroy_result(detail::RuntimeCalls<R>::event_destroy(h));
#if GPUSAFE_WITH_CUDA
    } else if constexpr (detail::kIsCudaRuntime<R>) {
      const cudaError_t rc = cudaEventDestroy(h);
      if (rc != cudaSuccess) (void)cudaGetLastError();
      return detail::destroy_result({static_cast<int>(rc)});
#endif
    } else {
      (void)h;
      return detail::destroy_result({codes::no_device});
    }
  }
};

/// How a GraphExec is made (cudaGraphInstantiateWithFlags).
struct GraphExecParams {
  /// The cudaGraph_t to instantiate (as a pointer; the caller keeps owning it). Required.
  void* graph = nullptr;
  /// cudaGraphInstantiateFlags (0 = none).
  unsigned long long flags = 0;
};

/// The graph executables' traits (destroyed with cudaGraphExecDestroy).
struct GraphExecTraits {
  static constexpr HandleKind kind = HandleKind::graph_exec;
  static constexpr bool kAbortsWhenPoisoned = false;
  static constexpr const char* create_call = "cudaGraphInstantiateWithFlags";
  static constexpr const char* destroy_call = "cudaGraphExecDestroy";
  using Params = GraphExecParams;
#if GPUSAFE_WITH_CUDA
  template <class R>
  using Native = std::conditional_t<detail::kIsCudaRuntime<R>, cudaGraphExec_t, void*>;
#else
  template <class R>
  using Native = void*;
#endif

  static std::string describe(const Params& p) {
    return std::string(p.graph ? "a graph" : "no graph") + ", flags " + std::to_string(p.flags);
  }
  static void check(const Params& p, const std::string& what) {
    if (!p.graph)
      GPUSAFE_THROW(
          InvalidArgument(what + ": no graph to instantiate; capture or build a cudaGraph_t first "
                                 "and pass it as GraphExecParams::graph"));
  }
  static std::string fix_hint(Status) { return {}; }

  template <class R>
  static Status create(const Params& p, Native<R>& out) noexcept {
    if constexpr (detail::kSimulatesHandles<R>) {
      (void)p;
      return detail::RuntimeCalls<R>::handle_create(static_cast<int>(kind), &out);
#if GPUSAFE_WITH_CUDA
    } else if constexpr (detail::kIsCudaRuntime<R>) {
      const cudaError_t rc =
          cudaGraphInstantiateWithFlags(&out, static_cast<cudaGraph_t>(p.graph), p.flags);
      if (rc != cudaSuccess) (void)cudaGetLastError();
      return {static_cast<int>(rc)};
#endif
    } else {
      (void)p;
      out = {};
      return {codes::no_device};
    }
  }

  template <class R>
  static DestroyResult destroy(Native<R> h, const Params&, bool) noexcept {
    if constexpr (detail::kSimulatesHandles<R>) {
      return detail::destroy_result(detail::RuntimeCalls<R>::handle_destroy(h));
#if GPUSAFE_WITH_CUDA
    } else if constexpr (detail::kIsCudaRuntime<R>) {
      const cudaError_t rc = cudaGraphExecDestroy(h);
      if (rc != cudaSuccess) (void)cudaGetLastError();
      return detail::destroy_result({static_cast<int>(rc)});
#endif
    } else {
      (void)h;
      return detail::destroy_result({codes::no_device});
    }
  }
};

template <class Runtime>
using BasicStream = BasicGpuHandle<StreamTraits, Runtime>;
template <class Runtime>
using BasicEvent = BasicGpuHandle<EventTraits, Runtime>;
template <class Runtime>
using BasicGraphExec = BasicGpuHandle<GraphExecTraits, Runtime>;

/// A CUDA stream (cudaStream_t) on the default runtime.
using Stream = BasicStream<DefaultRuntime>;
/// A CUDA event (cudaEvent_t) on the default runtime.
using Event = BasicEvent<DefaultRuntime>;
/// An instantiated CUDA graph (cudaGraphExec_t) on the default runtime.
using GraphExec = BasicGraphExec<DefaultRuntime>;

static_assert(std::is_nothrow_destructible_v<Stream>);
static_assert(std::is_nothrow_move_constructible_v<Stream>);
static_assert(!std::is_copy_constructible_v<Stream>);

GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_HANDLES_HPP
