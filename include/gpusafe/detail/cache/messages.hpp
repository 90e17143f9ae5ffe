// SPDX-License-Identifier: MIT
// gpusafe/detail/cache/messages.hpp: the text of ModelCache's errors and log messages.
//
// Purpose: describes keys (with their operator<< when they have one) and builds every message a
// cache throws or logs, each naming the cache, the operation and the key, and saying what to do.
// Building a message is the only work here; nothing is thrown or logged.
//
// Thread safety: CacheMessages holds the cache's name, set once at construction; its functions
// are const and may be called from any thread. Teardown: nothing to release.
#ifndef GPUSAFE_DETAIL_CACHE_MESSAGES_HPP
#define GPUSAFE_DETAIL_CACHE_MESSAGES_HPP

#include <cstddef>
#include <ostream>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>

#include "gpusafe/config.hpp"
#include "gpusafe/detail/cache/options.hpp"
#include "gpusafe/detail/cache/stats.hpp"

GPUSAFE_NAMESPACE_BEGIN
namespace detail {

template <class T, class = void>
struct model_cache_streamable : std::false_type {};
template <class T>
struct model_cache_streamable<
    T, std::void_t<decltype(std::declval<std::ostream&>() << std::declval<const T&>())>>
    : std::true_type {};

/// The key in quotes, or a placeholder when it has no operator<<. May throw.
template <class Key>
std::string describe_cache_key(const Key& key) {
  if constexpr (model_cache_streamable<Key>::value) {
    std::ostringstream os;
    os << key;
    return "'" + os.str() + "'";
  } else {
    return "(key without operator<<)";
  }
}

template <class Key>
std::string describe_erased_cache_key(const void* key) {
  return describe_cache_key(*static_cast<const Key*>(key));
}

/// What the budget held when a model did not fit (for BudgetExceeded's message).
struct BudgetFigures {
  std::size_t budget = 0;
  std::size_t pinned = 0;    // primary and pinned models
  std::size_t retired = 0;   // evicted but held by handles
  std::size_t reserved = 0;  // loads in progress
};

/// The messages of one cache.
class CacheMessages {
 public:
  explicit CacheMessages(const std::string& name) : name_(name) {}

  /// "ModelCache '<name>': <op> ".
  std::string prefix(const char* op) const { return "ModelCache '" + name_ + "': " + op + " "; }

  template <class Key>
  std::string unknown_key(const char* op, const Key& key) const {
    return prefix(op) + describe_cache_key(key) +
           ": key is not registered; register it first with add(key, loader, "
           "Residency::secondary or Residency::primary, size_hint)";
  }

  template <class Key>
  std::string empty_loader(const Key& key) const {
    return prefix("add") + describe_cache_key(key) +
           ": the loader is empty; pass a callable returning Loaded<Model>";
  }

  template <class Key>
  std::string duplicate_key(const Key& key) const {
    return prefix("add") + describe_cache_key(key) +
           ": key already registered; remove(key) first or use another key";
  }

  std::string destroyed(const char* op) const { return prefix(op) + ": the cache was destroyed"; }

  template <class Key>
  std::string own_loader_gets_its_key(const Key& key) const {
    return prefix("get") + describe_cache_key(key) +
           ": called from its own loader; a loader must not get its key";
  }

  template <class Key>
  std::string null_model(const Key& key) const {
    return prefix("get") + describe_cache_key(key) +
           ": the loader returned a null model; return "
           "Loaded<Model>{std::make_shared<Model>(...), bytes} or throw";
  }

  /// A model of `bytes` (`when`: "size hint" or "as loaded") that the budget cannot take.
  template <class Key>
  std::string over_budget(const Key& key, Residency residency, std::size_t bytes, const char* when,
                          const BudgetFigures& f, const char* why_not_wait = "") const {
    const bool primary = residency == Residency::primary;
    std::string msg = prefix("get") + describe_cache_key(key) + ": " +
                      (primary ? "primary" : "secondary") + " model of " + std::to_string(bytes) +
                      " bytes (" + when + ") ";
    if (bytes > f.budget) {
      msg += "is larger than the whole budget of " + std::to_string(f.budget) + " bytes";
    } else {
      msg += "does not fit the budget of " + std::to_string(f.budget) + " bytes beside " +
             std::to_string(f.pinned) + " bytes of primary/pinned models, " +
             std::to_string(f.retired) + " bytes held by handles after eviction and " +
             std::to_string(f.reserved) +
             " bytes reserved by loads in progress (models in use are not evicted)" + why_not_wait;
    }
    msg += primary ? "; raise byte_budget or register the model as secondary"
                   : "; raise byte_budget, unpin models, drop handles, or set "
                     "OversizePolicy::load_uncached";
    return msg;
  }

  /// Two loaders that need each other: `own` describes the load of this thread.
  template <class Key>
  std::string load_cycle(const Key& key, const std::string& own) const {
    return prefix("get") + describe_cache_key(key) + ": called from the loader of " + own +
           ", while another thread loads " + describe_cache_key(key) +
           " and waits (directly or through other loads) for " + own +
           ": the two loaders need each other and would wait forever. Load one of the two "
           "models before the other's loader runs (get() it first), or let only one loader "
           "depend on the other";
  }

  /// A failed load (`context`: what failed, `what`: the exception's text). Never throws: the
  /// key's operator<< may throw, and building the text may run out of memory.
  template <class Key>
  std::string load_failure(const Key& key, const char* context, const char* what) const noexcept {
    GPUSAFE_TRY { return prefix("get") + describe_cache_key(key) + ": " + context + ": " + what; }
    GPUSAFE_CATCH_ALL {}
    GPUSAFE_TRY {
      return prefix("get") + "(a key whose description failed): " + context + ": " + what;
    }
    GPUSAFE_CATCH_ALL {}
    return std::string();
  }

  /// An on_evict callback that threw.
  template <class Key>
  std::string callback_failure(const Key& key, std::size_t bytes, EvictReason reason,
                               const char* what) const {
    const std::string text =
        model_cache_streamable<Key>::value ? describe_cache_key(key) : std::string("<key>");
    return prefix("on_evict") + "callback threw for key " + text + " (evicted by " +
           to_string(reason) + ", " + std::to_string(bytes) + " bytes): " + what +
           "; the eviction stands. Later exceptions from on_evict in this cache are logged at "
           "debug level only; make the callback catch its own errors";
  }

  std::string memory_read_failed(int device, const std::string& status) const {
    return "ModelCache '" + name_ + "': reading memory of device " + std::to_string(device) +
           " failed: " + status + "; pressure eviction skipped";
  }

 private:
  std::string name_;
};

}  // namespace detail
GPUSAFE_NAMESPACE_END

#endif  // GPUSAFE_DETAIL_CACHE_MESSAGES_HPP
