// One translation unit that includes every public header and instantiates every class template
// over the runtimes a build has, so that static analysis (clang-tidy, see tests/tidy) sees all
// of the library's code, not only what some test happens to call. It is also compiled in every
// build, which keeps it honest.
#include <functional>
#include <memory>
#include <string>

#include "gpusafe/gpusafe.hpp"
#include "gpusafe/handles.hpp"
#include "gpusafe/memory_manager.hpp"
#include "gpusafe/model_cache.hpp"
#include "gpusafe/signals.hpp"
#include "gpusafe/stream_pool.hpp"
#include "gpusafe/testing/fake_runtime.hpp"

namespace gs = gpusafe;

#define GPUSAFE_INSTANTIATE_FOR(R)                         \
  template class gs::BasicBufferPool<R>;                   \
  template class gs::BasicPoolMemoryResource<R>;           \
  template class gs::BasicDeviceGuard<R>;                  \
  template class gs::BasicSafeCudaCleanup<R>;              \
  template class gs::BasicMemoryManager<R>;                \
  template class gs::BasicModelCache<R, std::string, int>; \
  template class gs::BasicStreamPool<R>;                   \
  template class gs::BasicRuntimeCallScope<R>;             \
  template class gs::BasicGpuHandle<gs::StreamTraits, R>;  \
  template class gs::BasicGpuHandle<gs::EventTraits, R>;   \
  template class gs::BasicGpuHandle<gs::GraphExecTraits, R>;

GPUSAFE_INSTANTIATE_FOR(gs::HostRuntime)
GPUSAFE_INSTANTIATE_FOR(gs::testing::FakeRuntime)
#if GPUSAFE_WITH_CUDA
GPUSAFE_INSTANTIATE_FOR(gs::CudaRuntime)
#endif

int main() {
  // The gate is an alias of a detail class: used, not explicitly instantiated.
  const gs::BasicRuntimeCallGate<gs::testing::FakeRuntime> gate;
  return gate ? 0 : 1;
}
