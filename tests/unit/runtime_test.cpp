// Unit tests of gpusafe/runtime.hpp: error classification, the CUDA probe and its cache, the
// host fallback of DefaultRuntime, get_device_info on every runtime, and bad device indices.
#include "gpusafe/runtime.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "gpusafe/lifecycle.hpp"
#include "gpusafe/testing/fake_runtime.hpp"

namespace gs = gpusafe;
using gs::ErrorClass;
using gs::testing::FakeRuntime;

namespace {

// Reads MemTotal from /proc/meminfo independently of the library (bytes; 0 when unreadable).
std::size_t proc_mem_total() {
  std::FILE* f = std::fopen("/proc/meminfo", "r");
  if (!f) return 0;
  char line[256];
  unsigned long long kb = 0;
  while (std::fgets(line, sizeof line, f)) {
    if (std::sscanf(line, "MemTotal: %llu kB", &kb) == 1) break;
  }
  std::fclose(f);
  return static_cast<std::size_t>(kb) * 1024;
}

#if GPUSAFE_WITH_CUDA
// What the CUDA runtime itself says, to compare the library's cached answer against.
gs::CudaStatus expected_cuda_status(int* count_out) {
  int count = 0;
  const cudaError_t rc = cudaGetDeviceCount(&count);
  (void)cudaGetLastError();
  *count_out = rc == cudaSuccess ? count : 0;
  if (rc == cudaSuccess && count > 0) return gs::CudaStatus::available;
  if (rc == cudaErrorNoDevice || rc == cudaSuccess) return gs::CudaStatus::no_device;
  if (rc == cudaErrorInsufficientDriver || rc == cudaErrorStubLibrary ||
      rc == cudaErrorInitializationError)
    return gs::CudaStatus::no_driver;
  return gs::CudaStatus::error;
}
#endif

}  // namespace

// ---- classification --------------------------------------------------------------------------

TEST(Classify, EveryCodeOfTheTable) {
  struct Row {
    int code;
    ErrorClass expected;
  };
  const std::vector<Row> table = {
      {0, ErrorClass::success},
      {600, ErrorClass::not_ready},
      {4, ErrorClass::benign_at_shutdown},
      {709, ErrorClass::benign_at_shutdown},
      {3, ErrorClass::no_gpu},
      {34, ErrorClass::no_gpu},
      {35, ErrorClass::no_gpu},
      {100, ErrorClass::no_gpu},
      {2, ErrorClass::out_of_memory},
      {700, ErrorClass::sticky},
      {710, ErrorClass::sticky},
      {714, ErrorClass::sticky},
      {715, ErrorClass::sticky},
      {716, ErrorClass::sticky},
      {717, ErrorClass::sticky},
      {718, ErrorClass::sticky},
      {719, ErrorClass::sticky},
      {1, ErrorClass::usage},
      {101, ErrorClass::usage},
      {201, ErrorClass::usage},
      {400, ErrorClass::usage},
      {999, ErrorClass::other},
      {123456, ErrorClass::other},
      {-7, ErrorClass::other},
  };
  for (const auto& row : table) {
    EXPECT_EQ(gs::classify(row.code), row.expected)
        << "code " << row.code << " classified as " << gs::to_string(gs::classify(row.code));
    EXPECT_EQ(gs::Status{row.code}.error_class(), row.expected) << row.code;
    EXPECT_EQ(gs::Status{row.code}.ok(), row.code == 0) << row.code;
  }
}

TEST(Classify, NeighboursOfTheStickyRangeAreNotSticky) {
  EXPECT_NE(gs::classify(713), ErrorClass::sticky);
  EXPECT_NE(gs::classify(720), ErrorClass::sticky);
  EXPECT_NE(gs::classify(701), ErrorClass::sticky);
}

TEST(Classify, IsUsableAtCompileTime) {
  static_assert(gs::classify(700) == ErrorClass::sticky, "classify must be constexpr");
  static_assert(gs::classify(0) == ErrorClass::success, "classify must be constexpr");
  SUCCEED();
}

TEST(Classify, CodeNamesAndDescribe) {
  EXPECT_STREQ(gs::code_name(0), "cudaSuccess");
  EXPECT_STREQ(gs::code_name(100), "cudaErrorNoDevice");
  EXPECT_STREQ(gs::code_name(35), "cudaErrorInsufficientDriver");
  EXPECT_STREQ(gs::code_name(709), "cudaErrorContextIsDestroyed");
  EXPECT_STREQ(gs::code_name(424242), "cudaError");
  EXPECT_STREQ(gs::code_name(716), "cudaErrorMisalignedAddress");
  // Every code the library classifies has its own name (a poisoned-device message names it).
  for (int code = 0; code < 1000; ++code) {
    if (gs::classify(code) != gs::ErrorClass::other) {
      EXPECT_STRNE(gs::code_name(code), "cudaError") << "code " << code;
    }
  }
  EXPECT_EQ(gs::Status{100}.describe(), "cudaErrorNoDevice (100)");
  EXPECT_EQ(gs::Status{424242}.describe(), "cudaError (424242)");
}

