// Teardown-hazard scenarios of the GPU handles (gpusafe/handles.hpp, handles/*.hpp,
// stream_pool.hpp): streams, events, graph executables, cuBLAS, cuBLASLt, cuDNN, cuFFT handles and
// NCCL communicators in static objects, in thread_local storage of threads alive at exit, in a
// forked child, after a sticky error, after a device reset, across two shared libraries, and a
// communicator whose release would hang. On the fake (trap after teardown) any runtime call after
// the runtime's teardown aborts the child; on DefaultRuntime without a GPU, creation must be a
// NoGpu error and the rest must still exit cleanly.
#include <atomic>
#include <chrono>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "gpusafe/handles.hpp"
#include "gpusafe/handles/cublas.hpp"
#include "gpusafe/handles/cudnn.hpp"
#include "gpusafe/handles/cufft.hpp"
#include "gpusafe/handles/nccl.hpp"
#include "gpusafe/stream_pool.hpp"
#include "hazard.hpp"

#if defined(GPUSAFE_HAZARD_HAVE_LIBS)
#include "libs/shared_lib.hpp"
#endif

namespace gs = gpusafe;
namespace hz = gpusafe_hazards;
using gs::HandleKind;
using gs::ReleaseOutcome;
using gs::testing::FakeOp;
using gs::testing::FakeRuntime;
using namespace std::chrono_literals;

namespace {

/// Totals of every handle kind (process-wide counters).
struct Totals {
  std::uint64_t created = 0, destroyed = 0, aborted = 0, failed = 0, leaked = 0;
};
Totals totals() {
  Totals t;
  for (int k = 0; k < static_cast<int>(HandleKind::count_); ++k) {
    const auto s = gs::handle_stats(static_cast<HandleKind>(k));
    t.created += s.created;
    t.destroyed += s.destroyed;
    t.aborted += s.aborted;
    t.failed += s.destroy_failures;
    t.leaked += s.leaked_total();
  }
  return t;
}

/// Makes a handle, or nothing when Runtime has no GPU (then creation must say NoGpu).
template <class H, class... A>
std::optional<H> try_make(A&&... args) {
  try {
    return std::optional<H>(std::in_place, std::forward<A>(args)...);
  } catch (const gs::NoGpu&) {
    GPUSAFE_HAZARD_CHECK(!hz::kIsFake<typename H::runtime_type>);
    return std::nullopt;
  }
}

gs::NcclParams quick_comm(std::chrono::milliseconds bound = 200ms) {
  gs::NcclParams p;
  p.timeout = bound;
  return p;
}

/// One handle of every kind on one device.
template <class Runtime>
struct HandleSet {
  std::optional<gs::BasicStream<Runtime>> stream;
  std::optional<gs::BasicEvent<Runtime>> event;
  std::optional<gs::BasicCublasHandle<Runtime>> blas;
  std::optional<gs::BasicCublasLtHandle<Runtime>> blaslt;
  std::optional<gs::BasicCudnnHandle<Runtime>> dnn;
  std::optional<gs::BasicCufftPlan<Runtime>> fft;
  std::optional<gs::BasicNcclComm<Runtime>> comm;
  std::optional<gs::BasicGraphExec<Runtime>> graph;

  static constexpr int kKinds = 8;

  /// Makes every handle (graphs only on the fake: a real one needs a captured graph).
  void make(int device = 0, std::chrono::milliseconds comm_bound = 200ms) {
    stream = try_make<gs::BasicStream<Runtime>>(gs::StreamParams{}, device);
    event = try_make<gs::BasicEvent<Runtime>>(gs::EventParams{}, device);
    blas = try_make<gs::BasicCublasHandle<Runtime>>(gs::CublasParams{}, device);
    blaslt = try_make<gs::BasicCublasLtHandle<Runtime>>(gs::CublasLtParams{}, device);
    dnn = try_make<gs::BasicCudnnHandle<Runtime>>(gs::CudnnParams{}, device);
    fft = try_make<gs::BasicCufftPlan<Runtime>>(gs::CufftParams{1, {256, 0, 0}, gs::kCufftC2C, 2},
                                                device);
    comm = try_make<gs::BasicNcclComm<Runtime>>(quick_comm(comm_bound), device);
    if constexpr (hz::kIsFake<Runtime>) {
      static int fake_graph = 0;
      graph = try_make<gs::BasicGraphExec<Runtime>>(gs::GraphExecParams{&fake_graph, 0}, device);
    }
  }
  /// Releases every handle; returns how many ended with `outcome`.
  int reset_all(ReleaseOutcome outcome) {
    int n = 0;
    auto one = [&](auto& h) {
      if (h && h->reset() == outcome) ++n;
      h.reset();
    };
    one(stream);
    one(event);
    one(blas);
    one(blaslt);
    one(dnn);
    one(fft);
    one(comm);
    one(graph);
    return n;
  }
  bool made() const { return stream.has_value(); }
};

}  // namespace

