// Stress test of gpusafe/buffer_pool.hpp: several threads acquire and release at full speed; every
// buffer carries an owner flag, so a buffer handed out twice is caught; the stats must add up.
// Threads also start and exit while their caches hold buffers, and classes grow and shrink.
// GPUSAFE_STRESS_SCALE (default 1.0; 0.1 under TSan) scales the work.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <unordered_map>
#include <vector>

#include "gpusafe/buffer_pool.hpp"
#include "gpusafe/testing/fake_runtime.hpp"

namespace gs = gpusafe;
using gs::testing::FakeRuntime;

namespace {

double scale() {
  const char* s = std::getenv("GPUSAFE_STRESS_SCALE");
  const double v = s ? std::atof(s) : 1.0;
  return v > 0 ? v : 1.0;
}

std::uint64_t scaled(std::uint64_t n) {
  const auto v = static_cast<std::uint64_t>(static_cast<double>(n) * scale());
  return v == 0 ? 1 : v;
}

/// Cheap per-thread random numbers.
struct Rng {
  std::uint64_t s;
  std::uint64_t next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
};

constexpr std::size_t kSizes[] = {256, 4096, 65536};

template <class Runtime>
gs::BasicBufferPool<Runtime> make_pool(gs::MemoryKind kind, std::size_t per_class) {
  gs::BufferPoolOptions o;
  o.kind = kind;
  o.name = "stress";
  for (std::size_t b : kSizes) o.classes.push_back({b, per_class});
  return gs::BasicBufferPool<Runtime>(o);
}

/// Owner flags keyed by buffer address (slabs do not move while nothing trims).
struct Owners {
  std::unordered_map<const void*, std::size_t> index;
  std::unique_ptr<std::atomic<int>[]> owner;
};

template <class Pool>
Owners map_buffers(Pool& pool, std::size_t per_class) {
  Owners o;
  std::vector<gs::BufferLease> all;
  for (std::size_t b : kSizes)
    for (std::size_t i = 0; i < per_class; ++i) all.push_back(pool.acquire(b));
  for (auto& l : all) o.index.emplace(l.data(), o.index.size());
  o.owner.reset(new std::atomic<int>[o.index.size()]);
  for (std::size_t i = 0; i < o.index.size(); ++i) o.owner[i].store(0);
  return o;
}

/// `threads` workers at a time, `rounds` times over: each round's threads start, work and exit
/// (with their caches full of buffers) while the next round's start.
template <class Runtime>
void run_owner_flag_stress(gs::MemoryKind kind, int threads, std::size_t per_class,
                           int rounds = 1) {
  auto pool = make_pool<Runtime>(kind, per_class);
  Owners owners = map_buffers(pool, per_class);
  ASSERT_EQ(owners.index.size(), per_class * 3) << "every buffer distinct";
  const auto before = pool.stats();
  const std::uint64_t ops =
      scaled(1'000'000) / static_cast<std::uint64_t>(threads) / static_cast<std::uint64_t>(rounds);
  std::atomic<std::uint64_t> got{0}, refused{0}, double_handouts{0}, foreign{0};
  std::vector<std::thread> workers;
  for (int w = 0; w < threads * rounds; ++w) {
    // Keep at most `threads` running: a new one starts as the oldest exits.
    if (w >= threads) workers[static_cast<std::size_t>(w - threads)].join();
    const int t = w % threads;
    workers.emplace_back([&, t] {
      Rng rng{0x9e3779b97f4a7c15ull * static_cast<std::uint64_t>(t + 1)};
      std::vector<gs::BufferLease> held;
      std::uint64_t my_got = 0, my_refused = 0;
      for (std::uint64_t i = 0; i < ops; ++i) {
        const std::uint64_t r = rng.next();
        // Hold up to 3 buffers so classes run empty now and then.
        if (held.size() < 3 && (r & 3) != 0) {
          const std::size_t bytes = 1 + (r >> 8) % kSizes[(r >> 4) % 3];
          gs::BufferLease l = pool.try_acquire(bytes);
          if (!l) {
            ++my_refused;
            continue;
          }
          ++my_got;
          const auto it = owners.index.find(l.data());
          if (it == owners.index.end()) {
            foreign.fetch_add(1);
            continue;
          }
          if (owners.owner[it->second].exchange(t + 1) != 0) double_handouts.fetch_add(1);
          static_cast<unsigned char*>(l.data())[0] = static_cast<unsigned char>(t);
          held.push_back(std::move(l));
        } else if (!held.empty()) {
          const std::size_t k = (r >> 16) % held.size();
          const auto idx = owners.index.at(held[k].data());
          if (static_cast<unsigned char*>(held[k].data())[0] != static_cast<unsigned char>(t))
            double_handouts.fetch_add(1);
          if (owners.owner[idx].exchange(0) != t + 1) double_handouts.fetch_add(1);
          held[k] = std::move(held.back());
          held.pop_back();
        }
      }
      for (auto& l : held) owners.owner[owners.index.at(l.data())].store(0);
      held.clear();
      got.fetch_add(my_got);
      refused.fetch_add(my_refused);
    });
  }
  for (std::size_t w = workers.size() > static_cast<std::size_t>(threads)
                           ? workers.size() - static_cast<std::size_t>(threads)
                           : 0;
       w < workers.size(); ++w)
    workers[w].join();
  EXPECT_EQ(double_handouts.load(), 0u) << "a buffer was handed out twice";
  EXPECT_EQ(foreign.load(), 0u) << "a buffer outside the slabs was handed out";
  const auto st = pool.stats();
  EXPECT_EQ(st.totals.acquires - before.totals.acquires, got.load());
  EXPECT_EQ(st.totals.failures - before.totals.failures, refused.load());
  EXPECT_EQ(st.totals.in_use, 0u);
  EXPECT_EQ(st.totals.available, st.totals.capacity);
  for (const auto& c : st.classes) EXPECT_LE(c.high_water, c.capacity);
  EXPECT_GT(got.load(), 0u);
}

TEST(BufferPoolStress, OwnerFlagsHostRuntimeThreads2To8) {
  for (int threads : {2, 4, 8}) {
    SCOPED_TRACE(threads);
    run_owner_flag_stress<gs::HostRuntime>(gs::MemoryKind::host, threads, 4);
  }
}

TEST(BufferPoolStress, OwnerFlagsManyWordsFakeDevice) {
  FakeRuntime::reset();
  // 200 buffers per class: several bitmap words, so the per-thread start hint matters.
  for (int threads : {2, 8}) {
    SCOPED_TRACE(threads);
    run_owner_flag_stress<FakeRuntime>(gs::MemoryKind::device, threads, 200);
  }
}

TEST(BufferPoolStress, OwnerFlagsWithThreadsExitingWhileTheyCacheBuffers) {
  // 64 buffers per class: each thread caches up to 8 per class.
  for (int threads : {2, 4, 8}) {
    SCOPED_TRACE(threads);
    run_owner_flag_stress<gs::HostRuntime>(gs::MemoryKind::host, threads, 64, 6);
  }
  FakeRuntime::reset();
  run_owner_flag_stress<FakeRuntime>(gs::MemoryKind::device, 4, 64, 6);
}

TEST(BufferPoolStress, GrowAndTrimRaceWithAcquires) {
  FakeRuntime::reset();
  gs::BufferPoolOptions o;
  o.kind = gs::MemoryKind::device;
  o.name = "grow-stress";
  std::size_t first = 0;
  for (std::size_t b : kSizes) {
    o.classes.push_back({b, 8});
    first += b * 8;
  }
  o.overflow = gs::OverflowPolicy::grow;
  o.max_bytes = first * 4;  // each class may double twice
  gs::BasicBufferPool<FakeRuntime> pool(o);
  const int threads = 4;
  const std::uint64_t ops = scaled(400'000) / threads;
  const std::uint64_t phase = std::max<std::uint64_t>(ops / 8, 64);  // 4 rounds of hold, let go
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> corrupted{0}, got{0}, refused{0};
  std::atomic<std::size_t> most_slabs{0};
  auto note_slabs = [&](std::size_t slabs) {
    std::size_t seen = most_slabs.load();
    while (slabs > seen && !most_slabs.compare_exchange_weak(seen, slabs)) {
    }
  };
  std::thread trimmer([&] {
    while (!stop.load()) {
      (void)pool.trim();
      const auto st = pool.stats();
      if (st.totals.bytes_reserved > o.max_bytes) corrupted.fetch_add(1);
      note_slabs(st.totals.slabs);
      std::this_thread::yield();
    }
  });
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      Rng rng{0x7f4a7c15ull * static_cast<std::uint64_t>(t + 3)};
      const std::uint64_t mark = 0x5A5A000000000000ull | static_cast<std::uint64_t>(t);
      std::vector<gs::BufferLease> held;
      for (std::uint64_t i = 0; i < ops; ++i) {
        const std::uint64_t r = rng.next();
        // Hold up to 27 buffers, then 2: 27 leases of 3 sizes hold at least 9 of one class, one
        // more than its first slab has, so one thread alone makes a class grow whatever the
        // scheduling; the grown slabs then go idle for the trimmer.
        if (held.size() < ((i / phase) % 2 ? 27u : 2u)) {
          gs::BufferLease l = pool.try_acquire(kSizes[r % 3]);
          if (!l) {
            refused.fetch_add(1, std::memory_order_relaxed);
            continue;
          }
          got.fetch_add(1, std::memory_order_relaxed);
          std::memcpy(l.data(), &mark, sizeof mark);
          held.push_back(std::move(l));
          if (held.size() == 27) note_slabs(pool.stats().totals.slabs);  // a grown slab is held
        } else {
          const std::size_t k = (r >> 8) % held.size();
          std::uint64_t seen = 0;
          std::memcpy(&seen, held[k].data(), sizeof seen);
          if (seen != mark) corrupted.fetch_add(1);
          held[k] = std::move(held.back());
          held.pop_back();
        }
      }
    });
  }
  for (auto& w : workers) w.join();
  stop.store(true);
  trimmer.join();
  EXPECT_EQ(corrupted.load(), 0u) << "two owners wrote the same buffer, or max_bytes was passed";
  EXPECT_GT(most_slabs.load(), 3u) << "the classes grew";
  const auto st = pool.stats();
  EXPECT_EQ(st.totals.in_use, 0u);
  EXPECT_EQ(st.totals.acquires, got.load());
  for (const auto& c : st.classes)  // a trimmed first slab counts in the capacity, not available
    EXPECT_EQ(c.available + (c.resident ? 0u : 8u), c.capacity);
  EXPECT_GT(got.load(), 0u);
  pool.trim();
  EXPECT_EQ(FakeRuntime::invalid_frees(), 0u);
}

