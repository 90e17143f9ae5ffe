// Differential test of ModelCache: long seeded random sequences of single-threaded operations run
// against the cache and against a plain reference model (std::list LRU) written here; after
// every operation the resident sets, the eviction callbacks and the stats must agree.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <ostream>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "gpusafe/model_cache.hpp"
#include "gpusafe/testing/fake_runtime.hpp"

namespace gs = gpusafe;
using gs::testing::FakeRuntime;

namespace {

struct Model {
  int instance;
};

using Cache = gs::BasicModelCache<FakeRuntime, std::string, Model, std::hash<std::string>>;
using Event = std::tuple<std::string, std::size_t, int>;

// What every key does when loaded; the test flips `fail_next` before a get.
struct Spec {
  gs::Residency residency = gs::Residency::secondary;
  std::size_t bytes = 0;
  std::size_t hint = 0;
  bool fail_next = false;
};

// The reference: the documented behaviour, written the obvious way.
class Reference {
 public:
  Reference(std::size_t budget, std::size_t cap, gs::OversizePolicy policy)
      : budget_(budget), cap_(cap), policy_(policy) {}

  struct Entry {
    Spec spec;
    bool pinned = false;
    int instance = 0;  // 0 = not resident
  };
  struct Instance {
    std::size_t bytes;
    bool cached;
  };

  std::map<std::string, Entry> entries;
  std::list<std::string> lru;  // front = most recently used; resident, secondary, unpinned
  std::map<int, Instance> instances;
  std::multiset<int> held;  // instances the test holds handles to
  gs::ModelCacheStats stats;
  std::vector<Event> events;
  int next_instance = 1;

  bool in_lru(const std::string& k) const {
    return std::find(lru.begin(), lru.end(), k) != lru.end();
  }
  bool in_use(const std::string& k) const {
    const auto& e = entries.at(k);
    return e.instance != 0 && held.count(e.instance) != 0;
  }
  std::size_t resident_bytes() const {
    std::size_t n = 0;
    for (const auto& kv : entries)
      if (kv.second.instance) n += instances.at(kv.second.instance).bytes;
    return n;
  }
  std::size_t retired_bytes() const {
    std::set<int> distinct(held.begin(), held.end());
    std::set<int> resident;
    for (const auto& kv : entries)
      if (kv.second.instance) resident.insert(kv.second.instance);
    std::size_t n = 0;
    for (int i : distinct)
      if (instances.at(i).cached && !resident.count(i)) n += instances.at(i).bytes;
    return n;
  }
  std::size_t charged() const { return resident_bytes() + retired_bytes(); }
  bool fits(std::size_t need) const {
    const std::size_t used = charged();
    return used <= budget_ && need <= budget_ - used;
  }

  void retire(const std::string& k, gs::EvictReason reason) {
    auto& e = entries.at(k);
    const std::size_t bytes = instances.at(e.instance).bytes;
    lru.remove(k);
    e.instance = 0;
    ++stats.evictions[static_cast<std::size_t>(reason)];
    events.emplace_back(k, bytes, static_cast<int>(reason));
  }

  std::vector<std::string> plan(std::size_t goal, std::size_t cap, std::size_t* freed_out) {
    std::vector<std::string> victims;
    std::size_t freed = 0;
    for (auto it = lru.rbegin(); it != lru.rend() && freed < goal; ++it) {
      if (cap != 0 && victims.size() >= cap) break;
      if (in_use(*it)) continue;
      victims.push_back(*it);
      freed += instances.at(entries.at(*it).instance).bytes;
    }
    *freed_out = freed;
    return victims;
  }

  bool make_room(std::size_t need) {
    if (fits(need)) return true;
    if (need > budget_) return false;
    const std::size_t deficit = charged() + need - budget_;
    std::size_t freed = 0;
    auto victims = plan(deficit, cap_, &freed);
    if (freed < deficit) return false;
    for (const auto& v : victims) retire(v, gs::EvictReason::budget);
    return true;
  }