TEST(Classify, EveryClassHasAName) {
  for (auto c : {ErrorClass::success, ErrorClass::not_ready, ErrorClass::benign_at_shutdown,
                 ErrorClass::no_gpu, ErrorClass::out_of_memory, ErrorClass::sticky,
                 ErrorClass::usage, ErrorClass::other}) {
    EXPECT_STRNE(gs::to_string(c), "?");
  }
}

// ---- the CUDA probe ----------------------------------------------------------------------------

TEST(CudaStatus, MatchesTheBuildAndTheMachine) {
  const gs::CudaStatus status = gs::cuda_status();
#if GPUSAFE_WITH_CUDA
  int count = 0;
  const gs::CudaStatus expected = expected_cuda_status(&count);
  EXPECT_EQ(status, expected) << "library: " << gs::to_string(status)
                              << ", CUDA runtime: " << gs::to_string(expected);
  if (expected == gs::CudaStatus::available) {
    EXPECT_TRUE(gs::is_cuda_available());
    EXPECT_EQ(gs::cuda_device_count(), count);
    EXPECT_GT(gs::cuda_device_count(), 0);
  } else {
    // A CUDA build on a machine without a driver (or with no visible device).
    EXPECT_TRUE(status == gs::CudaStatus::no_driver || status == gs::CudaStatus::no_device)
        << gs::to_string(status);
    EXPECT_FALSE(gs::is_cuda_available());
    EXPECT_EQ(gs::cuda_device_count(), 0);
  }
#else
  EXPECT_EQ(status, gs::CudaStatus::not_compiled);
  EXPECT_FALSE(gs::is_cuda_available());
  EXPECT_EQ(gs::cuda_device_count(), 0);
#endif
}

TEST(CudaStatus, IsStableAcrossCalls) {
  const gs::CudaStatus first = gs::cuda_status();
  const bool available = gs::is_cuda_available();
  for (int i = 0; i < 1000; ++i) {
    ASSERT_EQ(gs::cuda_status(), first);
    ASSERT_EQ(gs::is_cuda_available(), available);
  }
  EXPECT_EQ(available, first == gs::CudaStatus::available);
}

TEST(CudaStatus, IsCachedAfterTheFirstCall) {
  (void)gs::is_cuda_available();
  auto& state = gs::detail::cuda_state();
  const int cached = state.load();
  ASSERT_NE(cached, gs::detail::kCudaUnknown) << "the first call must store the probe's answer";
  EXPECT_EQ(gs::detail::cuda_status_from_state(cached), gs::cuda_status());

  // If a later call probed again, it would see the real answer; a cached read sees what is
  // stored. Flip the stored answer and watch the result follow it.
  const int flipped = cached == static_cast<int>(gs::CudaStatus::available)
                          ? static_cast<int>(gs::CudaStatus::no_device)
                          : static_cast<int>(gs::CudaStatus::available);
  state.store(flipped);
  const bool seen = gs::is_cuda_available();
  const gs::CudaStatus seen_status = gs::cuda_status();
  state.store(cached);
  EXPECT_EQ(seen, flipped == static_cast<int>(gs::CudaStatus::available));
  EXPECT_EQ(seen_status, static_cast<gs::CudaStatus>(flipped));
}

TEST(CudaStatus, AMillionCallsAreCheap) {
  (void)gs::is_cuda_available();
  const auto start = std::chrono::steady_clock::now();
  int trues = 0;
  for (int i = 0; i < 1000000; ++i) trues += gs::is_cuda_available() ? 1 : 0;
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_TRUE(trues == 0 || trues == 1000000);
  // One atomic load each: even an unoptimised build on a loaded machine stays far below this.
  EXPECT_LT(std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count(), 500);
}

TEST(CudaStatus, EveryStatusHasAName) {
  for (auto s : {gs::CudaStatus::available, gs::CudaStatus::not_compiled, gs::CudaStatus::no_driver,
                 gs::CudaStatus::no_device, gs::CudaStatus::forked_child, gs::CudaStatus::exiting,
                 gs::CudaStatus::error}) {
    EXPECT_STRNE(gs::to_string(s), "?");
  }
}

// ---- DefaultRuntime and its host fallback -------------------------------------------------------