// (H1) Handles in static objects built before and after the first runtime call. The early ones
// are destroyed after the runtime's teardown: each is left to the OS with no call (the fake
// traps otherwise). The late ones are destroyed while the runtime is alive: really destroyed.
GPUSAFE_HAZARD_SCENARIO(handles_static_objects) {
  struct Early {
    HandleSet<Runtime> set;
    ~Early() {
      if (!set.made()) return;
      GPUSAFE_HAZARD_CHECK(gs::process_is_exiting<Runtime>());
      GPUSAFE_HAZARD_CHECK(set.reset_all(ReleaseOutcome::leaked) == HandleSet<Runtime>::kKinds);
    }
  };
  struct Late {
    HandleSet<Runtime> set;
    gs::BasicStreamPool<Runtime> pool{gs::StreamPoolOptions{4}};
    ~Late() {
      GPUSAFE_HAZARD_CHECK(!gs::process_is_exiting<Runtime>());
      if (!set.made()) return;
      GPUSAFE_HAZARD_CHECK(set.reset_all(ReleaseOutcome::destroyed) == HandleSet<Runtime>::kKinds);
    }
  };
  static Early early;  // built before any runtime call
  (void)gs::process_is_exiting<Runtime>();
  early.set.make();  // the first runtime calls (Fake: registers its teardown)
  static Late late;  // built after: destroyed before gpusafe's exit handler runs
  late.set.make();
  // Events are FakeRuntime events (event_create), not counted among its handles.
  if constexpr (hz::kIsFake<Runtime>) GPUSAFE_HAZARD_CHECK(FakeRuntime::live_handles() == 14 + 4);
  return 0;
}

namespace {

template <class Runtime>
struct ThreadHandles {
  HandleSet<Runtime> set;
};

template <class Runtime>
ThreadHandles<Runtime>& thread_handles() {
  thread_local ThreadHandles<Runtime> handles;
  return handles;
}

}  // namespace

// (H2) thread_local handles: threads that end release theirs while the runtime is alive; threads
// still running at exit (detached here on purpose) keep creating and releasing handles while main
// returns and never see their thread_local ones destroyed; the main thread's are destroyed at exit
// before the exit handler runs (not at all with quick_exit).
GPUSAFE_HAZARD_SCENARIO(handles_thread_local_at_exit) {
  (void)gs::process_is_exiting<Runtime>();
  const Totals before = totals();
  std::vector<std::thread> finished;
  for (int t = 0; t < 3; ++t) finished.emplace_back([] { thread_handles<Runtime>().set.make(); });
  for (auto& t : finished) t.join();
  if constexpr (hz::kIsFake<Runtime>) {
    GPUSAFE_HAZARD_CHECK(totals().destroyed == before.destroyed + 3 * HandleSet<Runtime>::kKinds);
    GPUSAFE_HAZARD_CHECK(FakeRuntime::live_handles() == 0);
  }
  std::atomic<int> started{0};
  for (int t = 0; t < 3; ++t) {
    std::thread([&started] {
      thread_handles<Runtime>().set.make();  // alive until the process ends
      started.fetch_add(1);
      for (;;) {
        try {
          gs::BasicStream<Runtime> s(gs::StreamParams{});
          gs::BasicCublasHandle<Runtime> blas(gs::CublasParams{});
        } catch (const gs::ShuttingDown&) {
          std::this_thread::yield();  // once exit has begun
        } catch (const gs::NoGpu&) {
          GPUSAFE_HAZARD_CHECK(!hz::kIsFake<Runtime>);
          std::this_thread::sleep_for(1ms);
        }
      }
    }).detach();
  }
  while (started.load() < 3) std::this_thread::yield();
  thread_handles<Runtime>().set.make();  // the main thread's, destroyed by exit
  std::this_thread::sleep_for(20ms);
  return 0;
}

