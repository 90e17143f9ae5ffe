// Unit tests of gpusafe/pmr.hpp: std::pmr containers on pooled host and pinned-host memory.
#include "gpusafe/pmr.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <memory_resource>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "gpusafe/testing/fake_runtime.hpp"

namespace gs = gpusafe;
using gs::testing::FakeRuntime;
using HostPool = gs::BasicBufferPool<gs::HostRuntime>;
using HostResource = gs::BasicPoolMemoryResource<gs::HostRuntime>;
using FakePool = gs::BasicBufferPool<FakeRuntime>;
using FakeResource = gs::BasicPoolMemoryResource<FakeRuntime>;

namespace {

gs::BufferPoolOptions host_options(std::string name = "pmr") {
  gs::BufferPoolOptions o;
  o.kind = gs::MemoryKind::host;
  o.classes = {{256, 64}, {4096, 32}, {65536, 8}};
  o.name = std::move(name);
  return o;
}

/// An upstream that counts what it serves.
class CountingResource : public std::pmr::memory_resource {
 public:
  std::atomic<int> allocations{0};
  std::atomic<int> deallocations{0};
  std::atomic<std::size_t> live_bytes{0};
  std::size_t last_alignment = 0;

 private:
  void* do_allocate(std::size_t bytes, std::size_t alignment) override {
    ++allocations;
    live_bytes += bytes;
    last_alignment = alignment;
    return std::pmr::new_delete_resource()->allocate(bytes, alignment);
  }
  void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) override {
    ++deallocations;
    live_bytes -= bytes;
    std::pmr::new_delete_resource()->deallocate(p, bytes, alignment);
  }
  bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override {
    return this == &other;
  }
};

bool aligned(const void* p, std::size_t a) { return reinterpret_cast<std::uintptr_t>(p) % a == 0; }

}  // namespace

TEST(PoolMemoryResource, VectorGrowsOnPooledMemory) {
  HostPool pool(host_options());
  CountingResource upstream;
  HostResource resource(pool, &upstream);
  {
    std::pmr::vector<int> v(&resource);
    for (int i = 0; i < 8000; ++i) {  // 32 KB at the end: every step fits a class
      v.push_back(i);
      ASSERT_TRUE(pool.stats().totals.in_use >= 1);
    }
    for (int i = 0; i < 8000; ++i) ASSERT_EQ(v[static_cast<std::size_t>(i)], i);
    EXPECT_EQ(pool.stats().totals.in_use, 1u) << "the old blocks went back as the vector grew";
    EXPECT_GT(pool.stats().totals.acquires, 5u);
  }
  EXPECT_EQ(upstream.allocations.load(), 0);
  EXPECT_EQ(resource.upstream_allocations(), 0u);
  EXPECT_EQ(pool.stats().totals.in_use, 0u);
}

TEST(PoolMemoryResource, StringAndNestedContainersUseTheResource) {
  auto o = host_options();
  o.classes = {{256, 256}, {4096, 32}, {65536, 8}};
  HostPool pool(o);
  HostResource resource(pool, nullptr);  // anything the pool cannot serve would throw
  {
    std::pmr::vector<std::pmr::string> words(&resource);
    for (int i = 0; i < 100; ++i)
      words.emplace_back("a string long enough to leave the small-string buffer #" +
                         std::to_string(i));
    std::pmr::string joined(&resource);
    for (const auto& w : words) {
      EXPECT_EQ(w.get_allocator().resource(), &resource) << "the allocator propagates";
      joined += w;
    }
    EXPECT_EQ(joined.substr(0, 6), "a stri");
    EXPECT_NE(joined.find("#99"), std::string::npos);
    // 100 strings, the vector and the joined string.
    EXPECT_EQ(pool.stats().totals.in_use, 102u);
    words.clear();
    words.shrink_to_fit();
    EXPECT_EQ(pool.stats().totals.in_use, 1u);
  }
  EXPECT_EQ(pool.stats().totals.in_use, 0u);
  EXPECT_EQ(resource.upstream_allocations(), 0u);
}

