// gpusafe/buffer_pool.hpp: BasicBufferPool<Runtime> (alias BufferPool), a pool of preallocated
// buffers in size classes, and BufferLease, the RAII handle of one buffer.
//
// Each size class is one slab allocated at construction; acquire and release afterwards make no
// runtime call (lock-free: one CAS on a bitmap word to take a buffer, one fetch_or to give it
// back). Device buffers can be released in stream order (BufferLease::record_stream): the slot is
// reused only once the stream's work recorded at release has finished.
//
// Thread safety: acquire*, release, stats, trim and the lease report may be called from any
// thread at once. A BufferLease is one owner's handle: do not use the same lease object from two
// threads without synchronisation.
//
// Teardown: a lease shares the pool's core, so it may outlive the pool. When the process is
// exiting or in a forked child, releases and trims make no runtime call (memory is dropped for the
// OS to reclaim). After notify_device_reset(d), buffers of the old epoch are dropped, never freed
// or reused, and the next acquire allocates a fresh slab. On a poisoned device acquires throw
// DevicePoisoned and releases drop. Each lease releases to the core that made it, even across
// shared libraries (the core is reached through a virtual interface).
#ifndef GPUSAFE_BUFFER_POOL_HPP
#define GPUSAFE_BUFFER_POOL_HPP

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "gpusafe/config.hpp"
#include "gpusafe/lifecycle.hpp"
#include "gpusafe/log.hpp"
#include "gpusafe/runtime.hpp"

GPUSAFE_NAMESPACE_BEGIN

/// One size class: `count` buffers of `bytes` bytes each.
struct SizeClass {
  std::size_t bytes = 0;
  std::size_t count = 0;
};

/// What acquire does when a size class has no free buffer (or the request exceeds every class).
enum class OverflowPolicy {
  fail,      ///< acquire throws PoolExhausted, try_acquire returns an empty lease
  allocate,  ///< allocate outside the pool (a runtime call), counted in the stats
};

/// Construction options of a BasicBufferPool.
struct BufferPoolOptions {
  MemoryKind kind = MemoryKind::device;  ///< where the buffers live
  int device = 0;                        ///< device index for device and pinned memory
  std::vector<SizeClass> classes;        ///< strictly ascending by bytes, count > 0
  std::size_t alignment = 256;           ///< power of two; alignment of every buffer
  OverflowPolicy overflow = OverflowPolicy::fail;
  Fallback fallback = Fallback::host;  ///< device/pinned memory without a usable GPU
  bool track_leases = false;           ///< record where each lease was taken (costs)
  std::string name = "pool";           ///< names the pool in messages, stats, reports
};

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

/// Figures of one size class (or the totals of a pool).
struct SizeClassStats {
  std::size_t bytes = 0;           ///< class size (0 in the totals)
  std::size_t capacity = 0;        ///< buffers in the class
  std::size_t in_use = 0;          ///< leases out now (overflow leases excluded)
  std::size_t available = 0;       ///< buffers that acquire could take now
  std::size_t high_water = 0;      ///< most buffers unavailable at once
  std::uint64_t acquires = 0;      ///< buffers handed out from the slab
  std::uint64_t failures = 0;      ///< acquires refused (exhausted, timed out)
  std::uint64_t waits = 0;         ///< acquire_for calls that had to wait
  std::uint64_t overflow = 0;      ///< buffers allocated outside the pool
  std::uint64_t fallback = 0;      ///< acquires served from host memory instead of a GPU
  std::uint64_t dropped = 0;       ///< releases that dropped the buffer (reset, poison, exit)
  std::size_t bytes_reserved = 0;  ///< slab bytes held (0 after trim)
  bool resident = false;           ///< whether the slab is allocated
};

/// stats() of a pool: one entry per class plus totals.
struct BufferPoolStats {
  std::string name;
  MemoryKind requested_kind = MemoryKind::device;
  MemoryKind kind = MemoryKind::device;  ///< what the buffers really are
  int device = 0;
  bool fallback = false;  ///< device/pinned memory served from the host
  std::vector<SizeClassStats> classes;
  SizeClassStats totals;          ///< sums; overflow includes requests beyond every class
  std::size_t overflow_live = 0;  ///< overflow leases out now
  std::size_t overflow_bytes_live = 0;
};

/// One lease still out, as recorded when tracking is on.
struct OutstandingLease {
  std::string pool;
  std::size_t bytes = 0;
  std::size_t class_bytes = 0;  ///< 0 for an overflow lease beyond every class
  std::string file;
  int line = 0;
  std::string tag;
  std::chrono::system_clock::time_point acquired;
  bool overflow = false;
};

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
};

/// Event handles abandoned on purpose (their context was reset or is unusable). Kept reachable
/// so leak checkers do not report them; small (one array per dropped slab).
struct AbandonedEvents final : ForkAware {
  std::mutex mutex;
  std::vector<std::unique_ptr<EventHandle[]>> arrays;

  AbandonedEvents() noexcept { enrol_fork_aware(this); }
  void recreate_locks_in_child() noexcept override { new (&mutex) std::mutex(); }
};

inline AbandonedEvents& abandoned_events() noexcept {
  static NoDestructor<AbandonedEvents> list;
  return list.get();
}

inline void abandon_events(std::unique_ptr<EventHandle[]>& events) noexcept {
  if (!events) return;
  auto& a = abandoned_events();
  try {
    std::lock_guard<std::mutex> lock(a.mutex);
    a.arrays.push_back(std::move(events));
  } catch (...) {
    (void)events.release();
  }
}

template <class Runtime>
class PoolCore;

}  // namespace detail

/// The RAII handle of one pooled buffer. Move-only; releases on destruction (never throws).
/// Not a template: any pool's lease has this type, and it releases to the core that made it.
class BufferLease {
 public:
  BufferLease() noexcept = default;
  BufferLease(BufferLease&& other) noexcept
      : core_(std::move(other.core_)),
        data_(std::exchange(other.data_, nullptr)),
        size_(other.size_),
        capacity_(other.capacity_),
        state_(other.state_),
        kind_(other.kind_),
        device_(other.device_),
        fallback_(other.fallback_),
        overflow_(other.overflow_) {}
  BufferLease& operator=(BufferLease&& other) noexcept {
    if (this != &other) {
      release();
      core_ = std::move(other.core_);
      data_ = std::exchange(other.data_, nullptr);
      size_ = other.size_;
      capacity_ = other.capacity_;
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
  /// Bytes requested.
  std::size_t size() const noexcept { return size_; }
  /// Bytes usable: the size of the class the buffer came from (the request for overflow).
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
      throw InvalidArgument(
          "BufferLease::record_stream: the lease is empty (moved from, released, or from a failed "
          "try_acquire); call it on a lease that holds a buffer");
    state_.stream = stream;
    state_.has_stream = true;
  }

  /// Gives the buffer back now (idempotent). Never throws.
  void release() noexcept {
    if (!data_) return;
    void* data = std::exchange(data_, nullptr);
    std::shared_ptr<detail::PoolCoreBase> core = std::move(core_);
    core->release_lease(data, size_, state_);
  }

 private:
  template <class Runtime>
  friend class detail::PoolCore;

  BufferLease(std::shared_ptr<detail::PoolCoreBase> core, void* data, std::size_t size,
              std::size_t capacity, const detail::LeaseState& state, MemoryKind kind, int device,
              bool fallback, bool overflow) noexcept
      : core_(std::move(core)),
        data_(data),
        size_(size),
        capacity_(capacity),
        state_(state),
        kind_(kind),
        device_(device),
        fallback_(fallback),
        overflow_(overflow) {}

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
    if (!data_) throw InvalidArgument(what + ": the lease is empty; acquire a buffer first");
    if (type_size > size_)
      throw InvalidArgument(what + " on a " + std::to_string(size_) + "-byte lease of pool '" +
                            pool_name() + "': the buffer is smaller than one T; acquire at least " +
                            std::to_string(type_size) + " bytes");
    throw InvalidArgument(what + " on a lease of pool '" + pool_name() +
                          "': the buffer is not aligned for T; raise the pool's alignment to " +
                          std::to_string(type_align) + " or more");
  }

