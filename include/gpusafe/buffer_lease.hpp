// SPDX-License-Identifier: MIT
// gpusafe/buffer_lease.hpp: BufferLease, the RAII handle of one pooled buffer, and LeaseTag, where
// a lease was taken (for leak reports).
//
// A lease is handed out by BasicBufferPool<Runtime>::acquire* (gpusafe/buffer_pool.hpp). It is not
// a template: any pool's lease has this type, and it gives its buffer back to the core that made
// it, through a virtual interface, even across shared libraries.
//
// Thread safety: a BufferLease is one owner's handle: do not use the same lease object from two
// threads without synchronisation. Different leases may be released on any threads at once.
//
// Teardown: a lease may outlive its pool (the pool's core lives until its last buffer is back,
// without a reference count per lease). Releasing never throws; when the process is exiting, in a
// forked child, after a device reset or on a poisoned device, the buffer is dropped or returned
// without any runtime call.
#ifndef GPUSAFE_BUFFER_LEASE_HPP
#define GPUSAFE_BUFFER_LEASE_HPP

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "gpusafe/config.hpp"
#include "gpusafe/error.hpp"
#include "gpusafe/lifecycle.hpp"
#include "gpusafe/runtime.hpp"

GPUSAFE_NAMESPACE_BEGIN

/// Where a lease was taken, for the outstanding-lease report. The default argument of the
/// acquire functions records the caller's file and line where the compiler allows it.
struct LeaseTag {
  const char* file = nullptr;
  int line = 0;
  const char* tag = nullptr;  ///< a string literal (not copied unless tracking is on)

#if defined(__GNUC__) || defined(__clang__)
  static constexpr LeaseTag here(const char* file = __builtin_FILE(),
                                 int line = __builtin_LINE()) noexcept {
    return LeaseTag{file, line, nullptr};
  }
#else
  static constexpr LeaseTag here() noexcept { return LeaseTag{}; }
#endif
};

/// A LeaseTag naming this source line and a tag: `pool.acquire(n, GPUSAFE_LEASE_TAG("decode"))`.
#define GPUSAFE_LEASE_TAG(tag_literal) (::gpusafe::LeaseTag{__FILE__, __LINE__, (tag_literal)})
#ifndef GPUSAFE_HERE
/// A LeaseTag naming this source line.
#define GPUSAFE_HERE (::gpusafe::LeaseTag{__FILE__, __LINE__, nullptr})
#endif

namespace detail {

/// What a lease needs to give its buffer back; opaque outside the core.
struct LeaseState {
  void* slab = nullptr;  // PoolSlab*, null for an overflow buffer
  std::uint32_t cls = 0;
  std::uint32_t slot = 0;
  std::uint32_t epoch = 0;
  std::uint64_t track_id = 0;  // 0: untracked
  StreamHandle stream = nullptr;
  bool has_stream = false;
};

/// The type-erased core a lease releases to (DESIGN rule 10).
class PoolCoreBase : public Reclaimable, public LeakReporter, public ForkAware {
 public:
  virtual void release_lease(void* data, std::size_t bytes, LeaseState& state) noexcept = 0;
  virtual const char* pool_name() const noexcept = 0;
  LeakReporter* leak_reporter() noexcept override { return this; }
};

template <class Runtime>
class PoolCore;

}  // namespace detail