TEST(PoolMemoryResource, StatsShowBlocksLeasedAndReturned) {
  HostPool pool(host_options());
  HostResource resource(pool);
  void* a = resource.allocate(100);
  void* b = resource.allocate(1000);
  void* c = resource.allocate(4096);  // with the lease kept in the block: the next class
  auto st = pool.stats();
  EXPECT_EQ(st.totals.in_use, 3u);
  EXPECT_EQ(st.classes[0].in_use, 1u);
  EXPECT_EQ(st.classes[1].in_use, 1u);
  EXPECT_EQ(st.classes[2].in_use, 1u);
  std::memset(a, 0xab, 100);
  std::memset(b, 0xcd, 1000);
  std::memset(c, 0xef, 4096);
  resource.deallocate(b, 1000);
  EXPECT_EQ(pool.stats().totals.in_use, 2u);
  resource.deallocate(a, 100);
  resource.deallocate(c, 4096);
  st = pool.stats();
  EXPECT_EQ(st.totals.in_use, 0u);
  EXPECT_EQ(st.totals.acquires, 3u);
  EXPECT_EQ(resource.upstream_allocations(), 0u);
  EXPECT_LT(resource.max_pooled_bytes(), 65536u);
  EXPECT_GE(resource.max_pooled_bytes(), 65536u - 2 * sizeof(gs::BufferLease));
  const std::size_t most = resource.max_pooled_bytes();
  void* largest = resource.allocate(most);
  EXPECT_EQ(pool.stats().classes[2].in_use, 1u) << "the largest pooled block is pooled";
  void* beyond = resource.allocate(most + 1);
  EXPECT_EQ(resource.upstream_allocations(), 1u) << "one byte more goes upstream";
  resource.deallocate(beyond, most + 1);
  resource.deallocate(largest, most);
  EXPECT_EQ(pool.stats().totals.in_use, 0u);
}

TEST(PoolMemoryResource, HonoursAlignmentUpToThePoolsAndSendsLargerToUpstream) {
  HostPool pool(host_options());
  CountingResource upstream;
  HostResource resource(pool, &upstream);
  for (std::size_t a : {std::size_t{1}, std::size_t{8}, std::size_t{64}, std::size_t{256}}) {
    void* p = resource.allocate(100, a);
    EXPECT_TRUE(aligned(p, a)) << a;
    resource.deallocate(p, 100, a);
  }
  EXPECT_EQ(upstream.allocations.load(), 0);
  void* p = resource.allocate(100, 4096);
  EXPECT_TRUE(aligned(p, 4096));
  EXPECT_EQ(upstream.allocations.load(), 1);
  EXPECT_EQ(upstream.last_alignment, 4096u);
  EXPECT_EQ(pool.stats().totals.in_use, 0u);
  resource.deallocate(p, 100, 4096);
  EXPECT_EQ(upstream.deallocations.load(), 1);
  EXPECT_EQ(upstream.live_bytes.load(), 0u);

  HostResource strict(pool, nullptr);
  EXPECT_THROW((void)strict.allocate(100, 512), std::bad_alloc);
}

TEST(PoolMemoryResource, LargeOrExhaustedRequestsGoUpstreamOrThrow) {
  auto o = host_options();
  o.classes = {{256, 2}, {4096, 2}};
  HostPool pool(o);
  CountingResource upstream;
  HostResource resource(pool, &upstream);

  void* big = resource.allocate(1 << 20);
  EXPECT_EQ(upstream.allocations.load(), 1);
  std::memset(big, 1, 1 << 20);
  void* edge = resource.allocate(4096);  // fits the class, but not with its lease
  EXPECT_EQ(upstream.allocations.load(), 2);

  std::vector<void*> small;
  for (int i = 0; i < 3; ++i) small.push_back(resource.allocate(2000));
  EXPECT_EQ(pool.stats().classes[1].in_use, 2u);
  EXPECT_EQ(upstream.allocations.load(), 3) << "the exhausted class spilled to the upstream";
  EXPECT_EQ(resource.upstream_allocations(), 3u);

  for (void* p : small) resource.deallocate(p, 2000);
  resource.deallocate(edge, 4096);
  resource.deallocate(big, 1 << 20);
  EXPECT_EQ(upstream.deallocations.load(), 3);
  EXPECT_EQ(upstream.live_bytes.load(), 0u);
  EXPECT_EQ(pool.stats().totals.in_use, 0u);

  HostResource strict(pool, nullptr);
  EXPECT_THROW((void)strict.allocate(1 << 20), std::bad_alloc);
  void* x = strict.allocate(3000);
  void* y = strict.allocate(3000);
  EXPECT_THROW((void)strict.allocate(3000), std::bad_alloc) << "exhausted, no upstream";
  strict.deallocate(x, 3000);
  strict.deallocate(y, 3000);

  std::pmr::vector<char> v(&strict);
  EXPECT_THROW(v.resize(std::size_t{1} << 20), std::bad_alloc);
}

TEST(PoolMemoryResource, DefaultUpstreamIsTheDefaultResource) {
  HostPool pool(host_options());
  HostResource resource(pool);
  EXPECT_EQ(resource.upstream(), std::pmr::get_default_resource());
  EXPECT_EQ(&resource.pool(), &pool);
  std::pmr::vector<char> v(std::size_t{1} << 20, 'x', &resource);  // beyond every class
  EXPECT_EQ(resource.upstream_allocations(), 1u);
  EXPECT_EQ(v.back(), 'x');
}