  std::shared_ptr<detail::PoolCoreBase> core_;
  void* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
  detail::LeaseState state_;
  MemoryKind kind_ = MemoryKind::host;
  int device_ = 0;
  bool fallback_ = false;
  bool overflow_ = false;
};

namespace detail {

constexpr std::size_t kPoolCacheLine = 64;
/// Classes with more bitmap words than this count their in-use buffers with an atomic counter
/// instead of a popcount scan on every acquire (for the high-water mark).
constexpr std::uint32_t kPoolScanWords = 4;

/// One 64-slot group: bit set in `free_bits` = slot free; bit set in `pending` = an event was
/// recorded at the slot's last release. One cache line per word, so threads on different words
/// do not share a line.
struct alignas(kPoolCacheLine) PoolWord {
  std::atomic<std::uint64_t> free_bits{0};
  std::atomic<std::uint64_t> pending{0};
};

/// Per-slot counters, written only by the slot's current owner (plain load + store: no locked
/// instruction on the hot path); their sums give acquires and leases out.
struct PoolSlotCounters {
  std::atomic<std::uint64_t> acquires{0};
  std::atomic<std::uint64_t> releases{0};
};

/// One slab's memory and bookkeeping. Metadata of a slab that was retired (device reset) stays
/// alive with the core, so late releases of its leases land somewhere valid.
struct PoolSlab {
  void* raw = nullptr;   // what the runtime returned (freed), null when not resident
  char* base = nullptr;  // aligned start of slot 0
  std::size_t raw_bytes = 0;
  std::atomic<std::uint32_t> epoch{0};  // device epoch when allocated (read on the hot path)
  bool resident = false;                // guarded by the class mutex
  std::atomic<bool> retired{false};
  std::unique_ptr<PoolWord[]> words;
  std::unique_ptr<PoolSlotCounters[]> counters;
  std::unique_ptr<EventHandle[]> events;  // per slot; null when the slab has no events
};

struct PoolClass {
  std::size_t bytes = 0;
  std::size_t stride = 0;
  std::size_t count = 0;
  std::uint32_t nwords = 0;
  bool counted = false;  // nwords > kPoolScanWords: keep `unavailable` as a counter
  std::atomic<PoolSlab*> current{nullptr};
  std::vector<std::unique_ptr<PoolSlab>> slabs;  // every slab metadata made (class mutex)
  std::mutex mutex;                              // slow path: allocate, trim, retire
  std::mutex wait_mutex;
  std::condition_variable cv;
  std::atomic<int> waiters{0};
  std::atomic<std::size_t> unavailable{0};  // only when `counted`
  std::atomic<std::size_t> high_water{0};
  std::atomic<std::uint64_t> failures{0};
  std::atomic<std::uint64_t> waits{0};
  std::atomic<std::uint64_t> overflow{0};
  std::atomic<std::uint64_t> dropped{0};
};

inline std::uint32_t next_thread_hint() noexcept {
  static std::atomic<std::uint32_t> counter{0};
  // Odd multiplier spreads consecutive threads over the words; never 0 (0 = unset).
  return (counter.fetch_add(1, std::memory_order_relaxed) * 2654435761u) | 1u;
}

inline std::uint32_t thread_hint() noexcept {
  static thread_local std::uint32_t hint = 0;
  if (GPUSAFE_UNLIKELY(hint == 0)) hint = next_thread_hint();
  return hint;
}

inline std::uint64_t word_mask(std::size_t count, std::uint32_t w) noexcept {
  const std::size_t first = static_cast<std::size_t>(w) * 64;
  const std::size_t n = count - first >= 64 ? 64 : count - first;
  return n == 64 ? ~std::uint64_t{0} : ((std::uint64_t{1} << n) - 1);
}

inline int popcount64(std::uint64_t v) noexcept {
#if defined(__POPCNT__) && (defined(__GNUC__) || defined(__clang__))
  return __builtin_popcountll(v);
#else
  // Without -mpopcnt the builtin is a library call; this stays inline.
  v = v - ((v >> 1) & 0x5555555555555555ull);
  v = (v & 0x3333333333333333ull) + ((v >> 2) & 0x3333333333333333ull);
  v = (v + (v >> 4)) & 0x0f0f0f0f0f0f0f0full;
  return static_cast<int>((v * 0x0101010101010101ull) >> 56);
#endif
}

inline int ctz64(std::uint64_t v) noexcept {
#if defined(__GNUC__) || defined(__clang__)
  return __builtin_ctzll(v);
#else
  int n = 0;
  while (!(v & 1)) {
    v >>= 1;
    ++n;
  }
  return n;
#endif
}

/// Makes `device` current for the scope and restores the caller's device (rule 7). No-op for
/// host memory. Never throws.
template <class Runtime>
class PoolDeviceScope {
 public:
  PoolDeviceScope(bool active, int device) noexcept {
    if (!active) return;
    int current = 0;
    if (Runtime::get_device(current).ok() && current != device) {
      if (Runtime::set_device(device).ok()) {
        previous_ = current;
        switched_ = true;
      }
    }
  }
  ~PoolDeviceScope() {
    if (switched_) (void)Runtime::set_device(previous_);
  }
  PoolDeviceScope(const PoolDeviceScope&) = delete;
  PoolDeviceScope& operator=(const PoolDeviceScope&) = delete;

 private:
  int previous_ = 0;
  bool switched_ = false;
};

/// The shared state of a BasicBufferPool<Runtime>; pools, leases and reclaimable handles share
/// it through shared_ptr.
template <class Runtime>
class PoolCore final : public PoolCoreBase {
 public:
  enum class Mode { throwing, trying, waiting };