  // Outcome of a get: 0 = ok (cached or not), 1 = BudgetExceeded, 2 = LoadFailed, 3 = UnknownKey.
  int get(const std::string& k, bool* cached_out, int* instance_out) {
    auto it = entries.find(k);
    if (it == entries.end()) return 3;
    Entry& e = it->second;
    if (e.instance) {
      ++stats.hits;
      if (in_lru(k)) {
        lru.remove(k);
        lru.push_front(k);
      }
      *cached_out = true;
      *instance_out = e.instance;
      return 0;
    }
    ++stats.misses;
    const bool must_cache =
        e.spec.residency == gs::Residency::primary || policy_ == gs::OversizePolicy::throw_error;
    bool cache_it = true;
    if (e.spec.hint > budget_ || !make_room(e.spec.hint)) {
      if (must_cache) {
        ++stats.load_failures;
        return 1;
      }
      cache_it = false;
    }
    if (e.spec.fail_next) {
      ++stats.load_failures;
      return 2;
    }
    const int inst = next_instance++;
    const std::size_t bytes = e.spec.bytes;
    if (cache_it && make_room(bytes)) {
      instances[inst] = {bytes, true};
      e.instance = inst;
      if (e.spec.residency == gs::Residency::secondary && !e.pinned) lru.push_front(k);
      ++stats.loads;
      *cached_out = true;
    } else if (cache_it && must_cache) {
      ++stats.load_failures;
      return 1;
    } else {
      instances[inst] = {bytes, false};
      ++stats.uncached_loads;
      ++stats.loads;
      *cached_out = false;
    }
    *instance_out = inst;
    return 0;
  }

  bool try_get(const std::string& k, int* instance_out) {
    auto it = entries.find(k);
    if (it == entries.end() || !it->second.instance) return false;
    ++stats.hits;
    if (in_lru(k)) {
      lru.remove(k);
      lru.push_front(k);
    }
    *instance_out = it->second.instance;
    return true;
  }

  void pin(const std::string& k) {
    entries.at(k).pinned = true;
    lru.remove(k);
  }
  void unpin(const std::string& k) {
    auto& e = entries.at(k);
    e.pinned = false;
    if (e.instance && e.spec.residency == gs::Residency::secondary && !in_lru(k)) lru.push_front(k);
  }
  std::size_t evict(std::size_t goal, gs::EvictReason reason) {
    std::size_t freed = 0;
    auto victims = plan(goal, 0, &freed);
    for (const auto& v : victims) retire(v, reason);
    return freed;
  }
  std::size_t clear() {
    std::size_t n = 0;
    for (auto& kv : entries) {
      if (kv.second.instance) {
        n += instances.at(kv.second.instance).bytes;
        retire(kv.first, gs::EvictReason::clear);
      }
    }
    return n;
  }
  std::size_t shutdown() {
    std::size_t n = 0;
    for (auto& kv : entries) {
      if (kv.second.instance && !kv.second.pinned) {
        n += instances.at(kv.second.instance).bytes;
        retire(kv.first, gs::EvictReason::shutdown);
      }
    }
    return n;
  }
  void remove(const std::string& k) {
    if (entries.at(k).instance) retire(k, gs::EvictReason::removed);
    entries.erase(k);
  }

