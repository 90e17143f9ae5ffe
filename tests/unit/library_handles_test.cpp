// Unit tests of the library handles (gpusafe/handles/cublas.hpp, cudnn.hpp, cufft.hpp, nccl.hpp)
// on FakeRuntime, and of their creation on the real runtime of this machine when the libraries
// were found.
#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "../support/child_process.hpp"
#include "gpusafe/handles/cublas.hpp"
#include "gpusafe/handles/cudnn.hpp"
#include "gpusafe/handles/cufft.hpp"
#include "gpusafe/handles/nccl.hpp"
#include "gpusafe/testing/fake_runtime.hpp"

namespace gs = gpusafe;
using gs::HandleKind;
using gs::ReleaseOutcome;
using gs::testing::FakeOp;
using gs::testing::FakeRuntime;
using namespace std::chrono_literals;

namespace {

class LibraryHandlesTest : public ::testing::Test {
 protected:
  void SetUp() override { FakeRuntime::reset(2); }
  void TearDown() override {
    FakeRuntime::reset();
    for (int d = 0; d < 2; ++d) gs::notify_device_reset(d);
  }
};

using FakeComm = gs::BasicNcclComm<FakeRuntime>;

gs::NcclParams quick_comm() {
  gs::NcclParams p;
  p.timeout = 100ms;
  return p;
}

template <class Handle>
void expect_round_trip(HandleKind kind, const typename Handle::Params& params = {}) {
  const auto before = gs::handle_stats(kind);
  {
    Handle h(params, 1);
    ASSERT_TRUE(h);
    EXPECT_EQ(FakeRuntime::handle_device(h.get()), 1) << gs::to_string(kind);
    EXPECT_EQ(FakeRuntime::live_handles(static_cast<int>(kind)), 1u);
  }
  EXPECT_EQ(FakeRuntime::live_handles(static_cast<int>(kind)), 0u);
  const auto after = gs::handle_stats(kind);
  EXPECT_EQ(after.created, before.created + 1);
  EXPECT_EQ(after.destroyed, before.destroyed + 1);
}

}  // namespace

TEST_F(LibraryHandlesTest, EveryLibraryHandleIsMadeAndDestroyedOnItsDevice) {
  expect_round_trip<gs::BasicCublasHandle<FakeRuntime>>(HandleKind::cublas);
  expect_round_trip<gs::BasicCublasLtHandle<FakeRuntime>>(HandleKind::cublaslt);
  expect_round_trip<gs::BasicCudnnHandle<FakeRuntime>>(HandleKind::cudnn);
  expect_round_trip<gs::BasicCufftPlan<FakeRuntime>>(
      HandleKind::cufft, gs::CufftParams{1, {256, 0, 0}, gs::kCufftC2C, 4});
  expect_round_trip<FakeComm>(HandleKind::nccl);
  EXPECT_EQ(FakeRuntime::invalid_handle_destroys(), 0u);
}

TEST_F(LibraryHandlesTest, BadPlanShapesAreTypedErrors) {
  auto message_of = [](const gs::CufftParams& p) -> std::string {
    try {
      gs::BasicCufftPlan<FakeRuntime> plan(p);
    } catch (const gs::InvalidArgument& e) {
      return e.what();
    }
    return "no exception";
  };
  EXPECT_NE(message_of({0, {1, 0, 0}, gs::kCufftC2C, 1}).find("1, 2 or 3 dimensions"),
            std::string::npos);
  EXPECT_NE(message_of({2, {16, 0, 0}, gs::kCufftC2C, 1}).find("dimension 1 is 0"),
            std::string::npos);
  EXPECT_NE(message_of({1, {16, 0, 0}, 7, 1}).find("unknown transform type 7"), std::string::npos);
  EXPECT_NE(message_of({1, {16, 0, 0}, gs::kCufftR2C, 0}).find("batch 0"), std::string::npos);
  EXPECT_EQ(FakeRuntime::live_handles(), 0u);
}

TEST_F(LibraryHandlesTest, BadCommunicatorParametersAreTypedErrors) {
  gs::NcclParams p;
  p.nranks = 2;
  EXPECT_THROW(FakeComm c(p), gs::InvalidArgument);  // no unique id
  p.nranks = 1;
  p.rank = 1;
  EXPECT_THROW(FakeComm c(p), gs::InvalidArgument);
  p.rank = 0;
  p.timeout = 0ms;
  try {
    FakeComm c(p);
    FAIL() << "no exception";
  } catch (const gs::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("positive bound"), std::string::npos) << e.what();
  }
}

