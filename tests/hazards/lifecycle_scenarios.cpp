// Teardown-hazard scenarios of the lifecycle layer: the exit flag against the runtime's own
// teardown, with statics and exit handlers built before and after the first runtime call, in
// every exit style; and queries of the runtime layer made during static destruction.
#include <cstdlib>
#include <type_traits>

#include "gpusafe/lifecycle.hpp"
#include "hazard.hpp"

namespace gs = gpusafe;
using gs::testing::FakeRuntime;

namespace {

template <class Runtime>
constexpr bool kIsFake = std::is_same<Runtime, FakeRuntime>::value;

// Whether the body makes a call that registers the exit handler: always on the fake; on the
// default runtime only when CUDA is compiled in (the probe); a core build has nothing to tear
// down, so no flag is needed there.
template <class Runtime>
constexpr bool kRegistersExitHandler = kIsFake<Runtime> || GPUSAFE_WITH_CUDA;

// The property under test: the runtime is never seen torn down while the flag is still clear.
template <class Runtime>
void check_flag_precedes_teardown() {
  if (kIsFake<Runtime>)
    GPUSAFE_HAZARD_CHECK(!FakeRuntime::torn_down() || gs::process_is_exiting<Runtime>());
}

// What code that runs after the runtime's teardown must see.
template <class Runtime>
void check_sees_exiting() {
  check_flag_precedes_teardown<Runtime>();
  if (kRegistersExitHandler<Runtime>) {
    GPUSAFE_HAZARD_CHECK(gs::process_is_exiting<Runtime>());
    GPUSAFE_HAZARD_CHECK(gs::cuda_status() == gs::CudaStatus::exiting);
  }
  GPUSAFE_HAZARD_CHECK(!gs::is_cuda_available());
  GPUSAFE_HAZARD_CHECK(gs::cuda_device_count() == 0);
  gs::detail::BasicRuntimeCallGate<Runtime> gate;
  if (kRegistersExitHandler<Runtime>) GPUSAFE_HAZARD_CHECK(!gate);
}

// A buffer owner with a release path written by the rules: noexcept, gated, classified.
template <class Runtime>
struct Owner {
  bool built_before_first_call = false;
  void* buffer = nullptr;
  gs::MemoryKind kind = gs::MemoryKind::host;

  void acquire() {
    bool fell_back = false;
    kind = gs::resolve_memory_kind<Runtime>(gs::MemoryKind::device, gs::Fallback::host, &fell_back,
                                            "lifecycle scenario buffer");
    gs::throw_on_failure(Runtime::allocate(kind, 0, 4096, &buffer), "allocate");
  }

  ~Owner() {
    if (built_before_first_call) check_sees_exiting<Runtime>();
    check_flag_precedes_teardown<Runtime>();
    if (!buffer) return;
    gs::detail::BasicRuntimeCallGate<Runtime> gate;
    if (!gate) return;  // exiting or forked: dropped, the OS reclaims it
    // Admitted means the runtime is alive: the free must succeed (the fake traps otherwise).
    GPUSAFE_HAZARD_CHECK(Runtime::deallocate(kind, 0, buffer).ok());
  }
};

template <class Runtime>
Owner<Runtime>& owner_built_first() {
  static Owner<Runtime> o;
  return o;
}
template <class Runtime>
Owner<Runtime>& owner_built_later() {
  static Owner<Runtime> o;
  return o;
}

// Exit handlers registered before the first call run after the runtime's teardown.
template <class Runtime>
void handler_registered_first() {
  check_sees_exiting<Runtime>();
}
template <class Runtime>
void handler_registered_later() {
  check_flag_precedes_teardown<Runtime>();
  if (kIsFake<Runtime>) GPUSAFE_HAZARD_CHECK(!FakeRuntime::torn_down());
}

// The first runtime call of the body.
template <class Runtime>
void first_runtime_call() {
  if (!kIsFake<Runtime>) (void)gs::is_cuda_available();  // the CUDA probe
  int count = 0;
  (void)Runtime::device_count(count);
  if (kIsFake<Runtime>) GPUSAFE_HAZARD_CHECK(FakeRuntime::started());
}

}  // namespace

