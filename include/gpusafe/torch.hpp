// SPDX-License-Identifier: MIT
// gpusafe/torch.hpp: LibTorch integration.
//
// - safe_tensor_cleanup() for at::Tensor (torch::Tensor), optionals and containers of tensors,
//   torch::nn modules (holders such as torch::nn::Linear, and std::shared_ptr<Module>) and
//   torch::jit::Module, through CleanupTraits specialisations.
// - as_tensor(lease, sizes, dtype): a zero-copy tensor over a BufferLease; the buffer returns to
//   its pool when the last tensor sharing the storage dies.
// - module_bytes(module): bytes of parameters and buffers, for ModelCache budgets.
// - Through gpusafe/torch_modules.hpp (included at the end): ModelCache loaders for torch::save
//   and TorchScript files (the module's train/eval mode chosen by the caller), a loader that
//   restores a checkpoint or builds a fresh module, save_checkpoint, torch_device(),
//   pool_options_for(device), and ModuleCache / get_module for modules of several types.
// - A Reclaimable for LibTorch's CUDA caching allocator, registered once per process, so that
//   safe_cuda_empty_cache(), shutdown() and MemoryManager reach it (a no-op without CUDA).
// - torch_cuda_agreement(): gpusafe's and LibTorch's views of CUDA side by side.
//
// Works with LibTorch 1.13 (CPU) and LibTorch 2.x (CPU or CUDA). CUDA-specific parts are compiled
// only when GPUSAFE_TORCH_WITH_CUDA is 1, which is detected from LibTorch's CUDA headers unless the
// build defines it.
//
// Thread safety: the free functions may be called from any thread; a tensor or module must not be
// cleaned up while another thread uses the same object (as with any C++ object).
// Teardown: cleanup is noexcept; once the process is exiting or is a forked child, a tensor whose
// memory LibTorch's CPU allocator did not make (CUDA, pinned, external) and a module holding such a
// tensor are leaked on purpose instead of destroyed. The allocator Reclaimable makes no CUDA call
// when exiting, in a forked child or without a usable GPU; it lives in leaked storage.
#ifndef GPUSAFE_TORCH_HPP
#define GPUSAFE_TORCH_HPP

#include <ATen/ATen.h>
#include <c10/core/CPUAllocator.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/serialization/import.h>
#include <torch/cuda.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/serialize.h>

#include "gpusafe/detail/torch_config.hpp"

#if GPUSAFE_TORCH_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <new>
#include <sstream>
#include <string>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <vector>

#include "gpusafe/buffer_lease.hpp"
#include "gpusafe/detail/torch_tensor.hpp"
#include "gpusafe/error.hpp"
#include "gpusafe/guards.hpp"
#include "gpusafe/lifecycle.hpp"
#include "gpusafe/log.hpp"
#include "gpusafe/model_cache.hpp"
#include "gpusafe/runtime.hpp"

GPUSAFE_NAMESPACE_BEGIN

namespace detail {

/// Whether destroying the last reference to `t` could call a GPU runtime: true unless its memory
/// comes from LibTorch's CPU allocator (or it holds none). Never throws; unsure means true.
inline bool tensor_needs_runtime(const at::Tensor& t) noexcept {
  try {
    if (!t.defined()) return false;
    if (t.device().type() != c10::kCPU) return true;
    if (t.is_sparse() || t.is_mkldnn()) return false;  // host-only layouts without a plain storage
    if (!t.has_storage()) return false;
    const c10::Storage& storage = t.storage();
    if (storage.data() == nullptr) return false;
    return storage.data_ptr().get_deleter() != c10::GetCPUAllocator()->raw_deleter();
  } catch (...) {
    return true;
  }
}

template <class Tensors>
bool any_tensor_needs_runtime(const Tensors& tensors) {
  for (const auto& t : tensors)
    if (tensor_needs_runtime(t)) return true;
  return false;
}

/// Whether a module (nn::Module or jit::Module; recursively) holds a tensor that
/// tensor_needs_runtime(). Unsure: true.
template <class M>
bool module_needs_runtime(const M& m) noexcept {
  try {
    return any_tensor_needs_runtime(m.parameters(true)) ||
           any_tensor_needs_runtime(m.buffers(true));
  } catch (...) {
    return true;
  }
}

/// Whether a jit::Module refers to an object (a default-constructed one does not).
inline bool jit_module_holds(const torch::jit::Module& m) noexcept {
  try {
    return static_cast<bool>(m._ivalue());
  } catch (...) {
    return false;  // _ivalue() asserts on an empty module
  }
}

inline bool release_tensor(at::Tensor& t) noexcept {
  if (!t.defined()) return false;
  if (cleanup_runtime_is_gone() && tensor_needs_runtime(t)) {
    // Keeps the reference count forever: no destructor, no deleter, no runtime call.
    mark_deliberate_leak(t.unsafeReleaseTensorImpl());
    return true;
  }
  try {
    t.reset();
  } catch (...) {
    log_cleanup_failure_once<at::Tensor>("a tensor's deleter threw");
    return false;
  }
  return true;
}

template <class M>
bool release_module_ptr(std::shared_ptr<M>& p) noexcept {
  if (!p) return false;
  if (cleanup_runtime_is_gone() && module_needs_runtime(*p)) return leak_for_teardown(p);
  // shared_ptr destroys the module inside noexcept code: a module whose destructor throws ends
  // the process there (not promised, see safe_tensor_cleanup in guards.hpp); LibTorch's module
  // destructors do not throw.
  p.reset();
  return true;
}

}  // namespace detail

