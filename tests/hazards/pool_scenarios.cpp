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
  // The unwinder sets itself up (pthread_once) at the first throw: done here, so that a fork()
  // while the busy thread throws its first Timeout cannot leave the child waiting on that once.
  try {
    throw gs::Timeout("warm-up");
  } catch (const gs::Timeout&) {
  }
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

// ---- per-thread caches -------------------------------------------------------------------------

namespace {

template <class Runtime>
gs::BufferPoolOptions cached_options(gs::MemoryKind kind, const char* name) {
  gs::BufferPoolOptions o;
  o.kind = kind;
  o.classes = {{4096, 64}, {1 << 16, 16}};  // both classes cache per thread
  o.name = name;
  return o;
}

/// Fills the calling thread's caches of `pool` (acquire and release a few buffers per class).
template <class Pool>
void fill_thread_cache(Pool& pool) {
  std::vector<gs::BufferLease> held;
  for (int i = 0; i < 8; ++i) held.push_back(pool.acquire(100));
  for (int i = 0; i < 2; ++i) held.push_back(pool.acquire(60000));
}

void wait_for(const std::atomic<int>& phase, int value) {
  while (phase.load() < value) std::this_thread::yield();
}

}  // namespace

// (6) A thread exits holding cached buffers (and releases a lease) after the pool died: the
// orphaned core lives until then, and frees everything when the thread's caches flush.
GPUSAFE_HAZARD_SCENARIO(pool_thread_exits_with_cached_slots_after_pool_died) {
  const std::size_t before = hz::kIsFake<Runtime> ? FakeRuntime::live_allocations() : 0;
  auto pool = std::make_unique<gs::BasicBufferPool<Runtime>>(
      cached_options<Runtime>(gs::MemoryKind::device, "cached-exit"));
  std::atomic<int> phase{0};
  std::thread worker([&] {
    fill_thread_cache(*pool);
    gs::BufferLease kept = pool->acquire(100);
    phase.store(1);
    wait_for(phase, 2);
    kept.release();  // the pool is gone
  });                // the thread's caches flush into the orphaned core here
  wait_for(phase, 1);
  pool.reset();
  if constexpr (hz::kIsFake<Runtime>)
    GPUSAFE_HAZARD_CHECK(FakeRuntime::live_allocations() > before);  // the cached slabs stay
  phase.store(2);
  worker.join();
  if constexpr (hz::kIsFake<Runtime>) {
    GPUSAFE_HAZARD_CHECK(FakeRuntime::live_allocations() == before);
    GPUSAFE_HAZARD_CHECK(FakeRuntime::invalid_frees() == 0);
  }
  return 0;
}

// (7) The pool dies while several threads cache its buffers and hold leases; the threads then
// release their leases and exit at once.
GPUSAFE_HAZARD_SCENARIO(pool_dies_while_threads_cache) {
  const std::size_t before = hz::kIsFake<Runtime> ? FakeRuntime::live_allocations() : 0;
  auto pool = std::make_unique<gs::BasicBufferPool<Runtime>>(
      cached_options<Runtime>(gs::MemoryKind::device, "cached-die"));
  std::atomic<int> phase{0}, ready{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      fill_thread_cache(*pool);
      gs::BufferLease kept = pool->acquire(100);
      ready.fetch_add(1);
      wait_for(phase, 1);
      kept.release();
    });
  }
  while (ready.load() != 4) std::this_thread::yield();
  pool.reset();
  phase.store(1);
  for (auto& th : threads) th.join();
  if constexpr (hz::kIsFake<Runtime>) {
    GPUSAFE_HAZARD_CHECK(FakeRuntime::live_allocations() == before);
    GPUSAFE_HAZARD_CHECK(FakeRuntime::invalid_frees() == 0);
  }
  return 0;
}

// (8) fork() while other threads cache buffers and hold leases: the child gets the cached
// buffers back (only the leases of threads that do not exist there stay lost), releases inherited
// leases without runtime calls and tears the pools down.
GPUSAFE_HAZARD_SCENARIO(pool_fork_while_threads_cache) {
  auto host = std::make_shared<gs::BasicBufferPool<Runtime>>(
      cached_options<Runtime>(gs::MemoryKind::host, "cached-fork-host"));
  auto dev = std::make_shared<gs::BasicBufferPool<Runtime>>(
      cached_options<Runtime>(gs::MemoryKind::device, "cached-fork-dev"));
  std::atomic<int> phase{0}, ready{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&] {
      fill_thread_cache(*host);
      fill_thread_cache(*dev);
      gs::BufferLease a = host->acquire(100);
      gs::BufferLease b = dev->acquire(100);
      ready.fetch_add(1);
      wait_for(phase, 1);
    });
  }
  while (ready.load() != 3) std::this_thread::yield();
  std::vector<gs::BufferLease> inherited;
  for (int i = 0; i < 4; ++i) inherited.push_back(dev->acquire(100));
  const int rc = hz::run_in_child([&] {
    const auto calls = FakeRuntime::total_calls();
    inherited.clear();
    if constexpr (hz::kIsFake<Runtime>) GPUSAFE_HAZARD_CHECK(FakeRuntime::total_calls() == calls);
    // 64 buffers, 3 leased by threads that are not here: the other 61 can all be taken.
    std::vector<gs::BufferLease> all;
    for (int i = 0; i < 61; ++i) all.push_back(host->acquire(100));
    GPUSAFE_HAZARD_CHECK(!host->try_acquire(100));
    all.clear();
    (void)host->trim();
    (void)dev->trim();
    host.reset();
    dev.reset();
    if constexpr (hz::kIsFake<Runtime>) GPUSAFE_HAZARD_CHECK(FakeRuntime::total_calls() == calls);
    return 0;
  });
  phase.store(1);
  for (auto& th : threads) th.join();
  GPUSAFE_HAZARD_CHECK(rc == 0);
  return 0;
}

// (9) A device reset while threads cache buffers of the old slab: none of them is handed out
// again, and the old slab is dropped without runtime calls.
GPUSAFE_HAZARD_SCENARIO(pool_device_reset_while_threads_cache) {
  gs::BasicBufferPool<Runtime> pool(
      cached_options<Runtime>(gs::MemoryKind::device, "cached-reset"));
  std::atomic<int> phase{0}, ready{0};
  std::vector<std::thread> threads;
  std::vector<void*> old_buffers[2];
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      std::vector<gs::BufferLease> held;
      for (int i = 0; i < 8; ++i) {
        held.push_back(pool.acquire(100));
        old_buffers[t].push_back(held.back().data());
      }
      held.resize(4);  // four cached, four leased across the reset
      ready.fetch_add(1);
      wait_for(phase, 1);
      held.clear();  // dropped: old epoch
      for (int i = 0; i < 16; ++i) {
        gs::BufferLease l = pool.acquire(100);
        for (const auto& v : old_buffers)
          for (void* p : v)
            if (!pool.is_fallback()) GPUSAFE_HAZARD_CHECK(l.data() != p);
      }
    });
  }
  while (ready.load() != 2) std::this_thread::yield();
  const auto frees = FakeRuntime::calls(FakeOp::deallocate);
  gs::notify_device_reset(0);
  phase.store(1);
  for (auto& th : threads) th.join();
  if constexpr (hz::kIsFake<Runtime>)
    GPUSAFE_HAZARD_CHECK(FakeRuntime::calls(FakeOp::deallocate) == frees);
  return 0;
}