TEST(BufferPoolStress, TrimAndStatsRaceWithAcquires) {
  FakeRuntime::reset();
  auto pool = make_pool<FakeRuntime>(gs::MemoryKind::device, 3);
  const int threads = 4;
  const std::uint64_t ops = scaled(400'000) / threads;
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> corrupted{0}, got{0};
  // The owner pattern lives in the buffer: slabs move when trimmed and re-allocated.
  std::thread trimmer([&] {
    while (!stop.load()) {
      (void)pool.trim();
      (void)pool.stats();
      std::this_thread::yield();
    }
  });
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      Rng rng{0x51ed27ull * static_cast<std::uint64_t>(t + 7)};
      const std::uint64_t mark = 0xA5A5000000000000ull | static_cast<std::uint64_t>(t);
      for (std::uint64_t i = 0; i < ops; ++i) {
        const std::uint64_t r = rng.next();
        gs::BufferLease l = pool.try_acquire(kSizes[r % 3]);
        if (!l) continue;
        got.fetch_add(1, std::memory_order_relaxed);
        std::memcpy(l.data(), &mark, sizeof mark);
        if ((r & 15) == 0) std::this_thread::yield();
        std::uint64_t seen = 0;
        std::memcpy(&seen, l.data(), sizeof seen);
        if (seen != mark) corrupted.fetch_add(1);
      }
    });
  }
  for (auto& w : workers) w.join();
  stop.store(true);
  trimmer.join();
  EXPECT_EQ(corrupted.load(), 0u) << "two owners wrote the same buffer";
  const auto st = pool.stats();
  EXPECT_EQ(st.totals.in_use, 0u);
  EXPECT_EQ(st.totals.acquires, got.load());
  const auto live = FakeRuntime::live_allocations();
  pool.trim();
  EXPECT_LE(FakeRuntime::live_allocations(), live);
  EXPECT_EQ(FakeRuntime::invalid_frees(), 0u);
}

