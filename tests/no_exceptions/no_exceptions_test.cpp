// The library built without exceptions (this file is compiled with -fno-exceptions): what works
// goes on working, the try_ functions return empty results, and an acquire-side error reaches the
// error handler (default: log and abort) instead of being thrown.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <memory_resource>
#include <string>
#include <vector>

#include "gpusafe/buffer_pool.hpp"
#include "gpusafe/error.hpp"
#include "gpusafe/memory_manager.hpp"
#include "gpusafe/model_cache.hpp"
#include "gpusafe/pmr.hpp"
#include "gpusafe/testing/fake_runtime.hpp"

static_assert(GPUSAFE_HAS_EXCEPTIONS == 0, "this test must be compiled with -fno-exceptions");

namespace gs = gpusafe;
using gs::testing::FakeMode;
using gs::testing::FakeRuntime;
using FakePool = gs::BasicBufferPool<FakeRuntime>;
using HostPool = gs::BasicBufferPool<gs::HostRuntime>;
using Cache = gs::BasicModelCache<FakeRuntime, std::string, int, std::hash<std::string>>;

namespace {

constexpr int kHandlerExit = 7;

// A handler as a user would write one: report, then end the process.
void exiting_handler(const gs::Error& error) noexcept {
  std::fprintf(stderr, "handler saw %s: %s\n", gs::to_string(error.code()), error.what());
  std::fflush(stderr);
  std::_Exit(kHandlerExit);
}

gs::BufferPoolOptions pool_options(gs::MemoryKind kind, std::vector<gs::SizeClass> classes) {
  gs::BufferPoolOptions o;
  o.kind = kind;
  o.classes = std::move(classes);
  o.name = "plain";
  return o;
}

void add_model(Cache& cache, const std::string& key, std::shared_ptr<int> model) {
  cache.add(key, [model] { return gs::Loaded<int>{model, sizeof(int)}; });
}

class NoExceptionsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // A death test's child is a fresh process: gpusafe refuses GPU requests in a forked child.
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    FakeRuntime::reset(1);
  }
  void TearDown() override { gs::set_error_handler(nullptr); }
};

TEST_F(NoExceptionsTest, TheBuildHasItsOwnAbiNamespace) {
  // Functions that report errors differently must not be merged with a throwing build's.
#define GPUSAFE_TEST_STR2(x) #x
#define GPUSAFE_TEST_STR(x) GPUSAFE_TEST_STR2(x)
  const std::string abi = GPUSAFE_TEST_STR(GPUSAFE_ABI_NAMESPACE);
  EXPECT_NE(abi.find("_noexcept"), std::string::npos) << abi;
}

TEST_F(NoExceptionsTest, PoolLeasesWork) {
  FakePool pool(pool_options(gs::MemoryKind::device, {{256, 4}, {4096, 2}}));
  {
    gs::BufferLease a = pool.acquire(100);
    gs::BufferLease b = pool.acquire(4000);
    ASSERT_TRUE(a);
    ASSERT_TRUE(b);
    EXPECT_EQ(a.size(), 100u);
    EXPECT_EQ(pool.stats().totals.in_use, 2u);
  }
  EXPECT_EQ(pool.stats().totals.in_use, 0u);
}

TEST_F(NoExceptionsTest, TryAcquireReturnsAnEmptyLeaseWhenTheClassIsExhausted) {
  gs::set_error_handler(&exiting_handler);  // would end the test if it were called
  HostPool pool(pool_options(gs::MemoryKind::host, {{64, 1}}));
  gs::BufferLease held = pool.acquire(64);
  ASSERT_TRUE(held);
  gs::BufferLease none = pool.try_acquire(64);
  EXPECT_FALSE(none);
  EXPECT_EQ(none.size(), 0u);
  held.release();
  EXPECT_TRUE(pool.try_acquire(64));
}

TEST_F(NoExceptionsTest, SetErrorHandlerReturnsThePreviousHandler) {
  EXPECT_EQ(gs::set_error_handler(&exiting_handler), &gs::default_error_handler);
  EXPECT_EQ(gs::set_error_handler(nullptr), &exiting_handler);
  EXPECT_EQ(gs::set_error_handler(nullptr), &gs::default_error_handler);
}

