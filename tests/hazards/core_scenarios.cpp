// Teardown-hazard scenarios of the core layers (runtime, lifecycle, guards). See hazard.hpp.
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "gpusafe/guards.hpp"
#include "gpusafe/lifecycle.hpp"
#include "hazard.hpp"

#if defined(GPUSAFE_HAZARD_HAVE_LIBS)
#include "libs/shared_lib.hpp"
#endif

namespace gs = gpusafe;
namespace hz = gpusafe_hazards;
using gs::testing::FakeOp;
using gs::testing::FakeRuntime;

namespace {

/// Counts log messages without printing them.
struct LogCounter {
  std::atomic<int> lines{0};
  std::mutex mutex;
  std::vector<std::string> messages;
};
LogCounter& log_counter() {
  static auto* c = new LogCounter();
  return *c;
}
void count_logs(gs::LogLevel level = gs::LogLevel::debug) {
  gs::set_log_level(level);
  gs::set_log_sink([](gs::LogLevel, std::string_view m) {
    auto& c = log_counter();
    c.lines.fetch_add(1);
    std::lock_guard<std::mutex> lock(c.mutex);
    c.messages.emplace_back(m);
  });
}

/// A resource that cleans itself up the way an application would: a block, released through
/// safe_tensor_cleanup inside a SafeCudaCleanup that also synchronizes and trims caches.
template <class Runtime>
struct Holder {
  explicit Holder(std::size_t bytes) : block(std::in_place, bytes) {}
  ~Holder() {
    gs::BasicSafeCudaCleanup<Runtime> cleanup({/*synchronize=*/true, /*empty_cache=*/true, 0});
    cleanup.defer([this] { gs::safe_tensor_cleanup(block); });
  }
  std::optional<hz::DeviceBlock<Runtime>> block;
};

}  // namespace

// (1) Static objects built before and after the first runtime call, destroyed at exit. The one
// built before is destroyed after the runtime's teardown (atexit order): it must make no runtime
// call (the fake traps). The one built after is destroyed while the runtime is alive and really
// frees its memory.
GPUSAFE_HAZARD_SCENARIO(static_objects) {
  struct Early {
    std::optional<Holder<Runtime>> holder;
    gs::BasicSafeCudaCleanup<Runtime> guard{{true, true, 0}};
    ~Early() {
      if (hz::current().exit_style != hz::kExitQuick)
        GPUSAFE_HAZARD_CHECK(gs::process_is_exiting());
    }
  };
  struct Late {
    std::optional<Holder<Runtime>> holder;
    ~Late() {
      GPUSAFE_HAZARD_CHECK(!gs::process_is_exiting());
      const long freed = hz::block_counters().freed.load();
      holder.reset();
      GPUSAFE_HAZARD_CHECK(hz::block_counters().freed.load() == freed + 1);
    }
  };
  static Early early;  // constructed before any runtime call
  (void)gs::is_cuda_available();
  early.holder.emplace(1 << 20);  // the first runtime call (Fake: registers its teardown)
  early.guard.defer([] { (void)gs::safe_cuda_empty_cache(); });
  static Late late;  // constructed after: destroyed before the exit handler runs
  late.holder.emplace(1 << 16);
  static gs::BasicSafeCudaCleanup<Runtime> late_guard({true, true, 0});
  if constexpr (hz::kIsFake<Runtime>) GPUSAFE_HAZARD_CHECK(FakeRuntime::live_allocations() == 2);
  return 0;
}

