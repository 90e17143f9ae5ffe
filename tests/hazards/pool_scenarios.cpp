// Teardown-hazard scenarios of gpusafe/buffer_pool.hpp. See hazard.hpp.
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "gpusafe/buffer_pool.hpp"
#include "hazard.hpp"

namespace gs = gpusafe;
namespace hz = gpusafe_hazards;
using gs::testing::FakeOp;
using gs::testing::FakeRuntime;

namespace {

template <class Runtime>
gs::BufferPoolOptions pool_options(gs::MemoryKind kind, const char* name) {
  gs::BufferPoolOptions o;
  o.kind = kind;
  o.classes = {{4096, 8}, {1 << 16, 4}};
  o.name = name;
  return o;
}

}  // namespace

// (1) Leases outlive their pool and are released on several threads at once: each release
// reaches the core, which frees the slabs when the last lease is back.
GPUSAFE_HAZARD_SCENARIO(pool_lease_outlives_pool) {
  const std::size_t before = hz::kIsFake<Runtime> ? FakeRuntime::live_allocations() : 0;
  std::vector<gs::BufferLease> leases;
  {
    gs::BasicBufferPool<Runtime> pool(pool_options<Runtime>(gs::MemoryKind::device, "outlived"));
    for (int i = 0; i < 8; ++i) leases.push_back(pool.acquire(4000));
    for (int i = 0; i < 4; ++i) leases.push_back(pool.acquire(60000));
  }
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&leases, t] {
      for (std::size_t i = static_cast<std::size_t>(t); i < leases.size(); i += 4) {
        // Device memory is not the host's to write (FakeRuntime protects it as a GPU would).
        if (leases[i].kind() != gs::MemoryKind::device) std::memset(leases[i].data(), t, 16);
        leases[i].release();
      }
    });
  }
  for (auto& th : threads) th.join();
  if constexpr (hz::kIsFake<Runtime>) {
    GPUSAFE_HAZARD_CHECK(FakeRuntime::live_allocations() == before);
    GPUSAFE_HAZARD_CHECK(FakeRuntime::invalid_frees() == 0);
  }
  return 0;
}

// (2) Pools in static objects: one built before the first runtime call (destroyed after the
// runtime's teardown: it must make no call), one built after (destroyed while the runtime is
// alive: it really frees). Each keeps a lease out until exit.
GPUSAFE_HAZARD_SCENARIO(pool_static_objects) {
  struct Early {
    std::optional<gs::BasicBufferPool<Runtime>> pool;
    gs::BufferLease lease;
    gs::BufferLease crossing;  // from the late pool: released after the teardown
  };
  struct Late {
    std::optional<gs::BasicBufferPool<Runtime>> pool;
    gs::BufferLease lease;
    ~Late() {
      GPUSAFE_HAZARD_CHECK(!gs::process_is_exiting());
      if constexpr (hz::kIsFake<Runtime>) {
        const auto live = FakeRuntime::live_allocations();
        lease.release();
        pool.reset();
        // The class with the crossing lease stays until that lease returns (after teardown,
        // when it is dropped).
        GPUSAFE_HAZARD_CHECK(FakeRuntime::live_allocations() == live - 1);
      }
    }
  };
  static Early early;  // constructed before any runtime call
  early.pool.emplace(pool_options<Runtime>(gs::MemoryKind::device, "early"));  // first call
  early.lease = early.pool->acquire(100);
  static Late late;
  late.pool.emplace(pool_options<Runtime>(gs::MemoryKind::device, "late"));
  late.lease = late.pool->acquire(100);
  early.crossing = late.pool->acquire(5000);
  return 0;
}

