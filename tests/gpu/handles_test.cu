// The handles on a real GPU: streams, events, graph executables, cuBLAS, cuBLASLt, cuDNN, cuFFT
// handles and a single-rank NCCL communicator, made and used for real, then released in each
// teardown situation: normally, in a forked child, after a device reset, from static objects built
// before and after the first CUDA call (each exit style, in a child process), from thread_local
// storage of threads alive at exit, and a communicator whose finalisation is bounded.
//
// Every test skips itself with the reason when no GPU is usable. Run it 20 times, and under
// compute-sanitizer:
//
//   for i in $(seq 20); do build/cuda-kernels/tests/gpusafe_gpu_handles_test || break; done
//   compute-sanitizer --tool memcheck build/cuda-kernels/tests/gpusafe_gpu_handles_test
#include <cuda_runtime.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <thread>
#include <vector>

#include "gpusafe/handles.hpp"
#include "gpusafe/handles/cublas.hpp"
#include "gpusafe/handles/cudnn.hpp"
#include "gpusafe/handles/cufft.hpp"
#include "gpusafe/handles/nccl.hpp"
#include "gpusafe/stream_pool.hpp"

namespace gs = gpusafe;
using gs::HandleKind;
using gs::ReleaseOutcome;

namespace {

__global__ void add_one(float* x, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] += 1.0f;
}

class RealGpuHandles : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!gs::is_cuda_available())
      GTEST_SKIP() << "no usable GPU: " << gs::to_string(gs::cuda_status());
  }
};

/// One handle of each kind the build supports, on the current device.
struct AllHandles {
  gs::Stream stream{gs::StreamParams{}};
  gs::Event event{gs::EventParams{}};
#if GPUSAFE_WITH_CUBLAS
  gs::CublasHandle blas{gs::CublasParams{}};
  gs::CublasLtHandle blaslt{gs::CublasLtParams{}};
#endif
#if GPUSAFE_WITH_CUDNN
  gs::CudnnHandle dnn{gs::CudnnParams{}};
#endif
#if GPUSAFE_WITH_CUFFT
  gs::CufftPlan fft{gs::CufftParams{1, {1024, 0, 0}, gs::kCufftC2C, 4}};
#endif
#if GPUSAFE_WITH_NCCL
  gs::NcclComm comm{gs::NcclParams{}};
#endif

  /// Uses each handle once on the stream.
  void use() {
    float* x = nullptr;
    ASSERT_EQ(cudaMalloc(&x, 256 * sizeof(float)), cudaSuccess);
    add_one<<<1, 256, 0, stream.get()>>>(x, 256);
    ASSERT_EQ(cudaEventRecord(event.get(), stream.get()), cudaSuccess);
#if GPUSAFE_WITH_CUBLAS
    ASSERT_EQ(cublasSetStream(blas.get(), stream.get()), CUBLAS_STATUS_SUCCESS);
    const float alpha = 2.0f;
    ASSERT_EQ(cublasSscal(blas.get(), 256, &alpha, x, 1), CUBLAS_STATUS_SUCCESS);
#endif
#if GPUSAFE_WITH_CUDNN
    ASSERT_EQ(cudnnSetStream(dnn.get(), stream.get()), CUDNN_STATUS_SUCCESS);
#endif
#if GPUSAFE_WITH_CUFFT
    ASSERT_EQ(cufftSetStream(fft.get(), stream.get()), CUFFT_SUCCESS);
#endif
#if GPUSAFE_WITH_NCCL
    ASSERT_EQ(ncclAllReduce(x, x, 256, ncclFloat, ncclSum, comm.get(), stream.get()), ncclSuccess);
    comm.check();
#endif
    ASSERT_EQ(cudaStreamSynchronize(stream.get()), cudaSuccess);
    ASSERT_EQ(cudaFree(x), cudaSuccess);
  }
};

/// Runs `body` in a forked-and-exec'd-free child: fork, run, end with the given exit style.
template <class Body>
int in_child(Body body, int exit_style) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int rc = body();
    if (exit_style == 0) std::exit(rc);
    if (exit_style == 1) std::quick_exit(rc);
    std::_Exit(rc);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

