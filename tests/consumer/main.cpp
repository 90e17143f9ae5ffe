// The program every consumer test builds: it includes gpusafe the way a user does and checks
// that the feature macros match what the consumer's build was told to expect.
//
//   GPUSAFE_EXPECT_CUDA   0 or 1; when not defined, whatever __has_include(<cuda_runtime_api.h>)
//                         says (gpusafe::gpusafe and a bare include/ copy define nothing)
//   GPUSAFE_EXPECT_TORCH  0 or 1; 0 when not defined
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

#ifndef CONSUMER_NAME
#define CONSUMER_NAME "consumer"
#endif

int main() {
  int failures = 0;
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
