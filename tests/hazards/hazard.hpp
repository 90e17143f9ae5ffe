// tests/hazards/hazard.hpp: the scenario API of the teardown-hazard suite (gpusafe_hazards).
//
// A scenario is a function template over the Runtime, registered with one of the macros below:
//
//   GPUSAFE_HAZARD_SCENARIO(static_guards) {          // "static_guards/fake" + "/default"
//     ...; return 0;                                   // 0 = the body passed
//   }
//   GPUSAFE_HAZARD_SCENARIO_FAKE_ONLY(fault_codes) { ... }  // only "fault_codes/fake"
//   GPUSAFE_HAZARD_SCENARIO_EXITS(name, kExitReturn | kExitStd) { ... }
//   GPUSAFE_HAZARD_SCENARIO_FAKE_ONLY_EXITS(name, kExitQuick) { ... }
//
// The harness (main.cpp) runs every (scenario, variant, exit style) as a child process of
// itself: FakeRuntime::reset() (+ trap_after_teardown for the fake variant), the body, then
// the process ends by returning from main, std::exit or std::quick_exit. The child passes when
// it exits 0 with no signal and nothing on stderr that says "terminate called", "FakeRuntime
// trap", "HAZARD CHECK FAILED" or a sanitizer report.
//
// Inside a body, `Runtime` is the runtime type. Use GPUSAFE_HAZARD_CHECK(cond) for checks: a
// failure prints the condition and ends the process at once with exit code 3, so the check also
// works in static destructors, at-exit handlers, other threads and forked children.
// DeviceBlock<Runtime> is a small RAII GPU allocation that follows the release rules, for
// scenarios that need a resource; run_in_child(fn) runs fn in a forked child.
#ifndef GPUSAFE_TESTS_HAZARDS_HAZARD_HPP
#define GPUSAFE_TESTS_HAZARDS_HAZARD_HPP

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../support/child_process.hpp"
#include "gpusafe/lifecycle.hpp"
#include "gpusafe/runtime.hpp"
#include "gpusafe/testing/fake_runtime.hpp"

namespace gpusafe_hazards {

/// Exit styles, as a bit mask.
enum : unsigned {
  kExitReturn = 1u,  ///< return from main (static destructors, then atexit handlers interleaved)
  kExitStd = 2u,     ///< std::exit from inside main (main's locals are NOT destroyed)
  kExitQuick = 4u,   ///< std::quick_exit (no static destructors; at_quick_exit handlers only)
  kExitAll = 7u,
};

/// The exit code of a failed GPUSAFE_HAZARD_CHECK.
constexpr int kCheckFailedCode = 3;

using ScenarioFn = int (*)();

/// One registered variant of a scenario: "name/fake" or "name/default".
struct Scenario {
  std::string name;   ///< "base/variant"
  std::string base;   ///< the name given to the macro
  bool fake = false;  ///< Runtime = testing::FakeRuntime
  unsigned exits = kExitAll;
  ScenarioFn body = nullptr;
};

/// The registry (leaked, so that it is valid whenever registration happens).
inline std::vector<Scenario>& scenarios() {
  static auto* all = new std::vector<Scenario>();
  return *all;
}

/// What the running child was asked to do (set by main before the body runs).
struct Current {
  const Scenario* scenario = nullptr;
  unsigned exit_style = kExitReturn;
};
inline Current& current() {
  static Current c;
  return c;
}
inline bool current_is_fake() { return current().scenario && current().scenario->fake; }

struct Registrar {
  Registrar(const char* base, ScenarioFn fake_fn, ScenarioFn default_fn, unsigned exits) {
    if (fake_fn) scenarios().push_back({std::string(base) + "/fake", base, true, exits, fake_fn});
    if (default_fn)
      scenarios().push_back({std::string(base) + "/default", base, false, exits, default_fn});
  }
};

/// Prints the failure and ends the process with kCheckFailedCode (no destructors run).
[[noreturn]] inline void check_failed(const char* expr, const char* file, int line) noexcept {
  std::fprintf(stderr, "HAZARD CHECK FAILED: %s:%d: %s\n", file, line, expr);
  std::fflush(stderr);
  std::_Exit(kCheckFailedCode);
}

/// Runs `fn` in a forked child and returns its exit code (tests/support/child_process.hpp).
using gpusafe_test::run_in_child;

/// Counts of what DeviceBlocks did at release (per copy of this header: each shared library
/// has its own).
struct BlockCounters {
  std::atomic<long> freed{0};    ///< released through the runtime
  std::atomic<long> dropped{0};  ///< dropped without a call (exiting, forked, reset, poisoned)
  std::atomic<long> failed{0};   ///< the runtime's deallocate failed (logged once per block)
};
inline BlockCounters& block_counters() {
  static auto* c = new BlockCounters();
  return *c;
}

/// A minimal RAII holder of one runtime allocation that follows the release rules of DESIGN
/// section 3, for scenarios that need a GPU resource without the pool: device memory (host
/// memory when Runtime has no GPU), gated runtime calls on both sides, epoch and poison checks,
/// one log line at most per block.
template <class Runtime>
class DeviceBlock {
 public:
  explicit DeviceBlock(std::size_t bytes, int device = 0)
      : device_(device), epoch_(gpusafe::device_epoch(device)), bytes_(bytes) {
    const std::string what = "DeviceBlock(" + std::to_string(bytes) + " bytes)";
    bool fell_back = false;
    kind_ = gpusafe::resolve_memory_kind<Runtime>(gpusafe::MemoryKind::device,
                                                  gpusafe::Fallback::host, &fell_back, what);
    if (kind_ == gpusafe::MemoryKind::device) gpusafe::check_gpu_request(device, what);
    gpusafe::detail::RuntimeCallGate gate;  // the exit handler waits for this call
    if (!gate) gpusafe::check_gpu_request(device, what);
    gpusafe::throw_on_failure(Runtime::allocate(kind_, device, bytes, &p_), what);
  }
  DeviceBlock(DeviceBlock&& o) noexcept
      : device_(o.device_),
        epoch_(o.epoch_),
        bytes_(o.bytes_),
        kind_(o.kind_),
        p_(std::exchange(o.p_, nullptr)) {}
  DeviceBlock& operator=(DeviceBlock&&) = delete;
  ~DeviceBlock() { reset(); }