/// safe_tensor_cleanup(tensor): leaves the tensor undefined. Once the process is exiting or is a
/// forked child, a tensor whose memory needs the GPU runtime to free is leaked instead.
template <>
struct CleanupTraits<at::Tensor> {
  static bool release(at::Tensor& t) noexcept { return detail::release_tensor(t); }
};

/// safe_tensor_cleanup(shared_ptr<Module>) for torch::nn modules: leaks the reference at teardown
/// only when the module holds CUDA (or other runtime-owned) tensors.
template <class M>
struct CleanupTraits<std::shared_ptr<M>,
                     std::enable_if_t<std::is_base_of_v<torch::nn::Module, M>>> {
  static bool release(std::shared_ptr<M>& p) noexcept { return detail::release_module_ptr(p); }
};

/// safe_tensor_cleanup(holder) for torch::nn module holders (torch::nn::Linear, Sequential, ...
/// and TORCH_MODULE types): leaves the holder empty (`holder.is_empty()`).
template <class H>
struct CleanupTraits<
    H, std::enable_if_t<std::is_base_of_v<torch::nn::ModuleHolder<typename H::ContainedType>, H>>> {
  static bool release(H& holder) noexcept {
    if (holder.is_empty()) return false;
    std::shared_ptr<typename H::ContainedType> p;
    try {
      p = holder.ptr();
      holder = H(nullptr);
    } catch (...) {
      detail::log_cleanup_failure_once<H>("could not empty a module holder");
      return false;
    }
    return detail::release_module_ptr(p);
  }
};

/// safe_tensor_cleanup(jit_module) for TorchScript modules: leaves a default-constructed module.
template <>
struct CleanupTraits<torch::jit::Module> {
  static bool release(torch::jit::Module& m) noexcept {
    if (!detail::jit_module_holds(m)) return false;
    if (detail::cleanup_runtime_is_gone() && detail::module_needs_runtime(m)) {
      if (!leak_for_teardown(m)) return false;
      try {
        m = torch::jit::Module();
      } catch (...) {
      }
      return true;
    }
    try {
      m = torch::jit::Module();
    } catch (...) {
      detail::log_cleanup_failure_once<torch::jit::Module>(
          "a TorchScript module's destructor threw");
      return false;
    }
    return true;
  }
};

// ---- as_tensor (its checks and the storage that owns the lease: detail/torch_tensor.hpp) ----

/// A tensor over the lease's memory, without a copy. The tensor's storage takes the lease: the
/// buffer goes back to its pool when the last tensor sharing that storage dies (views, slices and
/// reshapes share it; clone() and to() copies do not). Device memory gives a CUDA tensor on
/// lease.device(); host, pinned and CPU-fallback memory give a CPU tensor. Contiguous layout.
///
/// Throws InvalidArgument (the lease is then left untouched) when the lease is empty, the sizes
/// are negative or overflow, numel * element size exceeds lease.size(), the buffer is not aligned
/// to the element size, or the memory is on a GPU this LibTorch cannot use; ForkedChild or
/// ShuttingDown for device memory in a forked child or at exit.
///
///   gpusafe::BufferLease lease = pool.acquire(1000 * 64 * sizeof(float));
///   at::Tensor emb = gpusafe::as_tensor(std::move(lease), {1000, 64}, at::kFloat);
inline at::Tensor as_tensor(BufferLease&& lease, at::IntArrayRef sizes, at::ScalarType dtype) {
  return detail::as_tensor_impl(lease, sizes, nullptr, dtype);
}