  explicit PoolCore(BufferPoolOptions options) : options_(std::move(options)) {
    validate();
    fell_back_ = false;
    kind_ = resolve_memory_kind<Runtime>(options_.kind, options_.fallback, &fell_back_,
                                         "BufferPool '" + options_.name + "'");
    gpu_ = kind_ != MemoryKind::host;
    if (gpu_) check_gpu_request(options_.device, "BufferPool '" + options_.name + "'");
    if (fell_back_)
      log_lazy(LogLevel::warning, [&] {
        return "BufferPool '" + options_.name + "': " + to_string(options_.kind) +
               " memory was asked for but the " + Runtime::name() +
               " runtime has no usable GPU; buffers are served from host memory "
               "(use Fallback::error to refuse)";
      });
    nclasses_ = options_.classes.size();
    classes_.reset(new PoolClass[nclasses_]);
    for (std::size_t i = 0; i < nclasses_; ++i) {
      PoolClass& c = classes_[i];
      c.bytes = options_.classes[i].bytes;
      c.count = options_.classes[i].count;
      c.stride = round_up(c.bytes, options_.alignment);
      c.nwords = static_cast<std::uint32_t>((c.count + 63) / 64);
      c.counted = c.nwords > kPoolScanWords;
    }
    max_class_bytes_ = classes_[nclasses_ - 1].bytes;
    // One slab per class now; on any failure free what was made (strong guarantee).
    std::size_t made = 0;
    try {
      for (; made < nclasses_; ++made) {
        PoolClass& c = classes_[made];
        std::unique_ptr<PoolSlab> slab = make_slab_metadata(c);
        c.slabs.reserve(c.slabs.size() + 1);  // publish() must not throw once memory is held
        allocate_slab(c, *slab);
        publish(c, std::move(slab));
      }
    } catch (...) {
      for (std::size_t i = 0; i < made; ++i) {
        for (auto& s : classes_[i].slabs) free_slab_memory(classes_[i], *s);
      }
      throw;
    }
    enrol_fork_aware(this);  // a forked child rebuilds the core's locks (rule 5)
  }

  ~PoolCore() override {
    withdraw_fork_aware(this);
    for (std::size_t i = 0; i < nclasses_; ++i) {
      for (auto& s : classes_[i].slabs) {
        if (!s->resident) {
          abandon_events(s->events);  // a retired slab keeps its events until now
          continue;
        }
        if (slab_is_stale(*s)) {
          drop_slab_memory(*s);
        } else {
          free_slab_memory(classes_[i], *s);
        }
      }
    }
  }

  PoolCore(const PoolCore&) = delete;
  PoolCore& operator=(const PoolCore&) = delete;

  // ---- acquire -------------------------------------------------------------------------------

  BufferLease acquire(std::shared_ptr<PoolCoreBase> self, std::size_t bytes, LeaseTag tag,
                      Mode mode, std::chrono::steady_clock::time_point deadline) {
    if (GPUSAFE_UNLIKELY(bytes - 1 >= max_class_bytes_)) return acquire_unusual(self, bytes, tag);
    std::uint32_t ci = 0;
    while (classes_[ci].bytes < bytes) ++ci;
    PoolClass& c = classes_[ci];
    if (gpu_ && GPUSAFE_UNLIKELY(process_hazard(options_.device))) check_admission(bytes);
    PoolSlab* slab = c.current.load(std::memory_order_acquire);
    std::uint32_t slot = 0;
    if (GPUSAFE_LIKELY(!(gpu_ && slab_epoch(*slab) != detail::device_epoch(options_.device))) &&
        GPUSAFE_LIKELY(take(c, *slab, slot))) {
      return make_lease(std::move(self), c, ci, *slab, slot, bytes, tag);
    }
    return acquire_slow(std::move(self), c, ci, bytes, tag, mode, deadline);
  }

  // ---- release (noexcept) --------------------------------------------------------------------

  void release_lease(void* data, std::size_t bytes, LeaseState& st) noexcept override {
    if (GPUSAFE_UNLIKELY(st.track_id != 0)) untrack(st.track_id);
    if (GPUSAFE_UNLIKELY(st.slab == nullptr)) {
      release_overflow(data, bytes, st);
      return;
    }
    PoolClass& c = classes_[st.cls];
    PoolSlab& s = *static_cast<PoolSlab*>(st.slab);
    PoolSlotCounters& counters = s.counters[st.slot];
    counters.releases.store(counters.releases.load(std::memory_order_relaxed) + 1,
                            std::memory_order_relaxed);
    const std::uint32_t w = st.slot / 64;
    const std::uint64_t bit = std::uint64_t{1} << (st.slot % 64);
    if (GPUSAFE_UNLIKELY(gpu_ && (s.retired.load(std::memory_order_acquire) ||
                                  slab_epoch(s) != detail::device_epoch(options_.device) ||
                                  detail::is_poisoned(options_.device)))) {
      c.dropped.fetch_add(1, std::memory_order_relaxed);  // never reused, never freed
      return;
    }
    if (GPUSAFE_UNLIKELY(st.has_stream && s.events)) {
      if (!record_release_event(c, s, st)) return;
      s.words[w].pending.fetch_or(bit, std::memory_order_relaxed);
    }
    if (c.counted) c.unavailable.fetch_sub(1, std::memory_order_relaxed);
    s.words[w].free_bits.fetch_or(bit, std::memory_order_seq_cst);
    if (GPUSAFE_UNLIKELY(c.waiters.load(std::memory_order_seq_cst) != 0)) notify(c);
    if (GPUSAFE_UNLIKELY(orphaned_.load(std::memory_order_acquire))) {
      (void)trim_class(c);  // the pool is gone: give the memory back once the class is idle
    }
  }

  // ---- maintenance ---------------------------------------------------------------------------

  std::size_t trim() noexcept {
    std::size_t released = 0;
    for (std::size_t i = 0; i < nclasses_; ++i) released += trim_class(classes_[i]);
    return released;
  }

  /// The pool object died: reclaim() returns 0 from now on, idle slabs are freed now and the
  /// others as their last lease returns.
  void detach() noexcept {
    orphaned_.store(true, std::memory_order_seq_cst);
    (void)trim();
  }