TEST_F(RealGpuHandles, EveryHandleIsMadeUsedAndDestroyed) {
  const auto before = gs::handle_stats(HandleKind::stream);
  {
    AllHandles h;
    h.use();
  }
  const auto after = gs::handle_stats(HandleKind::stream);
  EXPECT_EQ(after.destroyed, before.destroyed + 1);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

TEST_F(RealGpuHandles, StreamPoolHandsOutRealStreams) {
  gs::StreamPool pool(gs::StreamPoolOptions{4});
  EXPECT_FALSE(pool.fell_back());
  float* x = nullptr;
  ASSERT_EQ(cudaMalloc(&x, 256 * sizeof(float)), cudaSuccess);
  for (int i = 0; i < 8; ++i) add_one<<<1, 256, 0, pool.get()>>>(x, 256);
  for (std::size_t i = 0; i < pool.size(); ++i)
    ASSERT_EQ(cudaStreamSynchronize(pool.get(i)), cudaSuccess);
  ASSERT_EQ(cudaFree(x), cudaSuccess);
}

TEST_F(RealGpuHandles, DestroySwitchesToTheHandlesDevice) {
  int count = 0;
  ASSERT_EQ(cudaGetDeviceCount(&count), cudaSuccess);
  if (count < 2) GTEST_SKIP() << "needs two GPUs";
  gs::Stream s(gs::StreamParams{}, 1);
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  EXPECT_EQ(s.reset(), ReleaseOutcome::destroyed);
  int current = -1;
  ASSERT_EQ(cudaGetDevice(&current), cudaSuccess);
  EXPECT_EQ(current, 0);
}

TEST_F(RealGpuHandles, ForkedChildLeavesEveryHandleWithNoCall) {
  AllHandles h;
  h.use();
  const int rc = in_child(
      [&] {
        const auto leaked = gs::leaked_handle_count();
        AllHandles* moved = new AllHandles(std::move(h));
        delete moved;  // every handle: left to the OS, no CUDA call in the child
        return gs::leaked_handle_count() > leaked ? 0 : 1;
      },
      2);
  EXPECT_EQ(rc, 0);
  h.use();  // the parent's handles still work
}

TEST_F(RealGpuHandles, DeviceResetLeavesOldHandles) {
  std::optional<AllHandles> h(std::in_place);
  h->use();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ASSERT_EQ(cudaDeviceReset(), cudaSuccess);
  gs::notify_device_reset(0);
  const auto leaked = gs::leaked_handle_count();
  h.reset();
  EXPECT_GT(gs::leaked_handle_count(), leaked);
  AllHandles fresh;
  fresh.use();
}

TEST_F(RealGpuHandles, StaticHandlesAtExitInEveryExitStyle) {
  for (int style = 0; style < 3; ++style) {
    const int rc = in_child(
        [] {
          static std::optional<AllHandles> early;  // built before gpusafe's first use here
          (void)gs::process_is_exiting();
          early.emplace();
          early->use();
          static AllHandles late;  // destroyed while the runtime is alive
          late.use();
          return 0;
        },
        style);
    EXPECT_EQ(rc, 0) << "exit style " << style;
  }
}

TEST_F(RealGpuHandles, ThreadLocalHandlesOfThreadsAliveAtExit) {
  const int rc = in_child(
      [] {
        for (int t = 0; t < 4; ++t) {
          std::thread([] {
            thread_local std::optional<AllHandles> mine;
            mine.emplace();
            for (;;) {
              gs::RuntimeCallScope scope;
              if (!scope) break;
              mine->use();
            }
            for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
          }).detach();
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        return 0;
      },
      0);
  EXPECT_EQ(rc, 0);
}

#if GPUSAFE_WITH_NCCL
TEST_F(RealGpuHandles, CommunicatorReleaseIsBounded) {
  gs::NcclParams p;
  p.timeout = std::chrono::milliseconds(2000);
  gs::NcclComm comm(p);
  const auto start = std::chrono::steady_clock::now();
  const ReleaseOutcome r = comm.reset();
  EXPECT_TRUE(r == ReleaseOutcome::destroyed || r == ReleaseOutcome::aborted);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}
#endif