/// As above with explicit strides (in elements, >= 0); the check is on the span the view covers.
inline at::Tensor as_tensor(BufferLease&& lease, at::IntArrayRef sizes, at::IntArrayRef strides,
                            at::ScalarType dtype) {
  return detail::as_tensor_impl(lease, sizes, &strides, dtype);
}

// ---- module_bytes ---------------------------------------------------------------------------

namespace detail {

template <class Tensors>
void add_tensor_bytes(const Tensors& tensors, std::unordered_set<const void*>& seen,
                      std::size_t& total) {
  for (const auto& t : tensors) {
    if (!t.defined()) continue;
    if (!seen.insert(t.unsafeGetTensorImpl()).second) continue;  // shared (tied) tensors once
    total += static_cast<std::size_t>(t.numel()) * static_cast<std::size_t>(t.element_size());
  }
}

/// Bytes of a module's (nn::Module or jit::Module) parameters and buffers, recursively; a tensor
/// shared between submodules counts once.
template <class M>
std::size_t module_tensor_bytes(const M& module) {
  std::unordered_set<const void*> seen;
  std::size_t total = 0;
  add_tensor_bytes(module.parameters(true), seen, total);
  add_tensor_bytes(module.buffers(true), seen, total);
  return total;
}

}  // namespace detail

/// Bytes of a module's parameters and buffers, recursively; a tensor shared between submodules
/// counts once. For ModelCache budgets (Loaded<Model>::bytes).
inline std::size_t module_bytes(const torch::nn::Module& module) {
  return detail::module_tensor_bytes(module);
}

/// module_bytes of the module a holder (torch::nn::Linear, ...) refers to; 0 for an empty one.
template <class M>
std::size_t module_bytes(const torch::nn::ModuleHolder<M>& holder) {
  return holder.is_empty() ? 0 : module_bytes(*holder.ptr());
}

/// module_bytes of a shared module; 0 for a null pointer.
template <class M, class = std::enable_if_t<std::is_base_of_v<torch::nn::Module, M>>>
std::size_t module_bytes(const std::shared_ptr<M>& module) {
  return module ? module_bytes(static_cast<const torch::nn::Module&>(*module)) : 0;
}

/// Bytes of a TorchScript module's parameters and buffers (attributes of its submodules
/// included); 0 for an empty module.
inline std::size_t module_bytes(const torch::jit::Module& module) {
  return detail::jit_module_holds(module) ? detail::module_tensor_bytes(module) : 0;
}

// ---- LibTorch's CUDA caching allocator ------------------------------------------------------

/// Empties LibTorch's CUDA caching allocator on reclaim (ReclaimCost::framework_cache) and reports
/// its allocated (in use) and reserved bytes summed over devices in usage(). Its blocks are cached
/// and idle, so it empties at every level, light included: safe_cuda_empty_cache() and every
/// periodic cleanup of a MemoryManager it is attached to empty it, as torch.cuda.empty_cache()
/// does. Without CUDA in LibTorch or gpusafe it does nothing and reports zeros. Makes no CUDA call
/// when the process is exiting, in a forked child or without a usable GPU. Never throws.
class TorchCudaAllocatorReclaimable final : public Reclaimable {
 public:
  /// Whether a reclaim at `level` empties the cache: at every level (see ReclaimLevel).
  static constexpr bool empties_at(ReclaimLevel level) noexcept {
    return level == ReclaimLevel::light || level == ReclaimLevel::heavy ||
           level == ReclaimLevel::shutdown;
  }

  std::size_t reclaim(const ReclaimRequest& request) noexcept override {
    if (!empties_at(request.level)) return 0;
#if GPUSAFE_TORCH_WITH_CUDA
    detail::RuntimeCallGate gate;
    if (!gate || !is_cuda_available()) return 0;
    try {
      const std::size_t before = query().bytes_reserved;
      c10::cuda::CUDACachingAllocator::emptyCache();
      const std::size_t after = query().bytes_reserved;
      return before > after ? before - after : 0;
    } catch (...) {
      return 0;
    }
#else
    return 0;
#endif
  }
  ReclaimCost reclaim_cost() const noexcept override { return ReclaimCost::framework_cache; }
  const char* reclaimable_name() const noexcept override {
    return "libtorch_cuda_caching_allocator";
  }
  ResourceUsage usage() const noexcept override {
#if GPUSAFE_TORCH_WITH_CUDA
    detail::RuntimeCallGate gate;
    if (!gate || !is_cuda_available()) return {};
    try {
      return query();
    } catch (...) {
      return {};
    }
#else
    return {};
#endif
  }