  BufferPoolStats stats() const {
    BufferPoolStats out;
    out.name = options_.name;
    out.requested_kind = options_.kind;
    out.kind = kind_;
    out.device = options_.device;
    out.fallback = fell_back_;
    out.classes.reserve(nclasses_);
    for (std::size_t i = 0; i < nclasses_; ++i) {
      PoolClass& c = classes_[i];
      SizeClassStats cs;
      cs.bytes = c.bytes;
      cs.capacity = c.count;
      cs.high_water = c.high_water.load(std::memory_order_relaxed);
      cs.failures = c.failures.load(std::memory_order_relaxed);
      cs.waits = c.waits.load(std::memory_order_relaxed);
      cs.overflow = c.overflow.load(std::memory_order_relaxed);
      cs.dropped = c.dropped.load(std::memory_order_relaxed);
      {
        std::lock_guard<std::mutex> lock(c.mutex);
        std::uint64_t acquires = 0, releases = 0;
        for (const auto& s : c.slabs) {
          for (std::size_t k = 0; k < c.count; ++k) {
            acquires += s->counters[k].acquires.load(std::memory_order_relaxed);
            releases += s->counters[k].releases.load(std::memory_order_relaxed);
          }
        }
        cs.acquires = acquires;
        cs.in_use = static_cast<std::size_t>(acquires >= releases ? acquires - releases : 0);
        PoolSlab* cur = c.current.load(std::memory_order_acquire);
        cs.resident = cur->resident;
        if (cur->resident && !cur->retired.load(std::memory_order_relaxed)) {
          cs.bytes_reserved = cur->raw_bytes;
          for (std::uint32_t w = 0; w < c.nwords; ++w)
            cs.available += static_cast<std::size_t>(
                popcount64(cur->words[w].free_bits.load(std::memory_order_relaxed)));
        }
      }
      cs.fallback = fell_back_ ? cs.acquires + cs.overflow : 0;
      add_to_totals(out.totals, cs);
      out.classes.push_back(cs);
    }
    const std::uint64_t beyond = oversize_overflow_.load(std::memory_order_relaxed);
    out.totals.overflow += beyond;
    if (fell_back_) out.totals.fallback += beyond;
    out.overflow_live = overflow_live_.load(std::memory_order_relaxed);
    out.overflow_bytes_live = overflow_bytes_live_.load(std::memory_order_relaxed);
    out.totals.bytes_reserved += out.overflow_bytes_live;
    return out;
  }

  std::vector<OutstandingLease> outstanding() const {
    std::vector<OutstandingLease> out;
    std::lock_guard<std::mutex> lock(track_mutex_);
    out.reserve(tracked_.size());
    for (const auto& kv : tracked_) out.push_back(kv.second);
    std::sort(out.begin(), out.end(), [](const OutstandingLease& a, const OutstandingLease& b) {
      return a.acquired < b.acquired;
    });
    return out;
  }

  /// The outstanding leases as the MemoryManager's leak report wants them (tracking on).
  std::vector<LeakRecord> leak_records() const override {
    std::vector<LeakRecord> out;
    if (!options_.track_leases) {
      // Without the tracker only the count is known: one record that says so.
      const BufferPoolStats st = stats();
      const std::size_t out_now = st.totals.in_use + st.overflow_live;
      if (out_now > 0) {
        LeakRecord r;
        r.resource = options_.name;
        r.tag = std::to_string(out_now) + " lease(s) out; enable track_leases to see where";
        out.push_back(std::move(r));
      }
      return out;
    }
    const auto now = std::chrono::system_clock::now();
    for (auto& lease : outstanding()) {
      LeakRecord r;
      r.resource = std::move(lease.pool);
      r.file = std::move(lease.file);
      r.line = lease.line;
      r.tag = std::move(lease.tag);
      r.bytes = lease.bytes;
      r.age = std::chrono::duration_cast<std::chrono::nanoseconds>(now - lease.acquired);
      out.push_back(std::move(r));
    }
    return out;
  }

  std::string leak_report() const {
    const auto leases = outstanding();
    const BufferPoolStats st = stats();
    const std::size_t out_now = st.totals.in_use + st.overflow_live;
    std::string r =
        "BufferPool '" + options_.name + "': " + std::to_string(out_now) + " lease(s) outstanding";
    if (!options_.track_leases) {
      if (out_now != 0)
        r += " (enable BufferPoolOptions::track_leases to see where they were taken)";
      return r + "\n";
    }
    r += "\n";
    const auto now = std::chrono::system_clock::now();
    for (const auto& l : leases) {
      const double age = std::chrono::duration<double>(now - l.acquired).count();
      char age_text[32];
      std::snprintf(age_text, sizeof age_text, "%.3f", age);
      r += "  " + std::to_string(l.bytes) + " bytes (" +
           (l.overflow ? std::string("overflow") : "class " + std::to_string(l.class_bytes)) +
           ") taken at " + (l.file.empty() ? std::string("?") : l.file) + ":" +
           std::to_string(l.line) + (l.tag.empty() ? std::string() : " [" + l.tag + "]") + ", " +
           age_text + " s ago\n";
    }
    return r;
  }

  // ---- Reclaimable ---------------------------------------------------------------------------

  std::size_t reclaim(const ReclaimRequest& request) noexcept override {
    if (orphaned_.load(std::memory_order_acquire)) return 0;
    if (request.device != -1 && (!gpu_ || request.device != options_.device)) return 0;
    if (request.level == ReclaimLevel::light) return 0;
    const std::size_t released = trim();
    if (request.level == ReclaimLevel::shutdown) log_outstanding_once();
    return released;
  }
  ReclaimCost reclaim_cost() const noexcept override { return ReclaimCost::idle_memory; }
  const char* reclaimable_name() const noexcept override { return options_.name.c_str(); }
  ResourceUsage usage() const noexcept override {
    ResourceUsage u;
    u.device = gpu_ ? options_.device : -1;
    try {
      const BufferPoolStats st = stats();
      u.bytes_reserved = st.totals.bytes_reserved;
      u.bytes_in_use = st.overflow_bytes_live;
      for (const auto& cs : st.classes) u.bytes_in_use += cs.in_use * cs.bytes;
      u.items = st.totals.in_use + st.overflow_live;
    } catch (...) {
    }
    return u;
  }

  const char* pool_name() const noexcept override { return options_.name.c_str(); }

  void recreate_locks_in_child() noexcept override {
    for (std::size_t i = 0; i < nclasses_; ++i) {
      PoolClass& c = classes_[i];
      new (&c.mutex) std::mutex();
      new (&c.wait_mutex) std::mutex();
      new (&c.cv) std::condition_variable();
      c.waiters.store(0, std::memory_order_relaxed);  // those threads do not exist here
    }
    new (&track_mutex_) std::mutex();
  }

  const BufferPoolOptions& options() const noexcept { return options_; }
  MemoryKind kind() const noexcept { return kind_; }
  bool fell_back() const noexcept { return fell_back_; }

 private:
  // ---- construction helpers ------------------------------------------------------------------

  static std::size_t round_up(std::size_t n, std::size_t a) noexcept { return (n + a - 1) / a * a; }

  std::string pool_label() const { return "BufferPool '" + options_.name + "'"; }

  void validate() const {
    const std::string who = "BufferPool '" + options_.name + "'";
    const std::size_t a = options_.alignment;
    if (a == 0 || (a & (a - 1)) != 0)
      throw InvalidArgument(
          who + ": alignment " + std::to_string(a) +
          " is not a power of two; use 256 (the default) or another power of two");
    if (options_.classes.empty())
      throw InvalidArgument(who +
                            ": no size classes; give at least one {bytes, count}, e.g. "
                            "{{1 << 20, 8}}");
    if (options_.classes.size() > std::numeric_limits<std::uint32_t>::max() / 2)
      throw InvalidArgument(who + ": too many size classes");
    for (std::size_t i = 0; i < options_.classes.size(); ++i) {
      const SizeClass& sc = options_.classes[i];
      const std::string which = who + ": size class #" + std::to_string(i) + " {" +
                                std::to_string(sc.bytes) + " bytes, " + std::to_string(sc.count) +
                                " buffers}";
      if (sc.bytes == 0) throw InvalidArgument(which + ": zero bytes; give each class a size > 0");
      if (sc.count == 0)
        throw InvalidArgument(which + ": count is zero; give each class at least one buffer");
      if (sc.count > (std::size_t{1} << 31))
        throw InvalidArgument(which + ": count too large; at most 2^31 buffers per class");
      if (i > 0 && sc.bytes <= options_.classes[i - 1].bytes)
        throw InvalidArgument(
            which + ": classes must be strictly ascending by bytes (" +
            (sc.bytes == options_.classes[i - 1].bytes ? "duplicate size" : "unsorted") +
            "); sort them and merge duplicates");
      if (sc.bytes > std::numeric_limits<std::size_t>::max() - a)
        throw InvalidArgument(which + ": size overflows when rounded up to the alignment");
      const std::size_t stride = round_up(sc.bytes, a);
      if (stride > (std::numeric_limits<std::size_t>::max() - a) / sc.count)
        throw InvalidArgument(which + ": bytes * count overflows size_t; ask for less");
    }
  }

