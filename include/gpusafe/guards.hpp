// SPDX-License-Identifier: MIT
// gpusafe/guards.hpp: scope guards and cleanup helpers for GPU code.
//
// - SafeCudaCleanup: runs deferred actions (last in, first out) at scope exit, then optionally
//   synchronizes the device and empties caches.
// - safe_tensor_cleanup(x...): releases what a member or variable holds (smart pointers,
//   optionals, containers, anything with reset(); LibTorch tensors and modules via torch.hpp),
//   through the CleanupTraits customization point.
// - safe_cuda_empty_cache(): like torch.cuda.empty_cache(), gives back the memory that every
//   registered Reclaimable holds cached and idle (ReclaimLevel::light: LibTorch's caching
//   allocator, pools' idle overflow and grown slabs); keeps warm models. Returns the bytes
//   released.
// - DeviceGuard: switches the current device and restores the caller's device at scope exit.
//
// Thread safety: a guard belongs to one thread (as a scope does); the free functions may be
// called from any thread. Teardown: every destructor and release function here is noexcept and
// makes no runtime call once the process is exiting or in a forked child (DESIGN rules 1, 2, 5);
// safe_tensor_cleanup then leaks the object on purpose instead of running a destructor that could
// call into a runtime that is already gone (the OS reclaims the memory at exit).
#ifndef GPUSAFE_GUARDS_HPP
#define GPUSAFE_GUARDS_HPP

#include <cstddef>
#include <exception>
#include <iterator>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "gpusafe/config.hpp"
#include "gpusafe/detail/deferred_actions.hpp"
#include "gpusafe/lifecycle.hpp"

#if defined(__SANITIZE_ADDRESS__)
#define GPUSAFE_HAS_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(leak_sanitizer)
#define GPUSAFE_HAS_LSAN 1
#endif
#endif
#ifndef GPUSAFE_HAS_LSAN
#define GPUSAFE_HAS_LSAN 0
#endif
#if GPUSAFE_HAS_LSAN
#include <sanitizer/lsan_interface.h>
#endif
#include "gpusafe/detail/release_log.hpp"
#include "gpusafe/detail/runtime_calls.hpp"
#include "gpusafe/log.hpp"
#include "gpusafe/runtime.hpp"

GPUSAFE_NAMESPACE_BEGIN

// ---- safe_cuda_empty_cache ------------------------------------------------------------------

/// Like torch.cuda.empty_cache(): asks every registered Reclaimable to give back the memory it
/// holds cached and nobody uses (ReclaimLevel::light: LibTorch's CUDA caching allocator when
/// torch.hpp is used, buffer pools' idle overflow and grown slabs). It evicts no model and keeps
/// pools' preallocated slabs, so it is cheap on an unload path; to evict secondary models too,
/// call reclaim_all() (ReclaimLevel::heavy). Returns the bytes released. Never throws; harmless
/// without a GPU, in a forked child and at exit (resources then make no runtime call).
inline std::size_t safe_cuda_empty_cache() noexcept {
  ReclaimRequest request;
  request.level = ReclaimLevel::light;
  return reclaim_all(request);
}

namespace detail {

/// Tells LeakSanitizer (when present) that `p` is leaked on purpose, so it is not reported.
inline void mark_deliberate_leak(const void* p) noexcept {
#if GPUSAFE_HAS_LSAN
  __lsan_ignore_object(p);
#else
  (void)p;
#endif
}

}  // namespace detail

// ---- SafeCudaCleanup ------------------------------------------------------------------------

/// What a SafeCudaCleanup does at scope exit, after its deferred actions.
struct SafeCudaCleanupOptions {
  /// Wait for the device's work to finish (skipped without a GPU or on a poisoned device).
  bool synchronize = false;
  /// Call safe_cuda_empty_cache().
  bool empty_cache = false;
  /// The device to synchronize; -1 = the current device at scope exit.
  int device = -1;
};