// (H3) fork() with handles held: the child releases what it inherited with zero runtime calls,
// and new handles and stream pools are refused with ForkedChild. The parent's are untouched.
GPUSAFE_HAZARD_SCENARIO(handles_forked_child) {
  static HandleSet<Runtime> inherited;
  inherited.make();
  static std::optional<gs::BasicStreamPool<Runtime>> pool(std::in_place, gs::StreamPoolOptions{4});
  for (int round = 0; round < 4; ++round) {
    const int rc = hz::run_in_child([&] {
      const auto calls = FakeRuntime::total_calls();
      const Totals before = totals();
      if (inherited.made())
        GPUSAFE_HAZARD_CHECK(inherited.reset_all(ReleaseOutcome::leaked) ==
                             HandleSet<Runtime>::kKinds);
      pool.reset();
      try {
        gs::BasicStream<Runtime> fresh(gs::StreamParams{});
        GPUSAFE_HAZARD_CHECK(!"a new handle in a forked child must throw");
      } catch (const gs::ForkedChild&) {
      }
      try {
        gs::BasicStreamPool<Runtime> fresh_pool(gs::StreamPoolOptions{2});
        GPUSAFE_HAZARD_CHECK(!"a new stream pool in a forked child must throw");
      } catch (const gs::ForkedChild&) {
      }
      GPUSAFE_HAZARD_CHECK(totals().destroyed == before.destroyed);
      if constexpr (hz::kIsFake<Runtime>) GPUSAFE_HAZARD_CHECK(FakeRuntime::total_calls() == calls);
      if (round % 2) std::exit(0);  // the inherited exit handlers and destructors run too
      return 0;
    });
    GPUSAFE_HAZARD_CHECK(rc == 0);
  }
  if constexpr (hz::kIsFake<Runtime>) GPUSAFE_HAZARD_CHECK(FakeRuntime::live_handles() == 7 + 4);
  return 0;
}

// (H4) A sticky error (700) met while destroying a handle on device 0: one log line in all, no
// further runtime call for device 0's handles except the communicator's abort, device 1's
// handles destroyed normally, a new handle on device 0 refused with DevicePoisoned naming the
// fix, and handles work again after notify_device_reset.
GPUSAFE_HAZARD_SCENARIO_FAKE_ONLY(handles_sticky_error) {
  FakeRuntime::reset(2);
  FakeRuntime::trap_after_teardown(true);
  static std::atomic<int> lines{0};
  gs::set_log_level(gs::LogLevel::debug);
  gs::set_log_sink([](gs::LogLevel, std::string_view) { lines.fetch_add(1); });
  HandleSet<Runtime> on0, on1;
  on0.make(0);
  on1.make(1);
  gs::BasicStream<Runtime> first(gs::StreamParams{}, 0);
  FakeRuntime::fail_call(FakeOp::handle_destroy, gs::codes::illegal_address);
  GPUSAFE_HAZARD_CHECK(first.reset() == ReleaseOutcome::failed);
  GPUSAFE_HAZARD_CHECK(gs::device_is_poisoned(0));
  GPUSAFE_HAZARD_CHECK(lines.load() == 1);
  const auto calls = FakeRuntime::total_calls();
  GPUSAFE_HAZARD_CHECK(on0.reset_all(ReleaseOutcome::leaked) == HandleSet<Runtime>::kKinds - 1);
  GPUSAFE_HAZARD_CHECK(FakeRuntime::calls(FakeOp::handle_abort) == 1);  // the communicator
  GPUSAFE_HAZARD_CHECK(FakeRuntime::total_calls() <= calls + 3);  // get, set, abort (+ restore)
  GPUSAFE_HAZARD_CHECK(lines.load() == 1);
  GPUSAFE_HAZARD_CHECK(on1.reset_all(ReleaseOutcome::destroyed) == HandleSet<Runtime>::kKinds);
  try {
    gs::BasicCudnnHandle<Runtime> again(gs::CudnnParams{}, 0);
    GPUSAFE_HAZARD_CHECK(!"a handle on a poisoned device must throw");
  } catch (const gs::DevicePoisoned& e) {
    GPUSAFE_HAZARD_CHECK(std::string(e.what()).find("notify_device_reset") != std::string::npos);
  }
  gs::notify_device_reset(0);
  static gs::BasicStream<Runtime> after_reset(gs::StreamParams{}, 0);  // lives until exit
  gs::set_log_sink({});
  gs::set_log_level(gs::LogLevel::warning);
  return 0;
}

