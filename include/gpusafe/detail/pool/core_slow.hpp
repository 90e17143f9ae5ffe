// SPDX-License-Identifier: MIT
// gpusafe/detail/pool/core_slow.hpp: the slow paths of PoolCore<Runtime> (construction and option
// checks, refilling a class under its lock, growth, waiting, overflow buffers, exhaustion
// messages, statistics, leak records). Included by gpusafe/detail/pool/core.hpp; see there for
// thread safety and teardown.
#ifndef GPUSAFE_DETAIL_POOL_CORE_SLOW_HPP
#define GPUSAFE_DETAIL_POOL_CORE_SLOW_HPP

#include "gpusafe/detail/pool/core.hpp"

GPUSAFE_NAMESPACE_BEGIN
namespace detail {

template <class Runtime>
PoolCore<Runtime>::PoolCore(BufferPoolOptions options) : Caches(std::move(options)) {
  validate();
  fell_back_ = false;
  kind_ = resolve_memory_kind<Runtime>(options_.kind, options_.fallback, &fell_back_,
                                       this->pool_label());
  gpu_ = kind_ != MemoryKind::host;
  if (gpu_) {
    check_gpu_request(options_.device, this->pool_label());
    check_device_exists();
  }
  if (fell_back_)
    log_lazy(LogLevel::warning, [&] {
      int code = 0;
      return this->pool_label() + ": " + to_string(options_.kind) +
             " memory was asked for but the " + RuntimeCalls<Runtime>::name() +
             " runtime has no usable GPU (" + no_gpu_cause<Runtime>(&code) +
             "); buffers are served from host memory (use Fallback::error to refuse)";
    });
  nclasses_ = options_.classes.size();
  classes_.reset(new PoolClass[nclasses_]);
  const std::size_t cache = std::min<std::size_t>(options_.thread_cache, kMagazineMax);
  for (std::size_t i = 0; i < nclasses_; ++i) {
    PoolClass& c = classes_[i];
    c.bytes = options_.classes[i].bytes;
    c.count = options_.classes[i].count;
    c.stride = Slabs::round_up(c.bytes, options_.alignment);
    // At most an eighth of the class per thread, so that caches cannot starve other threads.
    c.cache_capacity = static_cast<std::uint32_t>(std::min(cache, c.count / 8));
  }
  max_class_bytes_ = classes_[nclasses_ - 1].bytes;
  // One slab per class now; on any failure free what was made (strong guarantee).
  GPUSAFE_TRY {
    for (std::size_t i = 0; i < nclasses_; ++i) {
      PoolClass& c = classes_[i];
      std::unique_ptr<PoolSlab> slab = this->make_slab_metadata(c.count);
      c.slabs.reserve(c.slabs.size() + 1);  // publish() must not throw once memory is held
      this->allocate_slab(c, *slab);
      this->publish(c, 0, std::move(slab));
    }
  }
  GPUSAFE_CATCH_ALL {
    this->free_all_slabs();
    GPUSAFE_RETHROW;
  }
  enrol_fork_aware(this);  // a forked child rebuilds the core's locks (rule 5)
}

template <class Runtime>
void PoolCore<Runtime>::check_device_exists() const {
  int count = 0;
  if (!RuntimeCalls<Runtime>::device_count(count).ok() || options_.device < count) return;
  GPUSAFE_THROW(InvalidArgument(this->pool_label() + ": device " + std::to_string(options_.device) +
                                " does not exist; this machine has " + std::to_string(count) +
                                " GPU(s), so valid indices are 0.." + std::to_string(count - 1) +
                                "; set BufferPoolOptions::device to one of them"));
}

template <class Runtime>
void PoolCore<Runtime>::validate() const {
  const std::string who = this->pool_label();
  if (options_.device < 0 && options_.kind != MemoryKind::host)
    GPUSAFE_THROW(
        InvalidArgument(who + ": device " + std::to_string(options_.device) +
                        " is negative; set BufferPoolOptions::device to a GPU index (0 is the "
                        "first GPU; without a GPU the pool falls back to host memory)"));
  const std::size_t a = options_.alignment;
  if (a == 0 || (a & (a - 1)) != 0)
    GPUSAFE_THROW(
        InvalidArgument(who + ": alignment " + std::to_string(a) +
                        " is not a power of two; use 256 (the default) or another power of two"));
  if (options_.classes.empty())
    GPUSAFE_THROW(InvalidArgument(who + ": no size classes; give at least one {bytes, count}, e.g. "
                                        "{{1 << 20, 8}}"));
  if (options_.classes.size() > std::numeric_limits<std::uint32_t>::max() / 2)
    GPUSAFE_THROW(InvalidArgument(who + ": too many size classes"));
  std::size_t first_slabs = 0;
  bool first_slabs_overflow = false;
  for (std::size_t i = 0; i < options_.classes.size(); ++i) {
    const SizeClass& sc = options_.classes[i];
    const std::string which = who + ": size class #" + std::to_string(i) + " {" +
                              std::to_string(sc.bytes) + " bytes, " + std::to_string(sc.count) +
                              " buffers}";
    if (sc.bytes == 0)
      GPUSAFE_THROW(InvalidArgument(which + ": zero bytes; give each class a size > 0"));
    if (sc.count == 0)
      GPUSAFE_THROW(
          InvalidArgument(which + ": count is zero; give each class at least one buffer"));
    if (sc.count > (std::size_t{1} << 31))
      GPUSAFE_THROW(InvalidArgument(which + ": count too large; at most 2^31 buffers per class"));
    if (i > 0 && sc.bytes <= options_.classes[i - 1].bytes)
      GPUSAFE_THROW(InvalidArgument(
          which + ": classes must be strictly ascending by bytes (" +
          (sc.bytes == options_.classes[i - 1].bytes ? "duplicate size" : "unsorted") +
          "); sort them and merge duplicates"));
    if (sc.bytes > std::numeric_limits<std::size_t>::max() - a)
      GPUSAFE_THROW(InvalidArgument(which + ": size overflows when rounded up to the alignment"));
    const std::size_t stride = Slabs::round_up(sc.bytes, a);
    if (stride > (std::numeric_limits<std::size_t>::max() - a) / sc.count)
      GPUSAFE_THROW(InvalidArgument(which + ": bytes * count overflows size_t; ask for less"));
    const std::size_t slab = stride * sc.count;
    if (first_slabs > std::numeric_limits<std::size_t>::max() - slab) first_slabs_overflow = true;
    first_slabs += slab;
  }
  if (options_.overflow == OverflowPolicy::grow && options_.max_bytes == 0)
    GPUSAFE_THROW(
        InvalidArgument(who +
                        ": OverflowPolicy::grow with max_bytes 0; growth needs a cap: set "
                        "BufferPoolOptions::max_bytes to the most slab bytes the pool may hold"));
  if (options_.max_bytes != 0 && (first_slabs_overflow || options_.max_bytes < first_slabs))
    GPUSAFE_THROW(
        InvalidArgument(who + ": max_bytes " + std::to_string(options_.max_bytes) +
                        " is smaller than the first slab of every class (" +
                        (first_slabs_overflow ? std::string("more than size_t holds")
                                              : std::to_string(first_slabs)) +
                        " bytes); raise max_bytes to at least that, or lower the class counts"));
}

/// Under the class mutex: makes the class usable (retires stale slabs, re-allocates a trimmed
/// one, grows when the policy says so), then takes a slot.
template <class Runtime>
bool PoolCore<Runtime>::take_locked(PoolClass& c, SlotRef& r) {
  std::lock_guard<std::mutex> lock(c.mutex);
  this->refresh_locked(c);
  if (take_shared(c, r)) return true;
  if (options_.overflow == OverflowPolicy::grow && this->grow_locked(c)) return take_shared(c, r);
  return false;
}

template <class Runtime>
BufferLease PoolCore<Runtime>::acquire_slow(PoolClass& c, std::uint32_t ci, std::size_t bytes,
                                            LeaseTag tag, Mode mode,
                                            std::chrono::steady_clock::time_point deadline,
                                            Magazine* m) {
  if (gpu_) check_admission(bytes);
  SlotRef r;
  if (take_locked(c, r)) return make_lease(c, ci, r, bytes, tag, m);
  if (options_.overflow == OverflowPolicy::allocate) return allocate_overflow(&c, ci, bytes, tag);
  if (mode == Mode::trying) {
    c.failures.fetch_add(1, std::memory_order_relaxed);
    return BufferLease();
  }
  if (mode == Mode::throwing) {
    c.failures.fetch_add(1, std::memory_order_relaxed);
    GPUSAFE_THROW(PoolExhausted(exhausted_message(c, bytes)));
  }
  // Waiting: only while the class is empty; releases notify when waiters != 0 (and bypass the
  // thread caches meanwhile).
  c.waits.fetch_add(1, std::memory_order_relaxed);
  c.waiters.fetch_add(1, std::memory_order_seq_cst);
  struct WaiterGuard {
    PoolClass& c;
    ~WaiterGuard() { c.waiters.fetch_sub(1, std::memory_order_seq_cst); }
  } guard{c};
  for (;;) {
    if (take_locked(c, r)) return make_lease(c, ci, r, bytes, tag, m);
    std::unique_lock<std::mutex> lock(c.wait_mutex);
    // seq_cst loads pair with the releaser's seq_cst fetch_or and waiters load: either it sees
    // this waiter and notifies under the mutex, or this scan sees its slot.
    bool visible = false;
    for (std::uint32_t k = 0, n = c.slab_count(); k < n && !visible; ++k)
      visible = c.slab(k)->bitmap.idle_slot_visible();
    if (visible) continue;
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) break;
    // Slots waiting on stream work free themselves without a release: poll them.
    auto until = deadline;
    if (this->wants_events() && now + std::chrono::milliseconds(1) < deadline)
      until = now + std::chrono::milliseconds(1);
    c.cv.wait_until(lock, until);
    if (gpu_) check_admission(bytes);
  }
  c.failures.fetch_add(1, std::memory_order_relaxed);
  GPUSAFE_THROW(Timeout(exhausted_message(c, bytes) + " (acquire_for timed out)"));
}