TEST_F(NoExceptionsTest, TheDefaultHandlerLogsTheErrorAndAborts) {
  HostPool pool(pool_options(gs::MemoryKind::host, {{64, 1}}));
  EXPECT_DEATH((void)pool.acquire(1 << 20),
               "unhandled invalid_argument error: .*plain.*larger than the largest size class");
}

TEST_F(NoExceptionsTest, AnExhaustedPoolReachesTheInstalledHandler) {
  HostPool pool(pool_options(gs::MemoryKind::host, {{64, 1}}));
  gs::BufferLease held = pool.acquire(64);
  EXPECT_EXIT(
      {
        gs::set_error_handler(&exiting_handler);
        (void)pool.acquire(64);
      },
      ::testing::ExitedWithCode(kHandlerExit), "handler saw pool_exhausted: .*plain");
}

TEST_F(NoExceptionsTest, AHandlerThatReturnsStillEndsTheProcess) {
  HostPool pool(pool_options(gs::MemoryKind::host, {{64, 1}}));
  EXPECT_DEATH(
      {
        gs::set_error_handler([](const gs::Error&) noexcept {});
        (void)pool.acquire(0);
      },
      "");
}

TEST_F(NoExceptionsTest, WithoutAGpuAPoolFallsBackOrReportsNoGpu) {
  FakeRuntime::set_mode(FakeMode::no_device);
  FakePool fallback(pool_options(gs::MemoryKind::device, {{256, 2}}));
  EXPECT_TRUE(fallback.is_fallback());
  EXPECT_TRUE(fallback.acquire(10));
  auto strict = pool_options(gs::MemoryKind::device, {{256, 2}});
  strict.fallback = gs::Fallback::error;
  EXPECT_DEATH(FakePool{strict}, "unhandled no_gpu error: .*Fallback::error");
  FakeRuntime::set_mode(FakeMode::normal);
}

TEST_F(NoExceptionsTest, TheModelCacheLoadsHitsAndEvicts) {
  gs::ModelCacheOptions o;
  o.byte_budget = sizeof(int);
  Cache cache(o);
  add_model(cache, "a", std::make_shared<int>(1));
  add_model(cache, "b", std::make_shared<int>(2));
  EXPECT_EQ(*cache.get("a"), 1);
  EXPECT_EQ(*cache.get("a"), 1);
  EXPECT_EQ(*cache.get("b"), 2);  // evicts "a"
  EXPECT_FALSE(cache.try_get("a"));
  const auto st = cache.stats();
  EXPECT_EQ(st.hits, 1u);
  EXPECT_EQ(st.misses, 2u);
  std::uint64_t evictions = 0;
  for (const std::uint64_t n : st.evictions) evictions += n;
  EXPECT_EQ(evictions, 1u);
}

TEST_F(NoExceptionsTest, ACacheErrorReachesTheHandler) {
  Cache cache(gs::ModelCacheOptions{});
  cache.add("empty", [] { return gs::Loaded<int>{nullptr, 0}; });
  EXPECT_DEATH((void)cache.get("missing"), "unhandled unknown_key error: .*missing");
  EXPECT_DEATH((void)cache.get("empty"), "unhandled load_failed error: .*empty");
}

TEST_F(NoExceptionsTest, PmrWithoutUpstreamReportsOutOfMemoryToTheHandler) {
  HostPool pool(pool_options(gs::MemoryKind::host, {{256, 4}}));
  gs::BasicPoolMemoryResource<gs::HostRuntime> resource(pool, nullptr);
  void* p = resource.allocate(64);
  ASSERT_NE(p, nullptr);
  resource.deallocate(p, 64);
  EXPECT_DEATH((void)resource.allocate(4096), "unhandled out_of_memory error: .*no upstream");
}

TEST_F(NoExceptionsTest, TheManagerReclaimsAttachedPools) {
  gs::BasicMemoryManager<FakeRuntime> manager;
  FakePool pool(pool_options(gs::MemoryKind::device, {{4096, 8}}));
  manager.attach(pool);
  EXPECT_EQ(manager.attached_count(), 1u);
  { gs::BufferLease lease = pool.acquire(4096); }
  manager.cleanup();
  EXPECT_EQ(pool.stats().totals.in_use, 0u);
}

}  // namespace
