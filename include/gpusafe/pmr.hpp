// SPDX-License-Identifier: MIT
// gpusafe/pmr.hpp: BasicPoolMemoryResource<Runtime> (alias PoolMemoryResource), a
// std::pmr::memory_resource that serves allocations from a host or pinned-host BufferPool, so
// that std::pmr containers (pmr::vector, pmr::string, pmr::unordered_map, ...) run on pooled
// memory.
//
// Each allocation is one lease of the pool. The lease itself is kept in the buffer, just past the
// bytes asked for (rounded up to alignof(BufferLease)), so deallocate finds it from the pointer
// and the size that pmr passes back: no map, no lock, nothing added to the pool's own paths. The
// cost is sizeof(BufferLease) bytes per allocation: a request of exactly a class's size takes a
// buffer of the next class. Requests the pool cannot serve go to the upstream resource
// (std::pmr::get_default_resource() unless another is given), or throw std::bad_alloc when the
// upstream is null:
//
// - bytes + sizeof(BufferLease) beyond the pool's largest class;
// - an alignment above the pool's (BufferPoolOptions::alignment, 256 by default);
// - a class with no free buffer (OverflowPolicy::fail), counted in upstream_allocations().
//
// Device memory is refused at construction (InvalidArgument): containers construct their
// elements in the memory they get, which host code cannot do in device memory. So is a pool
// aligned to less than alignof(BufferLease) (8 bytes), which could not hold the lease.
//
// Thread safety: allocate and deallocate may be called from any threads at once, as the pool's
// acquire and release can (the upstream resource must then be thread-safe too, as the default
// one is). A block may be deallocated on another thread than the one that allocated it.
//
// Teardown: the pool must outlive the resource (allocate acquires from it); destroying the
// resource before the pool is fine. Blocks still allocated when the resource dies stay leased
// (they show in the pool's stats and leak report); a block may still be deallocated after the
// pool object is gone, as a lease may be released then. Other pool errors (ForkedChild,
// ShuttingDown, DevicePoisoned, OutOfMemory when a class grows) propagate from allocate as the
// gpusafe::Error that the pool throws; deallocate never throws.
#ifndef GPUSAFE_PMR_HPP
#define GPUSAFE_PMR_HPP

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory_resource>
#include <new>
#include <string>
#include <utility>

#include "gpusafe/buffer_lease.hpp"
#include "gpusafe/buffer_pool.hpp"
#include "gpusafe/config.hpp"
#include "gpusafe/error.hpp"
#include "gpusafe/runtime.hpp"

GPUSAFE_NAMESPACE_BEGIN

/// A std::pmr::memory_resource over a host or pinned-host BasicBufferPool (see the header
/// comment). Not copyable or movable: containers hold a pointer to it.
template <class Runtime = DefaultRuntime>
class BasicPoolMemoryResource final : public std::pmr::memory_resource {
 public:
  using Pool = BasicBufferPool<Runtime>;

  /// Serves allocations from `pool`, which must outlive the resource. `upstream` serves what the
  /// pool cannot (too large, over-aligned, class exhausted); null makes those throw
  /// std::bad_alloc. Throws InvalidArgument when the pool was asked for device memory.
  explicit BasicPoolMemoryResource(
      Pool& pool, std::pmr::memory_resource* upstream = std::pmr::get_default_resource())
      : pool_(&pool),
        upstream_(upstream),
        alignment_(pool.options().alignment),
        max_class_bytes_(pool.options().classes.empty() ? 0 : pool.options().classes.back().bytes) {
    if (pool.options().kind == MemoryKind::device)
      GPUSAFE_THROW(InvalidArgument(
          "PoolMemoryResource over BufferPool '" + pool.name() +
          "': the pool was built for device memory (BufferPoolOptions::kind = device" +
          (pool.is_fallback() ? ", served from the host only because there is no GPU" : "") +
          "), and a memory_resource's blocks are written by host code (containers construct "
          "their elements in them); build the pool with MemoryKind::host or "
          "MemoryKind::pinned_host"));
    if (alignment_ < alignof(BufferLease))
      GPUSAFE_THROW(InvalidArgument(
          "PoolMemoryResource over BufferPool '" + pool.name() + "': the pool's alignment " +
          std::to_string(alignment_) + " is below the " + std::to_string(alignof(BufferLease)) +
          " bytes that the lease kept in each block needs; build the pool with "
          "BufferPoolOptions::alignment of at least " +
          std::to_string(alignof(BufferLease)) + " (256 is the default)"));
  }