template <class Runtime>
std::string PoolCore<Runtime>::exhausted_message(PoolClass& c, std::size_t bytes) const {
  std::size_t capacity = 0, free_now = 0, pending = 0;
  for (std::uint32_t k = 0, n = c.slab_count(); k < n; ++k) {
    PoolSlab& s = *c.slab(k);
    if (s.retired.load(std::memory_order_relaxed) || !s.resident) continue;
    capacity += s.bitmap.count();
    free_now += s.bitmap.free_count();
    pending += s.bitmap.pending_count();
  }
  std::string m = "acquire(" + std::to_string(bytes) + " bytes) from pool '" + options_.name +
                  "': size class " + std::to_string(c.bytes) + " has " +
                  std::to_string(capacity - std::min(capacity, free_now)) + "/" +
                  std::to_string(capacity) + " buffers leased";
  if (pending != 0)
    m += " (" + std::to_string(pending) + " more wait for stream work recorded at release)";
  if (options_.overflow == OverflowPolicy::grow)
    m += " and cannot grow within max_bytes " + std::to_string(options_.max_bytes) + " (" +
         std::to_string(this->reserved_.load(std::memory_order_relaxed)) + " bytes held)";
  return m +
         "; raise its count or max_bytes, release leases sooner, use acquire_for() to wait, or "
         "enable overflow";
}