  std::unique_ptr<PoolSlab> make_slab_metadata(const PoolClass& c) const {
    auto slab = std::make_unique<PoolSlab>();
    slab->words.reset(new PoolWord[c.nwords]);
    slab->counters.reset(new PoolSlotCounters[c.count]);
    return slab;
  }

  // Host memory (asked for, or the fallback) comes from the host allocator directly: it needs no
  // runtime, so host pools keep working in a forked child and while the process exits.
  Status raw_allocate(std::size_t bytes, void** out) const noexcept {
    if (!gpu_) return HostRuntime::allocate(MemoryKind::host, 0, bytes, out);
    return Runtime::allocate(kind_, options_.device, bytes, out);
  }
  Status raw_deallocate(void* p) const noexcept {
    if (!gpu_) return HostRuntime::deallocate(MemoryKind::host, 0, p);
    return Runtime::deallocate(kind_, options_.device, p);
  }

  /// Admission to a runtime call on the acquire side: throws when the process is exiting or
  /// forked (the exit handler waits for an admitted call to finish).
  void admit_or_throw(const RuntimeCallGate& gate, const std::string& what) const {
    if (gate) return;
    check_gpu_request(options_.device, what);
    throw ShuttingDown(what + ": the process is exiting; no runtime call can be made");
  }

  bool wants_events() const noexcept { return kind_ == MemoryKind::device; }

  /// Allocates the slab's memory (and events); throws with everything undone on failure.
  void allocate_slab(const PoolClass& c, PoolSlab& slab) {
    const std::size_t extra =
        options_.alignment > kRuntimeAlignment ? options_.alignment - kRuntimeAlignment : 0;
    const std::size_t bytes = c.stride * c.count + extra;
    const std::string what = pool_label() + ": allocating size class " + std::to_string(c.bytes) +
                             " (" + std::to_string(c.count) + " buffers, " + std::to_string(bytes) +
                             " bytes of " + to_string(kind_) + " memory)";
    RuntimeCallGate gate;
    if (gpu_) {
      admit_or_throw(gate, what);
      check_gpu_request(options_.device, what);
    }
    PoolDeviceScope<Runtime> scope(gpu_, options_.device);
    void* raw = nullptr;
    const Status s = raw_allocate(bytes, &raw);
    if (!s.ok() || raw == nullptr)
      throw_status(s.ok() ? Status{codes::memory_allocation} : s, what,
                   "lower the count or size of the class, free memory, or trim other pools");
    std::unique_ptr<EventHandle[]> events;
    if (wants_events()) {
      std::size_t made = 0;
      try {
        events.reset(new EventHandle[c.count]());
        for (; made < c.count; ++made) {
          const Status es = Runtime::event_create(events[made]);
          if (!es.ok()) throw_status(es, what + ": creating the per-buffer stream events");
        }
      } catch (...) {
        for (std::size_t k = 0; k < made; ++k) (void)Runtime::event_destroy(events[k]);
        (void)raw_deallocate(raw);
        throw;
      }
    }
    const std::uintptr_t a = options_.alignment;
    slab.raw = raw;
    slab.base = reinterpret_cast<char*>((reinterpret_cast<std::uintptr_t>(raw) + a - 1) / a * a);
    slab.raw_bytes = bytes;
    slab.epoch.store(gpu_ ? detail::device_epoch(options_.device) : 0, std::memory_order_relaxed);
    slab.events = std::move(events);
    slab.resident = true;
  }

  /// Makes `slab` the class's current slab and frees all its slots (class mutex held or
  /// construction).
  void publish(PoolClass& c, std::unique_ptr<PoolSlab> slab) {
    PoolSlab* p = slab.get();
    c.slabs.push_back(std::move(slab));
    open_slots(c, *p);
    c.current.store(p, std::memory_order_release);
  }

  void open_slots(PoolClass& c, PoolSlab& s) noexcept {
    for (std::uint32_t w = 0; w < c.nwords; ++w) {
      s.words[w].pending.store(0, std::memory_order_relaxed);
      s.words[w].free_bits.store(word_mask(c.count, w), std::memory_order_seq_cst);
    }
  }

  /// Gives a slab's memory back to the runtime, or drops it where no runtime call may be made.
  void free_slab_memory(const PoolClass& c, PoolSlab& s) noexcept {
    if (!s.resident) return;
    RuntimeCallGate gate;
    if (gpu_ && (!gate || detail::is_poisoned(options_.device))) {
      drop_slab_memory(s);
      return;
    }
    PoolDeviceScope<Runtime> scope(gpu_, options_.device);
    if (s.events) {
      for (std::size_t k = 0; k < c.count; ++k) (void)Runtime::event_destroy(s.events[k]);
      s.events.reset();
    }
    const Status st = raw_deallocate(s.raw);
    if (!st.ok() && st.error_class() != ErrorClass::benign_at_shutdown && free_failed_.first())
      log_lazy(LogLevel::warning,
               [&] { return pool_label() + ": freeing a slab failed: " + st.describe(); });
    s.raw = nullptr;
    s.base = nullptr;
    s.resident = false;
  }

  /// Forgets a slab's memory without any runtime call (exit, fork, reset, poison).
  void drop_slab_memory(PoolSlab& s) noexcept {
    abandon_events(s.events);  // they belong to a dead or unusable context: never destroyed
    s.raw = nullptr;
    s.base = nullptr;
    s.resident = false;
  }

  static std::uint32_t slab_epoch(const PoolSlab& s) noexcept {
    return s.epoch.load(std::memory_order_relaxed);
  }

  bool slab_is_stale(const PoolSlab& s) const noexcept {
    return gpu_ && (s.retired.load(std::memory_order_relaxed) ||
                    slab_epoch(s) != detail::device_epoch(options_.device));
  }

  // ---- acquire helpers -----------------------------------------------------------------------

  /// Exiting, forked (as seen by the fork handler; the pid check is left to the slow path, it
  /// costs a system call) or poisoned: the hot path's one test for GPU pools.
  static bool process_hazard(int device) noexcept {
    auto& ps = detail::process_state();
    return ps.exiting.load(std::memory_order_relaxed) ||
           ps.forked_child.load(std::memory_order_relaxed) || detail::is_poisoned(device);
  }