 private:
#if GPUSAFE_TORCH_WITH_CUDA
  static ResourceUsage query() {
    ResourceUsage u;
    const int count = cuda_device_count();
    for (int d = 0; d < count; ++d) {
      try {
        // Index 0 of each StatArray is the aggregate over the small and large pools.
        const auto stats =
            c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(d));
        u.bytes_in_use +=
            static_cast<std::size_t>(std::max<std::int64_t>(0, stats.allocated_bytes[0].current));
        u.bytes_reserved +=
            static_cast<std::size_t>(std::max<std::int64_t>(0, stats.reserved_bytes[0].current));
        u.items += static_cast<std::size_t>(std::max<std::int64_t>(0, stats.segment[0].current));
      } catch (...) {
        // LibTorch has not initialised CUDA on this device: it holds nothing there.
      }
    }
    u.device = count == 1 ? 0 : -1;
    return u;
  }
#endif
};

namespace detail {

inline TorchCudaAllocatorReclaimable& torch_allocator_instance() noexcept {
  static NoDestructor<TorchCudaAllocatorReclaimable> instance;
  return instance.get();
}

inline bool register_torch_allocator() noexcept {
  try {
    static NoDestructor<ReclaimRegistration> registration(torch_allocator_instance());
    return registration.get().active();
  } catch (...) {
    log(LogLevel::warning,
        "gpusafe/torch.hpp: could not register LibTorch's CUDA caching allocator; "
        "safe_cuda_empty_cache() will not empty it");
    return false;
  }
}

/// Registered at static initialisation, once per binary (leaked, valid through teardown).
inline const bool torch_allocator_registered = register_torch_allocator();

}  // namespace detail

/// The registered Reclaimable for LibTorch's CUDA caching allocator (for MemoryManager::attach or
/// direct use). The handle never dangles: the object is never destroyed. Throws std::bad_alloc
/// only on the first call, when memory is exhausted.
inline std::shared_ptr<Reclaimable> torch_allocator_reclaimable() {
  (void)detail::register_torch_allocator();
  static NoDestructor<std::shared_ptr<Reclaimable>> handle(&detail::torch_allocator_instance(),
                                                           [](Reclaimable*) {});
  return handle.get();
}

// ---- agreement with LibTorch ----------------------------------------------------------------

/// gpusafe's and LibTorch's answers to "is CUDA usable, on how many devices".
struct TorchCudaAgreement {
  bool gpusafe_available = false;
  bool torch_available = false;
  int gpusafe_devices = 0;
  int torch_devices = 0;
  /// Whether the two can be compared: both were built with CUDA. Otherwise one side says "no
  /// CUDA" by construction.
  bool comparable = false;
  /// comparable and both answers match (or not comparable and neither claims a GPU the other
  /// could not see: gpusafe without CUDA reports none).
  bool agree = false;
  std::string describe() const {
    std::ostringstream os;
    os << "gpusafe: " << (gpusafe_available ? "available" : "unavailable") << ", "
       << gpusafe_devices
       << " device(s); LibTorch: " << (torch_available ? "available" : "unavailable") << ", "
       << torch_devices << " device(s); " << (comparable ? "comparable" : "not comparable") << ", "
       << (agree ? "agree" : "DISAGREE");
    return os.str();
  }
};

/// Compares is_cuda_available()/cuda_device_count() with torch::cuda::is_available()/
/// device_count(). Acquire side (it may initialise CUDA in LibTorch); do not call it at exit or in
/// a forked child.
inline TorchCudaAgreement torch_cuda_agreement() {
  TorchCudaAgreement a;
  a.gpusafe_available = is_cuda_available();
  a.gpusafe_devices = cuda_device_count();
  a.torch_available = torch::cuda::is_available();
  a.torch_devices = static_cast<int>(torch::cuda::device_count());
  a.comparable = GPUSAFE_WITH_CUDA && GPUSAFE_TORCH_WITH_CUDA;
  if (a.comparable) {
    a.agree = a.gpusafe_available == a.torch_available && a.gpusafe_devices == a.torch_devices;
  } else {
    a.agree = !a.gpusafe_available || a.torch_available == a.gpusafe_available;
  }
  return a;
}

GPUSAFE_NAMESPACE_END

// Loaders, device choice and the cache of modules of several types.
#include "gpusafe/torch_modules.hpp"

#endif  // GPUSAFE_TORCH_HPP
