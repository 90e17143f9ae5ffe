// SPDX-License-Identifier: MIT
// gpusafe/detail/torch_tensor.hpp: the parts of as_tensor() (gpusafe/torch.hpp): the checks of
// the view against the lease (sizes, strides, dtype, alignment, device) with their messages, and
// the box that hands the lease to the tensor's storage, which gives it back when the storage dies.
// Include gpusafe/torch.hpp rather than this.
//
// Thread safety: stateless functions; a box belongs to one tensor storage. Teardown: the box's
// release returns the buffer through the lease, whose release path is teardown-safe.
#ifndef GPUSAFE_DETAIL_TORCH_TENSOR_HPP
#define GPUSAFE_DETAIL_TORCH_TENSOR_HPP

#include <ATen/ATen.h>
#include <torch/cuda.h>
#include <torch/types.h>

#include "gpusafe/detail/torch_config.hpp"

#if GPUSAFE_TORCH_WITH_CUDA
#include <c10/cuda/CUDAStream.h>
#endif

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <utility>

#include "gpusafe/buffer_lease.hpp"
#include "gpusafe/config.hpp"
#include "gpusafe/error.hpp"
#include "gpusafe/runtime.hpp"

GPUSAFE_NAMESPACE_BEGIN

namespace detail {

inline std::string format_sizes(at::IntArrayRef sizes) {
  std::string s = "[";
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(sizes[i]);
  }
  return s + "]";
}

inline std::string as_tensor_what(at::IntArrayRef sizes, const at::IntArrayRef* strides,
                                  at::ScalarType dtype) {
  std::string what = "as_tensor(sizes " + format_sizes(sizes);
  if (strides) what += ", strides " + format_sizes(*strides);
  return what + ", " + c10::toString(dtype) + ")";
}

/// Elements of storage the view (sizes, strides) spans; throws InvalidArgument on negative values
/// or overflow.
inline std::uint64_t span_elements(at::IntArrayRef sizes, const at::IntArrayRef* strides,
                                   const std::string& what) {
  constexpr std::uint64_t kMax =
      static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  if (strides && strides->size() != sizes.size())
    throw InvalidArgument(what + ": " + std::to_string(strides->size()) + " strides for " +
                          std::to_string(sizes.size()) + " dimensions; give one stride per size");
  bool empty = false;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    if (sizes[i] < 0)
      throw InvalidArgument(what + ": size " + std::to_string(sizes[i]) + " of dimension " +
                            std::to_string(i) + " is negative; sizes must be >= 0");
    if (strides && (*strides)[i] < 0)
      throw InvalidArgument(what + ": stride " + std::to_string((*strides)[i]) + " of dimension " +
                            std::to_string(i) + " is negative; strides must be >= 0");
    if (sizes[i] == 0) empty = true;
  }
  if (empty) return 0;
  std::uint64_t span = 1;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    const auto n = static_cast<std::uint64_t>(sizes[i]);
    if (strides) {
      const auto step = static_cast<std::uint64_t>((*strides)[i]);
      if (step != 0 && n - 1 > (kMax - span) / step)
        throw InvalidArgument(what + ": the view spans more than 2^63 elements; check the sizes");
      span += (n - 1) * step;
    } else {
      if (n > kMax / span)
        throw InvalidArgument(what + ": the element count overflows; check the sizes");
      span *= n;
    }
  }
  return span;
}

/// The device a tensor over `lease` lives on.
inline c10::Device device_for_lease(const BufferLease& lease, const std::string& what) {
  if (lease.kind() != MemoryKind::device || lease.is_fallback()) return c10::Device(c10::kCPU);
  const int device = lease.device();
  check_gpu_request(device, what);
  if (!torch::cuda::is_available())
    throw InvalidArgument(what + ": the lease holds memory of GPU " + std::to_string(device) +
                          ", but this LibTorch has no usable CUDA (a CPU-only build, or no "
                          "device visible to it); lease host memory, or use LibTorch with CUDA");
  const auto count = static_cast<int>(torch::cuda::device_count());
  if (device < 0 || device >= count)
    throw InvalidArgument(what + ": the lease is on GPU " + std::to_string(device) +
                          " but LibTorch sees " + std::to_string(count) +
                          " GPU(s); check CUDA_VISIBLE_DEVICES");
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(device));
}