TEST(PoolMemoryResource, EqualOnlyToItself) {
  HostPool pool(host_options());
  HostResource a(pool);
  HostResource b(pool);
  EXPECT_TRUE(a == a);
  EXPECT_TRUE(a.is_equal(a));
  EXPECT_FALSE(a == b) << "two resources over one pool are two resources";
  EXPECT_FALSE(a.is_equal(*std::pmr::new_delete_resource()));
  std::pmr::polymorphic_allocator<int> pa(&a);
  std::pmr::polymorphic_allocator<int> pb(&b);
  EXPECT_TRUE(pa == std::pmr::polymorphic_allocator<int>(&a));
  EXPECT_FALSE(pa == pb);
}

TEST(PoolMemoryResource, RefusesDeviceMemoryWithAMessageThatSaysWhatToDo) {
  FakeRuntime::reset(1);
  gs::BufferPoolOptions o = host_options("frames");
  o.kind = gs::MemoryKind::device;
  FakePool device_pool(o);
  try {
    FakeResource r(device_pool);
    ADD_FAILURE() << "no exception";
  } catch (const gs::InvalidArgument& e) {
    const std::string m = e.what();
    for (const char* f : {"'frames'", "device memory", "MemoryKind::host", "pinned_host"})
      EXPECT_NE(m.find(f), std::string::npos) << m << "\nmissing: " << f;
    EXPECT_EQ(e.code(), gs::ErrorCode::invalid_argument);
  }

  // A device pool that fell back to the host is refused too: it would break with a GPU.
  FakeRuntime::reset(0);
  FakePool fell_back(o);
  ASSERT_TRUE(fell_back.is_fallback());
  try {
    FakeResource r(fell_back);
    ADD_FAILURE() << "no exception";
  } catch (const gs::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("no GPU"), std::string::npos) << e.what();
  }
  FakeRuntime::reset(1);

  auto small_align = host_options();
  small_align.alignment = 4;
  HostPool p4(small_align);
  EXPECT_THROW(HostResource r(p4), gs::InvalidArgument);
}

TEST(PoolMemoryResource, PinnedHostPoolServesContainers) {
  FakeRuntime::reset(1);
  const std::size_t live = FakeRuntime::live_allocations();
  {
    gs::BufferPoolOptions o = host_options("staging");
    o.kind = gs::MemoryKind::pinned_host;
    FakePool pool(o);
    ASSERT_EQ(pool.kind(), gs::MemoryKind::pinned_host);
    FakeResource resource(pool);
    const auto calls = FakeRuntime::total_calls();
    {
      std::pmr::vector<double> v(&resource);
      for (int i = 0; i < 1000; ++i) v.push_back(i * 0.5);
      EXPECT_EQ(v[999], 499.5);
      EXPECT_GE(pool.stats().totals.in_use, 1u);
    }
    EXPECT_EQ(FakeRuntime::total_calls(), calls) << "no runtime call once the slabs exist";
    EXPECT_EQ(pool.stats().totals.in_use, 0u);
  }
  EXPECT_EQ(FakeRuntime::live_allocations(), live);
}

TEST(PoolMemoryResource, ResourceMayDieBeforeThePoolAndBlocksMayOutliveThePool) {
  FakeRuntime::reset(1);
  const std::size_t live = FakeRuntime::live_allocations();
  gs::BufferPoolOptions o = host_options("order");
  o.kind = gs::MemoryKind::pinned_host;
  auto pool = std::make_unique<FakePool>(o);
  {
    FakeResource resource(*pool);
    std::pmr::vector<int> v({1, 2, 3}, &resource);
    EXPECT_EQ(pool->stats().totals.in_use, 1u);
  }  // the vector, then the resource
  EXPECT_EQ(pool->stats().totals.in_use, 0u);

  FakeResource resource(*pool);
  void* p = resource.allocate(512);
  pool.reset();  // the block is still leased: the pool's memory stays until it comes back
  EXPECT_GT(FakeRuntime::live_allocations(), live);
  resource.deallocate(p, 512);
  EXPECT_EQ(FakeRuntime::live_allocations(), live) << "the last block back frees the slabs";
}

TEST(PoolMemoryResource, ThreadsAllocateAndFreeAtOnce) {
  HostPool pool(host_options());
  HostResource resource(pool);
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int round = 0; round < 200; ++round) {
        std::pmr::vector<int> v(&resource);
        for (int i = 0; i < 100 + t; ++i) v.push_back(i * t);
        for (int i = 0; i < 100 + t; ++i)
          if (v[static_cast<std::size_t>(i)] != i * t) ++bad;
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(pool.stats().totals.in_use, 0u);
}
