// Unit tests of gpusafe/stream_pool.hpp on FakeRuntime, HostRuntime and the real runtime.
#include "gpusafe/stream_pool.hpp"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gpusafe/testing/fake_runtime.hpp"

namespace gs = gpusafe;
using gs::HandleKind;
using gs::testing::FakeMode;
using gs::testing::FakeRuntime;

namespace {

using FakeStreamPool = gs::BasicStreamPool<FakeRuntime>;
constexpr int kStreamKind = static_cast<int>(HandleKind::stream);

class StreamPoolTest : public ::testing::Test {
 protected:
  void SetUp() override { FakeRuntime::reset(2); }
  void TearDown() override {
    FakeRuntime::reset();
    for (int d = 0; d < 2; ++d) gs::notify_device_reset(d);
  }
};

gs::StreamPoolOptions options(std::size_t size, int device = gs::kCurrentDevice) {
  gs::StreamPoolOptions o;
  o.size = size;
  o.device = device;
  return o;
}

}  // namespace

TEST_F(StreamPoolTest, HandsOutItsStreamsRoundRobin) {
  FakeStreamPool pool(options(4, 1));
  EXPECT_EQ(pool.size(), 4u);
  EXPECT_EQ(pool.device(), 1);
  EXPECT_FALSE(pool.fell_back());
  EXPECT_EQ(FakeRuntime::live_handles(kStreamKind), 4u);
  std::vector<void*> seen;
  for (int i = 0; i < 8; ++i) seen.push_back(pool.get());
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(seen[i], seen[i + 4]);
    EXPECT_EQ(FakeRuntime::stream_device(seen[i]), 1);
    EXPECT_EQ(pool.get(i), pool.get(i + 4));
  }
  EXPECT_EQ(std::set<void*>(seen.begin(), seen.end()).size(), 4u);
}

TEST_F(StreamPoolTest, StreamsAreDestroyedWithThePool) {
  { FakeStreamPool pool(options(3)); }
  EXPECT_EQ(FakeRuntime::live_handles(), 0u);
  EXPECT_EQ(FakeRuntime::invalid_handle_destroys(), 0u);
}

TEST_F(StreamPoolTest, ManyThreadsShareThePoolEvenly) {
  FakeStreamPool pool(options(4));
  constexpr int kThreads = 4;
  constexpr int kEach = 1000;
  std::vector<std::vector<void*>> taken(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) taken[t].push_back(pool.get());
    });
  for (auto& th : threads) th.join();
  std::map<void*, int> counts;
  for (const auto& v : taken)
    for (void* s : v) ++counts[s];
  ASSERT_EQ(counts.size(), 4u);
  for (const auto& c : counts) EXPECT_EQ(c.second, kThreads * kEach / 4);
}

TEST_F(StreamPoolTest, BadSizeIsATypedError) {
  try {
    FakeStreamPool pool(options(0));
    FAIL() << "no exception";
  } catch (const gs::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("StreamPool(size 0)"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("1..1024"), std::string::npos);
  }
  gs::StreamPoolOptions o = options(2);
  o.params.flags = 6;
  EXPECT_THROW(FakeStreamPool pool(o), gs::InvalidArgument);
}

TEST_F(StreamPoolTest, FailedCreationReleasesTheStreamsAlreadyMade) {
  FakeRuntime::fail_call(gs::testing::FakeOp::handle_create, gs::codes::memory_allocation, 2);
  EXPECT_THROW(FakeStreamPool pool(options(4)), gs::OutOfMemory);
  EXPECT_EQ(FakeRuntime::live_handles(), 0u);
}

TEST_F(StreamPoolTest, WithoutAGpuItHandsOutTheNullStreamOrFails) {
  FakeRuntime::set_mode(FakeMode::no_device);
  FakeStreamPool pool(options(4));
  EXPECT_TRUE(pool.fell_back());
  EXPECT_EQ(pool.size(), 0u);
  EXPECT_EQ(pool.get(), nullptr);
  gs::StreamPoolOptions strict = options(4);
  strict.fallback = gs::Fallback::error;
  EXPECT_THROW(FakeStreamPool p(strict), gs::NoGpu);
  FakeRuntime::set_mode(FakeMode::normal);
}

TEST(StreamPoolRealRuntime, FallsBackOnThisMachineWhenThereIsNoGpu) {
  if (gs::is_cuda_available()) GTEST_SKIP() << "a GPU is present";
  gs::StreamPool pool;
  EXPECT_TRUE(pool.fell_back());
  EXPECT_EQ(pool.get(), nullptr);
  gs::BasicStreamPool<gs::HostRuntime> host;
  EXPECT_TRUE(host.fell_back());
}
