// Teardown-hazard scenarios in which gpusafe does not make the first runtime call. In real
// programs LibTorch, cuDNN or the user's own cudaMalloc usually initialise the runtime, and
// gpusafe's first use can come late: in a static destructor, after the runtime's teardown. The
// rule (docs/teardown.md): whoever made the first call, a gpusafe release path that runs after
// the runtime's teardown makes no runtime call, and one that runs before it releases normally.
// On the fake the runtime's teardown is registered by its first call, independently of gpusafe,
// and any call after it traps.
#include <atomic>
#include <chrono>
#include <optional>
#include <thread>
#include <utility>

#include "gpusafe/buffer_pool.hpp"
#include "gpusafe/guards.hpp"
#include "gpusafe/lifecycle.hpp"
#include "hazard.hpp"

namespace gs = gpusafe;
namespace hz = gpusafe_hazards;
using gs::testing::FakeRuntime;

namespace {

/// What the user's resources did at release.
struct UserCounters {
  std::atomic<int> freed{0};   ///< released through the runtime
  std::atomic<int> leaked{0};  ///< left for the OS by gpusafe
};
UserCounters& user_counters() {
  static auto* c = new UserCounters();
  return *c;
}

/// The user's own tensor-like resource: allocated and freed with raw runtime calls (not through
/// gpusafe), released with gpusafe's safe_tensor_cleanup, as the seed's tensor holder was.
template <class Runtime>
struct UserTensor {
  void* p = nullptr;
  gs::MemoryKind kind = gs::MemoryKind::host;

  UserTensor() = default;
  UserTensor(UserTensor&& o) noexcept : p(std::exchange(o.p, nullptr)), kind(o.kind) {}
  UserTensor& operator=(UserTensor&&) = delete;

  void allocate(std::size_t bytes) {
    kind = Runtime::gpu_available() ? gs::MemoryKind::device : gs::MemoryKind::host;
    GPUSAFE_HAZARD_CHECK(Runtime::allocate(kind, 0, bytes, &p).ok());
  }
  explicit operator bool() const noexcept { return p != nullptr; }
  void reset() noexcept {
    if (!p) return;
    GPUSAFE_HAZARD_CHECK(Runtime::deallocate(kind, 0, p).ok());
    p = nullptr;
    user_counters().freed.fetch_add(1);
  }
};

/// A static holder whose destructor cleans up the seed's way. `expect_freed` says whether the
/// runtime is still alive when it runs (built after the runtime's first call) or not.
template <class Runtime>
struct SeedHolder {
  UserTensor<Runtime> tensor;
  bool expect_freed = false;
  ~SeedHolder() {
    if (!tensor) return;
    const int freed = user_counters().freed.load();
    GPUSAFE_HAZARD_CHECK(gs::basic_safe_tensor_cleanup<Runtime>(tensor));
    GPUSAFE_HAZARD_CHECK(!tensor);
    if (hz::kIsFake<Runtime>) {
      GPUSAFE_HAZARD_CHECK((user_counters().freed.load() == freed + 1) == expect_freed);
      GPUSAFE_HAZARD_CHECK(FakeRuntime::torn_down() != expect_freed);
    }
  }
};

template <class Runtime>
SeedHolder<Runtime>& holder_built_first() {
  static SeedHolder<Runtime> h;
  return h;
}
template <class Runtime>
SeedHolder<Runtime>& holder_built_later() {
  static SeedHolder<Runtime> h;
  return h;
}

/// The user's first runtime call (not through gpusafe).
template <class Runtime>
void user_first_call() {
  int count = 0;
  (void)Runtime::device_count(count);
  if (hz::kIsFake<Runtime>) GPUSAFE_HAZARD_CHECK(FakeRuntime::started());
}

}  // namespace