/// RAII scope guard: at scope exit runs the deferred actions in reverse order of defer(), then
/// synchronizes and empties caches as the options say. An action that throws is caught (the
/// others still run) and reported in one log line. The destructor is noexcept and makes no
/// runtime call once the process is exiting, in a forked child, or on a poisoned device.
///
///   gpusafe::SafeCudaCleanup cleanup({/*synchronize=*/true, /*empty_cache=*/true});
///   cleanup.defer([&] { gpusafe::safe_tensor_cleanup(scratch); });
template <class Runtime>
class BasicSafeCudaCleanup {
  GPUSAFE_CHECK_RUNTIME(Runtime);

 public:
  using Options = SafeCudaCleanupOptions;

  /// A guard that only runs deferred actions.
  BasicSafeCudaCleanup() noexcept = default;
  explicit BasicSafeCudaCleanup(Options options) noexcept : options_(options) {}

  BasicSafeCudaCleanup(const BasicSafeCudaCleanup&) = delete;
  BasicSafeCudaCleanup& operator=(const BasicSafeCudaCleanup&) = delete;

  ~BasicSafeCudaCleanup() { run(); }

  /// Adds an action (any callable with no arguments, move-only ones included) to run at scope
  /// exit; the last added runs first. Acquire side: storing the action may throw std::bad_alloc
  /// (or what F's move throws), in which case it is not registered and nothing else changes.
  ///
  /// The first three actions whose callable is at most 48 bytes (a lambda capturing up to six
  /// references or pointers) are stored inside the guard, with no heap allocation; others take
  /// one allocation each.
  template <class F>
  BasicSafeCudaCleanup& defer(F&& f) {
    actions_.push<std::decay_t<F>>(std::forward<F>(f));
    return *this;
  }

  /// Cancels everything: no action runs, no synchronization, no cache trim.
  void dismiss() noexcept {
    dismissed_ = true;
    actions_.clear();
  }

  /// Whether the guard will still do something at scope exit.
  bool active() const noexcept { return !dismissed_; }
  /// Number of deferred actions not run yet.
  std::size_t pending() const noexcept { return actions_.size(); }
  const Options& options() const noexcept { return options_; }

 private:
  void run() noexcept {
    if (dismissed_) return;
    dismissed_ = true;
    std::size_t failures = 0;
    std::string first_failure;
    while (!actions_.empty()) {
      // run_top() takes the action off first, so it may call defer() or dismiss() on this guard.
      GPUSAFE_TRY { (void)actions_.run_top(); }
      GPUSAFE_CATCH_ALL {
        if (failures++ == 0) first_failure = copy_or_empty(detail::current_exception_what());
      }
    }
    if (failures > 0) {
      log_lazy(LogLevel::warning, [&] {
        return "SafeCudaCleanup: " + std::to_string(failures) +
               " deferred action(s) threw; the others ran. First: " + first_failure;
      });
    }
    if (options_.synchronize) synchronize();
    if (options_.empty_cache) (void)safe_cuda_empty_cache();
  }

  void synchronize() noexcept {
    using Calls = detail::RuntimeCalls<Runtime>;
    detail::BasicRuntimeCallGate<Runtime> gate;
    if (!gate || !Calls::gpu_available()) return;
    int device = options_.device;
    if (device < 0) {
      const Status s = Calls::get_device(device);
      if (!s.ok()) {
        detail::log_release_failure(nullptr, "SafeCudaCleanup", "get_device", -1, s,
                                    detail::kIgnoredOnRelease);
        return;
      }
    }
    if (detail::is_poisoned(device)) return;
    const Status s = Calls::synchronize(device);
    if (!s.ok())
      detail::log_release_failure(nullptr, "SafeCudaCleanup", "synchronize", device, s,
                                  detail::kIgnoredOnRelease);
  }

  /// `text` as a string, or an empty one when there is no memory for it (run() is noexcept).
  static std::string copy_or_empty(const char* text) noexcept {
    GPUSAFE_TRY { return text; }
    GPUSAFE_CATCH_ALL { return {}; }
  }

