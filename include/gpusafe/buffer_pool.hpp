// SPDX-License-Identifier: MIT
// gpusafe/buffer_pool.hpp: BasicBufferPool<Runtime> (alias BufferPool), a pool of preallocated
// buffers in size classes, its options and statistics. The buffers are handed out as BufferLease
// (gpusafe/buffer_lease.hpp).
//
// Each size class starts as one slab allocated at construction; acquire and release afterwards
// make no runtime call. Each thread keeps a small magazine of free slots per class in front of the
// shared bitmap of the slab (one CAS takes a batch, one fetch_or per slot gives them back), so an
// acquire and release on one thread write no shared memory. OverflowPolicy::grow adds slabs (the
// class's capacity doubles each time) up to BufferPoolOptions::max_bytes. Device buffers can be
// released in stream order (BufferLease::record_stream): the slot is reused only once the
// stream's work recorded at release has finished (such releases bypass the thread caches).
//
// Thread safety: acquire*, release, stats, trim and the lease report may be called from any
// thread at once. Buffers cached by one thread are not visible to the others until that thread
// releases past its magazine size, trims, or exits; classes of fewer than 8 buffers, and pools
// with thread_cache = 0, do not cache. A BufferLease is one owner's handle.
//
// Teardown: a lease may outlive the pool: the pool's core lives until its last buffer is back and
// every thread that cached buffers of it has exited or let them go, without any reference count
// per lease. A thread's cached buffers return to the pool when the thread exits (the main thread
// at exit, before static destructors). When the process is exiting or in a forked child, releases
// and trims make no runtime call (memory is dropped for the OS to reclaim); a forked child takes
// back the buffers that the parent's other threads had cached. After notify_device_reset(d),
// buffers of the old epoch (leased or cached) are dropped, never freed or reused, and the next
// acquire allocates a fresh slab. On a poisoned device acquires throw DevicePoisoned and releases
// drop. Each lease releases to the core that made it, even across shared libraries (the core is
// reached through a virtual interface).
#ifndef GPUSAFE_BUFFER_POOL_HPP
#define GPUSAFE_BUFFER_POOL_HPP

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gpusafe/buffer_lease.hpp"
#include "gpusafe/config.hpp"
#include "gpusafe/detail/pool/core.hpp"
#include "gpusafe/detail/pool/options.hpp"
#include "gpusafe/lifecycle.hpp"
#include "gpusafe/runtime.hpp"

GPUSAFE_NAMESPACE_BEGIN

/// A pool of preallocated buffers in size classes, on `Runtime` (see the header comment).
template <class Runtime = DefaultRuntime>
class BasicBufferPool {
  GPUSAFE_CHECK_RUNTIME(Runtime);

 public:
  using Options = BufferPoolOptions;

  /// Validates the options and allocates one slab per class. Throws InvalidArgument for bad
  /// options, NoGpu (Fallback::error without a GPU), ForkedChild/ShuttingDown/DevicePoisoned, or
  /// OutOfMemory; nothing is leaked on failure.
  explicit BasicBufferPool(BufferPoolOptions options)
      : core_(Core::create(std::move(options))), registration_(core_) {}

  ~BasicBufferPool() {
    if (!core_) return;
    registration_.reset();
    core_->detach();
  }

  BasicBufferPool(BasicBufferPool&&) noexcept = default;
  BasicBufferPool& operator=(BasicBufferPool&& other) noexcept {
    if (this != &other) {
      registration_.reset();
      if (core_) core_->detach();
      core_ = std::move(other.core_);
      registration_ = std::move(other.registration_);
    }
    return *this;
  }
  BasicBufferPool(const BasicBufferPool&) = delete;
  BasicBufferPool& operator=(const BasicBufferPool&) = delete;

  /// A buffer of at least `bytes` from the smallest class that fits. Throws PoolExhausted when
  /// that class is fully leased (unless overflow is on), InvalidArgument for a zero, absurd or
  /// too large size, and ForkedChild/ShuttingDown/DevicePoisoned for GPU memory when the process
  /// cannot use the GPU. Lock-free when a buffer is free.
  BufferLease acquire(std::size_t bytes, LeaseTag tag = LeaseTag::here()) {
    return core_->acquire(bytes, tag, Core::Mode::throwing, {});
  }

  /// Like acquire(), but returns an empty lease instead of throwing PoolExhausted (other errors
  /// still throw).
  BufferLease try_acquire(std::size_t bytes, LeaseTag tag = LeaseTag::here()) {
    return core_->acquire(bytes, tag, Core::Mode::trying, {});
  }

  /// Like acquire(), but waits up to `timeout` for a buffer of the class to be released; throws
  /// Timeout when none came. Waits on a condition variable only while the class is empty.
  template <class Rep, class Period>
  BufferLease acquire_for(std::size_t bytes, std::chrono::duration<Rep, Period> timeout,
                          LeaseTag tag = LeaseTag::here()) {
    using Clock = std::chrono::steady_clock;
    const auto now = Clock::now();
    // Compared as doubles: a "forever" timeout (e.g. milliseconds::max()) would overflow both the
    // conversion to the clock's duration and the addition.
    const bool forever = std::chrono::duration<double>(timeout) >=
                         std::chrono::duration<double>(Clock::time_point::max() - now);
    const auto deadline = forever ? Clock::time_point::max()
                                  : now + std::chrono::duration_cast<Clock::duration>(timeout);
    return core_->acquire(bytes, tag, Core::Mode::waiting, deadline);
  }

  /// Gives the calling thread's cached buffers back, then frees every slab with no buffer leased,
  /// cached by another thread, or waiting on stream work. A trimmed first slab is allocated again
  /// by the next acquire of its class (a runtime call: the slow path); grown slabs come back only
  /// by growing again. Returns the bytes freed. Never throws; does nothing when the process is
  /// exiting or forked.
  std::size_t trim() noexcept { return core_->trim(); }

  /// Per-class figures and totals. Counts are kept per thread and summed here: exact when no
  /// thread is acquiring or releasing, approximate meanwhile.
  BufferPoolStats stats() const { return core_->stats(); }

  /// The leases out now with where they were taken (empty unless track_leases is on).
  std::vector<OutstandingLease> outstanding_leases() const { return core_->outstanding(); }

  /// A readable report of the leases out now.
  std::string leak_report() const { return core_->leak_report(); }

  /// A shared handle to the pool's core as a Reclaimable; valid after the pool dies (its
  /// reclaim() then returns 0).
  std::shared_ptr<Reclaimable> reclaimable() const { return core_; }

  const std::string& name() const noexcept { return core_->options().name; }
  /// The memory the buffers really are (host when a device request fell back).
  MemoryKind kind() const noexcept { return core_->kind(); }
  bool is_fallback() const noexcept { return core_->fell_back(); }
  int device() const noexcept { return core_->options().device; }
  const BufferPoolOptions& options() const noexcept { return core_->options(); }

 private:
  using Core = detail::PoolCore<Runtime>;
  std::shared_ptr<Core> core_;
  ReclaimRegistration registration_;
};

/// The pool on the default runtime (CUDA when available, else host memory).
using BufferPool = BasicBufferPool<DefaultRuntime>;

GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_BUFFER_POOL_HPP
