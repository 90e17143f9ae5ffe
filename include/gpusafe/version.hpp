// SPDX-License-Identifier: MIT
// gpusafe/version.hpp: the library's version, as macros and as a function.
//
// Thread safety: everything here is constant. Teardown: nothing to tear down.
#ifndef GPUSAFE_VERSION_HPP
#define GPUSAFE_VERSION_HPP

#define GPUSAFE_VERSION_MAJOR 0
#define GPUSAFE_VERSION_MINOR 1
#define GPUSAFE_VERSION_PATCH 0
/// The version as one integer for `#if` checks: MAJOR * 10000 + MINOR * 100 + PATCH (0.1.0 is
/// 100, 1.2.3 is 10203), e.g. `#if GPUSAFE_VERSION >= 200`.
#define GPUSAFE_VERSION \
  (GPUSAFE_VERSION_MAJOR * 10000 + GPUSAFE_VERSION_MINOR * 100 + GPUSAFE_VERSION_PATCH)

#define GPUSAFE_DETAIL_STR2(x) #x
#define GPUSAFE_DETAIL_STR(x) GPUSAFE_DETAIL_STR2(x)
/// The version as a string literal, "MAJOR.MINOR.PATCH".
#define GPUSAFE_VERSION_STRING              \
  GPUSAFE_DETAIL_STR(GPUSAFE_VERSION_MAJOR) \
  "." GPUSAFE_DETAIL_STR(GPUSAFE_VERSION_MINOR) "." GPUSAFE_DETAIL_STR(GPUSAFE_VERSION_PATCH)

namespace gpusafe {
/// The library's version, "MAJOR.MINOR.PATCH".
constexpr const char* version_string() noexcept { return GPUSAFE_VERSION_STRING; }
}  // namespace gpusafe

#endif  // GPUSAFE_VERSION_HPP