  Options options_{};
  bool dismissed_ = false;
  detail::DeferredActionStack actions_;
};

/// SafeCudaCleanup on the default runtime (CUDA when compiled in and usable, else the host).
using SafeCudaCleanup = BasicSafeCudaCleanup<DefaultRuntime>;

// ---- safe_tensor_cleanup --------------------------------------------------------------------

namespace detail {

using GoneCheck = bool (*)() noexcept;

/// The runtime a safe_tensor_cleanup call on this thread is about (null: the default runtime).
inline thread_local GoneCheck cleanup_gone_check = nullptr;

/// What release code under safe_tensor_cleanup asks before touching GPU memory: whether the
/// runtime the call is about is gone (exiting or forked child). Arms the exit flag for that
/// runtime, so a cleanup may be gpusafe's first use, even inside exit.
inline bool cleanup_runtime_is_gone() noexcept {
  const GoneCheck check = cleanup_gone_check;
  return check ? check() : runtime_is_gone<DefaultRuntime>();
}

/// Sets the runtime of the cleanups run on this thread for a scope (nested scopes restore it).
class CleanupRuntimeScope {
 public:
  explicit CleanupRuntimeScope(GoneCheck check) noexcept
      : previous_(std::exchange(cleanup_gone_check, check)) {}
  ~CleanupRuntimeScope() { cleanup_gone_check = previous_; }
  CleanupRuntimeScope(const CleanupRuntimeScope&) = delete;
  CleanupRuntimeScope& operator=(const CleanupRuntimeScope&) = delete;

 private:
  GoneCheck previous_;
};

}  // namespace detail

/// Customization point of safe_tensor_cleanup: specialise it for your type with
///
///   template <> struct gpusafe::CleanupTraits<MyTensor> {
///     static bool release(MyTensor& x) noexcept;  // true when something was released
///   };
///
/// (or partially, with `Enable` as a std::enable_if_t condition). release() must not throw and,
/// when detail::cleanup_runtime_is_gone() (the process is exiting or is a forked child), must not
/// call the GPU runtime: leak the object instead (see leak_for_teardown()). The primary template
/// handles std::unique_ptr, std::shared_ptr, std::optional, containers of supported types
/// (sequences, std::array, maps by their values) and any type with a reset() member.
template <class T, class Enable = void>
struct CleanupTraits;

namespace detail {

template <class>
constexpr bool always_false = false;

template <class T, class = void>
struct HasReset : std::false_type {};
template <class T>
struct HasReset<T, std::void_t<decltype(std::declval<T&>().reset())>> : std::true_type {};

template <class T, class = void>
struct HasBool : std::false_type {};
template <class T>
struct HasBool<T, std::void_t<decltype(static_cast<bool>(std::declval<const T&>()))>>
    : std::true_type {};

template <class T, class = void>
struct IsMap : std::false_type {};
template <class T>
struct IsMap<T, std::void_t<typename T::key_type, typename T::mapped_type>> : std::true_type {};

template <class T, class = void>
struct IsRange : std::false_type {};
template <class T>
struct IsRange<T, std::void_t<decltype(std::begin(std::declval<T&>())),
                              decltype(std::end(std::declval<T&>()))>> : std::true_type {};

template <class T, class = void>
struct HasClear : std::false_type {};
template <class T>
struct HasClear<T, std::void_t<decltype(std::declval<T&>().clear())>> : std::true_type {};

template <class T>
struct IsOptional : std::false_type {};
template <class U>
struct IsOptional<std::optional<U>> : std::true_type {};

template <class T>
struct IsUniquePtr : std::false_type {};
template <class U, class D>
struct IsUniquePtr<std::unique_ptr<U, D>> : std::true_type {};

template <class T>
struct IsSharedPtr : std::false_type {};
template <class U>
struct IsSharedPtr<std::shared_ptr<U>> : std::true_type {};

/// Logs "safe_tensor_cleanup: <why>[: <what>]; <outcome>" once per process for each type T.
template <class T>
void log_cleanup_failure_once(const char* why, const char* what = nullptr,
                              const char* outcome = "the object was left as it was") noexcept {
  static LogOnce once;
  if (once.first())
    log_lazy(LogLevel::warning, [&] {
      return std::string("safe_tensor_cleanup: ") + why + (what ? std::string(": ") + what : "") +
             "; " + outcome + " (further failures of this kind are not logged)";
    });
}

}  // namespace detail