TEST(BufferPoolStress, AcquireForWithMoreThreadsThanBuffers) {
  gs::BufferPoolOptions o;
  o.kind = gs::MemoryKind::host;
  o.classes = {{1024, 2}};
  o.name = "waiters";
  gs::BasicBufferPool<gs::HostRuntime> pool(o);
  const int threads = 6;
  const std::uint64_t ops = scaled(60'000) / threads;
  std::atomic<int> holders{0};
  std::atomic<std::uint64_t> too_many{0}, timeouts{0}, got{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      for (std::uint64_t i = 0; i < ops; ++i) {
        try {
          auto l = pool.acquire_for(100, std::chrono::seconds(20));
          if (holders.fetch_add(1) + 1 > 2) too_many.fetch_add(1);
          got.fetch_add(1, std::memory_order_relaxed);
          holders.fetch_sub(1);
        } catch (const gs::Timeout&) {
          timeouts.fetch_add(1);
        }
      }
    });
  }
  for (auto& w : workers) w.join();
  EXPECT_EQ(too_many.load(), 0u) << "more leases out than buffers";
  EXPECT_EQ(timeouts.load(), 0u) << "a waiter was never woken";
  const auto st = pool.stats();
  EXPECT_EQ(st.totals.acquires, got.load());
  EXPECT_EQ(st.totals.in_use, 0u);
  EXPECT_EQ(st.totals.available, 2u);
  EXPECT_LE(st.classes[0].high_water, 2u);
}

}  // namespace