  void check_admission(std::size_t bytes) const {
    if (GPUSAFE_LIKELY(!detail::gpu_request_refused(options_.device))) return;
    check_gpu_request(options_.device,
                      "acquire(" + std::to_string(bytes) + " bytes) from " + pool_label());
  }

  /// Takes a free slot of `s`: one CAS. Skips slots whose release event is still pending.
  bool take(PoolClass& c, PoolSlab& s, std::uint32_t& slot_out) noexcept {
    const std::uint32_t n = c.nwords;
    std::uint32_t w = n == 1 ? 0 : thread_hint() % n;
    for (std::uint32_t i = 0; i < n; ++i, w = (w + 1 == n ? 0 : w + 1)) {
      std::atomic<std::uint64_t>& word = s.words[w].free_bits;
      std::uint64_t v = word.load(std::memory_order_relaxed);
      std::uint64_t skip = 0;
      while ((v & ~skip) != 0) {
        const std::uint64_t cand = v & ~skip;
        const std::uint64_t bit = cand & (~cand + 1);
        if (!word.compare_exchange_weak(v, v & ~bit, std::memory_order_acquire,
                                        std::memory_order_relaxed))
          continue;
        if (GPUSAFE_UNLIKELY(s.events != nullptr) &&
            (s.words[w].pending.load(std::memory_order_relaxed) & bit) != 0) {
          const std::uint32_t slot = w * 64 + static_cast<std::uint32_t>(ctz64(bit));
          if (!event_done(s.events[slot])) {
            // Stream work still pending (or the query failed): give it back, try another.
            v = word.fetch_or(bit, std::memory_order_release) | bit;
            skip |= bit;
            continue;
          }
          s.words[w].pending.fetch_and(~bit, std::memory_order_relaxed);
        }
        slot_out = w * 64 + static_cast<std::uint32_t>(ctz64(bit));
        note_taken(c, s, v & ~bit, w);
        return true;
      }
    }
    return false;
  }

  /// Whether the work recorded on a slot's event has finished; false when it cannot be asked.
  static bool event_done(EventHandle event) noexcept {
    RuntimeCallGate gate;
    return gate && Runtime::event_query(event).code == codes::success;
  }

  void note_taken(PoolClass& c, PoolSlab& s, std::uint64_t word_after, std::uint32_t w) noexcept {
    std::size_t unavailable;
    if (c.counted) {
      unavailable = c.unavailable.fetch_add(1, std::memory_order_relaxed) + 1;
    } else {
      std::size_t free_now = static_cast<std::size_t>(popcount64(word_after));
      for (std::uint32_t k = 0; k < c.nwords; ++k)
        if (k != w)
          free_now += static_cast<std::size_t>(
              popcount64(s.words[k].free_bits.load(std::memory_order_relaxed)));
      unavailable = c.count - free_now;
    }
    std::size_t hw = c.high_water.load(std::memory_order_relaxed);
    while (unavailable > hw &&
           !c.high_water.compare_exchange_weak(hw, unavailable, std::memory_order_relaxed)) {
    }
  }

  BufferLease make_lease(std::shared_ptr<PoolCoreBase>&& self, PoolClass& c, std::uint32_t ci,
                         PoolSlab& s, std::uint32_t slot, std::size_t bytes, LeaseTag tag) {
    PoolSlotCounters& counters = s.counters[slot];
    counters.acquires.store(counters.acquires.load(std::memory_order_relaxed) + 1,
                            std::memory_order_relaxed);
    LeaseState st;
    st.slab = &s;
    st.cls = ci;
    st.slot = slot;
    st.epoch = slab_epoch(s);
    if (GPUSAFE_UNLIKELY(options_.track_leases)) {
      try {
        st.track_id = track(bytes, c.bytes, tag, false);
      } catch (...) {
        give_back_untracked(c, s, slot);
        throw;
      }
    }
    return BufferLease(std::move(self), s.base + static_cast<std::size_t>(slot) * c.stride, bytes,
                       c.bytes, st, kind_, options_.device, fell_back_, false);
  }

  void give_back_untracked(PoolClass& c, PoolSlab& s, std::uint32_t slot) noexcept {
    PoolSlotCounters& counters = s.counters[slot];
    counters.releases.store(counters.releases.load(std::memory_order_relaxed) + 1,
                            std::memory_order_relaxed);
    if (c.counted) c.unavailable.fetch_sub(1, std::memory_order_relaxed);
    s.words[slot / 64].free_bits.fetch_or(std::uint64_t{1} << (slot % 64),
                                          std::memory_order_seq_cst);
    notify_waiters(c);
  }

  /// Under the class mutex: makes the current slab usable (retires a stale one, re-allocates a
  /// trimmed one), then tries to take a slot.
  bool take_locked(PoolClass& c, std::uint32_t& slot, PoolSlab*& slab_out) {
    std::lock_guard<std::mutex> lock(c.mutex);
    PoolSlab* s = c.current.load(std::memory_order_acquire);
    if (gpu_ && slab_epoch(*s) != detail::device_epoch(options_.device)) {
      auto fresh = make_slab_metadata(c);
      c.slabs.reserve(c.slabs.size() + 1);  // publish() must not throw once memory is held
      retire(c, *s);
      allocate_slab(c, *fresh);
      publish(c, std::move(fresh));
      s = c.current.load(std::memory_order_acquire);
    } else if (!s->resident) {
      allocate_slab(c, *s);
      open_slots(c, *s);
    }
    slab_out = s;
    return take(c, *s, slot);
  }

  /// A slab of an older device epoch: its free slots are closed for good and its memory is
  /// forgotten without runtime calls (the context that owned it is gone).
  void retire(PoolClass& c, PoolSlab& s) noexcept {
    s.retired.store(true, std::memory_order_seq_cst);
    for (std::uint32_t w = 0; w < c.nwords; ++w)
      s.words[w].free_bits.store(0, std::memory_order_seq_cst);
    // Leases still out on the old slab drop on release; the fresh slab starts empty.
    if (c.counted) c.unavailable.store(0, std::memory_order_relaxed);
    // Forget the memory but keep `base` and the event array in place: a take() that won a slot
    // just before the words closed still reads them without the class mutex. The destructor
    // keeps the events reachable (never destroyed: their context was reset).
    s.raw = nullptr;
    s.resident = false;
  }

