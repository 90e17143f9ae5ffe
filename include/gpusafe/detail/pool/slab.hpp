// SPDX-License-Identifier: MIT
// gpusafe/detail/pool/slab.hpp: the slabs of BufferPool's size classes: their memory and per-slot
// events, device epochs (retiring a slab after a device reset), growth (OverflowPolicy::grow) and
// trimming idle slabs. PoolSlabs<Runtime> is the part of the pool core that owns them.
//
// Thread safety: a class's slab list changes only under the class mutex; lock-free readers load
// `live[k]` and `nlive` (release/acquire). Slab metadata is never freed before the core, so a
// reader holding a stale pointer still reads valid memory (a retired or trimmed slab has all its
// slots closed).
//
// Teardown: slab memory is freed with a runtime call only through a RuntimeCallGate; when the
// process is exiting, forked, the device was reset or is poisoned, it is dropped (forgotten, the
// OS or the dead context reclaims it) and its events are kept reachable, never destroyed.
#ifndef GPUSAFE_DETAIL_POOL_SLAB_HPP
#define GPUSAFE_DETAIL_POOL_SLAB_HPP

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "gpusafe/config.hpp"
#include "gpusafe/detail/pool/free_slots.hpp"
#include "gpusafe/detail/pool/options.hpp"
#include "gpusafe/detail/release_log.hpp"
#include "gpusafe/detail/runtime_calls.hpp"
#include "gpusafe/detail/runtime_errors.hpp"
#include "gpusafe/lifecycle.hpp"
#include "gpusafe/log.hpp"
#include "gpusafe/runtime.hpp"

GPUSAFE_NAMESPACE_BEGIN
namespace detail {

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
  GPUSAFE_TRY {
    std::lock_guard<std::mutex> lock(a.mutex);
    a.arrays.push_back(std::move(events));
  }
  GPUSAFE_CATCH_ALL { (void)events.release(); }
}

/// Makes the pool's device current for the scope and restores the caller's device (rule 7); no
/// call for host memory. Never throws.
template <class Runtime>
class PoolDeviceScope {
 public:
  PoolDeviceScope(bool active, int device) noexcept : switch_(device, active) {}

 private:
  DeviceSwitch<Runtime> switch_;
};

/// One slab's memory and bookkeeping. Metadata of a slab that was retired (device reset) or
/// trimmed stays alive with the core, so late releases and stale readers land somewhere valid.
struct PoolSlab {
  void* raw = nullptr;   // what the runtime returned (freed), null when not resident
  char* base = nullptr;  // aligned start of slot 0
  std::size_t raw_bytes = 0;
  std::atomic<std::uint32_t> epoch{0};  // device epoch when allocated (read on the hot path)
  std::atomic<bool> resident{false};    // changed under the class mutex, read anywhere
  std::atomic<bool> retired{false};
  SlotBitmap bitmap;
  std::unique_ptr<EventHandle[]> events;  // per slot; null when the slab has no events
};

/// Most slabs of one class: the first plus its grown ones (capacity doubles with each).
constexpr std::uint32_t kMaxSlabsPerClass = 24;

struct PoolClass {
  std::size_t bytes = 0;
  std::size_t stride = 0;
  std::size_t count = 0;                                // buffers of the first slab
  std::uint32_t cache_capacity = 0;                     // magazine size per thread (0: no caching)
  std::atomic<PoolSlab*> live[kMaxSlabsPerClass] = {};  // live[0]: the first slab
  std::atomic<std::uint32_t> nlive{0};
  std::vector<std::unique_ptr<PoolSlab>> slabs;  // every slab metadata made (class mutex)
  std::mutex mutex;                              // slow path: allocate, grow, trim, retire
  std::mutex wait_mutex;
  std::condition_variable cv;
  std::atomic<int> waiters{0};
  std::atomic<std::size_t> high_water{0};
  std::atomic<std::uint64_t> failures{0};
  std::atomic<std::uint64_t> waits{0};
  std::atomic<std::uint64_t> overflow{0};
  std::atomic<std::uint64_t> dropped{0};
  // Leases handed out and given back, folded from retired thread caches or counted without one.
  std::atomic<std::uint64_t> acquired{0};
  std::atomic<std::uint64_t> released{0};

  PoolSlab* slab(std::uint32_t k) const noexcept { return live[k].load(std::memory_order_acquire); }
  std::uint32_t slab_count() const noexcept { return nlive.load(std::memory_order_acquire); }
};

/// The slab-owning part of PoolCore<Runtime>.
template <class Runtime>
class PoolSlabs {
 protected:
  explicit PoolSlabs(BufferPoolOptions options) : options_(std::move(options)) {}

  static std::size_t round_up(std::size_t n, std::size_t a) noexcept { return (n + a - 1) / a * a; }
  std::string pool_label() const { return "BufferPool '" + options_.name + "'"; }
  bool wants_events() const noexcept { return kind_ == MemoryKind::device; }