template <class Runtime>
BufferLease PoolCore<Runtime>::acquire_unusual(std::size_t bytes, LeaseTag tag) {
  const std::string what =
      "acquire(" + std::to_string(bytes) + " bytes) from pool '" + options_.name + "'";
  if (bytes == 0) GPUSAFE_THROW(InvalidArgument(what + ": zero bytes; ask for at least 1 byte"));
  if (bytes > std::numeric_limits<std::size_t>::max() / 2)
    GPUSAFE_THROW(InvalidArgument(what + ": the size is absurd (it overflows when rounded to the "
                                         "alignment); check the size computation"));
  if (options_.overflow != OverflowPolicy::allocate)
    GPUSAFE_THROW(InvalidArgument(what + ": larger than the largest size class (" +
                                  std::to_string(max_class_bytes_) +
                                  "); add a class or enable overflow"));
  if (gpu_) check_admission(bytes);
  return allocate_overflow(nullptr, 0, bytes, tag);
}

template <class Runtime>
BufferLease PoolCore<Runtime>::allocate_overflow(PoolClass* c, std::uint32_t ci, std::size_t bytes,
                                                 LeaseTag tag) {
  const std::string what = "acquire(" + std::to_string(bytes) + " bytes) from pool '" +
                           options_.name + "' (overflow allocation outside the pool)";
  void* p = nullptr;
  {
    BasicRuntimeCallGate<Runtime> gate;
    if (gpu_) this->admit_or_throw(gate, what);
    PoolDeviceScope<Runtime> scope(gpu_, options_.device);
    const Status s = this->raw_allocate(bytes, &p);
    if (!s.ok() || !p) {
      if (c) c->failures.fetch_add(1, std::memory_order_relaxed);
      throw_allocation_failure(s, what,
                               "free memory, raise the class counts, or release leases sooner");
    }
  }
  LeaseState st;
  st.slab = nullptr;
  st.cls = c ? ci : std::numeric_limits<std::uint32_t>::max();
  st.epoch = gpu_ ? device_epoch(options_.device) : 0;
  if (options_.track_leases) {
    GPUSAFE_TRY { st.track_id = tracker_.track(options_.name, bytes, c ? c->bytes : 0, tag, true); }
    GPUSAFE_CATCH_ALL {
      (void)this->raw_deallocate(p);
      GPUSAFE_RETHROW;
    }
  }
  if (c) {
    c->overflow.fetch_add(1, std::memory_order_relaxed);
  } else {
    oversize_overflow_.fetch_add(1, std::memory_order_relaxed);
  }
  overflow_live_.fetch_add(1, std::memory_order_seq_cst);
  overflow_bytes_live_.fetch_add(bytes, std::memory_order_relaxed);
  return BufferLease(this, p, bytes, bytes, st, kind_, options_.device, fell_back_, true);
}

