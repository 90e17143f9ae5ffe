// SPDX-License-Identifier: MIT
// gpusafe/detail/cache/resident_set.hpp: the resident models of ModelCache and its byte budget.
//
// Purpose: ResidentSet keeps the byte counts (resident, reserved by loads in progress, retired:
// evicted but held by handles), the LRU list of the evictable models, and the eviction counters.
// It admits loaded models, plans and carries out evictions (least recently used first, skipping
// models a handle holds, all or nothing for room in the budget) and moves what it evicts into a
// Graveyard, so that no callback or model destructor runs under the cache's lock.
//
// Thread safety: none of its own; every member is called under the cache's writer lock (all
// stripes), except the LRU relinking of a hit, which StripedLocks documents. Teardown: holds
// no models of its own (the entries do); nothing here touches a runtime.
#ifndef GPUSAFE_DETAIL_CACHE_RESIDENT_SET_HPP
#define GPUSAFE_DETAIL_CACHE_RESIDENT_SET_HPP

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "gpusafe/config.hpp"
#include "gpusafe/detail/cache/entry.hpp"
#include "gpusafe/detail/cache/graveyard.hpp"
#include "gpusafe/detail/cache/lru_list.hpp"
#include "gpusafe/detail/cache/messages.hpp"
#include "gpusafe/detail/cache/options.hpp"
#include "gpusafe/detail/cache/stats.hpp"

GPUSAFE_NAMESPACE_BEGIN
namespace detail {

template <class Entry>
class ResidentSet {
 public:
  using Handle = typename Entry::Handle;

  ResidentSet(std::size_t byte_budget, std::size_t max_evictions_per_call)
      : budget_(byte_budget),
        max_evictions_(max_evictions_per_call),
        acct_(std::make_shared<ModelCacheAccounting>()) {}
  ResidentSet(const ResidentSet&) = delete;
  ResidentSet& operator=(const ResidentSet&) = delete;

  const std::shared_ptr<ModelCacheAccounting>& accounting() const noexcept { return acct_; }
  LruList<Entry>& lru() noexcept { return lru_; }
  std::size_t resident_bytes() const noexcept { return resident_; }
  std::size_t resident_count() const noexcept { return resident_count_; }
  std::size_t reserved_bytes() const noexcept { return reserved_; }
  std::size_t retired_bytes() const noexcept {
    return acct_->retired.load(std::memory_order_acquire);
  }
  /// Resident bytes that no eviction by budget or pressure may free.
  std::size_t pinned_bytes() const noexcept { return resident_ - lru_.bytes(); }

  /// What counts against the budget.
  std::size_t charged() const noexcept { return resident_ + retired_bytes() + reserved_; }

  bool fits(std::size_t need) const noexcept {
    const std::size_t used = charged();
    return used <= budget_ && need <= budget_ - used;
  }

  /// Holds `bytes` of the budget for a load in progress.
  void reserve(std::size_t bytes) noexcept { reserved_ += bytes; }
  void unreserve(std::size_t bytes) noexcept { reserved_ -= bytes; }

  /// Makes `need` bytes fit by budget eviction, all or nothing. False: it cannot fit now.
  bool make_room(std::size_t need, Graveyard<Entry>& g) {
    if (fits(need)) return true;
    if (need > budget_) return false;
    const std::size_t deficit = charged() - (budget_ - need);  // used + need - budget
    victims_.clear();
    if (plan(deficit, max_evictions_, victims_) < deficit) return false;
    retire_all(victims_, EvictReason::budget, g);
    return true;
  }

  /// Evicts models no handle holds, LRU first, until `goal` bytes are freed, at most `cap`
  /// models (0 = no cap). Returns the bytes freed.
  std::size_t evict_lru(std::size_t goal, EvictReason reason, std::size_t cap,
                        Graveyard<Entry>& g) {
    victims_.clear();
    const std::size_t freed = plan(goal, cap, victims_);
    retire_all(victims_, reason, g);
    return freed;
  }