  std::size_t slab_bytes(const PoolClass& c, std::size_t count) const noexcept {
    const std::size_t extra =
        options_.alignment > kRuntimeAlignment ? options_.alignment - kRuntimeAlignment : 0;
    return c.stride * count + extra;
  }

  // Host memory (asked for, or the fallback) comes from the host allocator directly: it needs no
  // runtime, so host pools keep working in a forked child and while the process exits.
  Status raw_allocate(std::size_t bytes, void** out) const noexcept {
    if (!gpu_) return HostRuntime::allocate(MemoryKind::host, 0, bytes, out);
    return RuntimeCalls<Runtime>::allocate(kind_, options_.device, bytes, out);
  }
  Status raw_deallocate(void* p) const noexcept {
    if (!gpu_) return HostRuntime::deallocate(MemoryKind::host, 0, p);
    return RuntimeCalls<Runtime>::deallocate(kind_, options_.device, p);
  }

  /// Admission to a runtime call on the acquire side: throws when the process is exiting or
  /// forked (the exit handler waits for an admitted call to finish).
  void admit_or_throw(const BasicRuntimeCallGate<Runtime>& gate, const std::string& what) const {
    if (gate) return;
    check_gpu_request(options_.device, what);
    GPUSAFE_THROW(ShuttingDown(what + ": the process is exiting; no runtime call can be made"));
  }

  std::unique_ptr<PoolSlab> make_slab_metadata(std::size_t count) const {
    auto slab = std::make_unique<PoolSlab>();
    slab->bitmap.init(count);
    return slab;
  }

  /// Allocates the slab's memory (and events); throws with everything undone on failure.
  void allocate_slab(const PoolClass& c, PoolSlab& slab) {
    const std::size_t count = slab.bitmap.count();
    const std::size_t bytes = slab_bytes(c, count);
    const std::string what = pool_label() + ": allocating size class " + std::to_string(c.bytes) +
                             " (" + std::to_string(count) + " buffers, " + std::to_string(bytes) +
                             " bytes of " + to_string(kind_) + " memory)";
    BasicRuntimeCallGate<Runtime> gate;
    if (gpu_) {
      admit_or_throw(gate, what);
      check_gpu_request(options_.device, what);
    }
    PoolDeviceScope<Runtime> scope(gpu_, options_.device);
    void* raw = nullptr;
    const Status s = raw_allocate(bytes, &raw);
    if (!s.ok() || raw == nullptr)
      throw_allocation_failure(
          s, what, "lower the count or size of the class, free memory, or trim other pools");
    std::unique_ptr<EventHandle[]> events;
    if (wants_events()) {
      std::size_t made = 0;
      GPUSAFE_TRY {
        events.reset(new EventHandle[count]());
        for (; made < count; ++made) {
          const Status es = RuntimeCalls<Runtime>::event_create(events[made]);
          if (!es.ok()) throw_status(es, what + ": creating the per-buffer stream events");
        }
      }
      GPUSAFE_CATCH_ALL {
        for (std::size_t k = 0; k < made; ++k)
          (void)RuntimeCalls<Runtime>::event_destroy(events[k]);
        (void)raw_deallocate(raw);
        GPUSAFE_RETHROW;
      }
    }
    const std::uintptr_t a = options_.alignment;
    slab.raw = raw;
    slab.base = reinterpret_cast<char*>((reinterpret_cast<std::uintptr_t>(raw) + a - 1) / a * a);
    slab.raw_bytes = bytes;
    slab.epoch.store(gpu_ ? device_epoch(options_.device) : 0, std::memory_order_relaxed);
    slab.events = std::move(events);
    slab.resident = true;
    reserved_.fetch_add(bytes, std::memory_order_relaxed);
  }

  /// Makes `slab` the class's slab number k and frees all its slots (class mutex held, or
  /// construction). c.slabs must have room (reserved) so that this cannot throw.
  void publish(PoolClass& c, std::uint32_t k, std::unique_ptr<PoolSlab> slab) noexcept {
    PoolSlab* p = slab.get();
    c.slabs.push_back(std::move(slab));
    p->bitmap.open_all();
    c.live[k].store(p, std::memory_order_release);
    if (c.nlive.load(std::memory_order_relaxed) <= k)
      c.nlive.store(k + 1, std::memory_order_release);
  }