// (2) Every release-path call fails with each code CUDA returns at the worst moments. Nothing
// throws, and each resource logs one line at most.
GPUSAFE_HAZARD_SCENARIO_FAKE_ONLY(release_call_failures) {
  count_logs();
  const int codes[] = {4, 35, 100, 201, 700, 709, 999};
  for (const int code : codes) {
    FakeRuntime::reset(2);
    FakeRuntime::trap_after_teardown(true);
    const int before = log_counter().lines.load();
    int resources = 0;
    gs::EventHandle event = nullptr;
    {
      std::vector<hz::DeviceBlock<Runtime>> blocks;
      blocks.emplace_back(256, 0);
      blocks.emplace_back(512, 1);
      std::optional<hz::DeviceBlock<Runtime>> opt(std::in_place, 128, 0);
      GPUSAFE_HAZARD_CHECK(Runtime::event_create(event).ok());
      resources += 3;
      for (const FakeOp op :
           {FakeOp::deallocate, FakeOp::synchronize, FakeOp::set_device, FakeOp::get_device,
            FakeOp::event_destroy, FakeOp::event_query, FakeOp::event_record})
        FakeRuntime::fail_call(op, code, 0, -1);
      {
        gs::BasicSafeCudaCleanup<Runtime> cleanup({true, true, 1});
        ++resources;
        cleanup.defer([&] { gs::safe_tensor_cleanup(opt); });
        cleanup.defer([&] { (void)Runtime::event_destroy(event); });  // status ignored on purpose
      }
      {
        FakeRuntime::clear_faults();
        gs::BasicDeviceGuard<Runtime> guard(1);  // switching works; restoring fails
        ++resources;
        FakeRuntime::fail_call(FakeOp::set_device, code, 0, -1);
      }
      GPUSAFE_HAZARD_CHECK(gs::safe_tensor_cleanup(blocks));
    }
    FakeRuntime::clear_faults();
    (void)Runtime::event_destroy(event);  // the injected failure left it alive; not a finding
    const int lines = log_counter().lines.load() - before;
    if (lines > resources) {
      std::lock_guard<std::mutex> lock(log_counter().mutex);
      for (const auto& m : log_counter().messages) std::fprintf(stderr, "  log: %s\n", m.c_str());
    }
    GPUSAFE_HAZARD_CHECK(lines <= resources);
    GPUSAFE_HAZARD_CHECK(lines >= 1);  // the failure is reported, not swallowed
    GPUSAFE_HAZARD_CHECK(FakeRuntime::invalid_frees() == 0);
    for (int d = 0; d < 2; ++d) gs::notify_device_reset(d);
  }
  FakeRuntime::reset(2);
  FakeRuntime::trap_after_teardown(true);
  return 0;
}

// (3) A sticky error (700) on the device, then everything is destroyed: one log line in all,
// no further runtime call on that device, and a later GPU request says clearly what happened.
GPUSAFE_HAZARD_SCENARIO_FAKE_ONLY(sticky_error_then_teardown) {
  count_logs();
  std::vector<std::unique_ptr<Holder<Runtime>>> holders;
  for (int i = 0; i < 4; ++i) holders.push_back(std::make_unique<Holder<Runtime>>(4096));
  FakeRuntime::fail_call(FakeOp::synchronize, gs::codes::illegal_address);
  { gs::BasicSafeCudaCleanup<Runtime> cleanup({true, false, 0}); }  // meets the sticky error
  GPUSAFE_HAZARD_CHECK(gs::device_is_poisoned(0));
  GPUSAFE_HAZARD_CHECK(log_counter().lines.load() == 1);
  const auto calls = FakeRuntime::total_calls();
  GPUSAFE_HAZARD_CHECK(gs::safe_tensor_cleanup(holders));
  GPUSAFE_HAZARD_CHECK(FakeRuntime::total_calls() == calls);  // dropped, not freed
  GPUSAFE_HAZARD_CHECK(log_counter().lines.load() == 1);
  try {
    hz::DeviceBlock<Runtime> again(64);
    GPUSAFE_HAZARD_CHECK(!"a GPU request on a poisoned device must throw");
  } catch (const gs::DevicePoisoned& e) {
    GPUSAFE_HAZARD_CHECK(std::strstr(e.what(), "notify_device_reset") != nullptr);
  }
  { gs::BasicDeviceGuard<Runtime> recovery(0); }  // recovery code may still run
  gs::notify_device_reset(0);
  static hz::DeviceBlock<Runtime> after_reset(64);  // works again; lives until exit
  return 0;
}

// (4) A worker thread keeps using the library while main returns (detached here on purpose; the
// library itself never detaches a thread). Its acquires fail cleanly once the process exits.
GPUSAFE_HAZARD_SCENARIO(worker_outlives_main) {
  (void)gs::is_cuda_available();
  { hz::DeviceBlock<Runtime> warm(64); }
  std::atomic<bool> started{false};
  std::thread([&started] {
    started.store(true);
    for (;;) {
      try {
        hz::DeviceBlock<Runtime> block(4096);
        auto holder = std::make_unique<hz::DeviceBlock<Runtime>>(1024);
        gs::BasicSafeCudaCleanup<Runtime> cleanup({true, false, 0});  // after what it cleans
        cleanup.defer([&] { gs::safe_tensor_cleanup(holder); });
        gs::BasicDeviceGuard<Runtime> guard(0);
        (void)gs::is_cuda_available();
      } catch (const gs::ShuttingDown&) {
        std::this_thread::yield();  // expected once exit has begun
      }
    }
  }).detach();
  while (!started.load()) std::this_thread::yield();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  return 0;
}

namespace {

/// A Reclaimable that holds its registry entry's lock for a while on every reclaim.
class SlowReclaimable : public gs::Reclaimable {
 public:
  SlowReclaimable() : registration_(*this) {}
  std::size_t reclaim(const gs::ReclaimRequest&) noexcept override {
    std::this_thread::sleep_for(std::chrono::microseconds(300));
    return 1;
  }
  const char* reclaimable_name() const noexcept override { return "slow"; }