  BasicPoolMemoryResource(const BasicPoolMemoryResource&) = delete;
  BasicPoolMemoryResource& operator=(const BasicPoolMemoryResource&) = delete;

  Pool& pool() const noexcept { return *pool_; }
  /// Where what the pool cannot serve goes; null when that throws std::bad_alloc.
  std::pmr::memory_resource* upstream() const noexcept { return upstream_; }

  /// Allocations served by the upstream resource so far (too large, over-aligned or exhausted).
  std::uint64_t upstream_allocations() const noexcept {
    return upstream_count_.load(std::memory_order_relaxed);
  }

  /// The largest block the pool itself serves: its largest class less the lease kept in it.
  std::size_t max_pooled_bytes() const noexcept {
    if (max_class_bytes_ <= sizeof(BufferLease)) return 0;
    return (max_class_bytes_ - sizeof(BufferLease)) & ~(alignof(BufferLease) - 1);
  }

 private:
  static constexpr std::size_t lease_offset(std::size_t bytes) noexcept {
    const std::size_t n = bytes == 0 ? 1 : bytes;
    return (n + alignof(BufferLease) - 1) & ~(alignof(BufferLease) - 1);
  }
  static BufferLease* lease_at(void* p, std::size_t bytes) noexcept {
    return std::launder(
        reinterpret_cast<BufferLease*>(static_cast<unsigned char*>(p) + lease_offset(bytes)));
  }
  static constexpr std::size_t upstream_alignment(std::size_t alignment) noexcept {
    return std::max(alignment, alignof(BufferLease));
  }

  void* do_allocate(std::size_t bytes, std::size_t alignment) override {
    // A size whose trailer would overflow is left to the upstream (which refuses it).
    if (GPUSAFE_UNLIKELY(bytes > max_class_bytes_)) return allocate_upstream(bytes, alignment);
    const std::size_t total = lease_offset(bytes) + sizeof(BufferLease);
    if (GPUSAFE_LIKELY(total <= max_class_bytes_ && alignment <= alignment_)) {
      BufferLease lease = pool_->try_acquire(total, LeaseTag{__FILE__, __LINE__, "pmr"});
      if (GPUSAFE_LIKELY(static_cast<bool>(lease))) {
        void* p = lease.data();
        ::new (static_cast<void*>(lease_at(p, bytes))) BufferLease(std::move(lease));
        return p;
      }
    }
    return allocate_upstream(bytes, alignment);
  }

  void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) override {
    BufferLease* slot = lease_at(p, bytes);
    if (GPUSAFE_LIKELY(static_cast<bool>(*slot))) {
      // Moved out first: the buffer holding the lease is handed out again by the release.
      BufferLease lease(std::move(*slot));
      slot->~BufferLease();
      return;  // `lease` releases here
    }
    slot->~BufferLease();
    upstream_->deallocate(p, lease_offset(bytes) + sizeof(BufferLease),
                          upstream_alignment(alignment));
  }

  bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override {
    return this == &other;
  }

  // Cold: an empty lease in the trailer marks an upstream block.
  GPUSAFE_NOINLINE void* allocate_upstream(std::size_t bytes, std::size_t alignment) {
    if (upstream_ == nullptr || bytes > SIZE_MAX - sizeof(BufferLease) - alignof(BufferLease)) {
#if GPUSAFE_HAS_EXCEPTIONS
      throw std::bad_alloc();  // what memory_resource::allocate promises
#else
      detail::raise_error(OutOfMemory("PoolMemoryResource over BufferPool '" + pool_->name() +
                                      "': " + std::to_string(bytes) +
                                      " bytes fit no free buffer and there is no upstream "
                                      "resource to ask; give one, or a larger pool"));
#endif
    }
    void* p = upstream_->allocate(lease_offset(bytes) + sizeof(BufferLease),
                                  upstream_alignment(alignment));
    ::new (static_cast<void*>(lease_at(p, bytes))) BufferLease();
    upstream_count_.fetch_add(1, std::memory_order_relaxed);
    return p;
  }

  Pool* pool_;
  std::pmr::memory_resource* upstream_;
  std::size_t alignment_;
  std::size_t max_class_bytes_;
  std::atomic<std::uint64_t> upstream_count_{0};
};

/// The resource over a pool on the default runtime.
using PoolMemoryResource = BasicPoolMemoryResource<DefaultRuntime>;

GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_PMR_HPP