// (L1) Statics and exit handlers built before and after the first runtime call. Those built
// before are destroyed after the runtime's teardown and must see the exit flag (and make no
// runtime call: the fake traps); those built after are destroyed while the runtime is alive and
// free their memory for real. quick_exit runs no destructors, only the at_quick_exit handlers.
GPUSAFE_HAZARD_SCENARIO(lifecycle_exit_flag_before_teardown) {
  if (kIsFake<Runtime>) GPUSAFE_HAZARD_CHECK(!FakeRuntime::started());
  GPUSAFE_HAZARD_CHECK(!gs::detail::is_exiting());  // a peek: gpusafe is not used before `first`

  Owner<Runtime>& first = owner_built_first<Runtime>();
  first.built_before_first_call = true;
  std::atexit(&handler_registered_first<Runtime>);
  std::at_quick_exit(&handler_registered_first<Runtime>);

  first_runtime_call<Runtime>();
  first.acquire();

  Owner<Runtime>& later = owner_built_later<Runtime>();
  later.acquire();
  std::atexit(&handler_registered_later<Runtime>);
  std::at_quick_exit(&handler_registered_later<Runtime>);

  GPUSAFE_HAZARD_CHECK(!gs::process_is_exiting());
  return 0;
}

// (L2) The same, when gpusafe armed its exit handler for another runtime long before this
// runtime's first call (a program that probed CUDA, then used the fake in its tests).
GPUSAFE_HAZARD_SCENARIO_FAKE_ONLY(lifecycle_exit_flag_other_runtime_first) {
  (void)gs::is_cuda_available();
  Owner<Runtime>& first = owner_built_first<Runtime>();
  first.built_before_first_call = true;
  std::atexit(&handler_registered_first<Runtime>);
  first_runtime_call<Runtime>();
  first.acquire();
  return 0;
}

namespace {

// Everything an application might ask while being destroyed at exit.
template <class Runtime>
struct Querier {
  ~Querier() {
    check_sees_exiting<Runtime>();
    GPUSAFE_HAZARD_CHECK(!Runtime::gpu_available());
    // Without a usable GPU, device info describes the host and makes no runtime call.
    const gs::DeviceInfo info = gs::get_device_info<Runtime>(0);
    GPUSAFE_HAZARD_CHECK(!info.is_gpu);
    GPUSAFE_HAZARD_CHECK(info.total_memory > 0);
    bool fell_back = false;
    GPUSAFE_HAZARD_CHECK(gs::resolve_memory_kind<Runtime>(gs::MemoryKind::host, gs::Fallback::error,
                                                          &fell_back,
                                                          "host at exit") == gs::MemoryKind::host);
    if (kRegistersExitHandler<Runtime>) {
      bool threw = false;
      try {
        gs::check_gpu_request(0, "request at exit");
      } catch (const gs::ShuttingDown&) {
        threw = true;
      }
      GPUSAFE_HAZARD_CHECK(threw);
    }
    (void)gs::reclaim_all();  // must neither hang nor throw
  }
};

template <class Runtime>
void query_in_handler() {
  Querier<Runtime> q;  // the destructor does the work
}

}  // namespace

// (L3) is_cuda_available(), cuda_device_count(), get_device_info() and friends called from a
// static destructor and an exit handler that run after the runtime's teardown: all answer "no
// GPU" without touching the runtime.
GPUSAFE_HAZARD_SCENARIO(lifecycle_queries_during_static_destruction) {
  static Querier<Runtime> querier;
  std::at_quick_exit(&query_in_handler<Runtime>);
  first_runtime_call<Runtime>();
  (void)gs::get_device_info<Runtime>(0);
  return 0;
}
