// Unit tests of gpusafe/ostream.hpp: every enum, stats and report type streams with its names
// and figures.
#include "gpusafe/ostream.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <sstream>
#include <string>
#include <vector>

#include "gpusafe/testing/fake_runtime.hpp"

namespace gs = gpusafe;

namespace {

template <class T>
std::string str(const T& value) {
  std::ostringstream os;
  os << value;
  return os.str();
}

/// Expects the text of `value` to contain every fragment.
template <class T>
void expect_shows(const T& value, std::vector<std::string> fragments) {
  const std::string s = str(value);
  for (const auto& f : fragments)
    EXPECT_NE(s.find(f), std::string::npos) << s << "\nmissing: " << f;
}

}  // namespace

TEST(Ostream, EnumsPrintTheirNames) {
  EXPECT_EQ(str(gs::MemoryKind::device), "device");
  EXPECT_EQ(str(gs::MemoryKind::pinned_host), "pinned_host");
  EXPECT_EQ(str(gs::MemoryKind::host), "host");
  EXPECT_EQ(str(gs::Fallback::host), "host");
  EXPECT_EQ(str(gs::Fallback::error), "error");
  EXPECT_EQ(str(gs::OverflowPolicy::fail), "fail");
  EXPECT_EQ(str(gs::OverflowPolicy::allocate), "allocate");
  EXPECT_EQ(str(gs::OverflowPolicy::grow), "grow");
  EXPECT_EQ(str(gs::ReclaimCost::idle_memory), "idle_memory");
  EXPECT_EQ(str(gs::ReclaimCost::framework_cache), "framework_cache");
  EXPECT_EQ(str(gs::ReclaimLevel::light), "light");
  EXPECT_EQ(str(gs::ReclaimLevel::heavy), "heavy");
  EXPECT_EQ(str(gs::ReclaimLevel::trim), "heavy");
  EXPECT_EQ(str(gs::ReclaimLevel::shutdown), "shutdown");
  EXPECT_EQ(str(gs::LogLevel::warning), str(gs::to_string(gs::LogLevel::warning)));
  EXPECT_EQ(str(gs::LogLevel::error), gs::to_string(gs::LogLevel::error));
  EXPECT_EQ(str(gs::EvictReason::pressure), "pressure");
  EXPECT_EQ(str(gs::EvictReason::reclaim), "reclaim");
  EXPECT_EQ(str(gs::Residency::primary), "primary");
  EXPECT_EQ(str(gs::Residency::secondary), "secondary");
  EXPECT_EQ(str(gs::OversizePolicy::throw_error), "throw_error");
  EXPECT_EQ(str(gs::OversizePolicy::load_uncached), "load_uncached");
  EXPECT_EQ(str(gs::ErrorCode::pool_exhausted), "pool_exhausted");
  EXPECT_EQ(str(gs::ErrorCode::no_gpu), "no_gpu");
  EXPECT_EQ(str(gs::ErrorClass::sticky), "sticky");
  EXPECT_EQ(str(gs::ErrorClass::out_of_memory), "out_of_memory");
  EXPECT_EQ(str(gs::CudaStatus::no_device), gs::to_string(gs::CudaStatus::no_device));
  EXPECT_EQ(str(gs::cuda_status()), gs::to_string(gs::cuda_status()));
  // An out-of-range value still prints something that says what it is.
  EXPECT_EQ(str(static_cast<gs::OverflowPolicy>(9)), "OverflowPolicy(9)");
}