/// Owns the lease for the tensor's storage. `armed` is set once the tensor exists: a deleter call
/// before that (from_blob failing after wrapping the pointer) must leave the lease to the caller.
struct LeaseBox {
  explicit LeaseBox(BufferLease&& l) noexcept : lease(std::move(l)) {}
  BufferLease lease;
  bool armed = false;
  StreamHandle stream = nullptr;  ///< LibTorch's stream when the tensor was made (CUDA)
  bool has_stream = false;        ///< set for CUDA tensors: the default stream's handle is null
};

inline void release_lease_box(void* context) noexcept {
  auto* box = static_cast<LeaseBox*>(context);
  if (!box->armed) return;
#if GPUSAFE_TORCH_WITH_CUDA
  // Like LibTorch's own allocator: the memory is reused only after the work queued on the stream
  // it was made on has finished.
  if (box->has_stream && box->lease && box->lease.kind() == MemoryKind::device) {
    RuntimeCallGate gate;
    if (gate) {
      try {
        box->lease.record_stream(box->stream);
      } catch (...) {
      }
    }
  }
#endif
  delete box;  // ~BufferLease is noexcept and knows what to do at exit or in a forked child
}

inline at::Tensor as_tensor_impl(BufferLease& lease, at::IntArrayRef sizes,
                                 const at::IntArrayRef* strides, at::ScalarType dtype) {
  const std::string what = as_tensor_what(sizes, strides, dtype);
  if (!lease)
    throw InvalidArgument(what + ": the lease is empty (moved from or released); acquire a buffer");
  std::size_t item = 0;
  try {
    item = c10::elementSize(dtype);
  } catch (...) {
  }
  if (item == 0)
    throw InvalidArgument(what + ": dtype has no fixed element size; use a numeric dtype");
  const std::uint64_t elements = span_elements(sizes, strides, what);
  if (elements > std::numeric_limits<std::uint64_t>::max() / item)
    throw InvalidArgument(what + ": the byte size overflows; check the sizes");
  const std::uint64_t bytes = elements * item;
  if (bytes > lease.size())
    throw InvalidArgument(what + ": needs " + std::to_string(bytes) +
                          " bytes but the lease holds " + std::to_string(lease.size()) +
                          "; acquire at least " + std::to_string(bytes) +
                          " bytes or use smaller sizes");
  if (reinterpret_cast<std::uintptr_t>(lease.data()) % item != 0)
    throw InvalidArgument(what + ": the buffer address is not aligned to the " +
                          std::to_string(item) + "-byte element size; use a pool whose buffers " +
                          "are aligned (the default) or a smaller dtype");
  const c10::Device device = device_for_lease(lease, what);

  std::vector<std::int64_t> contiguous;
  if (!strides) {
    contiguous.assign(sizes.size(), 1);
    for (std::size_t i = sizes.size(); i > 1; --i)
      contiguous[i - 2] = contiguous[i - 1] * std::max<std::int64_t>(sizes[i - 1], 1);
  }
  const at::IntArrayRef used_strides = strides ? *strides : at::IntArrayRef(contiguous);

  auto box = std::make_unique<LeaseBox>(std::move(lease));
  void* data = box->lease.data();
  LeaseBox* raw = box.get();
  at::Tensor tensor;
  try {
#if GPUSAFE_TORCH_WITH_CUDA
    if (device.is_cuda()) {
      raw->stream = static_cast<StreamHandle>(
          c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device.index())).stream());
      raw->has_stream = true;
    }
#endif
    tensor = torch::from_blob(
        data, sizes, used_strides, [raw](void*) { release_lease_box(raw); },
        at::TensorOptions().dtype(dtype).device(device));
  } catch (const std::exception& e) {
    lease = std::move(box->lease);  // strong guarantee: the caller keeps the buffer
    throw InvalidArgument(what + ": LibTorch refused the buffer (" + e.what() + ")");
  }
  raw->armed = true;
  (void)box.release();  // owned by the tensor's storage from now on
  return tensor;
}

}  // namespace detail

GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_TORCH_TENSOR_HPP
