// SPDX-License-Identifier: MIT
// gpusafe/gpusafe.hpp: the whole library in one include.
//
// Includes every public header the build supports: the core layers, the guards, BufferPool (and
// its std::pmr resource), ModelCache, MemoryManager and the stream operators always, and the
// LibTorch integration (gpusafe/torch.hpp) only when GPUSAFE_WITH_TORCH is 1 (target
// gpusafe::torch). The handles (streams, events, graphs) and the StreamPool always; the library
// handles (gpusafe/handles/*.hpp) when the build defines their macro (GPUSAFE_WITH_CUBLAS,
// ..._CUDNN, ..._CUFFT, ..._NCCL: targets gpusafe::cublas, ...). The test double FakeRuntime is not
// included: tests include gpusafe/testing/fake_runtime.hpp themselves.
//
// Thread safety and teardown: see each header.
#ifndef GPUSAFE_GPUSAFE_HPP
#define GPUSAFE_GPUSAFE_HPP

#include "gpusafe/buffer_lease.hpp"
#include "gpusafe/buffer_pool.hpp"
#include "gpusafe/config.hpp"
#include "gpusafe/error.hpp"
#include "gpusafe/guards.hpp"
#include "gpusafe/handles.hpp"
#include "gpusafe/leak_record.hpp"
#include "gpusafe/lifecycle.hpp"
#include "gpusafe/log.hpp"
#include "gpusafe/memory_manager.hpp"
#include "gpusafe/model_cache.hpp"
#include "gpusafe/ostream.hpp"
#include "gpusafe/pmr.hpp"
#include "gpusafe/reclaim.hpp"
#include "gpusafe/runtime.hpp"
#include "gpusafe/stream_pool.hpp"
#include "gpusafe/version.hpp"

#if defined(GPUSAFE_WITH_CUBLAS) && GPUSAFE_WITH_CUBLAS
#include "gpusafe/handles/cublas.hpp"
#endif
#if defined(GPUSAFE_WITH_CUDNN) && GPUSAFE_WITH_CUDNN
#include "gpusafe/handles/cudnn.hpp"
#endif
#if defined(GPUSAFE_WITH_CUFFT) && GPUSAFE_WITH_CUFFT
#include "gpusafe/handles/cufft.hpp"
#endif
#if defined(GPUSAFE_WITH_NCCL) && GPUSAFE_WITH_NCCL
#include "gpusafe/handles/nccl.hpp"
#endif

#if GPUSAFE_WITH_TORCH
#include "gpusafe/torch.hpp"
#endif

/// @namespace gpusafe
/// @brief GPU resources that are safe to create, reuse and release, including at process exit,
/// in a forked child, after a CUDA error and on machines without a GPU.
///
/// The names here are what programs use. Each `Basic*<Runtime>` template has an alias on the
/// default runtime (`BufferPool = BasicBufferPool<DefaultRuntime>`, ...); the default runtime is
/// CUDA's where the build sees the CUDA headers and the host's otherwise. The names live in an
/// inline ABI namespace (for example `gpusafe::v0_1_cuda`) so that translation units built with
/// different configurations link together; programs never write it.

/// @namespace gpusafe::testing
/// @brief Test support for code built on gpusafe: the FakeRuntime test double, which behaves like
/// the CUDA runtime (failures, sticky errors, teardown, devices) without a GPU, and the typed
/// contract tests every Runtime must pass.

#endif  // GPUSAFE_GPUSAFE_HPP