TEST(Ostream, StatusErrorAndDeviceInfo) {
  EXPECT_EQ(str(gs::Status{gs::codes::no_device}), "cudaErrorNoDevice (100)");
  expect_shows(gs::NoGpu("pool 'x': no GPU", gs::codes::no_device),
               {"no_gpu: ", "pool 'x': no GPU", "runtime code 100"});
  EXPECT_EQ(str(gs::PoolExhausted("full")), "pool_exhausted: full");
  const gs::Error& base = gs::Timeout("waited 5 ms");
  EXPECT_EQ(str(base), "timeout: waited 5 ms");

  gs::DeviceInfo d;
  d.index = 1;
  d.is_gpu = true;
  d.name = "Test GPU";
  d.compute_major = 9;
  d.compute_minor = 0;
  d.multiprocessors = 132;
  d.total_memory = 1000;
  d.free_memory = 600;
  expect_shows(d, {"index=1", "is_gpu=true", "'Test GPU'", "compute=9.0", "multiprocessors=132",
                   "total_memory=1000", "free_memory=600"});
  expect_shows(gs::get_device_info<gs::HostRuntime>(0), {"DeviceInfo{", "index=0", "is_gpu=false"});
}

TEST(Ostream, PoolStatsShowEveryClassAndTheTotals) {
  gs::BufferPoolOptions o;
  o.kind = gs::MemoryKind::host;
  o.classes = {{256, 4}, {4096, 2}};
  o.name = "frames";
  gs::BasicBufferPool<gs::HostRuntime> pool(o);
  auto a = pool.acquire(100);
  auto b = pool.acquire(3000);
  auto c = pool.acquire(200);
  const std::string s = str(pool.stats());
  for (const char* f :
       {"BufferPoolStats{", "name='frames'", "kind=host", "requested_kind=host", "fallback=false",
        "totals=SizeClassStats{bytes=0, capacity=6, in_use=3", "classes=[SizeClassStats{bytes=256",
        "capacity=4, in_use=2", "SizeClassStats{bytes=4096, capacity=2, in_use=1",
        "acquires=", "bytes_reserved=", "resident=true"})
    EXPECT_NE(s.find(f), std::string::npos) << s << "\nmissing: " << f;

  expect_shows(gs::SizeClass{4096, 8}, {"SizeClass{bytes=4096, count=8}"});

  gs::OutstandingLease l;
  l.resource = "frames";
  l.bytes = 100;
  l.class_bytes = 256;
  l.file = "decode.cpp";
  l.line = 42;
  l.tag = "decode";
  expect_shows(l, {"LeakRecord{resource='frames'", "bytes=100", "decode.cpp:42", "tag='decode'",
                   "class_bytes=256", "overflow=false"});
}

TEST(Ostream, ReclaimRecords) {
  gs::ReclaimRequest r;
  expect_shows(r, {"level=heavy", "bytes_goal=unlimited", "device=-1"});
  r.level = gs::ReclaimLevel::light;
  r.bytes_goal = 1 << 20;
  r.device = 0;
  expect_shows(r, {"level=light", "bytes_goal=1048576", "device=0"});

  gs::ResourceUsage u;
  u.bytes_reserved = 4096;
  u.bytes_in_use = 1024;
  u.items = 3;
  u.device = 0;
  expect_shows(u, {"bytes_reserved=4096", "bytes_in_use=1024", "items=3", "device=0"});

  gs::LeakRecord k;
  k.resource = "frames";
  k.file = "main.cpp";
  k.line = 7;
  k.tag = "x";
  k.bytes = 512;
  k.leases = 2;
  k.age = std::chrono::milliseconds(1500);
  expect_shows(
      k, {"resource='frames'", "leases=2", "bytes=512", "main.cpp:7", "tag='x'", "age_ms=1500"});
  k.file.clear();
  k.age_known = false;
  const std::string s = str(k);
  EXPECT_NE(s.find("(untracked)"), std::string::npos) << s;
  EXPECT_EQ(s.find("age_ms"), std::string::npos) << s;
  EXPECT_EQ(s.find("class_bytes"), std::string::npos) << "not a pool's lease: " << s;
}