// (H5) notify_device_reset while handles are out: those of the reset device are left to the OS
// without a call, the other device's are destroyed, new ones work, and a static handle of the
// old epoch is left at exit.
GPUSAFE_HAZARD_SCENARIO(handles_device_reset) {
  if constexpr (hz::kIsFake<Runtime>) {
    FakeRuntime::reset(2);
    FakeRuntime::trap_after_teardown(true);
  }
  HandleSet<Runtime> on0, on1;
  on0.make(0);
  if (hz::kIsFake<Runtime>) on1.make(1);
  static HandleSet<Runtime> old_epoch;
  old_epoch.make(0);
  gs::notify_device_reset(0);
  const auto calls = FakeRuntime::total_calls();
  if (on0.made())
    GPUSAFE_HAZARD_CHECK(on0.reset_all(ReleaseOutcome::leaked) == HandleSet<Runtime>::kKinds);
  GPUSAFE_HAZARD_CHECK(FakeRuntime::total_calls() == calls);
  if (on1.made())
    GPUSAFE_HAZARD_CHECK(on1.reset_all(ReleaseOutcome::destroyed) == HandleSet<Runtime>::kKinds);
  HandleSet<Runtime> fresh;
  fresh.make(0);
  if (fresh.made()) GPUSAFE_HAZARD_CHECK(fresh.stream->usable());
  return 0;
}

// (H6) A communicator whose finalisation hangs (a dead peer) is aborted within its bound, now,
// from a static destroyed at exit while the runtime is alive, and from a static destroyed after
// the runtime's teardown (left to the OS, no call at all).
GPUSAFE_HAZARD_SCENARIO_FAKE_ONLY(nccl_destroy_hangs) {
  struct CommHolder {
    std::optional<gs::BasicNcclComm<Runtime>> comm;
    ReleaseOutcome expect = ReleaseOutcome::aborted;
    ~CommHolder() {
      if (!comm) return;
      const auto start = std::chrono::steady_clock::now();
      GPUSAFE_HAZARD_CHECK(comm->reset() == expect);
      GPUSAFE_HAZARD_CHECK(std::chrono::steady_clock::now() - start < 2s);
    }
  };
  static CommHolder early;  // destroyed after the runtime's teardown
  (void)gs::process_is_exiting<Runtime>();
  gs::set_log_level(gs::LogLevel::error);  // the abort is logged as a warning once
  FakeRuntime::hang_handle_finalize(true);
  gs::BasicNcclComm<Runtime> now(quick_comm(150ms));
  const auto start = std::chrono::steady_clock::now();
  GPUSAFE_HAZARD_CHECK(now.reset() == ReleaseOutcome::aborted);
  const auto took = std::chrono::steady_clock::now() - start;
  GPUSAFE_HAZARD_CHECK(took >= 150ms && took < 2s);
  early.comm.emplace(quick_comm(150ms));
  early.expect = ReleaseOutcome::leaked;
  static CommHolder late;  // destroyed before gpusafe's exit handler: runtime alive
  late.comm.emplace(quick_comm(150ms));
  late.expect = ReleaseOutcome::aborted;
  return 0;
}

#if defined(GPUSAFE_HAZARD_HAVE_LIBS)
// (H7) Two shared libraries, each with its own hidden copy of the headers, make handles (their
// resources hold a stream, an event and a cuBLAS handle) that the other library destroys now or
// keeps until exit: every handle goes back to the copy of the runtime that made it (a foreign
// handle would be counted there), and the process-wide counters see both libraries.
GPUSAFE_HAZARD_SCENARIO(handles_two_libraries) {
  const int use_fake = hz::kIsFake<Runtime> ? 1 : 0;
  gpusafe_hazard_liba_arm(use_fake);
  gpusafe_hazard_libb_arm(use_fake);
  const Totals before = totals();
  for (int i = 0; i < 4; ++i) {
    gpusafe_hazard_resource* a = gpusafe_hazard_liba_create_with_handles(512);
    gpusafe_hazard_resource* b = gpusafe_hazard_libb_create_with_handles(512);
    GPUSAFE_HAZARD_CHECK(a && b);
    if (i % 2) {
      gpusafe_hazard_liba_destroy(b);
      gpusafe_hazard_libb_destroy(a);
    } else {
      gpusafe_hazard_liba_keep(b);
      gpusafe_hazard_libb_keep(a);
    }
  }
  GPUSAFE_HAZARD_CHECK(gpusafe_hazard_liba_handle_faults() == 0);
  GPUSAFE_HAZARD_CHECK(gpusafe_hazard_libb_handle_faults() == 0);
  if constexpr (hz::kIsFake<Runtime>) {
    GPUSAFE_HAZARD_CHECK(totals().created == before.created + 8 * 3);
    GPUSAFE_HAZARD_CHECK(totals().destroyed == before.destroyed + 4 * 3);
  }
  return 0;
}
#endif