// (3) A forked child releases inherited leases and destroys inherited pools with zero runtime
// calls, gets ForkedChild for new device requests, and keeps using host pools, even though a
// thread of the parent was inside the pool (holding its locks) at fork time.
GPUSAFE_HAZARD_SCENARIO(pool_forked_child) {
  auto dev = std::make_shared<gs::BasicBufferPool<Runtime>>(
      pool_options<Runtime>(gs::MemoryKind::device, "dev"));
  auto host = std::make_shared<gs::BasicBufferPool<Runtime>>(
      pool_options<Runtime>(gs::MemoryKind::host, "host"));
  std::vector<gs::BufferLease> dev_leases;
  for (int i = 0; i < 8; ++i) dev_leases.push_back(dev->acquire(100));  // the 4 KiB class is full
  auto host_lease = host->acquire(100);
  std::atomic<bool> stop{false};
  std::thread busy([&] {
    while (!stop.load()) {
      try {
        auto l = dev->acquire_for(100, std::chrono::microseconds(200));  // waits: locks taken
      } catch (const gs::Timeout&) {
      }
      (void)dev->trim();
      (void)host->stats();
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  const int rc = hz::run_in_child([&] {
    const auto calls = FakeRuntime::total_calls();
    dev_leases.clear();
    host_lease.release();
    if constexpr (hz::kIsFake<Runtime>) GPUSAFE_HAZARD_CHECK(FakeRuntime::total_calls() == calls);
    if (!dev->is_fallback()) {
      try {
        (void)dev->acquire(100);
        GPUSAFE_HAZARD_CHECK(!"a device acquire in a forked child must throw");
      } catch (const gs::ForkedChild&) {
      }
    }
    for (int i = 0; i < 100; ++i) {
      auto h = host->acquire_for(100, std::chrono::seconds(5));  // locks were re-created
      std::memset(h.data(), 1, 100);
    }
    (void)host->trim();
    (void)dev->trim();
    dev.reset();
    host.reset();
    if constexpr (hz::kIsFake<Runtime>) GPUSAFE_HAZARD_CHECK(FakeRuntime::total_calls() == calls);
    return 0;
  });
  stop.store(true);
  busy.join();
  GPUSAFE_HAZARD_CHECK(rc == 0);
  return 0;
}

// (4) A device reset while leases are out: the old slab is dropped without runtime calls and
// never reused; new acquires get a fresh slab. Some old and new leases stay out until exit.
GPUSAFE_HAZARD_SCENARIO(pool_device_reset_with_leases_out) {
  static std::optional<gs::BasicBufferPool<Runtime>> pool;
  pool.emplace(pool_options<Runtime>(gs::MemoryKind::device, "reset"));
  std::vector<gs::BufferLease> old_leases;
  for (int i = 0; i < 6; ++i) old_leases.push_back(pool->acquire(100));
  static gs::BufferLease kept_old;
  kept_old = pool->acquire(100);
  gs::notify_device_reset(0);
  const auto frees = FakeRuntime::calls(FakeOp::deallocate);
  old_leases.clear();
  if constexpr (hz::kIsFake<Runtime>)
    GPUSAFE_HAZARD_CHECK(FakeRuntime::calls(FakeOp::deallocate) == frees);
  std::vector<gs::BufferLease> fresh;
  // A fresh slab has the full capacity again; host memory (the fallback) is not reset.
  const int n = pool->is_fallback() ? 7 : 8;
  for (int i = 0; i < n; ++i) fresh.push_back(pool->acquire(100));
  if (!pool->is_fallback()) GPUSAFE_HAZARD_CHECK(!pool->try_acquire(100));
  static gs::BufferLease kept_new;
  kept_new = std::move(fresh.back());
  return 0;
}

// (5) A worker thread still acquiring and releasing (and waiting) when main returns. Device
// acquires fail with ShuttingDown once exit begins; nothing calls the runtime after teardown.
GPUSAFE_HAZARD_SCENARIO(pool_worker_at_exit) {
  static std::shared_ptr<gs::BasicBufferPool<Runtime>> pool =
      std::make_shared<gs::BasicBufferPool<Runtime>>(
          pool_options<Runtime>(gs::MemoryKind::device, "worker"));
  std::atomic<bool> started{false};
  std::thread([p = pool, &started] {
    started.store(true);
    std::vector<gs::BufferLease> held;
    for (unsigned i = 0;; ++i) {
      try {
        held.push_back(p->acquire_for(100, std::chrono::milliseconds(1)));
        if (held.size() > 6) held.clear();
        if (i % 64 == 0) (void)p->trim();
      } catch (const gs::ShuttingDown&) {
        held.clear();
        std::this_thread::yield();
      } catch (const gs::Timeout&) {
        held.clear();
      }
    }
  }).detach();
  while (!started.load()) std::this_thread::yield();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  return 0;
}
