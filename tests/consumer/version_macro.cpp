// GPUSAFE_VERSION, the integer form of the version for #if checks, agrees with the
// GPUSAFE_VERSION_MAJOR/MINOR/PATCH macros, with the version string and with the project version
// CMake read from version.hpp (EXPECTED_MAJOR/MINOR/PATCH, given by the build).
#include <gpusafe/version.hpp>
#include <iostream>
#include <string>

#ifndef GPUSAFE_VERSION
#error "GPUSAFE_VERSION is not defined"
#endif

// Usable in #if, as a plain integer constant expression.
#if GPUSAFE_VERSION < 0
#error "GPUSAFE_VERSION is negative"
#endif
#if GPUSAFE_VERSION != \
    GPUSAFE_VERSION_MAJOR * 10000 + GPUSAFE_VERSION_MINOR * 100 + GPUSAFE_VERSION_PATCH
#error "GPUSAFE_VERSION does not match GPUSAFE_VERSION_MAJOR/MINOR/PATCH"
#endif

static_assert(GPUSAFE_VERSION_MINOR < 100 && GPUSAFE_VERSION_PATCH < 100,
              "GPUSAFE_VERSION holds minor and patch numbers below 100 only");
static_assert(GPUSAFE_VERSION / 10000 == GPUSAFE_VERSION_MAJOR, "major part");
static_assert(GPUSAFE_VERSION / 100 % 100 == GPUSAFE_VERSION_MINOR, "minor part");
static_assert(GPUSAFE_VERSION % 100 == GPUSAFE_VERSION_PATCH, "patch part");
#if defined(EXPECTED_MAJOR) && defined(EXPECTED_MINOR) && defined(EXPECTED_PATCH)
static_assert(GPUSAFE_VERSION == EXPECTED_MAJOR * 10000 + EXPECTED_MINOR * 100 + EXPECTED_PATCH,
              "GPUSAFE_VERSION differs from the project version");
#endif

int main() {
  const std::string expected = std::to_string(GPUSAFE_VERSION_MAJOR) + "." +
                               std::to_string(GPUSAFE_VERSION_MINOR) + "." +
                               std::to_string(GPUSAFE_VERSION_PATCH);
  if (expected != gpusafe::version_string()) {
    std::cerr << "version_string() is " << gpusafe::version_string() << ", expected " << expected
              << "\n";
    return 1;
  }
  std::cout << "GPUSAFE_VERSION " << GPUSAFE_VERSION << " (" << gpusafe::version_string() << ")\n";
  return 0;
}