TEST_F(LibraryHandlesTest, CommunicatorIsFinalizedThenDestroyed) {
  FakeComm c(quick_comm());
  const auto finalizes = FakeRuntime::calls(FakeOp::handle_finalize);
  EXPECT_EQ(c.reset(), ReleaseOutcome::destroyed);
  EXPECT_EQ(FakeRuntime::calls(FakeOp::handle_finalize), finalizes + 1);
  EXPECT_EQ(FakeRuntime::calls(FakeOp::handle_abort), 0u);
  EXPECT_EQ(FakeRuntime::live_handles(), 0u);
}

TEST_F(LibraryHandlesTest, HangingFinalizeIsAbortedWithinTheBound) {
  FakeComm c(quick_comm());
  FakeRuntime::hang_handle_finalize(true);
  const auto before = gs::handle_stats(HandleKind::nccl);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(c.reset(), ReleaseOutcome::aborted);
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_GE(took, 100ms);
  EXPECT_LT(took, 2s);
  EXPECT_EQ(FakeRuntime::calls(FakeOp::handle_abort), 1u);
  EXPECT_EQ(FakeRuntime::live_handles(), 0u);
  EXPECT_EQ(gs::handle_stats(HandleKind::nccl).aborted, before.aborted + 1);
}

TEST_F(LibraryHandlesTest, AsynchronousErrorsArePolledAndTyped) {
  FakeComm c(quick_comm());
  EXPECT_TRUE(c.poll_async_error().ok());
  EXPECT_NO_THROW(c.check());
  FakeRuntime::set_handle_async_error(c.get(), gs::codes::unknown);
  EXPECT_EQ(c.poll_async_error().code, gs::codes::unknown);
  try {
    c.check();
    FAIL() << "no exception";
  } catch (const gs::RuntimeFailure& e) {
    EXPECT_NE(std::string(e.what()).find("asynchronous NCCL error"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("abort()"), std::string::npos);
  }
  // Released with the error pending: aborted, not destroyed.
  EXPECT_EQ(c.reset(), ReleaseOutcome::aborted);
  EXPECT_EQ(FakeRuntime::live_handles(), 0u);
}

TEST_F(LibraryHandlesTest, ExplicitAbortEmptiesTheCommunicator) {
  FakeComm c(quick_comm());
  EXPECT_EQ(c.abort(), ReleaseOutcome::aborted);
  EXPECT_FALSE(c);
  EXPECT_EQ(c.abort(), ReleaseOutcome::none);
  EXPECT_EQ(FakeRuntime::live_handles(), 0u);
}

TEST_F(LibraryHandlesTest, PoisonedDeviceAbortsCommunicatorsAndLeaksOtherHandles) {
  FakeComm c(quick_comm());
  gs::BasicCublasHandle<FakeRuntime> blas(gs::CublasParams{});
  gs::detail::mark_poisoned(0);
  EXPECT_EQ(blas.reset(), ReleaseOutcome::leaked);
  EXPECT_EQ(c.reset(), ReleaseOutcome::aborted);
  EXPECT_EQ(FakeRuntime::calls(FakeOp::handle_finalize), 0u);
  EXPECT_EQ(FakeRuntime::live_handles(static_cast<int>(HandleKind::nccl)), 0u);
}

TEST_F(LibraryHandlesTest, ForkedChildLeavesCommunicatorsToTheOs) {
  FakeComm c(quick_comm());
  const int rc = gpusafe_test::run_in_child([&] {
    const auto calls = FakeRuntime::total_calls();
    if (c.reset() != ReleaseOutcome::leaked) return 10;
    return FakeRuntime::total_calls() == calls ? 0 : 11;
  });
  EXPECT_EQ(rc, 0);
}

TEST(LibraryHandlesRealRuntime, CreationWithoutAGpuIsATypedError) {
  if (gs::is_cuda_available()) GTEST_SKIP() << "a GPU is present";
#if GPUSAFE_WITH_CUBLAS && GPUSAFE_WITH_CUDA
  EXPECT_THROW(gs::CublasHandle h(gs::CublasParams{}), gs::NoGpu);
  EXPECT_THROW(gs::CublasLtHandle h(gs::CublasLtParams{}), gs::NoGpu);
#endif
#if GPUSAFE_WITH_CUDNN && GPUSAFE_WITH_CUDA
  EXPECT_THROW(gs::CudnnHandle h(gs::CudnnParams{}), gs::NoGpu);
#endif
#if GPUSAFE_WITH_CUFFT && GPUSAFE_WITH_CUDA
  EXPECT_THROW(gs::CufftPlan h(gs::CufftParams{1, {64, 0, 0}, gs::kCufftC2C, 1}), gs::NoGpu);
#endif
#if GPUSAFE_WITH_NCCL && GPUSAFE_WITH_CUDA
  EXPECT_THROW(gs::NcclComm h(gs::NcclParams{}), gs::NoGpu);
#endif
}
