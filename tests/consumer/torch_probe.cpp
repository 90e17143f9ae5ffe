// A program linked to gpusafe::torch that includes no LibTorch header (fast to build): checks the
// definitions the target gives and runs without touching LibTorch.
#include <cstdio>

#include "gpusafe/runtime.hpp"

#ifndef EXPECT_CUDA
#error "define EXPECT_CUDA=0 or 1"
#endif
static_assert(GPUSAFE_WITH_TORCH == 1, "gpusafe::torch must define GPUSAFE_WITH_TORCH=1");
static_assert(GPUSAFE_WITH_CUDA == EXPECT_CUDA,
              "gpusafe::torch must follow LibTorch: GPUSAFE_WITH_CUDA=1 only with a CUDA LibTorch "
              "(or GPUSAFE_WITH_CUDA=ON)");

int main() {
  std::printf("torch probe: GPUSAFE_WITH_CUDA=%d, CUDA usable: %s\n", GPUSAFE_WITH_CUDA,
              gpusafe::is_cuda_available() ? "yes" : "no");
  return 0;
}