/// Moves `x` into a heap object that is never freed, so that its destructor never runs, then
/// calls `x.reset()` when T has one (a moved-from object is expected to be empty; reset() makes
/// sure). Used when the GPU runtime may already be gone. Returns false (and leaves `x` as it
/// was) only when the allocation or the move fails. Never throws.
template <class T>
bool leak_for_teardown(T& x) noexcept {
  static_assert(std::is_move_constructible_v<T>, "leak_for_teardown needs a movable type");
  GPUSAFE_TRY {
    // Deliberately never deleted: its destructor could call the runtime.
    detail::mark_deliberate_leak(new T(std::move(x)));
  }
  GPUSAFE_CATCH_ALL {
    detail::log_cleanup_failure_once<T>("could not move the object aside at exit");
    return false;
  }
  if constexpr (detail::HasReset<T>::value) {
    GPUSAFE_TRY { x.reset(); }
    GPUSAFE_CATCH_ALL {}
  }
  return true;
}

namespace detail {

template <class T>
bool release_element(T& x) noexcept {
  return CleanupTraits<T>::release(x);
}

/// Whether `x` still holds something after its release was tried (false when T cannot say).
template <class T>
bool still_holds(const T& x) noexcept {
  if constexpr (HasBool<T>::value) {
    GPUSAFE_TRY { return static_cast<bool>(x); }
    GPUSAFE_CATCH_ALL { return true; }
  } else {
    return false;
  }
}

template <class T>
bool release_optional(T& x) noexcept {
  if (!x.has_value()) return false;
  const bool released = release_element(*x);
  // std::optional::reset() is noexcept, so a value whose destructor throws would end the process
  // there: a value that could not be emptied (its failure is logged) stays in the optional.
  if (still_holds(*x)) return released;
  x.reset();  // the value is empty (or leaked) by now, so destroying it calls nothing
  return released;
}

/// Destroys a unique_ptr's object by calling its deleter here, where an exception from the
/// object's destructor can be caught (unique_ptr::reset() is noexcept: it would terminate). A
/// delete-expression frees the memory even when the destructor throws.
template <class U, class D>
void destroy_unique(std::unique_ptr<U, D>& x) noexcept {
  auto p = x.release();
  GPUSAFE_TRY { x.get_deleter()(p); }
  GPUSAFE_CATCH_ALL {
    log_cleanup_failure_once<std::unique_ptr<U, D>>(
        "the object's destructor threw", current_exception_what(), "the pointer was emptied");
  }
}

/// unique_ptr and shared_ptr: destroyed, or leaked at teardown (a unique_ptr by releasing its
/// pointer, a shared_ptr by moving its reference aside).
template <class T, std::enable_if_t<IsUniquePtr<T>::value || IsSharedPtr<T>::value, int> = 0>
bool generic_release_ptr(T& x) noexcept {
  if (!x) return false;
  if (cleanup_runtime_is_gone()) {
    if constexpr (IsSharedPtr<T>::value) {
      return leak_for_teardown(x);
    } else {
      auto leaked = x.release();  // leaked on purpose: its deleter could call the runtime
      if constexpr (std::is_pointer_v<decltype(leaked)>) mark_deliberate_leak(leaked);
      return true;
    }
  }
  if constexpr (IsUniquePtr<T>::value) {
    destroy_unique(x);
  } else {
    // Not caught, and it cannot be: the last reference destroys the object inside shared_ptr's
    // noexcept release, so a destructor that throws ends the process (std::terminate).
    x.reset();
  }
  return true;
}

template <class T>
bool release_range(T& x) noexcept {
  bool released = false;
  for (auto& element : x) {
    if constexpr (IsMap<T>::value) {
      using Mapped = typename T::mapped_type;
      released = release_element<Mapped>(element.second) || released;
    } else {
      using Element = std::remove_reference_t<decltype(element)>;
      static_assert(!std::is_const_v<Element>,
                    "safe_tensor_cleanup: elements of this container are const (a set?); "
                    "keep GPU resources in a vector, list, deque, array or map");
      released = release_element<Element>(element) || released;
    }
  }
  if constexpr (HasClear<T>::value) {
    GPUSAFE_TRY {
      x.clear();  // elements are empty (or leaked) by now
    }
    GPUSAFE_CATCH_ALL { log_cleanup_failure_once<T>("clearing the container threw"); }
  }
  return released;
}

template <class T>
bool release_resettable(T& x) noexcept {
  bool held = true;
  if constexpr (HasBool<T>::value) {
    GPUSAFE_TRY { held = static_cast<bool>(x); }
    GPUSAFE_CATCH_ALL {}
  }
  if (!held) return false;
  if (cleanup_runtime_is_gone()) return leak_for_teardown(x);
  GPUSAFE_TRY { x.reset(); }
  GPUSAFE_CATCH_ALL {
    log_cleanup_failure_once<T>("reset() threw", current_exception_what());
    return false;
  }
  return true;
}

template <class T>
bool generic_release(T& x) noexcept {
  if constexpr (IsOptional<T>::value) {
    return release_optional(x);
  } else if constexpr (IsUniquePtr<T>::value || IsSharedPtr<T>::value) {
    return generic_release_ptr(x);
  } else if constexpr (IsRange<T>::value) {
    return release_range(x);
  } else if constexpr (HasReset<T>::value) {
    return release_resettable(x);
  } else {
    static_assert(always_false<T>,
                  "safe_tensor_cleanup: no CleanupTraits for this type. Give it a reset() "
                  "member or specialise gpusafe::CleanupTraits<T> with a static noexcept "
                  "bool release(T&)");
    return false;
  }
}

}  // namespace detail

