// The Runtime contract (gpusafe/testing/runtime_contract.hpp) over the library's own runtimes:
// HostRuntime, testing::FakeRuntime and DefaultRuntime (CudaRuntime in CUDA builds: the
// no-driver path on a machine without a GPU, the real one on a GPU).
#include "gpusafe/testing/runtime_contract.hpp"

namespace gpusafe::testing {

using Runtimes = ::testing::Types<HostRuntime, FakeRuntime, DefaultRuntime>;
INSTANTIATE_TYPED_TEST_SUITE_P(Gpusafe, RuntimeContract, Runtimes);

}  // namespace gpusafe::testing