TEST(Ostream, ManagerSnapshotStatsAndReleaseResult) {
  gs::MemorySnapshot snap;
  snap.time_s = 2.5;
  snap.frame = 12;
  snap.device = 0;
  snap.memory_known = true;
  snap.device_total_bytes = 8000;
  snap.device_free_bytes = 3000;
  snap.device_used_bytes = 5000;
  gs::ResourceSnapshot rs;
  rs.name = "frames";
  rs.cost = gs::ReclaimCost::idle_memory;
  rs.usage.bytes_reserved = 2048;
  snap.resources.push_back(rs);
  expect_shows(snap, {"MemorySnapshot{", "time_s=2.5", "frame=12", "memory_known=true",
                      "device_total_bytes=8000", "device_free_bytes=3000", "device_used_bytes=5000",
                      "resources=[ResourceSnapshot{name='frames'", "cost=idle_memory",
                      "usage=ResourceUsage{bytes_reserved=2048", "attached=true"});

  gs::ReleaseResult rr;
  rr.checked = true;
  rr.was_over = true;
  rr.total_bytes = 8000;
  rr.used_before = 7000;
  rr.used_after = 5000;
  rr.target_bytes = 6000;
  rr.bytes_freed = 2000;
  rr.target_reached = true;
  rr.released.push_back({"models", gs::ReclaimCost::evictable_models, 2000, "over threshold"});
  expect_shows(rr, {"checked=true", "was_over=true", "target_reached=true", "used_before=7000",
                    "used_after=5000", "target_bytes=6000", "bytes_freed=2000",
                    "released=[ReleaseEntry{resource='models', cost=evictable_models, "
                    "bytes=2000, reason='over threshold'}]"});
  gs::ReleaseResult unchecked;
  unchecked.note = "no threshold set";
  expect_shows(unchecked, {"checked=false", "released=[]", "note='no threshold set'"});

  gs::MemoryManagerStats ms;
  ms.frames = 100;
  ms.frame_cleanups = 10;
  ms.timer_cleanups = 2;
  ms.threshold_releases = 1;
  ms.bytes_released = 4096;
  ms.attached = 3;
  expect_shows(ms, {"frames=100", "frame_cleanups=10", "timer_cleanups=2", "threshold_releases=1",
                    "bytes_released=4096", "timer_running=false", "attached=3"});

  gs::LeakReport report;
  EXPECT_EQ(str(report), report.to_string());
  gs::LeakRecord k;
  k.resource = "frames";
  k.bytes = 256;
  report.records.push_back(k);
  EXPECT_EQ(str(report), report.to_string());
  expect_shows(report, {"frames"});
}

TEST(Ostream, ManagerStatsFromALiveManager) {
  gs::MemoryManagerOptions o;
  o.name = "live";
  gs::BasicMemoryManager<gs::HostRuntime> manager(o);
  (void)manager.on_frame();
  expect_shows(manager.stats(), {"MemoryManagerStats{", "frames=1"});
  expect_shows(manager.snapshot(), {"MemorySnapshot{", "frame=1", "resources=["});
}

TEST(Ostream, ModelCacheStats) {
  gs::ModelCacheStats s;
  s.hits = 5;
  s.misses = 2;
  s.loads = 2;
  s.evictions[static_cast<std::size_t>(gs::EvictReason::budget)] = 3;
  s.evictions[static_cast<std::size_t>(gs::EvictReason::pressure)] = 1;
  s.bytes_resident = 1000;
  s.byte_budget = gs::ModelCacheOptions::kUnlimited;
  s.models_registered = 4;
  s.models_resident = 2;
  s.load_time = std::chrono::milliseconds(250);
  expect_shows(s, {"hits=5", "misses=2", "loads=2", "evictions={budget=3, pressure=1, requested=0",
                   "reclaim=0}", "bytes_resident=1000", "byte_budget=unlimited",
                   "models_registered=4", "models_resident=2", "load_time_ms=250"});
  s.byte_budget = 1 << 30;
  expect_shows(s, {"byte_budget=1073741824"});
}
