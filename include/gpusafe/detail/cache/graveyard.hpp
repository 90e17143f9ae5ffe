// SPDX-License-Identifier: MIT
// gpusafe/detail/cache/graveyard.hpp: what a locked section of ModelCache removed, released
// after the section unlocks.
//
// Purpose: a section that evicts moves each model's handle into a Graveyard instead of dropping
// it there; after unlocking, finish() drops the handles (a model's destructor may run then) and
// calls the on_evict callback once per model, in eviction order. An exception from the callback
// is logged (CallbackFailureLog: an error the first time per cache, debug after) and the eviction
// stands. The first eviction is kept in place, so the common section (one budget eviction per
// miss) allocates nothing; reserve() makes room for more before the section changes anything.
// An eviction keeps its entry (for the key) only when there is a callback to tell.
//
// Thread safety: a Graveyard belongs to one thread (one locked section and its aftermath).
// CallbackFailureLog may be used from any thread. Teardown: the destructor finishes what is
// left; nothing here touches a runtime (model destructors run where the last handle drops).
#ifndef GPUSAFE_DETAIL_CACHE_GRAVEYARD_HPP
#define GPUSAFE_DETAIL_CACHE_GRAVEYARD_HPP

#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "gpusafe/config.hpp"
#include "gpusafe/detail/cache/messages.hpp"
#include "gpusafe/detail/cache/stats.hpp"
#include "gpusafe/log.hpp"

GPUSAFE_NAMESPACE_BEGIN
namespace detail {

/// Logs the exceptions of a cache's on_evict callback: the first one as an error, naming the key;
/// later ones at debug level, since a callback that throws usually throws on every eviction.
class CallbackFailureLog {
 public:
  explicit CallbackFailureLog(const CacheMessages& messages) noexcept : messages_(messages) {}

  template <class Key>
  void report(const Key& key, std::size_t bytes, EvictReason reason, const char* what) noexcept {
    const LogLevel level = once_.first() ? LogLevel::error : LogLevel::debug;
    log_lazy(level, [&] { return messages_.callback_failure(key, bytes, reason, what); });
  }

 private:
  const CacheMessages& messages_;
  LogOnce once_;
};

/// The models one locked section removed, and the callback to tell.
template <class Entry>
class Graveyard {
 public:
  using Handle = typename Entry::Handle;
  using Key = std::remove_const_t<decltype(Entry::key)>;
  using Callback = std::function<void(const Key&, std::size_t, EvictReason)>;

  struct Evicted {
    std::shared_ptr<Entry> entry;  // kept only when the callback is told
    Handle model;
    std::size_t bytes;
    EvictReason reason;
  };

  explicit Graveyard(CallbackFailureLog& failures) noexcept : failures_(failures) {}
  Graveyard(const Graveyard&) = delete;
  Graveyard& operator=(const Graveyard&) = delete;
  ~Graveyard() { finish(); }

  /// The callback to call in finish() (taken under the section's lock). Keeps a set one.
  void set_callback(const std::shared_ptr<const Callback>& callback) {
    if (!callback_) callback_ = callback;
  }

  /// Keeps `entry` alive until finish() (an entry the section unregistered).
  void keep(std::shared_ptr<Entry> entry) { entries_.push_back(std::move(entry)); }

  /// Makes room for `more` evictions, so that add() cannot throw. Throws std::bad_alloc.
  void reserve(std::size_t more) {
    const std::size_t in_vector = first_ ? rest_.size() + more : (more > 0 ? more - 1 : 0);
    if (in_vector > rest_.capacity()) rest_.reserve(in_vector);
  }

  /// Records an eviction; reserve() made room.
  void add(Evicted&& v) noexcept {
    if (!first_)
      first_.emplace(std::move(v));
    else
      rest_.push_back(std::move(v));
  }

  bool empty() const noexcept { return !first_; }

  /// Whether finish() calls a callback: only then do evictions need their entry (for its key).
  bool reports() const noexcept { return callback_ && *callback_; }

  /// Outside every lock: drops the models and calls the callback for each, in order. Returns the
  /// bytes evicted. Inline and cheap when the section left nothing (most sections of a miss).
  std::size_t finish() noexcept {
    if (!first_ && entries_.empty() && !callback_) return 0;  // `rest_` is empty without `first_`
    return finish_all();
  }

 private:
  std::size_t finish_all() noexcept {
    std::size_t bytes = 0;
    if (first_) bytes += report(*first_);
    first_.reset();
    for (auto& v : rest_) bytes += report(v);
    rest_.clear();
    entries_.clear();
    callback_.reset();
    return bytes;
  }

  std::size_t report(Evicted& v) noexcept {
    v.model.reset();
    if (v.entry && reports()) {
      GPUSAFE_TRY { (*callback_)(v.entry->key, v.bytes, v.reason); }
      GPUSAFE_CATCH_ALL {
        failures_.report(v.entry->key, v.bytes, v.reason, current_exception_what());
      }
    }
    v.entry.reset();
    return v.bytes;
  }

  CallbackFailureLog& failures_;
  std::optional<Evicted> first_;
  std::vector<Evicted> rest_;  // the evictions after `first_`, in order
  std::vector<std::shared_ptr<Entry>> entries_;
  std::shared_ptr<const Callback> callback_;
};

}  // namespace detail
GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_CACHE_GRAVEYARD_HPP
