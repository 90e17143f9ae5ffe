# Header self-containment with strict warnings, shared by the in-tree check (this build's
# compiler) and the nested project in other_compiler/ (the other compiler: clang++ beside g++).
#
#   GPUSAFE_STRICT_WARNINGS_GNU, GPUSAFE_STRICT_WARNINGS_CLANG
#       the warnings every public header must compile clean under, as a user's strict build
#       would see them when gpusafe's include directory is not a system one
#   gpusafe_strict_warnings(<out_var>)
#       those of CMAKE_CXX_COMPILER_ID (empty for other compilers)
#   gpusafe_self_contained_sources(<include_root> <out_dir> <core_var> <torch_var>)
#       one generated translation unit per header under <include_root>/gpusafe, each including
#       its header twice (the include guard); gpusafe/torch* and gpusafe/detail/torch* headers go to <torch_var>
include_guard(GLOBAL)

set(GPUSAFE_STRICT_WARNINGS_CLANG
    -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-conversion -Wnon-virtual-dtor
    -Wold-style-cast -Wundef -Werror)
set(GPUSAFE_STRICT_WARNINGS_GNU ${GPUSAFE_STRICT_WARNINGS_CLANG} -Wuseless-cast)

function(gpusafe_strict_warnings out_var)
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    set(${out_var} ${GPUSAFE_STRICT_WARNINGS_GNU} PARENT_SCOPE)
  elseif(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    set(${out_var} ${GPUSAFE_STRICT_WARNINGS_CLANG} PARENT_SCOPE)
  else()
    set(${out_var} "" PARENT_SCOPE)
  endif()
endfunction()

function(gpusafe_self_contained_sources include_root out_dir core_var torch_var)
  file(GLOB_RECURSE _headers CONFIGURE_DEPENDS RELATIVE "${include_root}"
       "${include_root}/gpusafe/*.hpp" "${include_root}/gpusafe/*.h")
  list(SORT _headers)
  set(_core "")
  set(_torch "")
  foreach(_header IN LISTS _headers)
    string(MAKE_C_IDENTIFIER "${_header}" _id)
    set(_cpp "${out_dir}/${_id}.cpp")
    file(CONFIGURE OUTPUT "${_cpp}"
         CONTENT "// Generated: checks that <@_header@> compiles on its own.\n#include <@_header@>\n#include <@_header@>\n"
         @ONLY)
    if(_header MATCHES "^gpusafe/(detail/)?torch")
      list(APPEND _torch "${_cpp}")
    else()
      list(APPEND _core "${_cpp}")
    endif()
  endforeach()
  set(${core_var} "${_core}" PARENT_SCOPE)
  set(${torch_var} "${_torch}" PARENT_SCOPE)
endfunction()