  BufferLease acquire_slow(std::shared_ptr<PoolCoreBase> self, PoolClass& c, std::uint32_t ci,
                           std::size_t bytes, LeaseTag tag, Mode mode,
                           std::chrono::steady_clock::time_point deadline) {
    if (gpu_) check_admission(bytes);
    std::uint32_t slot = 0;
    PoolSlab* s = nullptr;
    if (take_locked(c, slot, s)) return make_lease(std::move(self), c, ci, *s, slot, bytes, tag);
    if (options_.overflow == OverflowPolicy::allocate)
      return allocate_overflow(std::move(self), &c, ci, bytes, tag);
    if (mode == Mode::trying) {
      c.failures.fetch_add(1, std::memory_order_relaxed);
      return BufferLease();
    }
    if (mode == Mode::throwing) {
      c.failures.fetch_add(1, std::memory_order_relaxed);
      throw PoolExhausted(exhausted_message(c, bytes));
    }
    // Waiting: only while the class is empty; releases notify when waiters != 0.
    c.waits.fetch_add(1, std::memory_order_relaxed);
    c.waiters.fetch_add(1, std::memory_order_seq_cst);
    struct WaiterGuard {
      PoolClass& c;
      ~WaiterGuard() { c.waiters.fetch_sub(1, std::memory_order_seq_cst); }
    } guard{c};
    for (;;) {
      if (take_locked(c, slot, s)) return make_lease(std::move(self), c, ci, *s, slot, bytes, tag);
      std::unique_lock<std::mutex> lock(c.wait_mutex);
      // seq_cst loads pair with the releaser's seq_cst fetch_or and waiters load: either it
      // sees this waiter and notifies under the mutex, or this scan sees its slot.
      s = c.current.load(std::memory_order_acquire);
      if (idle_slot_visible(c, *s)) continue;
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline) break;
      // Slots waiting on stream work free themselves without a release: poll them.
      auto until = deadline;
      if (wants_events() && now + std::chrono::milliseconds(1) < deadline)
        until = now + std::chrono::milliseconds(1);
      c.cv.wait_until(lock, until);
      if (gpu_) check_admission(bytes);
    }
    c.failures.fetch_add(1, std::memory_order_relaxed);
    throw Timeout(exhausted_message(c, bytes) + " (acquire_for timed out)");
  }

  static bool idle_slot_visible(PoolClass& c, PoolSlab& s) noexcept {
    for (std::uint32_t w = 0; w < c.nwords; ++w) {
      const std::uint64_t f = s.words[w].free_bits.load(std::memory_order_seq_cst);
      if ((f & ~s.words[w].pending.load(std::memory_order_seq_cst)) != 0) return true;
    }
    return false;
  }

  std::string exhausted_message(PoolClass& c, std::size_t bytes) const {
    std::size_t free_now = 0, pending = 0;
    PoolSlab* s = c.current.load(std::memory_order_acquire);
    for (std::uint32_t w = 0; w < c.nwords; ++w) {
      free_now += static_cast<std::size_t>(popcount64(s->words[w].free_bits.load()));
      pending += static_cast<std::size_t>(
          popcount64(s->words[w].free_bits.load() & s->words[w].pending.load()));
    }
    std::string m = "acquire(" + std::to_string(bytes) + " bytes) from pool '" + options_.name +
                    "': size class " + std::to_string(c.bytes) + " has " +
                    std::to_string(c.count - free_now) + "/" + std::to_string(c.count) +
                    " buffers leased";
    if (pending != 0)
      m += " (" + std::to_string(pending) + " more wait for stream work recorded at release)";
    return m +
           "; raise its count, release leases sooner, use acquire_for() to wait, or enable "
           "overflow";
  }

  BufferLease acquire_unusual(std::shared_ptr<PoolCoreBase>& self, std::size_t bytes,
                              LeaseTag tag) {
    const std::string what =
        "acquire(" + std::to_string(bytes) + " bytes) from pool '" + options_.name + "'";
    if (bytes == 0) throw InvalidArgument(what + ": zero bytes; ask for at least 1 byte");
    if (bytes > std::numeric_limits<std::size_t>::max() / 2)
      throw InvalidArgument(what +
                            ": the size is absurd (it overflows when rounded to the "
                            "alignment); check the size computation");
    if (options_.overflow != OverflowPolicy::allocate)
      throw InvalidArgument(what + ": larger than the largest size class (" +
                            std::to_string(max_class_bytes_) + "); add a class or enable overflow");
    if (gpu_) check_admission(bytes);
    return allocate_overflow(std::move(self), nullptr, 0, bytes, tag);
  }

  BufferLease allocate_overflow(std::shared_ptr<PoolCoreBase>&& self, PoolClass* c,
                                std::uint32_t ci, std::size_t bytes, LeaseTag tag) {
    const std::string what = "acquire(" + std::to_string(bytes) + " bytes) from pool '" +
                             options_.name + "' (overflow allocation outside the pool)";
    void* p = nullptr;
    {
      RuntimeCallGate gate;
      if (gpu_) admit_or_throw(gate, what);
      PoolDeviceScope<Runtime> scope(gpu_, options_.device);
      const Status s = raw_allocate(bytes, &p);
      if (!s.ok() || !p) {
        if (c) c->failures.fetch_add(1, std::memory_order_relaxed);
        throw_status(s.ok() ? Status{codes::memory_allocation} : s, what,
                     "free memory, raise the class counts, or release leases sooner");
      }
    }
    LeaseState st;
    st.slab = nullptr;
    st.cls = c ? ci : std::numeric_limits<std::uint32_t>::max();
    st.epoch = gpu_ ? detail::device_epoch(options_.device) : 0;
    if (options_.track_leases) {
      try {
        st.track_id = track(bytes, c ? c->bytes : 0, tag, true);
      } catch (...) {
        (void)raw_deallocate(p);
        throw;
      }
    }
    if (c) {
      c->overflow.fetch_add(1, std::memory_order_relaxed);
    } else {
      oversize_overflow_.fetch_add(1, std::memory_order_relaxed);
    }
    overflow_live_.fetch_add(1, std::memory_order_relaxed);
    overflow_bytes_live_.fetch_add(bytes, std::memory_order_relaxed);
    return BufferLease(std::move(self), p, bytes, bytes, st, kind_, options_.device, fell_back_,
                       true);
  }

