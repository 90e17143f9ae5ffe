// The program every consumer test builds: it includes gpusafe the way a user does and checks
// that the feature macros match what the consumer's build was told to expect.
//
//   GPUSAFE_EXPECT_CUDA   0 or 1; when not defined, whatever __has_include(<cuda_runtime_api.h>)
//                         says (gpusafe::gpusafe and a bare include/ copy define nothing)
//   GPUSAFE_EXPECT_TORCH  0 or 1; 0 when not defined
//   GPUSAFE_EXPECT_CUBLAS, _CUFFT, _CUDNN, _NCCL  1 when the consumer links that handle part
//                         (gpusafe::cublas, ...): its macro must be 1 and its handle must be made,
//                         or refused with NoGpu when there is no usable GPU
#include <exception>
#include <gpusafe/gpusafe.hpp>
#include <iostream>

#if defined(GPUSAFE_WITH_CUDA) && GPUSAFE_WITH_CUDA
#define CONSUMER_HAS_CUDA 1
#else
#define CONSUMER_HAS_CUDA 0
#endif

#if defined(GPUSAFE_WITH_TORCH) && GPUSAFE_WITH_TORCH
#define CONSUMER_HAS_TORCH 1
#else
#define CONSUMER_HAS_TORCH 0
#endif

#ifndef GPUSAFE_EXPECT_CUDA
#if __has_include(<cuda_runtime_api.h>)
#define GPUSAFE_EXPECT_CUDA 1
#else
#define GPUSAFE_EXPECT_CUDA 0
#endif
#endif

#ifndef GPUSAFE_EXPECT_TORCH
#define GPUSAFE_EXPECT_TORCH 0
#endif

static_assert(GPUSAFE_VERSION == GPUSAFE_VERSION_MAJOR * 10000 + GPUSAFE_VERSION_MINOR * 100 +
                                     GPUSAFE_VERSION_PATCH,
              "GPUSAFE_VERSION, for #if checks, agrees with the version parts");

#ifndef CONSUMER_NAME
#define CONSUMER_NAME "consumer"
#endif

/// Makes a handle of type H; counts a failure unless it works or there is no GPU to make it on.
template <class H, class Params>
int try_handle(const char* name, const Params& params) {
  try {
    H handle(params);
    return 0;
  } catch (const gpusafe::NoGpu&) {
    if (!gpusafe::is_cuda_available()) return 0;
    std::cerr << CONSUMER_NAME << ": " << name << ": NoGpu although CUDA is available\n";
  } catch (const std::exception& e) {
    std::cerr << CONSUMER_NAME << ": " << name << ": " << e.what() << "\n";
  }
  return 1;
}

#define CONSUMER_CHECK_HANDLE(PART, Handle, ...)                                                \
  if (GPUSAFE_WITH_##PART != 1) {                                                               \
    std::cerr << CONSUMER_NAME << ": GPUSAFE_WITH_" #PART " is not 1 although it was linked\n"; \
    ++failures;                                                                                 \
  }                                                                                             \
  failures += try_handle<gpusafe::Handle>(#Handle, gpusafe::__VA_ARGS__)

int main() {
  int failures = 0;
#if defined(GPUSAFE_EXPECT_CUBLAS) && GPUSAFE_EXPECT_CUBLAS
  CONSUMER_CHECK_HANDLE(CUBLAS, CublasHandle, CublasParams{});
#endif
#if defined(GPUSAFE_EXPECT_CUFFT) && GPUSAFE_EXPECT_CUFFT
  CONSUMER_CHECK_HANDLE(CUFFT, CufftPlan, CufftParams{1, {64, 0, 0}, gpusafe::kCufftC2C, 1});
#endif
#if defined(GPUSAFE_EXPECT_CUDNN) && GPUSAFE_EXPECT_CUDNN
  CONSUMER_CHECK_HANDLE(CUDNN, CudnnHandle, CudnnParams{});
#endif
#if defined(GPUSAFE_EXPECT_NCCL) && GPUSAFE_EXPECT_NCCL
  CONSUMER_CHECK_HANDLE(NCCL, NcclComm, NcclParams{});
#endif
  if (CONSUMER_HAS_CUDA != GPUSAFE_EXPECT_CUDA) {
    std::cerr << CONSUMER_NAME << ": GPUSAFE_WITH_CUDA is " << CONSUMER_HAS_CUDA << ", expected "
              << GPUSAFE_EXPECT_CUDA << "\n";
    ++failures;
  }
  if (CONSUMER_HAS_TORCH != GPUSAFE_EXPECT_TORCH) {
    std::cerr << CONSUMER_NAME << ": GPUSAFE_WITH_TORCH is " << CONSUMER_HAS_TORCH << ", expected "
              << GPUSAFE_EXPECT_TORCH << "\n";
    ++failures;
  }
  std::cout << CONSUMER_NAME << ": gpusafe " << gpusafe::version_string()
            << ", cuda compiled in: " << CONSUMER_HAS_CUDA
            << ", torch compiled in: " << CONSUMER_HAS_TORCH
            << ", cuda available: " << (gpusafe::is_cuda_available() ? "yes" : "no") << "\n";
  return failures == 0 ? 0 : 1;
}
