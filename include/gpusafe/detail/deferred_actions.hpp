// SPDX-License-Identifier: MIT
// gpusafe/detail/deferred_actions.hpp: the storage of SafeCudaCleanup's deferred actions.
//
// A last-in-first-out stack of type-erased callables. The first kInlineSlots actions whose
// callable is at most kInlineBytes (and no more aligned than std::max_align_t) live inside the
// stack object itself, so a guard with a few small defers (a lambda capturing a few references)
// makes no heap allocation; bigger or later actions go to the heap, one allocation each.
//
// Callables are type-erased by a virtual base in gpusafe's namespace rather than by std::function:
// a std:: template instantiated on a caller's lambda gets default visibility even under
// -fvisibility=hidden, so two shared libraries with the same lambda would share one copy and run
// each other's code (rule 10, docs/teardown.md section 8). These types follow the library's
// visibility.
//
// Thread safety: none (one guard, one thread). Teardown: destroying the stack destroys the pending
// actions without running them; nothing here touches a runtime.
#ifndef GPUSAFE_DETAIL_DEFERRED_ACTIONS_HPP
#define GPUSAFE_DETAIL_DEFERRED_ACTIONS_HPP

#include <cstddef>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

#include "gpusafe/config.hpp"

GPUSAFE_NAMESPACE_BEGIN

namespace detail {

struct DeferredActionBase {
  virtual ~DeferredActionBase() = default;
  virtual void run() = 0;
};

template <class F>
struct DeferredAction final : DeferredActionBase {
  template <class G, class = std::enable_if_t<!std::is_same_v<std::decay_t<G>, DeferredAction>>>
  explicit DeferredAction(G&& g) : f(std::forward<G>(g)) {}
  void run() override { f(); }
  F f;
};

/// LIFO stack of deferred actions with inline room for the first few small ones.
class DeferredActionStack {
 public:
  /// Actions stored inline (the first ones deferred).
  static constexpr std::size_t kInlineSlots = 3;
  /// The largest callable stored inline, in bytes (the slot also holds the vtable pointer).
  static constexpr std::size_t kInlineBytes = 48;

  /// Whether a callable of type F is stored inline when a slot is free.
  template <class F>
  static constexpr bool fits_inline() noexcept {
    return sizeof(DeferredAction<F>) <= kSlotBytes &&
           alignof(DeferredAction<F>) <= alignof(std::max_align_t);
  }

  DeferredActionStack() noexcept = default;
  DeferredActionStack(const DeferredActionStack&) = delete;
  DeferredActionStack& operator=(const DeferredActionStack&) = delete;
  ~DeferredActionStack() { clear(); }

  /// Adds an action on top. Throws what F's constructor or the heap throws; then nothing changes.
  template <class F, class G>
  void push(G&& g) {
    using Action = DeferredAction<F>;
    if (first_count_ < kInlineSlots) {
      const std::size_t i = first_count_;
      Entry entry;
      if constexpr (fits_inline<F>()) {
        if (i != running_slot_) {
          entry.action = ::new (static_cast<void*>(slots_[i].bytes)) Action(std::forward<G>(g));
          entry.on_heap = false;
        }
      }
      if (entry.action == nullptr) {
        entry.action = new Action(std::forward<G>(g));
        entry.on_heap = true;
      }
      first_[i] = entry;
      ++first_count_;
      return;
    }
    std::unique_ptr<DeferredActionBase> action(new Action(std::forward<G>(g)));
    rest_.push_back(std::move(action));  // on bad_alloc, `action` still owns it and frees it
  }

  bool empty() const noexcept { return first_count_ == 0 && rest_.empty(); }
  std::size_t size() const noexcept { return first_count_ + rest_.size(); }

  /// Runs and destroys the top action; returns false when the stack was empty. The action is
  /// taken off the stack before it runs, so it may push() or clear() on this stack. What the
  /// action throws propagates (the action is destroyed first).
  bool run_top() {
    if (!rest_.empty()) {
      std::unique_ptr<DeferredActionBase> action = std::move(rest_.back());
      rest_.pop_back();
      action->run();
      return true;
    }
    if (first_count_ == 0) return false;
    const std::size_t i = --first_count_;
    const Entry entry = first_[i];
    first_[i] = Entry{};
    // While it runs, slot i's bytes are busy: a push() landing at index i goes to the heap.
    running_slot_ = entry.on_heap ? kNoSlot : i;
    struct Finish {
      Entry entry;
      std::size_t& running_slot;
      ~Finish() {
        running_slot = kNoSlot;
        destroy(entry);
      }
    } finish{entry, running_slot_};
    entry.action->run();
    return true;
  }

  /// Destroys every pending action without running it, the most recent first.
  void clear() noexcept {
    while (!rest_.empty()) rest_.pop_back();
    while (first_count_ > 0) {
      const std::size_t i = --first_count_;
      destroy(first_[i]);
      first_[i] = Entry{};
    }
  }

 private:
  static constexpr std::size_t kSlotBytes = kInlineBytes + sizeof(void*);
  static constexpr std::size_t kNoSlot = static_cast<std::size_t>(-1);

  struct Entry {
    DeferredActionBase* action = nullptr;
    bool on_heap = false;
  };
  struct alignas(std::max_align_t) Slot {
    unsigned char bytes[kSlotBytes];
  };

  static void destroy(const Entry& entry) noexcept {
    if (entry.action == nullptr) return;
    if (entry.on_heap) {
      delete entry.action;
    } else {
      entry.action->~DeferredActionBase();
    }
  }

  Slot slots_[kInlineSlots];
  Entry first_[kInlineSlots];
  std::size_t first_count_ = 0;
  std::size_t running_slot_ = kNoSlot;
  std::vector<std::unique_ptr<DeferredActionBase>> rest_;
};

}  // namespace detail

GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_DEFERRED_ACTIONS_HPP