/// The built-in handling (see the comment of the declaration above).
template <class T, class Enable>
struct CleanupTraits {
  static bool release(T& x) noexcept { return detail::generic_release(x); }
};

/// For CleanupTraits specialisations: whether the runtime the running safe_tensor_cleanup call is
/// about is gone (exiting or forked child); when true, release() must leak instead of calling it.
inline bool cleanup_runtime_is_gone() noexcept { return detail::cleanup_runtime_is_gone(); }

/// safe_tensor_cleanup for resources whose memory belongs to `Runtime` (a test double, or a
/// runtime of your own); safe_tensor_cleanup(xs...) is basic_safe_tensor_cleanup<DefaultRuntime>.
template <class Runtime, class... Ts>
bool basic_safe_tensor_cleanup(Ts&... xs) noexcept {
  GPUSAFE_CHECK_RUNTIME(Runtime);
  static_assert(sizeof...(Ts) > 0, "safe_tensor_cleanup needs at least one argument");
  static_assert((!std::is_const_v<Ts> && ...), "safe_tensor_cleanup cannot empty a const object");
  detail::CleanupRuntimeScope scope(&detail::runtime_is_gone<Runtime>);
  bool released = false;
  ((released = CleanupTraits<Ts>::release(xs) || released), ...);
  return released;
}

