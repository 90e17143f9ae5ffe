// Stream-ordered release on a real GPU: a slot released with record_stream() is not handed out
// again until the kernel that writes it has finished, and the data the kernel wrote is intact.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <vector>

#include "gpusafe/buffer_pool.hpp"

namespace gs = gpusafe;

namespace {

// Spins for about `cycles` clock ticks, then fills the buffer with `value`.
__global__ void slow_fill(std::uint32_t* out, std::size_t n, std::uint32_t value,
                          long long cycles) {
  const long long start = clock64();
  while (clock64() - start < cycles) {
  }
  for (std::size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += static_cast<std::size_t>(blockDim.x) * gridDim.x)
    out[i] = value;
}

constexpr long long kSlowCycles = 400'000'000;  // ~0.2 s at 2 GHz
constexpr std::size_t kWords = 1 << 18;         // 1 MiB

gs::BasicBufferPool<gs::CudaRuntime> one_slot_pool() {
  gs::BufferPoolOptions options;
  options.name = "stream-test";
  options.kind = gs::MemoryKind::device;
  options.classes = {{kWords * sizeof(std::uint32_t), 1}};
  options.fallback = gs::Fallback::error;
  return gs::BasicBufferPool<gs::CudaRuntime>(options);
}

class RealGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!gs::is_cuda_available())
      GTEST_SKIP() << "no usable GPU: " << gs::to_string(gs::cuda_status());
  }
};

TEST_F(RealGpu, SlotIsNotReusedBeforeTheStreamFinishes) {
  auto pool = one_slot_pool();
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  void* first_address = nullptr;
  {
    auto lease = pool.acquire(kWords * sizeof(std::uint32_t));
    first_address = lease.data();
    slow_fill<<<64, 256, 0, stream>>>(lease.as<std::uint32_t>(), kWords, 0xC0FFEEu, kSlowCycles);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    lease.record_stream(stream);
  }  // released while the kernel still runs
  auto early = pool.try_acquire(kWords * sizeof(std::uint32_t));
  EXPECT_FALSE(early) << "the slot was handed out while the kernel was still writing it";
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  auto later = pool.try_acquire(kWords * sizeof(std::uint32_t));
  ASSERT_TRUE(later);
  EXPECT_EQ(later.data(), first_address);
  std::vector<std::uint32_t> host(kWords);
  ASSERT_EQ(
      cudaMemcpy(host.data(), later.data(), kWords * sizeof(std::uint32_t), cudaMemcpyDeviceToHost),
      cudaSuccess);
  EXPECT_EQ(host.front(), 0xC0FFEEu);
  EXPECT_EQ(host.back(), 0xC0FFEEu);
  later.release();
  cudaStreamDestroy(stream);
}

TEST_F(RealGpu, AcquireForWaitsForTheStreamInsteadOfFailing) {
  auto pool = one_slot_pool();
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  {
    auto lease = pool.acquire(1024);
    slow_fill<<<64, 256, 0, stream>>>(lease.as<std::uint32_t>(), kWords, 7u, kSlowCycles / 4);
    lease.record_stream(stream);
  }
  auto waited = pool.acquire_for(1024, std::chrono::seconds(5));
  EXPECT_TRUE(waited);
  EXPECT_EQ(cudaStreamQuery(stream), cudaSuccess) << "handed out before the stream finished";
  waited.release();
  cudaStreamDestroy(stream);
}

TEST_F(RealGpu, DeviceBuffersAreRealDeviceMemory) {
  auto pool = one_slot_pool();
  auto lease = pool.acquire(4096);
  EXPECT_FALSE(lease.is_fallback());
  cudaPointerAttributes attributes{};
  ASSERT_EQ(cudaPointerGetAttributes(&attributes, lease.data()), cudaSuccess);
  EXPECT_EQ(attributes.type, cudaMemoryTypeDevice);
  EXPECT_EQ(attributes.device, 0);
}

TEST_F(RealGpu, NotifyDeviceResetDropsOldSlabsWithoutTouchingTheNewContext) {
  auto pool = one_slot_pool();
  auto lease = pool.acquire(4096);
  ASSERT_EQ(cudaDeviceReset(), cudaSuccess);
  gs::notify_device_reset(0);
  lease.release();  // from the old context: dropped, not freed into the new one
  auto fresh = pool.acquire(4096);
  ASSERT_TRUE(fresh);
  cudaPointerAttributes attributes{};
  ASSERT_EQ(cudaPointerGetAttributes(&attributes, fresh.data()), cudaSuccess);
  EXPECT_EQ(attributes.type, cudaMemoryTypeDevice);
  EXPECT_EQ(cudaMemset(fresh.data(), 0, 4096), cudaSuccess);
}

}  // namespace