  /// Pressure eviction: like evict_lru, capped by the options' max_evictions_per_call.
  std::size_t evict_for_pressure(std::size_t goal, Graveyard<Entry>& g) {
    return evict_lru(goal, EvictReason::pressure, max_evictions_, g);
  }

  /// Makes `e` resident with the model of `load`, of `bytes` (room was made). The cache's handle
  /// aliases the load (taking over the reference passed in), which owns the model from now on.
  void admit(Entry& e, std::shared_ptr<typename Entry::LoadOp> load,
             std::shared_ptr<typename Handle::element_type> model, std::size_t bytes) noexcept {
    load->original = std::move(model);
    load->cached_result = true;
    e.load = load.get();
    e.cached = Handle(std::move(load), e.load->original.get());
    e.bytes = bytes;
    resident_ += bytes;
    ++resident_count_;
    if (e.evictable()) lru_.push_front(e, e.bytes);
  }

  /// Moves a resident entry to the graveyard, which must have room (no throw here).
  void retire(Entry& e, EvictReason reason, Graveyard<Entry>& g) noexcept {
    const std::size_t bytes = e.bytes;
    Handle model = release(e);
    ++evictions_[static_cast<std::size_t>(reason)];
    std::shared_ptr<Entry> keep = g.reports() ? e.shared_from_this() : nullptr;
    g.add(typename Graveyard<Entry>::Evicted{std::move(keep), std::move(model), bytes, reason});
  }

  /// Takes a resident entry out without counting an eviction; returns the cache's reference.
  Handle release(Entry& e) noexcept {
    if (e.in_lru) lru_.remove(e);
    resident_ -= e.bytes;
    --resident_count_;
    e.charge_retired(acct_);
    Handle model = std::move(e.cached);
    e.cached.reset();
    e.load = nullptr;
    e.bytes = 0;
    return model;
  }

  /// Pins `e`: it leaves the LRU list.
  void pin(Entry& e) noexcept {
    e.pinned = true;
    if (e.in_lru) lru_.remove(e);
  }

  /// Unpins `e`: a resident secondary model becomes the most recently used.
  void unpin(Entry& e) noexcept {
    e.pinned = false;
    if (e.evictable() && !e.in_lru) lru_.push_front(e, e.bytes);
  }

  BudgetFigures figures() const noexcept {
    return BudgetFigures{budget_, pinned_bytes(), retired_bytes(), reserved_};
  }

  /// Fills the byte figures and the eviction counts of `s`.
  void fill_stats(ModelCacheStats& s) const noexcept {
    s.evictions = evictions_;
    s.bytes_resident = resident_;
    s.bytes_pinned = pinned_bytes();
    s.bytes_reserved = reserved_;
    s.bytes_retired = retired_bytes();
    s.byte_budget = budget_;
    s.models_resident = resident_count_;
  }

 private:
  // Plans an LRU-first eviction of models no handle holds until `goal` bytes are freed, at most
  // `cap` models (0 = no cap). Returns the bytes the victims free.
  std::size_t plan(std::size_t goal, std::size_t cap, std::vector<Entry*>& victims) const {
    std::size_t freed = 0;
    for (Entry* e = lru_.tail(); e && freed < goal; e = LruList<Entry>::newer(*e)) {
      if (cap != 0 && victims.size() >= cap) break;
      if (e->in_use()) continue;
      victims.push_back(e);
      freed += e->bytes;
    }
    return freed;
  }

  void retire_all(const std::vector<Entry*>& victims, EvictReason reason, Graveyard<Entry>& g) {
    g.reserve(victims.size());
    for (Entry* e : victims) retire(*e, reason, g);
  }

  const std::size_t budget_;
  const std::size_t max_evictions_;
  std::shared_ptr<ModelCacheAccounting> acct_;
  LruList<Entry> lru_;
  std::vector<Entry*> victims_;  // eviction plans (kept for its capacity)
  std::size_t resident_ = 0;
  std::size_t resident_count_ = 0;
  std::size_t reserved_ = 0;
  std::array<std::uint64_t, kEvictReasonCount> evictions_{};
};

}  // namespace detail
GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_CACHE_RESIDENT_SET_HPP
