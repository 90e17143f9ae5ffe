// tests/hazards/libs/shared_lib.hpp: the C interface of the two hazard test libraries (liba,
// libb), each built with hidden visibility so that each holds its own copy of the gpusafe
// headers (its own FakeRuntime state, process state and exit handler), as two independently
// built plugins of one program would.
//
// A resource is destroyed through its virtual destructor, so whichever library or program
// destroys it, the code (and the copy of the runtime) of the library that made it frees it.
#ifndef GPUSAFE_TESTS_HAZARDS_LIBS_SHARED_LIB_HPP
#define GPUSAFE_TESTS_HAZARDS_LIBS_SHARED_LIB_HPP

#include <cstddef>

/// A GPU resource made by one of the libraries; destroy it with any library's destroy function.
struct gpusafe_hazard_resource {
  virtual ~gpusafe_hazard_resource() = default;
};

#define GPUSAFE_HAZARD_LIB_API extern "C" __attribute__((visibility("default")))

/// Declares the functions of library `prefix` (gpusafe_hazard_liba, gpusafe_hazard_libb).
#define GPUSAFE_HAZARD_LIB_DECLARE(prefix)                                                         \
  /* use_fake: 1 = FakeRuntime (reset, trap after teardown), 0 = DefaultRuntime */                 \
  GPUSAFE_HAZARD_LIB_API void prefix##_arm(int use_fake);                                          \
  GPUSAFE_HAZARD_LIB_API gpusafe_hazard_resource* prefix##_create(std::size_t bytes);              \
  GPUSAFE_HAZARD_LIB_API void prefix##_destroy(gpusafe_hazard_resource* r) noexcept;               \
  /* The library keeps r in a static container destroyed at exit. */                               \
  GPUSAFE_HAZARD_LIB_API void prefix##_keep(gpusafe_hazard_resource* r);                           \
  /* Resources made by this library and not yet destroyed. */                                      \
  GPUSAFE_HAZARD_LIB_API long prefix##_live() noexcept;                                            \
  /* Frees of pointers this library's FakeRuntime copy did not allocate. */                        \
  GPUSAFE_HAZARD_LIB_API unsigned long prefix##_invalid_frees() noexcept;                          \
  /* A resource that also holds a stream, an event and a cuBLAS handle. */                         \
  GPUSAFE_HAZARD_LIB_API gpusafe_hazard_resource* prefix##_create_with_handles(std::size_t bytes); \
  /* Destroys of handles this library's FakeRuntime copy did not make. */                          \
  GPUSAFE_HAZARD_LIB_API unsigned long prefix##_handle_faults() noexcept;

GPUSAFE_HAZARD_LIB_DECLARE(gpusafe_hazard_liba)
GPUSAFE_HAZARD_LIB_DECLARE(gpusafe_hazard_libb)

#if defined(GPUSAFE_HAZARD_LIB_IMPLEMENTATION)
#include <atomic>
#include <memory>
#include <optional>
#include <vector>

#include "../hazard.hpp"
#include "gpusafe/guards.hpp"
#include "gpusafe/handles.hpp"
#include "gpusafe/handles/cublas.hpp"

namespace gpusafe_hazard_lib {

inline std::atomic<int> use_fake{1};
inline std::atomic<long> live{0};

/// A resource as an application would write it: a device block, cleaned up with
/// safe_tensor_cleanup under a SafeCudaCleanup that synchronizes and trims caches.
template <class Runtime>
class Resource final : public gpusafe_hazard_resource {
 public:
  explicit Resource(std::size_t bytes) : block_(std::in_place, bytes) { live.fetch_add(1); }
  ~Resource() override {
    {
      gpusafe::BasicSafeCudaCleanup<Runtime> cleanup({true, true, 0});
      cleanup.defer([this] { gpusafe::safe_tensor_cleanup(block_); });
    }
    live.fetch_sub(1);
  }

 private:
  std::optional<gpusafe_hazards::DeviceBlock<Runtime>> block_;
};

/// A resource that also holds GPU handles (none when Runtime has no GPU).
template <class Runtime>
class ResourceWithHandles final : public gpusafe_hazard_resource {
 public:
  explicit ResourceWithHandles(std::size_t bytes) : resource_(bytes) {
    try {
      stream_.emplace(gpusafe::StreamParams{});
      event_.emplace(gpusafe::EventParams{});
      blas_.emplace(gpusafe::CublasParams{});
    } catch (const gpusafe::NoGpu&) {
    }
  }

 private:
  Resource<Runtime> resource_;
  std::optional<gpusafe::BasicStream<Runtime>> stream_;
  std::optional<gpusafe::BasicEvent<Runtime>> event_;
  std::optional<gpusafe::BasicCublasHandle<Runtime>> blas_;
};

/// Built when the library is loaded, so destroyed after its exit handler has run.
inline std::vector<std::unique_ptr<gpusafe_hazard_resource>> kept;

}  // namespace gpusafe_hazard_lib

#define GPUSAFE_HAZARD_LIB_DEFINE(prefix)                                                        \
  void prefix##_arm(int fake) {                                                                  \
    gpusafe_hazard_lib::use_fake.store(fake);                                                    \
    if (fake) {                                                                                  \
      gpusafe::testing::FakeRuntime::reset();                                                    \
      gpusafe::testing::FakeRuntime::trap_after_teardown(true);                                  \
    }                                                                                            \
  }                                                                                              \
  gpusafe_hazard_resource* prefix##_create(std::size_t bytes) {                                  \
    if (gpusafe_hazard_lib::use_fake.load())                                                     \
      return new gpusafe_hazard_lib::Resource<gpusafe::testing::FakeRuntime>(bytes);             \
    return new gpusafe_hazard_lib::Resource<gpusafe::DefaultRuntime>(bytes);                     \
  }                                                                                              \
  void prefix##_destroy(gpusafe_hazard_resource* r) noexcept { delete r; }                       \
  void prefix##_keep(gpusafe_hazard_resource* r) { gpusafe_hazard_lib::kept.emplace_back(r); }   \
  long prefix##_live() noexcept { return gpusafe_hazard_lib::live.load(); }                      \
  unsigned long prefix##_invalid_frees() noexcept {                                              \
    return static_cast<unsigned long>(gpusafe::testing::FakeRuntime::invalid_frees());           \
  }                                                                                              \
  gpusafe_hazard_resource* prefix##_create_with_handles(std::size_t bytes) {                     \
    if (gpusafe_hazard_lib::use_fake.load())                                                     \
      return new gpusafe_hazard_lib::ResourceWithHandles<gpusafe::testing::FakeRuntime>(bytes);  \
    return new gpusafe_hazard_lib::ResourceWithHandles<gpusafe::DefaultRuntime>(bytes);          \
  }                                                                                              \
  unsigned long prefix##_handle_faults() noexcept {                                              \
    return static_cast<unsigned long>(gpusafe::testing::FakeRuntime::invalid_handle_destroys()); \
  }
#endif

#endif  // GPUSAFE_TESTS_HAZARDS_LIBS_SHARED_LIB_HPP