// (F1) The user's own runtime call comes first and gpusafe's first use is safe_tensor_cleanup in
// the destructor of a static object (the seed's pattern). The holder built before the runtime's
// first call is destroyed after its teardown: gpusafe must learn it then (and leak); the one
// built after is destroyed first and must really free.
GPUSAFE_HAZARD_SCENARIO(first_call_by_user_then_cleanup_at_exit) {
  if (hz::kIsFake<Runtime>) GPUSAFE_HAZARD_CHECK(!FakeRuntime::started());
  SeedHolder<Runtime>& first = holder_built_first<Runtime>();
  user_first_call<Runtime>();
  first.tensor.allocate(4096);
  first.expect_freed = false;
  SeedHolder<Runtime>& later = holder_built_later<Runtime>();
  later.tensor.allocate(2048);
  later.expect_freed = true;
  GPUSAFE_HAZARD_CHECK(!gs::detail::is_exiting());  // a peek: gpusafe itself is still unused
  return 0;
}

// (F2) The user's call comes first, then gpusafe is used during the run (a cleanup guard), then
// static holders are built: gpusafe's exit handler is registered after the runtime's teardown,
// so it runs before it, and holders built before gpusafe's use see the flag.
GPUSAFE_HAZARD_SCENARIO(first_call_by_user_then_gpusafe_use) {
  SeedHolder<Runtime>& first = holder_built_first<Runtime>();
  user_first_call<Runtime>();
  first.tensor.allocate(4096);
  first.expect_freed = false;
  { gs::BasicSafeCudaCleanup<Runtime> guard({/*synchronize=*/true, /*empty_cache=*/false, 0}); }
  SeedHolder<Runtime>& later = holder_built_later<Runtime>();
  later.tensor.allocate(2048);
  later.expect_freed = true;
  return 0;
}

// (F3) gpusafe is used before any runtime call (it initialises the runtime itself), then the
// user's resources are made: everything built after that use is destroyed while the runtime is
// alive and freed for real, at every exit style.
GPUSAFE_HAZARD_SCENARIO(first_call_by_gpusafe) {
  (void)gs::process_is_exiting<Runtime>();  // gpusafe's first use initialises the runtime
  if (hz::kIsFake<Runtime>) GPUSAFE_HAZARD_CHECK(FakeRuntime::started());
  SeedHolder<Runtime>& later = holder_built_later<Runtime>();
  later.tensor.allocate(2048);
  later.expect_freed = true;
  return 0;
}

// (F4) The library's own resources in place of the user's: a pool lease and a cleanup guard in a
// static object built before the user's first runtime call. The pool is gpusafe's first use, so
// it arms the exit flag after the runtime's teardown was registered.
GPUSAFE_HAZARD_SCENARIO(first_call_by_user_then_pool) {
  struct Statics {
    std::optional<gs::BasicBufferPool<Runtime>> pool;
    std::optional<gs::BufferLease> lease;
    ~Statics() {
      gs::BasicSafeCudaCleanup<Runtime> cleanup({true, true, 0});
      cleanup.defer([this] {
        lease.reset();  // the lease and the pool follow the teardown rules themselves
        pool.reset();
      });
    }
  };
  static Statics statics;
  user_first_call<Runtime>();
  gs::BufferPoolOptions options;
  options.classes = {{4096, 4}};
  options.kind = gs::MemoryKind::device;
  statics.pool.emplace(options);
  statics.lease.emplace(statics.pool->acquire(1000));
  return 0;
}

// (F5) Threads keep asking get_device_info() while main returns (detached here on purpose): each
// call is admitted like a release call, so none reaches a runtime that is being torn down.
GPUSAFE_HAZARD_SCENARIO(device_info_from_threads_at_exit) {
  (void)gs::get_device_info<Runtime>(0);
  std::atomic<int> started{0};
  for (int t = 0; t < 3; ++t) {
    std::thread([&started] {
      started.fetch_add(1);
      for (;;) {
        try {
          (void)gs::get_device_info<Runtime>(0);
        } catch (const gs::Error&) {
          std::this_thread::yield();  // ShuttingDown once exit has begun
        }
      }
    }).detach();
  }
  while (started.load() < 3) std::this_thread::yield();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  return 0;
}