  /// Gives a slab's memory back to the runtime, or drops it where no runtime call may be made.
  void free_slab_memory(PoolSlab& s) noexcept {
    if (!s.resident) return;
    BasicRuntimeCallGate<Runtime> gate;
    if (gpu_ && (!gate || is_poisoned(options_.device))) {
      drop_slab_memory(s);
      return;
    }
    // Forgotten before it is freed: a fork() while this thread is inside the free leaves a child
    // that sees no memory (and leaks it) rather than one that frees it a second time.
    void* raw = s.raw;
    std::unique_ptr<EventHandle[]> events = std::move(s.events);
    forget_memory(s);
    PoolDeviceScope<Runtime> scope(gpu_, options_.device);
    if (events) destroy_events(events.get(), s.bitmap.count());
    const Status st = raw_deallocate(raw);
    if (!st.ok())
      log_release_failure(
          &free_failed_, [this] { return pool_label(); }, "freeing a slab", -1, st,
          "the memory is forgotten (further failures of this pool are not logged)",
          BenignFailures::unlogged);
  }

  /// Destroys a slab's stream events (runtime gate held, device current); a failure is logged
  /// once per pool.
  void destroy_events(EventHandle* events, std::size_t count) noexcept {
    for (std::size_t k = 0; k < count; ++k) {
      const Status st = RuntimeCalls<Runtime>::event_destroy(events[k]);
      if (st.ok()) continue;
      log_release_failure(
          &event_destroy_failed_, [this] { return pool_label(); }, "destroying a stream event", -1,
          st, "the event was dropped (further failures of this pool are not logged)",
          BenignFailures::unlogged);
    }
  }

  /// Forgets a slab's memory without any runtime call (exit, fork, reset, poison).
  void drop_slab_memory(PoolSlab& s) noexcept {
    abandon_events(s.events);  // they belong to a dead or unusable context: never destroyed
    forget_memory(s);
  }

  void forget_memory(PoolSlab& s) noexcept {
    if (s.resident) reserved_.fetch_sub(s.raw_bytes, std::memory_order_relaxed);
    s.raw = nullptr;
    s.base = nullptr;
    s.resident = false;
  }

  static std::uint32_t slab_epoch(const PoolSlab& s) noexcept {
    return s.epoch.load(std::memory_order_relaxed);
  }

  bool slab_is_stale(const PoolSlab& s) const noexcept {
    return gpu_ && (s.retired.load(std::memory_order_relaxed) ||
                    slab_epoch(s) != device_epoch(options_.device));
  }

  /// A slab of an older device epoch: its free slots are closed for good and its memory is
  /// forgotten without runtime calls (the context that owned it is gone). Keeps `base` and the
  /// events in place: a take that won a slot just before the words closed still reads them.
  void retire(PoolSlab& s) noexcept {
    s.retired.store(true, std::memory_order_seq_cst);
    s.bitmap.close_all();
    if (s.resident) reserved_.fetch_sub(s.raw_bytes, std::memory_order_relaxed);
    s.raw = nullptr;
    s.resident = false;
  }

  /// Under the class mutex: retires the slabs of an old device epoch (the class restarts with a
  /// fresh first slab) or re-allocates a trimmed first slab.
  void refresh_locked(PoolClass& c) {
    PoolSlab* first = c.slab(0);
    if (gpu_ && slab_epoch(*first) != device_epoch(options_.device)) {
      auto fresh = make_slab_metadata(c.count);
      c.slabs.reserve(c.slabs.size() + 1);  // publish() must not throw once memory is held
      allocate_slab(c, *fresh);
      // The retired slabs stay listed until replaced: a lock-free reader that loaded the old
      // count may still index them (their metadata lives as long as the pool) and skips them.
      for (std::uint32_t k = 0, n = c.slab_count(); k < n; ++k) retire(*c.slab(k));
      publish(c, 0, std::move(fresh));
      c.nlive.store(1, std::memory_order_release);
    } else if (!first->resident) {
      allocate_slab(c, *first);
      first->bitmap.open_all();
    }
  }

  /// Under the class mutex (OverflowPolicy::grow): adds a slab with as many buffers as the class
  /// has now (re-allocating a trimmed one first), within max_bytes. False when nothing fits.
  bool grow_locked(PoolClass& c) {
    const std::uint32_t n = c.slab_count();
    std::size_t capacity = 0;
    for (std::uint32_t k = 0; k < n; ++k)
      if (c.slab(k)->resident) capacity += c.slab(k)->bitmap.count();
    const std::size_t used = reserved_.load(std::memory_order_relaxed);
    const std::size_t budget = options_.max_bytes > used ? options_.max_bytes - used : 0;
    // Trimming the last slabs unlists them; the first one past the list is re-listed here rather
    // than replaced, so that trim/grow cycles do not pile up slab bookkeeping.
    const std::uint32_t unlisted = n < kMaxSlabsPerClass && is_parked(c.slab(n)) ? 1 : 0;
    for (std::uint32_t k = 1; k < n + unlisted; ++k) {
      PoolSlab* s = c.slab(k);
      if (s->resident || slab_bytes(c, s->bitmap.count()) > budget) continue;
      allocate_slab(c, *s);
      s->bitmap.open_all();
      if (k == n) c.nlive.store(n + 1, std::memory_order_release);
      return true;
    }
    if (n >= kMaxSlabsPerClass) return false;
    std::size_t count = capacity == 0 ? c.count : capacity;
    while (count > 0 && slab_bytes(c, count) > budget) count /= 2;
    if (count == 0) return false;
    auto slab = make_slab_metadata(count);
    c.slabs.reserve(c.slabs.size() + 1);
    allocate_slab(c, *slab);
    publish(c, n, std::move(slab));
    return true;
  }

