// gpusafe/gpusafe.hpp: the whole library in one include.
//
// Includes every public header the build supports: the core layers, the guards, BufferPool,
// ModelCache and MemoryManager always, and the LibTorch integration (gpusafe/torch.hpp) only when
// GPUSAFE_WITH_TORCH is 1 (target gpusafe::torch). The test double FakeRuntime is not included:
// tests include gpusafe/testing/fake_runtime.hpp themselves.
//
// Thread safety and teardown: see each header.
#ifndef GPUSAFE_GPUSAFE_HPP
#define GPUSAFE_GPUSAFE_HPP

#include "gpusafe/buffer_lease.hpp"
#include "gpusafe/buffer_pool.hpp"
#include "gpusafe/config.hpp"
#include "gpusafe/error.hpp"
#include "gpusafe/guards.hpp"
#include "gpusafe/lifecycle.hpp"
#include "gpusafe/log.hpp"
#include "gpusafe/memory_manager.hpp"
#include "gpusafe/model_cache.hpp"
#include "gpusafe/reclaim.hpp"
#include "gpusafe/runtime.hpp"
#include "gpusafe/version.hpp"

#if GPUSAFE_WITH_TORCH
#include "gpusafe/torch.hpp"
#endif

#endif  // GPUSAFE_GPUSAFE_HPP
