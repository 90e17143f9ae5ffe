# Which installed versions find_package(gpusafe <request>) accepts: Semantic Versioning, where
# 0.y.z releases are compatible only within the same 0.y (cmake/gpusafeVersionFile.cmake).
#
#   cmake -DGPUSAFE_SOURCE_DIR=... -DWORK_DIR=... -DBUILT_VERSION_FILE=... -P version_compat.cmake
#
# 1. The rule, for a table of installed and requested versions, read from the version file that
#    gpusafe's build writes for each installed version.
# 2. The version file of this build says this build's version.
# 3. find_package itself: a request for 0.1 refuses an installed 0.2.0; one for 0.2 takes it.
cmake_minimum_required(VERSION 3.25)
foreach(_var GPUSAFE_SOURCE_DIR WORK_DIR BUILT_VERSION_FILE)
  if(NOT DEFINED ${_var})
    message(FATAL_ERROR "version_compat.cmake: -D${_var}=... is required")
  endif()
endforeach()
include("${GPUSAFE_SOURCE_DIR}/cmake/gpusafeVersionFile.cmake")
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

set(_failures 0)

# Evaluates <file> as find_package does for a request of <requested>; sets out_var to TRUE when
# the installed version is accepted.
function(_accepts out_var file requested)
  string(REPLACE "." ";" _parts "${requested}")
  list(LENGTH _parts _count)
  set(_names MAJOR MINOR PATCH TWEAK)
  foreach(_i RANGE 3)
    set(_v 0)
    if(_i LESS _count)
      list(GET _parts ${_i} _v)
    endif()
    list(GET _names ${_i} _name)
    set(PACKAGE_FIND_VERSION_${_name} ${_v})
  endforeach()
  set(PACKAGE_FIND_NAME gpusafe)
  set(PACKAGE_FIND_VERSION "${requested}")
  set(PACKAGE_FIND_VERSION_COUNT ${_count})
  unset(PACKAGE_FIND_VERSION_RANGE)
  unset(PACKAGE_VERSION_COMPATIBLE)
  unset(PACKAGE_VERSION_UNSUITABLE)
  include("${file}")
  if(PACKAGE_VERSION_COMPATIBLE AND NOT PACKAGE_VERSION_UNSUITABLE)
    set(${out_var} TRUE PARENT_SCOPE)
  else()
    set(${out_var} FALSE PARENT_SCOPE)
  endif()
endfunction()

# installed | requested | accepted
set(_table
  "0.1.0|0.1|TRUE"
  "0.1.0|0.1.0|TRUE"
  "0.1.3|0.1.2|TRUE"
  "0.1.3|0.1.4|FALSE"
  "0.2.0|0.1|FALSE"
  "0.2.0|0.1.0|FALSE"
  "0.2.5|0.2|TRUE"
  "0.1.0|0.2|FALSE"
  "0.1.0|1.0|FALSE"
  "1.0.0|0.1|FALSE"
  "1.2.0|1.0|TRUE"
  "1.2.0|1.2.1|FALSE"
  "1.2.0|2.0|FALSE"
  "2.0.0|1.0|FALSE")
foreach(_row IN LISTS _table)
  string(REPLACE "|" ";" _row "${_row}")
  list(GET _row 0 _installed)
  list(GET _row 1 _requested)
  list(GET _row 2 _expected)
  set(_file "${WORK_DIR}/${_installed}/gpusafeConfigVersion.cmake")
  if(NOT EXISTS "${_file}")
    gpusafe_write_version_file("${_file}" "${_installed}")
  endif()
  _accepts(_got "${_file}" "${_requested}")
  if(_got STREQUAL _expected)
    message(STATUS "installed ${_installed}, request ${_requested}: accepted ${_got}")
  else()
    message(SEND_ERROR "installed ${_installed}, request ${_requested}: accepted ${_got}, expected ${_expected}")
    math(EXPR _failures "${_failures} + 1")
  endif()
endforeach()

# 2. This build's version file.
file(STRINGS "${GPUSAFE_SOURCE_DIR}/include/gpusafe/version.hpp" _lines
     REGEX "^#define GPUSAFE_VERSION_(MAJOR|MINOR|PATCH) ")
set(_header_version "")
foreach(_line IN LISTS _lines)
  string(REGEX REPLACE "^#define GPUSAFE_VERSION_[A-Z]+ +([0-9]+).*" "\\1" _n "${_line}")
  list(APPEND _header_version "${_n}")
endforeach()
string(REPLACE ";" "." _header_version "${_header_version}")
set(PACKAGE_FIND_VERSION "${_header_version}")
unset(PACKAGE_VERSION)
include("${BUILT_VERSION_FILE}")
if(NOT PACKAGE_VERSION STREQUAL _header_version)
  message(SEND_ERROR "${BUILT_VERSION_FILE} says ${PACKAGE_VERSION}, version.hpp says ${_header_version}")
  math(EXPR _failures "${_failures} + 1")
endif()

# 3. find_package with an installed 0.2.0 (a stub package: only the version check matters).
set(_prefix "${WORK_DIR}/prefix")
file(WRITE "${_prefix}/share/cmake/gpusafe/gpusafeConfig.cmake" "set(gpusafe_STUB ON)\n")
gpusafe_write_version_file("${_prefix}/share/cmake/gpusafe/gpusafeConfigVersion.cmake" 0.2.0)
file(WRITE "${WORK_DIR}/project/CMakeLists.txt" "
cmake_minimum_required(VERSION 3.25)
project(version_probe NONE)
find_package(gpusafe \${REQUEST} CONFIG QUIET PATHS [[${_prefix}]] NO_DEFAULT_PATH)
message(STATUS \"RESULT=\${gpusafe_FOUND}\")
")
foreach(_case "0.1|0" "0.2|1" "0.2.0|1" "0.3|0")
  string(REPLACE "|" ";" _case "${_case}")
  list(GET _case 0 _request)
  list(GET _case 1 _expected)
  execute_process(
    COMMAND "${CMAKE_COMMAND}" -S "${WORK_DIR}/project" -B "${WORK_DIR}/build_${_request}"
            "-DREQUEST=${_request}"
    OUTPUT_VARIABLE _out ERROR_VARIABLE _err RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0 OR NOT _out MATCHES "RESULT=([01])")
    message(SEND_ERROR "find_package(gpusafe ${_request}) probe failed:\n${_out}\n${_err}")
    math(EXPR _failures "${_failures} + 1")
  elseif(NOT CMAKE_MATCH_1 STREQUAL _expected)
    message(SEND_ERROR "find_package(gpusafe ${_request}) with 0.2.0 installed: found ${CMAKE_MATCH_1}, expected ${_expected}")
    math(EXPR _failures "${_failures} + 1")
  else()
    message(STATUS "find_package(gpusafe ${_request}) with 0.2.0 installed: found ${_expected}")
  endif()
endforeach()

if(_failures GREATER 0)
  message(FATAL_ERROR "${_failures} version compatibility check(s) failed")
endif()
