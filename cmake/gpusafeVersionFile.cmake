# gpusafe_write_version_file(<file> <version>): writes gpusafeConfigVersion.cmake for <version>
# with Semantic Versioning's rule for what find_package(gpusafe <request>) accepts:
#
#   major 0 (0.y.z): anything may change between minor versions, so only the same 0.y, at or
#                    above the requested patch, is compatible (a request for 0.1 refuses 0.2.0);
#   major 1 or more: the same major version, at or above the requested one.
#
# The package is header-only, so the file does not check the consumer's architecture.
# Used by gpusafe's CMakeLists.txt and by its version test (tests/consumer/version_compat.cmake).
include_guard(GLOBAL)
include(CMakePackageConfigHelpers)

function(gpusafe_write_version_file file version)
  if(version MATCHES "^0\\.")
    set(_compatibility SameMinorVersion)
  else()
    set(_compatibility SameMajorVersion)
  endif()
  write_basic_package_version_file("${file}"
    VERSION "${version}"
    COMPATIBILITY ${_compatibility}
    ARCH_INDEPENDENT)
endfunction()
