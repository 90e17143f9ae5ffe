# Fails when a header under include/ lacks an SPDX licence line in its first three lines:
# copying include/ into a project is a supported way of use, so each file carries its licence.
# Usage: cmake -DINCLUDE_DIR=<dir> -P check_spdx.cmake
file(GLOB_RECURSE _headers "${INCLUDE_DIR}/*.hpp" "${INCLUDE_DIR}/*.cuh")
set(_missing "")
foreach(_h IN LISTS _headers)
  file(STRINGS "${_h}" _head LIMIT_COUNT 3)
  string(FIND "${_head}" "SPDX-License-Identifier: MIT" _at)
  if(_at EQUAL -1)
    list(APPEND _missing "${_h}")
  endif()
endforeach()
list(LENGTH _headers _count)
if(_missing)
  list(JOIN _missing "\n  " _list)
  message(FATAL_ERROR "headers without 'SPDX-License-Identifier: MIT' in their first lines:\n  ${_list}")
endif()
message(STATUS "${_count} headers carry an SPDX licence line")