TEST(DefaultRuntime, DeviceRequestsFollowAvailability) {
  bool fell_back = true;
  const gs::MemoryKind got = gs::resolve_memory_kind<gs::DefaultRuntime>(
      gs::MemoryKind::device, gs::Fallback::host, &fell_back, "test buffer");
  if (gs::is_cuda_available()) {
    EXPECT_EQ(got, gs::MemoryKind::device);
    EXPECT_FALSE(fell_back);
  } else {
    EXPECT_EQ(got, gs::MemoryKind::host);
    EXPECT_TRUE(fell_back);
  }
}

TEST(DefaultRuntime, HostRequestsNeverFallBack) {
  bool fell_back = true;
  EXPECT_EQ(gs::resolve_memory_kind<gs::DefaultRuntime>(gs::MemoryKind::host, gs::Fallback::error,
                                                        &fell_back, "host buffer"),
            gs::MemoryKind::host);
  EXPECT_FALSE(fell_back);
}

TEST(DefaultRuntime, FallbackErrorThrowsNoGpuWithoutAGpu) {
  if (gs::is_cuda_available()) GTEST_SKIP() << "a GPU is usable here; nothing falls back";
  bool fell_back = false;
  try {
    gs::resolve_memory_kind<gs::DefaultRuntime>(gs::MemoryKind::pinned_host, gs::Fallback::error,
                                                &fell_back, "staging buffer");
    FAIL() << "expected NoGpu";
  } catch (const gs::NoGpu& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("staging buffer"), std::string::npos) << msg;
    EXPECT_NE(msg.find("pinned_host"), std::string::npos) << msg;
    EXPECT_NE(msg.find("Fallback::host"), std::string::npos) << msg;
    EXPECT_EQ(e.code(), gs::ErrorCode::no_gpu);
  }
}

TEST(DefaultRuntime, AllocatesTheResolvedKind) {
  bool fell_back = false;
  const gs::MemoryKind kind = gs::resolve_memory_kind<gs::DefaultRuntime>(
      gs::MemoryKind::device, gs::Fallback::host, &fell_back, "alloc test");
  void* p = nullptr;
  ASSERT_TRUE(gs::DefaultRuntime::allocate(kind, 0, 4096, &p).ok());
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p) % gs::detail::kRuntimeAlignment, 0u);
  if (kind == gs::MemoryKind::host) std::memset(p, 0xab, 4096);  // really host memory
  EXPECT_TRUE(gs::DefaultRuntime::deallocate(kind, 0, p).ok());
}

TEST(HostRuntime, ServesEveryKindFromTheHost) {
  for (auto kind : {gs::MemoryKind::device, gs::MemoryKind::pinned_host, gs::MemoryKind::host}) {
    void* p = nullptr;
    ASSERT_TRUE(gs::HostRuntime::allocate(kind, 0, 1000, &p).ok()) << gs::to_string(kind);
    std::memset(p, 1, 1000);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p) % gs::detail::kRuntimeAlignment, 0u);
    EXPECT_TRUE(gs::HostRuntime::deallocate(kind, 0, p).ok());
  }
  EXPECT_FALSE(gs::HostRuntime::gpu_available());
  int count = -1;
  EXPECT_TRUE(gs::HostRuntime::device_count(count).ok());
  EXPECT_EQ(count, 0);
  EXPECT_TRUE(gs::HostRuntime::set_device(0).ok());
  EXPECT_EQ(gs::HostRuntime::set_device(1).code, gs::codes::invalid_device);
}

TEST(HostRuntime, AbsurdSizeFailsWithOutOfMemory) {
  void* p = reinterpret_cast<void*>(1);
  const gs::Status s = gs::HostRuntime::allocate(gs::MemoryKind::host, 0, SIZE_MAX - 10, &p);
  EXPECT_EQ(s.code, gs::codes::memory_allocation);
  EXPECT_EQ(p, nullptr);
}

// ---- get_device_info ----------------------------------------------------------------------------

namespace {
void expect_real_host_figures(const gs::DeviceInfo& info) {
  EXPECT_FALSE(info.is_gpu);
  EXPECT_EQ(info.index, 0);
  EXPECT_FALSE(info.name.empty());
  EXPECT_GT(info.total_memory, 0u);
  EXPECT_EQ(info.total_memory, proc_mem_total());
  EXPECT_LE(info.free_memory, info.total_memory);
  const unsigned hw = std::thread::hardware_concurrency();
  if (hw > 0) {
    EXPECT_EQ(info.multiprocessors, static_cast<int>(hw));
  }
}
}  // namespace

TEST(DeviceInfo, HostRuntimeReportsTheHost) {
  expect_real_host_figures(gs::get_device_info<gs::HostRuntime>(0));
}