template <class Runtime>
void PoolCore<Runtime>::release_overflow(void* data, std::size_t bytes, LeaseState& st) noexcept {
  hold();  // the core is used below, after the buffer stopped counting as live
  overflow_live_.fetch_sub(1, std::memory_order_seq_cst);
  overflow_bytes_live_.fetch_sub(bytes, std::memory_order_relaxed);
  {
    BasicRuntimeCallGate<Runtime> gate;
    if (gpu_ &&
        (!gate || st.epoch != device_epoch(options_.device) || is_poisoned(options_.device))) {
      if (st.cls < nclasses_) classes_[st.cls].dropped.fetch_add(1, std::memory_order_relaxed);
    } else {
      PoolDeviceScope<Runtime> scope(gpu_, options_.device);
      const Status s = this->raw_deallocate(data);
      if (!s.ok())
        log_release_failure(
            &this->free_failed_, [this] { return this->pool_label(); },
            "freeing an overflow buffer", -1, s,
            "the memory is forgotten (further failures of this pool are not logged)",
            BenignFailures::unlogged);
    }
  }
  drop();  // last: may delete this
}

template <class Runtime>
BufferPoolStats PoolCore<Runtime>::stats() const {
  BufferPoolStats out;
  out.name = options_.name;
  out.requested_kind = options_.kind;
  out.kind = kind_;
  out.device = options_.device;
  out.fallback = fell_back_;
  // Per-thread figures summed on read (approximate while threads run).
  std::vector<std::uint64_t> acquired(nclasses_), released(nclasses_);
  std::vector<std::size_t> cached(nclasses_);
  this->sum_counters(acquired, released, cached);
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
    cs.acquires = acquired[i];
    cs.in_use = acquired[i] >= released[i] ? acquired[i] - released[i] : 0;
    cs.cached = cached[i];
    cs.available = cached[i];
    {
      std::lock_guard<std::mutex> lock(c.mutex);
      for (std::uint32_t k = 0, n = c.slab_count(); k < n; ++k) {
        PoolSlab& s = *c.slab(k);
        if (!s.resident || s.retired.load(std::memory_order_relaxed)) continue;
        if (k > 0) cs.capacity += s.bitmap.count();
        cs.bytes_reserved += s.raw_bytes;
        cs.available += s.bitmap.free_count();
        ++cs.slabs;
        if (k == 0) cs.resident = true;
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

template <class Runtime>
void PoolCore<Runtime>::add_to_totals(SizeClassStats& t, const SizeClassStats& c) noexcept {
  t.capacity += c.capacity;
  t.in_use += c.in_use;
  t.available += c.available;
  t.cached += c.cached;
  t.high_water += c.high_water;
  t.acquires += c.acquires;
  t.failures += c.failures;
  t.waits += c.waits;
  t.overflow += c.overflow;
  t.fallback += c.fallback;
  t.dropped += c.dropped;
  t.bytes_reserved += c.bytes_reserved;
  t.slabs += c.slabs;
  t.resident = t.resident || c.resident;
}

template <class Runtime>
std::vector<LeakRecord> PoolCore<Runtime>::leak_records() const {
  if (options_.track_leases) return tracker_.outstanding();
  // Without the tracker the counts and sizes are known, not where or when: one record per
  // class with leases out, and one for overflow buffers.
  std::vector<LeakRecord> out;
  const BufferPoolStats st = stats();
  for (const auto& c : st.classes)
    if (c.in_use > 0) out.push_back(untracked_record(c.in_use, c.in_use * c.bytes));
  if (st.overflow_live > 0)
    out.push_back(untracked_record(st.overflow_live, st.overflow_bytes_live));
  return out;
}

template <class Runtime>
LeakRecord PoolCore<Runtime>::untracked_record(std::size_t leases, std::size_t bytes) const {
  LeakRecord r;
  r.resource = options_.name;
  r.bytes = bytes;
  r.leases = leases;
  r.age_known = false;
  r.tag = "enable track_leases to see where";
  return r;
}

template <class Runtime>
void PoolCore<Runtime>::log_outstanding_once() noexcept {
  GPUSAFE_TRY {
    const BufferPoolStats st = stats();
    if (st.totals.in_use + st.overflow_live == 0) return;
    if (!report_logged_.first()) return;
    log(LogLevel::warning, "at shutdown: " + leak_report());
  }
  GPUSAFE_CATCH_ALL {}
}

}  // namespace detail
GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_POOL_CORE_SLOW_HPP