 private:
  std::size_t budget_;
  std::size_t cap_;
  gs::OversizePolicy policy_;
};

struct Params {
  unsigned seed;
  std::size_t budget;
  std::size_t cap;
  gs::OversizePolicy policy;
};

void PrintTo(const Params& p, std::ostream* os) {
  *os << "seed " << p.seed << ", budget " << p.budget << ", cap " << p.cap << ", "
      << (p.policy == gs::OversizePolicy::throw_error ? "throw_error" : "load_uncached");
}

class ModelCacheDifferential : public ::testing::TestWithParam<Params> {};

TEST_P(ModelCacheDifferential, MatchesReferenceModel) {
  FakeRuntime::reset();
  const Params p = GetParam();
  std::mt19937 rng(p.seed);
  auto pick = [&rng](std::size_t n) {
    return static_cast<std::size_t>(std::uniform_int_distribution<std::size_t>(0, n - 1)(rng));
  };

  gs::ModelCacheOptions o;
  o.name = "differential";
  o.byte_budget = p.budget;
  o.max_evictions_per_call = p.cap;
  o.oversize = p.policy;
  Cache cache(o);
  Reference ref(p.budget, p.cap, p.policy);

  std::vector<Event> events;
  cache.on_evict([&events](const std::string& k, std::size_t b, gs::EvictReason r) {
    events.emplace_back(k, b, static_cast<int>(r));
  });

  constexpr int kKeys = 14;
  std::map<std::string, Spec> specs;
  int loader_instance = 0;  // the instance number the next successful load will carry
  auto key_name = [](int i) { return "k" + std::to_string(i); };
  auto make_spec = [&](int i) {
    Spec s;
    s.residency = i < 2 ? gs::Residency::primary : gs::Residency::secondary;
    s.bytes = 1 + pick(p.budget == 0 ? 8 : p.budget / 3);
    if (i == 13) s.bytes = p.budget + 5;  // always oversize
    switch (pick(4)) {
      case 0:
        s.hint = 0;
        break;
      case 1:
        s.hint = s.bytes;
        break;
      case 2:
        s.hint = s.bytes / 2;
        break;
      default:
        s.hint = s.bytes + pick(10);
        break;
    }
    return s;
  };
  auto register_key = [&](int i) {
    const std::string k = key_name(i);
    specs[k] = make_spec(i);
    ref.entries[k] = Reference::Entry{specs[k], false, 0};
    cache.add(
        k,
        [&specs, &loader_instance, k] {
          const Spec& s = specs.at(k);
          if (s.fail_next) throw std::runtime_error("injected failure");
          return gs::Loaded<Model>{std::make_shared<Model>(Model{loader_instance}), s.bytes};
        },
        specs[k].residency, specs[k].hint);
  };
  for (int i = 0; i < kKeys; ++i) register_key(i);

  std::vector<std::pair<int, Cache::Handle>> held;  // (reference instance, handle)

  auto sorted = [](std::vector<Event> v) {
    std::sort(v.begin(), v.end());
    return v;
  };

  constexpr int kOps = 6000;
  for (int step = 0; step < kOps; ++step) {
    const std::string k = key_name(static_cast<int>(pick(kKeys)));
    const bool registered = ref.entries.count(k) != 0;
    const std::size_t op = pick(100);
    bool unordered_events = false;
    std::string what;
    if (op < 45) {
      what = "get " + k;
      if (registered) {
        specs[k].fail_next = pick(10) == 0;
        ref.entries[k].spec.fail_next = specs[k].fail_next;
      }
      loader_instance = ref.next_instance;
      bool cached = false;
      int inst = 0;
      const int expected = ref.get(k, &cached, &inst);
      int actual = 0;
      Cache::Handle h;
      try {
        h = cache.get(k);
      } catch (const gs::BudgetExceeded&) {
        actual = 1;
      } catch (const gs::LoadFailed&) {
        actual = 2;
      } catch (const gs::UnknownKey&) {
        actual = 3;
      }
      ASSERT_EQ(actual, expected) << "step " << step << ": " << what;
      if (expected == 0) {
        ASSERT_TRUE(h);
        ASSERT_EQ(h->instance, inst) << "step " << step << ": " << what;
        if (pick(3) == 0) {
          held.emplace_back(inst, h);
          ref.held.insert(inst);
        }
      }
    } else if (op < 55) {
      what = "try_get " + k;
      int inst = 0;
      const bool expected = ref.try_get(k, &inst);
      auto h = cache.try_get(k);
      ASSERT_EQ(static_cast<bool>(h), expected) << "step " << step << ": " << what;
      if (h) {
        ASSERT_EQ(h->instance, inst);
      }
    } else if (op < 63) {
      what = "drop a handle";
      if (!held.empty()) {
        const std::size_t i = pick(held.size());
        ref.held.erase(ref.held.find(held[i].first));
        held.erase(held.begin() + static_cast<std::ptrdiff_t>(i));
      }
    } else if (op < 69) {
      what = "pin " + k;
      if (registered) {
        ref.pin(k);
        cache.pin(k);
      }
    } else if (op < 77) {
      what = "unpin " + k;
      if (registered) {
        ref.unpin(k);
        cache.unpin(k);
      }
    } else if (op < 84) {
      const std::size_t goal = pick(p.budget / 2 + 2);
      what = "evict " + std::to_string(goal);
      ASSERT_EQ(cache.evict(goal), ref.evict(goal, gs::EvictReason::requested)) << "step " << step;
    } else if (op < 88) {
      const std::size_t goal = pick(p.budget / 2 + 2);
      what = "reclaim " + std::to_string(goal);
      gs::ReclaimRequest r;
      r.bytes_goal = goal;
      ASSERT_EQ(cache.reclaimable()->reclaim(r), ref.evict(goal, gs::EvictReason::reclaim));
    } else if (op < 92) {
      what = "remove or re-add " + k;
      if (registered) {
        ref.remove(k);
        cache.remove(k);
      } else {
        register_key(std::stoi(k.substr(1)));
      }
    } else if (op < 94) {
      what = "clear";
      unordered_events = true;
      ASSERT_EQ(cache.clear(), ref.clear());
    } else if (op < 95) {
      what = "shutdown-level reclaim";
      unordered_events = true;
      gs::ReclaimRequest r;
      r.level = gs::ReclaimLevel::shutdown;
      ASSERT_EQ(cache.reclaimable()->reclaim(r), ref.shutdown());
    } else {
      what = "preload";
      // preload() loads the primaries in map order; keep failures out of it.
      for (auto& kv : ref.entries) {
        if (kv.second.spec.residency == gs::Residency::primary)
          kv.second.spec.fail_next = specs[kv.first].fail_next = false;
      }
      std::vector<std::string> primaries;
      for (const auto& kv : ref.entries)
        if (kv.second.spec.residency == gs::Residency::primary && !kv.second.instance)
          primaries.push_back(kv.first);
      // Load them one by one in both, in the same order (preload's order is unspecified).
      for (const auto& pk : primaries) {
        loader_instance = ref.next_instance;
        bool cached = false;
        int inst = 0;
        const int expected = ref.get(pk, &cached, &inst);
        int actual = 0;
        try {
          cache.get(pk);
        } catch (const gs::BudgetExceeded&) {
          actual = 1;
        }
        ASSERT_EQ(actual, expected) << "step " << step << ": preload " << pk;
      }
    }

    // Compare everything after each operation.
    if (unordered_events) {
      ASSERT_EQ(sorted(events), sorted(ref.events)) << "step " << step << ": " << what;
    } else {
      ASSERT_EQ(events, ref.events) << "step " << step << ": " << what;
    }
    events.clear();
    ref.events.clear();
    for (int i = 0; i < kKeys; ++i) {
      const std::string key = key_name(i);
      const auto it = ref.entries.find(key);
      ASSERT_EQ(cache.contains(key), it != ref.entries.end()) << "step " << step;
      const bool resident = it != ref.entries.end() && it->second.instance != 0;
      ASSERT_EQ(cache.is_resident(key), resident) << "step " << step << ": " << what << ", " << key;
    }
    const auto s = cache.stats();
    const auto& r = ref.stats;
    ASSERT_EQ(s.hits, r.hits) << "step " << step << ": " << what;
    ASSERT_EQ(s.misses, r.misses) << "step " << step;
    ASSERT_EQ(s.loads, r.loads) << "step " << step;
    ASSERT_EQ(s.load_failures, r.load_failures) << "step " << step;
    ASSERT_EQ(s.uncached_loads, r.uncached_loads) << "step " << step;
    ASSERT_EQ(s.evictions, r.evictions) << "step " << step;
    ASSERT_EQ(s.bytes_resident, ref.resident_bytes()) << "step " << step;
    ASSERT_EQ(s.bytes_retired, ref.retired_bytes()) << "step " << step << ": " << what;
    ASSERT_EQ(s.bytes_reserved, 0u);
    ASSERT_LE(s.bytes_resident + s.bytes_retired, p.budget) << "step " << step;
    std::size_t pinned = 0;
    for (const auto& kv : ref.entries)
      if (kv.second.instance &&
          (kv.second.pinned || kv.second.spec.residency == gs::Residency::primary))
        pinned += ref.instances.at(kv.second.instance).bytes;
    ASSERT_EQ(s.bytes_pinned, pinned) << "step " << step;
  }
}

INSTANTIATE_TEST_SUITE_P(Seeds, ModelCacheDifferential,
                         ::testing::Values(Params{1, 100, 0, gs::OversizePolicy::throw_error},
                                           Params{2, 100, 0, gs::OversizePolicy::load_uncached},
                                           Params{3, 60, 2, gs::OversizePolicy::throw_error},
                                           Params{4, 60, 2, gs::OversizePolicy::load_uncached},
                                           Params{5, 250, 1, gs::OversizePolicy::load_uncached},
                                           Params{6, 0, 0, gs::OversizePolicy::load_uncached},
                                           Params{7, 1000, 0, gs::OversizePolicy::throw_error},
                                           Params{8, 40, 3, gs::OversizePolicy::throw_error}));

}  // namespace
