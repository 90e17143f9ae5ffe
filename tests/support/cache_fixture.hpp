// SPDX-License-Identifier: MIT
// tests/support/cache_fixture.hpp: the model and the entries shared by the unit tests of the
// bookkeeping of ModelCache (cache_entry_test, cache_graveyard_test).
#ifndef GPUSAFE_TESTS_SUPPORT_CACHE_FIXTURE_HPP
#define GPUSAFE_TESTS_SUPPORT_CACHE_FIXTURE_HPP

#include <memory>

#include "gpusafe/detail/cache/entry.hpp"

namespace gpusafe_test::cache {

/// A model that sets *destroyed_flag when it is destroyed.
struct Model {
  explicit Model(bool* destroyed) : destroyed_flag(destroyed) {}
  ~Model() { *destroyed_flag = true; }
  bool* destroyed_flag;
};

using Entry = gpusafe::detail::CacheEntry<int, Model>;

/// An entry for `key` whose loader loads nothing, with no size hint.
inline Entry make_entry(int key, gpusafe::Residency residency = gpusafe::Residency::secondary) {
  return Entry(
      key, [] { return gpusafe::Loaded<Model>{}; }, residency, 0);
}

/// The same, owned by a shared_ptr.
inline std::shared_ptr<Entry> make_shared_entry(
    int key, gpusafe::Residency residency = gpusafe::Residency::secondary) {
  return std::make_shared<Entry>(
      key, [] { return gpusafe::Loaded<Model>{}; }, residency, 0);
}

}  // namespace gpusafe_test::cache

#endif  // GPUSAFE_TESTS_SUPPORT_CACHE_FIXTURE_HPP