TEST(DeviceInfo, DefaultRuntimeReportsTheGpuOrTheHost) {
  const gs::DeviceInfo info = gs::get_device_info();
  if (!gs::is_cuda_available()) {
    expect_real_host_figures(info);
    return;
  }
  EXPECT_TRUE(info.is_gpu);
  EXPECT_FALSE(info.name.empty());
  EXPECT_GT(info.total_memory, 0u);
  EXPECT_LE(info.free_memory, info.total_memory);
  EXPECT_GT(info.multiprocessors, 0);
  EXPECT_GT(info.compute_major, 0);
}

TEST(DeviceInfo, FakeRuntimeWithTwoDevices) {
  FakeRuntime::reset(2, std::size_t{8} << 20);
  void* p = nullptr;
  ASSERT_TRUE(FakeRuntime::allocate(gs::MemoryKind::device, 1, 1 << 20, &p).ok());
  for (int d = 0; d < 2; ++d) {
    const gs::DeviceInfo info = gs::get_device_info<FakeRuntime>(d);
    EXPECT_TRUE(info.is_gpu);
    EXPECT_EQ(info.index, d);
    EXPECT_EQ(info.name, "FakeRuntime device " + std::to_string(d));
    EXPECT_EQ(info.compute_major, 9);
    EXPECT_EQ(info.compute_minor, 0);
    EXPECT_EQ(info.multiprocessors, 132);
    EXPECT_EQ(info.total_memory, std::size_t{8} << 20);
    EXPECT_EQ(info.free_memory, (std::size_t{8} << 20) - (d == 1 ? (1u << 20) : 0u));
  }
  EXPECT_TRUE(FakeRuntime::deallocate(gs::MemoryKind::device, 1, p).ok());
}

TEST(DeviceInfo, FakeRuntimeWithoutADriverReportsTheHost) {
  FakeRuntime::reset(2);
  FakeRuntime::set_mode(gs::testing::FakeMode::no_driver);
  expect_real_host_figures(gs::get_device_info<FakeRuntime>(0));
  FakeRuntime::reset();
}

TEST(DeviceInfo, ReadFailuresThrowTypedErrors) {
  FakeRuntime::reset(2);
  FakeRuntime::fail_call(gs::testing::FakeOp::memory_info, gs::codes::context_is_destroyed);
  EXPECT_THROW(gs::get_device_info<FakeRuntime>(0), gs::ShuttingDown);
  FakeRuntime::fail_call(gs::testing::FakeOp::device_properties, gs::codes::unknown);
  EXPECT_THROW(gs::get_device_info<FakeRuntime>(1), gs::RuntimeFailure);
  EXPECT_NO_THROW(gs::get_device_info<FakeRuntime>(1));
}

// ---- bad device indices ------------------------------------------------------------------------

namespace {
template <class Fn>
std::string invalid_argument_message(Fn&& fn) {
  try {
    fn();
  } catch (const gs::InvalidArgument& e) {
    EXPECT_EQ(e.code(), gs::ErrorCode::invalid_argument);
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
    return {};
  }
  ADD_FAILURE() << "no exception";
  return {};
}
}  // namespace

TEST(BadInput, DeviceIndexOnFakeRuntimeWithTwoDevices) {
  FakeRuntime::reset(2);
  for (int bad : {-1, 2, 99}) {
    const std::string msg =
        invalid_argument_message([&] { gs::get_device_info<FakeRuntime>(bad); });
    EXPECT_NE(msg.find("get_device_info(" + std::to_string(bad) + ")"), std::string::npos) << msg;
    EXPECT_NE(msg.find("valid indices are 0..1"), std::string::npos) << msg;
  }
}

TEST(BadInput, DeviceIndexOnTheHostFallback) {
  for (int bad : {-1, 1, 99}) {
    const std::string msg =
        invalid_argument_message([&] { gs::get_device_info<gs::HostRuntime>(bad); });
    EXPECT_NE(msg.find("get_device_info(" + std::to_string(bad) + ")"), std::string::npos) << msg;
    EXPECT_NE(msg.find("pass 0"), std::string::npos) << msg;
  }
}

TEST(BadInput, DeviceIndexOnDefaultRuntime) {
  const int count = gs::cuda_device_count();
  const std::string msg = invalid_argument_message([&] { gs::get_device_info(99); });
  if (count == 0) {
    EXPECT_NE(msg.find("pass 0"), std::string::npos) << msg;
  } else {
    EXPECT_NE(msg.find("valid indices are 0.." + std::to_string(count - 1)), std::string::npos)
        << msg;
  }
  (void)invalid_argument_message([&] { gs::get_device_info(-1); });
}