  /// A slab unlisted by trim_class(): memory given back, bookkeeping kept for reuse. (A retired
  /// slab is never reused: leases of the old device epoch may still point into it.)
  static bool is_parked(const PoolSlab* s) noexcept {
    return s != nullptr && !s->resident && !s->retired.load(std::memory_order_relaxed);
  }

  /// Whether the work recorded on a slot's event has finished; false when it cannot be asked.
  static bool event_done(EventHandle event) noexcept {
    BasicRuntimeCallGate<Runtime> gate;
    return gate && RuntimeCalls<Runtime>::event_query(event).code == codes::success;
  }

  void notify(PoolClass& c) noexcept {
    { std::lock_guard<std::mutex> lock(c.wait_mutex); }
    c.cv.notify_all();
  }

  /// Wakes waiters after slots were given back (seq_cst: pairs with the waiter's scan).
  void notify_waiters(PoolClass& c) noexcept {
    if (c.waiters.load(std::memory_order_seq_cst) != 0) notify(c);
  }

  /// Frees the class's slabs that have every slot free (the first one stays listed, to be
  /// re-allocated by the next acquire); returns the bytes given back.
  /// Frees the idle slabs of a class; with `grown_only`, only those added by growth (light
  /// reclaim keeps the preallocated first slab).
  std::size_t trim_class(PoolClass& c, bool grown_only = false) noexcept {
    std::lock_guard<std::mutex> lock(c.mutex);
    BasicRuntimeCallGate<Runtime> gate;
    if (gpu_ && !gate) return 0;  // exiting or forked: nothing can be given back
    std::size_t released = 0;
    const std::uint32_t first = grown_only ? 1 : 0;
    for (std::uint32_t k = c.slab_count(); k-- > first;) {
      PoolSlab& s = *c.slab(k);
      if (!s.resident || slab_is_stale(s)) continue;  // the next acquire retires a stale one
      if (!s.bitmap.close_if_all_free()) {
        notify_waiters(c);  // a waiter may have scanned while the words were closed
        continue;
      }
      // A waiter may have missed the notify of the release that made the class idle (it came
      // before the waiter slept): freeing now would leave it asleep until its deadline.
      if (c.waiters.load(std::memory_order_seq_cst) != 0 || stream_work_pending(s)) {
        s.bitmap.reopen_all();
        notify_waiters(c);
        continue;
      }
      released += s.raw_bytes;
      free_slab_memory(s);  // frees it, or drops it when the gate closed meanwhile
      if (k > 0 && k + 1 == c.slab_count()) c.nlive.store(k, std::memory_order_release);
    }
    return released;
  }

  /// Stream work recorded at release may still be running on some slot (runtime gate held).
  bool stream_work_pending(PoolSlab& s) noexcept {
    if (!s.events) return false;
    for (std::uint32_t w = 0; w < s.bitmap.nwords(); ++w) {
      std::uint64_t p = s.bitmap.word(w).pending.load(std::memory_order_relaxed);
      for (; p; p &= p - 1) {
        const std::uint32_t slot = w * 64 + static_cast<std::uint32_t>(ctz64(p));
        if (RuntimeCalls<Runtime>::event_query(s.events[slot]).code == codes::not_ready)
          return true;
      }
    }
    return false;
  }

  /// Frees (or drops) every slab: the core's destructor and a failed construction.
  void free_all_slabs() noexcept {
    for (std::size_t i = 0; i < nclasses_; ++i) {
      for (auto& s : classes_[i].slabs) {
        if (!s->resident) {
          abandon_events(s->events);  // a retired slab keeps its events until now
        } else if (slab_is_stale(*s)) {
          drop_slab_memory(*s);
        } else {
          free_slab_memory(*s);
        }
      }
    }
  }

  BufferPoolOptions options_;
  MemoryKind kind_ = MemoryKind::host;
  bool fell_back_ = false;
  bool gpu_ = false;
  std::size_t nclasses_ = 0;
  std::size_t max_class_bytes_ = 0;
  std::unique_ptr<PoolClass[]> classes_;
  std::atomic<std::size_t> reserved_{0};  // slab bytes held
  LogOnce free_failed_;
  LogOnce event_destroy_failed_;
};

}  // namespace detail
GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_POOL_SLAB_HPP
