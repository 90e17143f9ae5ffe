// SPDX-License-Identifier: MIT
// gpusafe/detail/torch_config.hpp: what every LibTorch header of gpusafe checks first: a build
// with GPUSAFE_WITH_TORCH=1, LibTorch's headers on the include path, exceptions on (LibTorch
// reports its errors as exceptions), and GPUSAFE_TORCH_WITH_CUDA, the LibTorch-with-CUDA switch.
// Include gpusafe/torch.hpp rather than this.
//
// Thread safety: compile-time only. Teardown: nothing to tear down.
#ifndef GPUSAFE_DETAIL_TORCH_CONFIG_HPP
#define GPUSAFE_DETAIL_TORCH_CONFIG_HPP

#if !defined(GPUSAFE_WITH_TORCH)
#define GPUSAFE_WITH_TORCH 1
#elif !GPUSAFE_WITH_TORCH
#error \
    "gpusafe's LibTorch headers need GPUSAFE_WITH_TORCH=1 for the whole build: link gpusafe::torch (which defines it) or define it on the command line; including another gpusafe header first without it is not enough"
#endif

#if !defined(__has_include)
#error "gpusafe's LibTorch headers need a compiler with __has_include"
#elif !__has_include(<torch/nn/module.h>) || !__has_include(<ATen/ATen.h>)
#error \
    "gpusafe's LibTorch headers need the LibTorch headers: link gpusafe::torch (find_package(Torch)) or add LibTorch's include/ and include/torch/csrc/api/include to the include path"
#endif

#include "gpusafe/config.hpp"

#if !GPUSAFE_HAS_EXCEPTIONS
#error \
    "gpusafe's LibTorch headers need exceptions: LibTorch reports its errors as c10::Error exceptions. \
Build the translation units that use LibTorch without -fno-exceptions."
#endif

// LibTorch built with CUDA ships ATen/cuda/CUDAConfig.h; CPU-only packages (Debian) may still ship
// the c10/cuda headers but not the c10_cuda library, so those alone prove nothing.
#ifndef GPUSAFE_TORCH_WITH_CUDA
#if GPUSAFE_WITH_CUDA && __has_include(<c10/cuda/CUDACachingAllocator.h>) && \
    __has_include(<ATen/cuda/CUDAConfig.h>)
#define GPUSAFE_TORCH_WITH_CUDA 1
#else
#define GPUSAFE_TORCH_WITH_CUDA 0
#endif
#endif

#endif  // GPUSAFE_DETAIL_TORCH_CONFIG_HPP