/// The RAII handle of one pooled buffer. Move-only; releases on destruction (never throws).
/// Not a template: any pool's lease has this type, and it releases to the core that made it.
class BufferLease {
 public:
  BufferLease() noexcept = default;
  BufferLease(BufferLease&& other) noexcept
      : core_(other.core_),
        data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)),
        capacity_(std::exchange(other.capacity_, 0)),
        state_(other.state_),
        kind_(other.kind_),
        device_(other.device_),
        fallback_(other.fallback_),
        overflow_(other.overflow_) {}
  BufferLease& operator=(BufferLease&& other) noexcept {
    if (this != &other) {
      release();
      core_ = std::exchange(other.core_, nullptr);
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
      capacity_ = std::exchange(other.capacity_, 0);
      state_ = other.state_;
      kind_ = other.kind_;
      device_ = other.device_;
      fallback_ = other.fallback_;
      overflow_ = other.overflow_;
    }
    return *this;
  }
  BufferLease(const BufferLease&) = delete;
  BufferLease& operator=(const BufferLease&) = delete;
  ~BufferLease() { release(); }

  /// The buffer; null for an empty lease.
  void* data() const noexcept { return data_; }
  /// Bytes requested; 0 for an empty lease (default-constructed, moved from or released).
  std::size_t size() const noexcept { return size_; }
  /// Bytes usable: the size of the class the buffer came from (the request for overflow); 0 for
  /// an empty lease.
  std::size_t capacity() const noexcept { return capacity_; }
  /// What the memory really is (host when a device request fell back).
  MemoryKind kind() const noexcept { return kind_; }
  int device() const noexcept { return device_; }
  /// Device or pinned memory was asked for and host memory was served (no usable GPU).
  bool is_fallback() const noexcept { return fallback_; }
  /// The buffer was allocated outside the pool (OverflowPolicy::allocate).
  bool is_overflow() const noexcept { return overflow_; }
  explicit operator bool() const noexcept { return data_ != nullptr; }
  /// Name of the pool that made it ("" for an empty lease).
  const char* pool_name() const noexcept { return core_ ? core_->pool_name() : ""; }

  /// The buffer as T*, checked: throws InvalidArgument (naming the pool) when the lease is empty,
  /// smaller than one T, or not aligned for T.
  template <class T>
  T* as() const {
    check_as(sizeof(T), alignof(T));
    return static_cast<T*>(data_);
  }

  /// Marks the buffer as used by `stream`: at release an event is recorded on it and the slot is
  /// handed out again only after that work has finished. The last stream recorded wins (join
  /// several streams into one first). No effect for host memory. Throws InvalidArgument on an
  /// empty lease.
  void record_stream(StreamHandle stream) {
    if (!data_)
      GPUSAFE_THROW(InvalidArgument(
          "BufferLease::record_stream: the lease is empty (moved from, released, or from a failed "
          "try_acquire); call it on a lease that holds a buffer"));
    state_.stream = stream;
    state_.has_stream = true;
  }

  /// Gives the buffer back now (idempotent). Never throws.
  void release() noexcept {
    if (!data_) return;
    void* data = std::exchange(data_, nullptr);
    detail::PoolCoreBase* core = std::exchange(core_, nullptr);
    core->release_lease(data, std::exchange(size_, 0), state_);
    capacity_ = 0;
  }

 private:
  template <class Runtime>
  friend class detail::PoolCore;

  BufferLease(detail::PoolCoreBase* core, void* data, std::size_t size, std::size_t capacity,
              const detail::LeaseState& state, MemoryKind kind, int device, bool fallback,
              bool overflow) noexcept
      : core_(core),
        data_(data),
        size_(size),
        capacity_(capacity),
        state_(state),
        kind_(kind),
        device_(device),
        fallback_(fallback),
        overflow_(overflow) {}

  // A pooled slot: the state is written field by field in place (a LeaseState built on the stack
  // and copied in is slower: the copy reloads it in wide pieces the narrow stores cannot feed).
  BufferLease(detail::PoolCoreBase* core, void* data, std::size_t size, std::size_t capacity,
              void* slab, std::uint32_t cls, std::uint32_t slot, std::uint32_t epoch,
              MemoryKind kind, int device, bool fallback) noexcept
      : core_(core),
        data_(data),
        size_(size),
        capacity_(capacity),
        kind_(kind),
        device_(device),
        fallback_(fallback) {
    state_.slab = slab;
    state_.cls = cls;
    state_.slot = slot;
    state_.epoch = epoch;
  }

  void check_as(std::size_t type_size, std::size_t type_align) const {
    if (GPUSAFE_UNLIKELY(!data_ || type_size > size_ ||
                         reinterpret_cast<std::uintptr_t>(data_) % type_align != 0))
      throw_bad_as(type_size, type_align);
  }

  // Cold: builds the message only when as<T>() is refused.
  [[noreturn]] void throw_bad_as(std::size_t type_size, std::size_t type_align) const {
    const std::string what = std::string("BufferLease::as<T>() (sizeof ") +
                             std::to_string(type_size) + ", alignof " + std::to_string(type_align) +
                             ")";
    if (!data_)
      GPUSAFE_THROW(InvalidArgument(what + ": the lease is empty; acquire a buffer first"));
    if (type_size > size_)
      GPUSAFE_THROW(InvalidArgument(what + " on a " + std::to_string(size_) +
                                    "-byte lease of pool '" + pool_name() +
                                    "': the buffer is smaller than one T; acquire at least " +
                                    std::to_string(type_size) + " bytes"));
    GPUSAFE_THROW(
        InvalidArgument(what + " on a lease of pool '" + pool_name() +
                        "': the buffer is not aligned for T; raise the pool's alignment to " +
                        std::to_string(type_align) + " or more"));
  }

  // Not counted: the core stays alive while any of its buffers is out (see PoolCore).
  detail::PoolCoreBase* core_ = nullptr;
  void* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
  detail::LeaseState state_;
  MemoryKind kind_ = MemoryKind::host;
  int device_ = 0;
  bool fallback_ = false;
  bool overflow_ = false;
};

GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_BUFFER_LEASE_HPP