  /// Releases the allocation (safe_tensor_cleanup uses this). Never throws.
  void reset() noexcept {
    void* p = std::exchange(p_, nullptr);
    if (!p) return;
    auto& counters = block_counters();
    if (kind_ == gpusafe::MemoryKind::host &&
        !std::is_same_v<Runtime, gpusafe::testing::FakeRuntime>) {
      // Host and CUDA runtimes serve host memory with malloc/free: safe even at exit.
      (void)Runtime::deallocate(kind_, device_, p);
      counters.freed.fetch_add(1);
      return;
    }
    gpusafe::detail::RuntimeCallGate gate;
    const bool on_device = kind_ == gpusafe::MemoryKind::device;
    if (!gate || (on_device && (gpusafe::device_epoch(device_) != epoch_ ||
                                gpusafe::device_is_poisoned(device_)))) {
      counters.dropped.fetch_add(1);
      return;
    }
    const gpusafe::Status s = Runtime::deallocate(kind_, device_, p);
    if (s.ok()) {
      counters.freed.fetch_add(1);
      return;
    }
    counters.failed.fetch_add(1);
    gpusafe::log_lazy(gpusafe::LogLevel::warning, [&] {
      return "DeviceBlock: deallocate of " + std::to_string(bytes_) + " bytes on device " +
             std::to_string(device_) + " failed with " + s.describe() + "; dropped";
    });
  }

  explicit operator bool() const noexcept { return p_ != nullptr; }
  void* data() const noexcept { return p_; }
  gpusafe::MemoryKind kind() const noexcept { return kind_; }

 private:
  int device_;
  std::uint32_t epoch_;
  std::size_t bytes_;
  gpusafe::MemoryKind kind_ = gpusafe::MemoryKind::host;
  void* p_ = nullptr;
};

/// Whether Runtime is the fake one (checks that only make sense there).
template <class Runtime>
constexpr bool kIsFake = std::is_same_v<Runtime, gpusafe::testing::FakeRuntime>;

}  // namespace gpusafe_hazards

#define GPUSAFE_HAZARD_CHECK(cond) \
  ((cond) ? (void)0 : ::gpusafe_hazards::check_failed(#cond, __FILE__, __LINE__))

#define GPUSAFE_HAZARD_DEFINE_(name, fake_fn, default_fn, exits)                                \
  template <class Runtime>                                                                      \
  int name();                                                                                   \
  static const ::gpusafe_hazards::Registrar gpusafe_hazard_registrar_##name(#name, fake_fn,     \
                                                                            default_fn, exits); \
  template <class Runtime>                                                                      \
  int name()

/// Registers "name/fake" and "name/default", run with every exit style in `exits`.
#define GPUSAFE_HAZARD_SCENARIO_EXITS(name, exits)                     \
  template <class Runtime>                                             \
  int name();                                                          \
  GPUSAFE_HAZARD_DEFINE_(name, &name<::gpusafe::testing::FakeRuntime>, \
                         &name<::gpusafe::DefaultRuntime>, (exits))

/// Registers only "name/fake" (for bodies that inject faults), with the exit styles `exits`.
#define GPUSAFE_HAZARD_SCENARIO_FAKE_ONLY_EXITS(name, exits) \
  template <class Runtime>                                   \
  int name();                                                \
  GPUSAFE_HAZARD_DEFINE_(name, &name<::gpusafe::testing::FakeRuntime>, nullptr, (exits))

#define GPUSAFE_HAZARD_SCENARIO(name) \
  GPUSAFE_HAZARD_SCENARIO_EXITS(name, ::gpusafe_hazards::kExitAll)
#define GPUSAFE_HAZARD_SCENARIO_FAKE_ONLY(name) \
  GPUSAFE_HAZARD_SCENARIO_FAKE_ONLY_EXITS(name, ::gpusafe_hazards::kExitAll)

#endif  // GPUSAFE_TESTS_HAZARDS_HAZARD_HPP