  void release_overflow(void* data, std::size_t bytes, LeaseState& st) noexcept {
    overflow_live_.fetch_sub(1, std::memory_order_relaxed);
    overflow_bytes_live_.fetch_sub(bytes, std::memory_order_relaxed);
    RuntimeCallGate gate;
    if (gpu_ && (!gate || st.epoch != detail::device_epoch(options_.device) ||
                 detail::is_poisoned(options_.device))) {
      if (st.cls < nclasses_) classes_[st.cls].dropped.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    PoolDeviceScope<Runtime> scope(gpu_, options_.device);
    const Status s = raw_deallocate(data);
    if (!s.ok() && s.error_class() != ErrorClass::benign_at_shutdown && free_failed_.first())
      log_lazy(LogLevel::warning, [&] {
        return pool_label() + ": freeing an overflow buffer failed: " + s.describe();
      });
  }

  bool record_release_event(PoolClass& c, PoolSlab& s, const LeaseState& st) noexcept {
    RuntimeCallGate gate;
    if (!gate) {
      c.dropped.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    const Status r = Runtime::event_record(s.events[st.slot], st.stream);
    if (!r.ok()) {
      // Without the event the slot cannot be known idle: keep it out of circulation.
      c.dropped.fetch_add(1, std::memory_order_relaxed);
      if (event_failed_.first())
        log_lazy(LogLevel::warning, [&] {
          return pool_label() + ": recording the release event failed (" + r.describe() +
                 "); the buffer is kept out of circulation";
        });
      return false;
    }
    return true;
  }

  void notify(PoolClass& c) noexcept {
    { std::lock_guard<std::mutex> lock(c.wait_mutex); }
    c.cv.notify_all();
  }

  /// Frees the class's slab when every slot is free; returns the bytes given back.
  std::size_t trim_class(PoolClass& c) noexcept {
    std::lock_guard<std::mutex> lock(c.mutex);
    PoolSlab* s = c.current.load(std::memory_order_acquire);
    if (!s->resident) return 0;
    if (slab_is_stale(*s)) return 0;  // the next acquire retires it
    RuntimeCallGate gate;
    if (gpu_ && !gate) return 0;  // exiting or forked: nothing can be given back
    // Close every slot; if one is leased, reopen the ones closed so far.
    std::uint32_t closed = 0;
    for (; closed < c.nwords; ++closed) {
      std::uint64_t expected = word_mask(c.count, closed);
      if (!s->words[closed].free_bits.compare_exchange_strong(expected, 0,
                                                              std::memory_order_acq_rel))
        break;
    }
    if (closed != c.nwords) {
      for (std::uint32_t w = 0; w < closed; ++w)
        s->words[w].free_bits.fetch_or(word_mask(c.count, w), std::memory_order_seq_cst);
      notify_waiters(c);  // a waiter may have scanned while the words were closed
      return 0;
    }
    // A waiter may have missed the notify of the release that made the class idle (it came
    // before the waiter slept): freeing now would leave it asleep until its deadline.
    if (c.waiters.load(std::memory_order_seq_cst) != 0) {
      open_slots_keep_pending(c, *s);
      return 0;
    }
    if (s->events) {
      // Stream work recorded at release may still be running: only trim when it is done.
      for (std::uint32_t w = 0; w < c.nwords; ++w) {
        std::uint64_t p = s->words[w].pending.load(std::memory_order_relaxed);
        for (; p; p &= p - 1) {
          const std::uint32_t slot = w * 64 + static_cast<std::uint32_t>(ctz64(p));
          if (Runtime::event_query(s->events[slot]).code == codes::not_ready) {  // gate held
            open_slots_keep_pending(c, *s);
            return 0;
          }
        }
      }
    }
    const std::size_t bytes = s->raw_bytes;
    free_slab_memory(c, *s);  // frees it, or drops it when the gate closed meanwhile
    return bytes;
  }

  void open_slots_keep_pending(PoolClass& c, PoolSlab& s) noexcept {
    for (std::uint32_t w = 0; w < c.nwords; ++w)
      s.words[w].free_bits.fetch_or(word_mask(c.count, w), std::memory_order_seq_cst);
    notify_waiters(c);
  }

  /// Wakes waiters after slots were reopened (seq_cst: pairs with the waiter's scan, like a
  /// release).
  void notify_waiters(PoolClass& c) noexcept {
    if (c.waiters.load(std::memory_order_seq_cst) != 0) notify(c);
  }

  // ---- tracking ------------------------------------------------------------------------------

  std::uint64_t track(std::size_t bytes, std::size_t class_bytes, LeaseTag tag, bool overflow) {
    OutstandingLease rec;
    rec.pool = options_.name;
    rec.bytes = bytes;
    rec.class_bytes = class_bytes;
    if (tag.file) rec.file = tag.file;
    rec.line = tag.line;
    if (tag.tag) rec.tag = tag.tag;
    rec.acquired = std::chrono::system_clock::now();
    rec.overflow = overflow;
    std::lock_guard<std::mutex> lock(track_mutex_);
    const std::uint64_t id = ++next_track_id_;
    tracked_.emplace(id, std::move(rec));
    return id;
  }

  void untrack(std::uint64_t id) noexcept {
    std::lock_guard<std::mutex> lock(track_mutex_);
    tracked_.erase(id);
  }

  void log_outstanding_once() noexcept {
    try {
      const BufferPoolStats st = stats();
      if (st.totals.in_use + st.overflow_live == 0) return;
      if (!report_logged_.first()) return;
      log(LogLevel::warning, "at shutdown: " + leak_report());
    } catch (...) {
    }
  }

  static void add_to_totals(SizeClassStats& t, const SizeClassStats& c) noexcept {
    t.capacity += c.capacity;
    t.in_use += c.in_use;
    t.available += c.available;
    t.high_water += c.high_water;
    t.acquires += c.acquires;
    t.failures += c.failures;
    t.waits += c.waits;
    t.overflow += c.overflow;
    t.fallback += c.fallback;
    t.dropped += c.dropped;
    t.bytes_reserved += c.bytes_reserved;
    t.resident = t.resident || c.resident;
  }

  BufferPoolOptions options_;
  MemoryKind kind_ = MemoryKind::host;
  bool fell_back_ = false;
  bool gpu_ = false;
  std::size_t nclasses_ = 0;
  std::size_t max_class_bytes_ = 0;
  std::unique_ptr<PoolClass[]> classes_;
  std::atomic<bool> orphaned_{false};
  std::atomic<std::uint64_t> oversize_overflow_{0};
  std::atomic<std::size_t> overflow_live_{0};
  std::atomic<std::size_t> overflow_bytes_live_{0};
  mutable std::mutex track_mutex_;
  std::unordered_map<std::uint64_t, OutstandingLease> tracked_;
  std::uint64_t next_track_id_ = 0;
  LogOnce free_failed_;
  LogOnce event_failed_;
  LogOnce report_logged_;
};

}  // namespace detail

/// A pool of preallocated buffers in size classes, on `Runtime` (see the header comment).
template <class Runtime = DefaultRuntime>
class BasicBufferPool {
 public:
  using Options = BufferPoolOptions;

  /// Validates the options and allocates one slab per class. Throws InvalidArgument for bad
  /// options, NoGpu (Fallback::error without a GPU), ForkedChild/ShuttingDown/DevicePoisoned, or
  /// OutOfMemory; nothing is leaked on failure.
  explicit BasicBufferPool(BufferPoolOptions options)
      : core_(std::make_shared<detail::PoolCore<Runtime>>(std::move(options))),
        registration_(core_) {}

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
    return core_->acquire(core_, bytes, tag, Core::Mode::throwing, {});
  }

  /// Like acquire(), but returns an empty lease instead of throwing PoolExhausted (other errors
  /// still throw).
  BufferLease try_acquire(std::size_t bytes, LeaseTag tag = LeaseTag::here()) {
    return core_->acquire(core_, bytes, tag, Core::Mode::trying, {});
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
    return core_->acquire(core_, bytes, tag, Core::Mode::waiting, deadline);
  }

  /// Frees the slabs of classes with no buffer leased (nor stream work pending). A trimmed class
  /// is allocated again by its next acquire (a runtime call: the slow path). Returns the bytes
  /// freed. Never throws; does nothing when the process is exiting or forked.
  std::size_t trim() noexcept { return core_->trim(); }

  /// Per-class figures and totals.
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