 private:
  gs::ReclaimRegistration registration_;
};

}  // namespace

// (5) fork() while resources are held and while other threads hold the log lock and the
// registry's locks: the child releases what it inherited with zero runtime calls, new GPU
// requests fail with ForkedChild, and no library lock hangs it.
GPUSAFE_HAZARD_SCENARIO(fork_with_resources) {
  static std::vector<std::unique_ptr<hz::DeviceBlock<Runtime>>> inherited;
  for (int i = 0; i < 3; ++i) inherited.push_back(std::make_unique<hz::DeviceBlock<Runtime>>(8192));
  gs::set_log_level(gs::LogLevel::info);
  gs::set_log_sink([](gs::LogLevel, std::string_view) {
    std::this_thread::sleep_for(std::chrono::microseconds(300));  // holds the log lock
  });
  SlowReclaimable slow;
  std::atomic<bool> stop{false};
  std::thread logger([&] {
    while (!stop.load()) gs::log(gs::LogLevel::info, "busy");
  });
  std::thread reclaimer([&] {
    while (!stop.load()) (void)gs::reclaim_all();
  });
  // Rounds 0-19 fork while the two threads hold the locks; the children end with _Exit. Rounds
  // 20-23 fork after the threads stopped and end with std::exit, running the inherited exit
  // handlers and destructors (with the threads gone there, LeakSanitizer sees no false leaks).
  for (int round = 0; round < 24; ++round) {
    std::this_thread::sleep_for(std::chrono::microseconds(150 * (round % 4)));
    const bool exit_normally = round >= 20;
    if (round == 20) {
      stop.store(true);
      logger.join();
      reclaimer.join();
    }
    const int rc = hz::run_in_child([&] {
      const auto calls = FakeRuntime::total_calls();
      GPUSAFE_HAZARD_CHECK(gs::in_forked_child());
      GPUSAFE_HAZARD_CHECK(!gs::is_cuda_available());
      gs::log(gs::LogLevel::info, "child");  // the log lock was re-created
      (void)gs::safe_cuda_empty_cache();     // so were the registry's
      GPUSAFE_HAZARD_CHECK(gs::safe_tensor_cleanup(inherited));
      { gs::BasicSafeCudaCleanup<Runtime> cleanup({true, true, 0}); }
      try {
        hz::DeviceBlock<Runtime> fresh(64);
        GPUSAFE_HAZARD_CHECK(!"a GPU request in a forked child must throw");
      } catch (const gs::ForkedChild&) {
      }
      try {
        gs::BasicDeviceGuard<Runtime> guard(1);
        GPUSAFE_HAZARD_CHECK(!"switching to a GPU in a forked child must throw");
      } catch (const gs::ForkedChild&) {
      } catch (const gs::InvalidArgument&) {  // no GPU at all: index 1 does not exist
        GPUSAFE_HAZARD_CHECK(!Runtime::gpu_available());
      }
      { gs::BasicDeviceGuard<Runtime> host(0); }
      if constexpr (hz::kIsFake<Runtime>) GPUSAFE_HAZARD_CHECK(FakeRuntime::total_calls() == calls);
      if (exit_normally) std::exit(0);  // runs the inherited exit handlers and destructors
      return 0;
    });
    GPUSAFE_HAZARD_CHECK(rc == 0);
  }
  gs::set_log_sink({});
  gs::set_log_level(gs::LogLevel::warning);
  GPUSAFE_HAZARD_CHECK(inherited.size() == 3);  // the parent's are untouched
  return 0;
}