/// Releases what each argument holds (a tensor, a module, a smart pointer, an optional, a
/// container of them, anything with reset() or a CleanupTraits specialisation), leaving it
/// empty. Returns whether something was released. Never throws (a failure is logged once).
/// When the process is exiting or is a forked child, the objects are leaked on purpose instead
/// of destroyed, because their destructors could call a GPU runtime that is gone.
///
/// An object whose destructor (or deleter, or reset()) throws:
/// - in a std::unique_ptr: caught and logged once; the pointer is emptied (the memory of a
///   default-deleted object is freed all the same).
/// - with a reset() that throws (also inside a std::optional): caught and logged once; the object
///   is left as it was, still in its optional.
/// - NOT promised: in a std::shared_ptr (the last reference destroys it inside shared_ptr's
///   noexcept code), or an object whose destructor throws even once emptied, held directly in a
///   std::optional (std::optional::reset() is noexcept): C++ calls std::terminate there. Give such
///   types a noexcept destructor, or hold them in a std::unique_ptr.
template <class... Ts>
bool safe_tensor_cleanup(Ts&... xs) noexcept {
  return basic_safe_tensor_cleanup<DefaultRuntime>(xs...);
}

// ---- DeviceGuard ----------------------------------------------------------------------------

/// Makes `device` the current device for the scope and restores the caller's device at scope
/// exit. The constructor is acquire side: a bad index throws InvalidArgument naming the valid
/// ones; without a GPU, index 0 (the host) is accepted and nothing is switched. It does not
/// refuse a poisoned device, so that recovery code (cudaDeviceReset) can run under it. The
/// destructor is noexcept and makes no runtime call when the process is exiting or forked.
template <class Runtime>
class BasicDeviceGuard {
  GPUSAFE_CHECK_RUNTIME(Runtime);

 public:
  explicit BasicDeviceGuard(int device) : device_(device) {
    using Calls = detail::RuntimeCalls<Runtime>;
    const std::string what = "DeviceGuard(" + std::to_string(device) + ")";
    if (device < 0)
      GPUSAFE_THROW(InvalidArgument(what + ": negative device index; pass 0 or a GPU index"));
    if (!Calls::gpu_available()) {
      if (device == 0) return;
      if (detail::runtime_is_gone<Runtime>()) check_gpu_request(device, what);
      GPUSAFE_THROW(InvalidArgument(what + ": there is no usable GPU (" + Calls::name() +
                                    " runtime), so only index 0, the host, exists; pass 0"));
    }
    // Held during the calls so that the exit handler waits for them (bounded) before the runtime
    // tears down; refused when forked or exiting, which check_gpu_request reports clearly.
    detail::BasicRuntimeCallGate<Runtime> gate;
    if (!gate) check_gpu_request(device, what);
    detail::DeviceSwitch<Runtime> on(device);
    previous_ = on.previous();
    if (!on.ok()) detail::throw_device_failure<Runtime>(on.status(), what, on.failed_step());
    switched_ = on.switched();
    on.keep();  // restored by the destructor
  }

  BasicDeviceGuard(const BasicDeviceGuard&) = delete;
  BasicDeviceGuard& operator=(const BasicDeviceGuard&) = delete;

  ~BasicDeviceGuard() {
    if (!switched_) return;
    detail::BasicRuntimeCallGate<Runtime> gate;
    if (!gate) return;
    const Status s = detail::RuntimeCalls<Runtime>::set_device(previous_);
    if (!s.ok())
      detail::log_release_failure(nullptr, "DeviceGuard", "restoring the device", previous_, s,
                                  detail::kIgnoredOnRelease);
  }

  /// The device made current by this guard.
  int device() const noexcept { return device_; }
  /// The device that was current before (restored at scope exit).
  int previous_device() const noexcept { return previous_; }
  /// Whether the guard switched device (and will switch back).
  bool switched() const noexcept { return switched_; }

 private:
  int device_;
  int previous_ = 0;
  bool switched_ = false;
};

/// DeviceGuard on the default runtime.
using DeviceGuard = BasicDeviceGuard<DefaultRuntime>;

static_assert(std::is_nothrow_destructible_v<SafeCudaCleanupOptions>);
static_assert(std::is_nothrow_destructible_v<BasicSafeCudaCleanup<HostRuntime>>);
static_assert(std::is_nothrow_destructible_v<SafeCudaCleanup>);
static_assert(std::is_nothrow_destructible_v<BasicDeviceGuard<HostRuntime>>);
static_assert(std::is_nothrow_destructible_v<DeviceGuard>);

GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_GUARDS_HPP
