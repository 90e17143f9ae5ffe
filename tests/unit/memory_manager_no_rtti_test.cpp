// gpusafe/memory_manager.hpp without RTTI (compiled with -fno-rtti, see tests/CMakeLists.txt):
// the leak report finds the pools and every resource that overrides Reclaimable::leak_reporter().
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "gpusafe/buffer_pool.hpp"
#include "gpusafe/memory_manager.hpp"
#include "gpusafe/testing/fake_runtime.hpp"

#if defined(__GXX_RTTI) || defined(_CPPRTTI)
#error "this test must be compiled without RTTI (-fno-rtti)"
#endif

namespace gs = gpusafe;
using gs::testing::FakeRuntime;
using Manager = gs::BasicMemoryManager<FakeRuntime>;
using FakePool = gs::BasicBufferPool<FakeRuntime>;

namespace {

constexpr std::size_t kMiB = std::size_t{1} << 20;

/// A resource of the program's own that reports its leases: it says so through the hook.
class Reported final : public gs::Reclaimable, public gs::LeakReporter {
 public:
  std::size_t reclaim(const gs::ReclaimRequest&) noexcept override { return 0; }
  const char* reclaimable_name() const noexcept override { return "reported"; }
  gs::LeakReporter* leak_reporter() noexcept override { return this; }
  std::vector<gs::LeakRecord> leak_records() const override {
    gs::LeakRecord r;
    r.resource = "reported";
    r.file = "own.cpp";
    r.line = 7;
    r.bytes = 64;
    return {r};
  }
  void note_leaks_reported() noexcept override { ++noted; }
  int noted = 0;
};

/// A resource that reports no leases.
class Plain final : public gs::Reclaimable {
 public:
  std::size_t reclaim(const gs::ReclaimRequest&) noexcept override { return 0; }
  const char* reclaimable_name() const noexcept override { return "plain"; }
};

class MemoryManagerNoRttiTest : public ::testing::Test {
 protected:
  void SetUp() override { FakeRuntime::reset(1, 100 * kMiB); }
};

TEST_F(MemoryManagerNoRttiTest, LeakReportFindsPoolsAndOwnReportersThroughTheHook) {
  gs::BufferPoolOptions o;
  o.kind = gs::MemoryKind::device;
  o.classes = {{kMiB, 2}};
  o.name = "frames";
  o.track_leases = true;
  FakePool pool(o);
  auto reported = std::make_shared<Reported>();
  auto plain = std::make_shared<Plain>();
  Manager m;
  m.attach(pool);
  m.attach(reported);
  m.attach(plain);

  auto lease = pool.acquire(1000, GPUSAFE_LEASE_TAG("decode"));
  const auto report = m.leak_report();
  ASSERT_EQ(report.records.size(), 2u) << report.to_string();
  EXPECT_EQ(report.untracked, (std::vector<std::string>{"plain"}));
  const std::string text = report.to_string();
  EXPECT_NE(text.find("[decode]"), std::string::npos) << text;
  EXPECT_NE(text.find("own.cpp:7"), std::string::npos) << text;

  m.shutdown();
  EXPECT_EQ(reported->noted, 1) << "the shutdown report reaches the reporter once";
  lease.release();
}

}  // namespace