// (6) notify_device_reset while resources are out: they are released without runtime calls on
// the reset device, released normally on the other one, and new requests work.
GPUSAFE_HAZARD_SCENARIO(device_reset_while_out) {
  const bool fake = hz::kIsFake<Runtime>;
  if constexpr (hz::kIsFake<Runtime>) FakeRuntime::reset(2);
  if constexpr (hz::kIsFake<Runtime>) FakeRuntime::trap_after_teardown(true);
  std::vector<hz::DeviceBlock<Runtime>> on0;
  for (int i = 0; i < 4; ++i) on0.emplace_back(1024, 0);
  std::optional<hz::DeviceBlock<Runtime>> on1;
  if (fake) on1.emplace(1024, 1);
  static std::optional<hz::DeviceBlock<Runtime>> at_exit(std::in_place, 2048, 0);
  gs::BasicSafeCudaCleanup<Runtime> guard({true, true, 0});
  const auto epoch = gs::device_epoch(0);
  gs::notify_device_reset(0);
  GPUSAFE_HAZARD_CHECK(gs::device_epoch(0) == epoch + 1);
  const auto frees = FakeRuntime::calls(FakeOp::deallocate);
  const long dropped = hz::block_counters().dropped.load();
  GPUSAFE_HAZARD_CHECK(gs::safe_tensor_cleanup(on0));
  if (fake) {
    GPUSAFE_HAZARD_CHECK(FakeRuntime::calls(FakeOp::deallocate) == frees);
    GPUSAFE_HAZARD_CHECK(hz::block_counters().dropped.load() == dropped + 4);
    GPUSAFE_HAZARD_CHECK(gs::safe_tensor_cleanup(on1));
    GPUSAFE_HAZARD_CHECK(FakeRuntime::calls(FakeOp::deallocate) == frees + 1);
  }
  hz::DeviceBlock<Runtime> fresh(1024, 0);  // a new epoch: allocations work
  GPUSAFE_HAZARD_CHECK(static_cast<bool>(fresh));
  return 0;
}

namespace {

template <class Runtime>
struct ThreadState {
  std::optional<Holder<Runtime>> holder;
  std::vector<hz::DeviceBlock<Runtime>> blocks;
};

template <class Runtime>
ThreadState<Runtime>& thread_state() {
  thread_local ThreadState<Runtime> state;
  return state;
}

}  // namespace

// (7) thread_local state holding resources, destroyed at thread exit (runtime alive: really
// freed) and, for the main thread, at process exit (before the exit handler runs).
GPUSAFE_HAZARD_SCENARIO(thread_local_state) {
  (void)gs::is_cuda_available();
  { hz::DeviceBlock<Runtime> warm(64); }
  const long freed = hz::block_counters().freed.load();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([] {
      auto& state = thread_state<Runtime>();
      state.holder.emplace(2048);
      for (int i = 0; i < 3; ++i) state.blocks.emplace_back(512);
    });
  }
  for (auto& t : threads) t.join();
  GPUSAFE_HAZARD_CHECK(hz::block_counters().freed.load() == freed + 16);
  auto& mine = thread_state<Runtime>();
  mine.holder.emplace(4096);
  mine.blocks.emplace_back(256);
  return 0;
}

#if defined(GPUSAFE_HAZARD_HAVE_LIBS)
// (8) Two shared libraries, each with its own hidden copy of the headers, hold and release each
// other's resources; what is left is destroyed at exit in mixed order. Every resource goes back
// to the copy that made it (an invalid free would be counted there).
GPUSAFE_HAZARD_SCENARIO(two_libraries) {
  const int use_fake = hz::kIsFake<Runtime> ? 1 : 0;
  gpusafe_hazard_liba_arm(use_fake);
  gpusafe_hazard_libb_arm(use_fake);
  struct Kept {
    std::vector<gpusafe_hazard_resource*> items;
    ~Kept() {
      for (std::size_t i = 0; i < items.size(); ++i) {
        // Alternate which library destroys what.
        if (i % 2) {
          gpusafe_hazard_liba_destroy(items[i]);
        } else {
          gpusafe_hazard_libb_destroy(items[i]);
        }
      }
    }
  };
  static Kept kept;  // destroyed at exit, while or after the libraries tear down
  for (int i = 0; i < 8; ++i) {
    gpusafe_hazard_resource* a = gpusafe_hazard_liba_create(1024 + i);
    gpusafe_hazard_resource* b = gpusafe_hazard_libb_create(2048 + i);
    GPUSAFE_HAZARD_CHECK(a && b);
    switch (i % 4) {
      case 0:  // released now, each by the other library
        gpusafe_hazard_liba_destroy(b);
        gpusafe_hazard_libb_destroy(a);
        break;
      case 1:  // each library keeps the other's until exit
        gpusafe_hazard_liba_keep(b);
        gpusafe_hazard_libb_keep(a);
        break;
      case 2:  // the program keeps both until exit
        kept.items.push_back(a);
        kept.items.push_back(b);
        break;
      default:  // a library keeps its own
        gpusafe_hazard_liba_keep(a);
        gpusafe_hazard_libb_keep(b);
        break;
    }
  }
  GPUSAFE_HAZARD_CHECK(gpusafe_hazard_liba_invalid_frees() == 0);
  GPUSAFE_HAZARD_CHECK(gpusafe_hazard_libb_invalid_frees() == 0);
  GPUSAFE_HAZARD_CHECK(gpusafe_hazard_liba_live() == 6);
  GPUSAFE_HAZARD_CHECK(gpusafe_hazard_libb_live() == 6);
  return 0;
}
#endif
