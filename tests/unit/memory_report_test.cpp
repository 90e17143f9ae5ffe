// Unit tests of gpusafe/memory_report.hpp: the text, JSON and CSV forms of snapshots, counters,
// release results and leak reports, on hand-made values.
#include "gpusafe/memory_report.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace gs = gpusafe;
using namespace std::chrono_literals;

namespace {

constexpr std::size_t kMiB = std::size_t{1} << 20;

gs::MemorySnapshot snapshot_with(std::vector<std::string> names) {
  gs::MemorySnapshot s;
  s.time_s = 1.5;
  s.frame = 7;
  s.memory_known = true;
  s.device_is_gpu = true;
  s.device_total_bytes = 100 * kMiB;
  s.device_free_bytes = 25 * kMiB;
  s.device_used_bytes = 75 * kMiB;
  std::size_t bytes = kMiB;
  for (auto& n : names) {
    gs::ResourceSnapshot r;
    r.name = std::move(n);
    r.usage.bytes_reserved = bytes;
    r.usage.bytes_in_use = bytes / 2;
    s.resources.push_back(r);
    bytes *= 2;
  }
  return s;
}

TEST(MemoryReportTest, TextShowsDeviceResourcesAndCounters) {
  const gs::MemoryReportSubject subject{"video", 0.9, "cuda"};
  gs::MemoryManagerStats st;
  st.frame_cleanups = 3;
  const std::string text = gs::format_memory_report(subject, snapshot_with({"frames"}), st);
  EXPECT_NE(text.find("memory manager 'video': frame 7, 1.5 s"), std::string::npos) << text;
  EXPECT_NE(text.find("device 0 (cuda): used 75.0 MiB of 100.0 MiB (75.0%)"), std::string::npos)
      << text;
  EXPECT_NE(text.find("threshold 90.0%"), std::string::npos) << text;
  EXPECT_NE(text.find("frames"), std::string::npos) << text;
  EXPECT_NE(text.find("cleanups: 3 by frame"), std::string::npos) << text;
}

TEST(MemoryReportTest, HostDeviceAndNoThresholdAreSaid) {
  auto s = snapshot_with({});
  s.device_is_gpu = false;
  const std::string line = gs::format_device_line({"m", 0.0, "cuda"}, s);
  EXPECT_NE(line.find("(host)"), std::string::npos) << line;
  EXPECT_NE(line.find("threshold off"), std::string::npos) << line;
  EXPECT_NE(gs::format_resource_table(s).find("(no resources)"), std::string::npos);
}

TEST(MemoryReportTest, JsonEscapesNamesAndNestsTheSnapshot) {
  const std::string json = gs::format_memory_report_json(
      {"a\"b\n", 0.5, "cuda"}, snapshot_with({"x"}), gs::MemoryManagerStats{});
  EXPECT_EQ(json.rfind("{\"name\":\"a\\\"b\\n\",\"snapshot\":{", 0), 0u) << json;
  EXPECT_NE(json.find("\"threshold\":0.5000"), std::string::npos) << json;
  EXPECT_NE(json.find("\"stats\":{\"frames\":0"), std::string::npos) << json;
  EXPECT_EQ(gs::detail::json_string(std::string(1, '\x01')), "\"\\u0001\"");
}

TEST(MemoryReportTest, CsvKeepsTwoResourcesOfOneNameApartAndLeavesMissingOnesEmpty) {
  const std::vector<gs::MemorySnapshot> snaps{snapshot_with({"a", "a"}), snapshot_with({"b,c"})};
  const std::string csv = gs::format_history_csv(snaps);
  const std::string header =
      "time_s,frame,device_used_bytes,device_total_bytes,a_reserved_bytes,a_in_use_bytes,"
      "a#2_reserved_bytes,a#2_in_use_bytes,\"b,c_reserved_bytes\",\"b,c_in_use_bytes\"\n";
  EXPECT_EQ(csv.substr(0, header.size()), header) << csv;
  EXPECT_NE(csv.find("1.500,7,78643200,104857600,1048576,524288,2097152,1048576,,\n"),
            std::string::npos)
      << csv;
  EXPECT_NE(csv.find(",,,,,1048576,524288\n"), std::string::npos) << csv;
}

TEST(MemoryReportTest, LeakReportListsRecordsAndUntrackedResources) {
  gs::LeakReport report;
  EXPECT_EQ(gs::format_leak_report(report), "no outstanding leases");
  report.records.push_back({"frames", "b.cpp", 2, "decode", 200, 2s});
  gs::LeakRecord counted;
  counted.resource = "scratch";
  counted.bytes = 2 * kMiB;
  counted.leases = 2;
  counted.age_known = false;
  report.records.push_back(counted);
  report.untracked.push_back("other");
  const std::string text = report.to_string();
  EXPECT_EQ(text, gs::format_leak_report(report));
  EXPECT_NE(text.find("3 outstanding lease(s), 2.0 MiB:"), std::string::npos) << text;
  EXPECT_NE(text.find("\n  frames: 200 B taken at b.cpp:2 [decode], 2.0 s ago"), std::string::npos)
      << text;
  EXPECT_NE(text.find("\n  scratch: 2 leases, 2.0 MiB taken at (untracked)\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("not tracked (no LeakReporter): other"), std::string::npos) << text;
}

TEST(MemoryReportTest, LeakLinesShowAPoolLeaseSizeClass) {
  gs::LeakReport report;
  gs::LeakRecord in_class{"frames", "a.cpp", 1, "", 100, 1s};
  in_class.class_bytes = 4096;
  gs::LeakRecord overflow{"frames", "a.cpp", 2, "", 1 << 20, 1s};
  overflow.overflow = true;
  report.records = {in_class, overflow};
  const std::string text = report.to_string();
  EXPECT_NE(text.find("\n  frames: 100 B taken at a.cpp:1, 1.0 s ago (class 4096)"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("\n  frames: 1.0 MiB taken at a.cpp:2, 1.0 s ago (overflow)"),
            std::string::npos)
      << text;
}

// A pool's OutstandingLease and a reporter's LeakRecord are one type.
TEST(MemoryReportTest, OutstandingLeaseIsTheLeakRecord) {
  static_assert(std::is_same<gs::OutstandingLease, gs::LeakRecord>::value, "one record type");
  const gs::LeakRecord r{"frames", "a.cpp", 2, "decode", 100, std::chrono::seconds(1)};
  EXPECT_EQ(r.resource, "frames");
  EXPECT_EQ(r.leases, 1u);
  EXPECT_EQ(r.class_bytes, 0u) << "not a pool lease unless the pool says so";
  EXPECT_FALSE(r.overflow);
}

TEST(MemoryReportTest, ReleaseSummarySaysWhyAndWhetherTheTargetWasReached) {
  const std::string reason = gs::format_threshold_crossing(0, 95 * kMiB, 100 * kMiB, 0.9);
  EXPECT_EQ(reason, "device 0 at 95.0% > threshold 90.0%");
  gs::ReleaseResult r;
  r.bytes_freed = 10 * kMiB;
  r.released.push_back({"frames", gs::ReclaimCost::idle_memory, 10 * kMiB, reason});
  r.target_reached = true;
  EXPECT_EQ(gs::format_release_summary("m", reason, r),
            "MemoryManager 'm': " + reason +
                "; released 10.0 MiB from 1 resource(s); now under the threshold");
  r.target_reached = false;
  EXPECT_NE(gs::format_release_summary("m", reason, r).find("still over the threshold"),
            std::string::npos);
}

}  // namespace
