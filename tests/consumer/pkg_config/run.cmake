# Consumer that builds with pkg-config against an installed gpusafe, no CMake involved:
#
#   c++ -std=c++17 main.cpp $(pkg-config --cflags --libs <module>)
#
#   cmake -DPKG_CONFIG=... -DPKG_CONFIG_DIR=<prefix>/share/pkgconfig -DMODULE=gpusafe|gpusafe-cuda
#         -DPREFIX=... -DWORK_DIR=... -DCXX=... -DMAIN=.../main.cpp -P run.cmake
cmake_minimum_required(VERSION 3.25)
include(${CMAKE_CURRENT_LIST_DIR}/../run_consumer.cmake)
gpusafe_consumer_require(PKG_CONFIG PKG_CONFIG_DIR MODULE PREFIX WORK_DIR CXX MAIN)
gpusafe_consumer_fresh_work_dir()

# Only the installed prefix: no other gpusafe.pc may answer.
set(ENV{PKG_CONFIG_PATH} "${PKG_CONFIG_DIR}")
set(ENV{PKG_CONFIG_LIBDIR} "${PKG_CONFIG_DIR}")

function(_pkg_config out_var)
  execute_process(COMMAND "${PKG_CONFIG}" ${ARGN} OUTPUT_VARIABLE _out ERROR_VARIABLE _err
                  RESULT_VARIABLE _rc OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "pkg-config ${ARGN} failed: ${_err}")
  endif()
  set(${out_var} "${_out}" PARENT_SCOPE)
endfunction()

_pkg_config(_version --modversion ${MODULE})
_pkg_config(_flags --cflags --libs ${MODULE})
message(STATUS "pkg-config ${MODULE} ${_version}: ${_flags}")

# The include directory must be the installed one.
_pkg_config(_includedir --variable=includedir gpusafe)
file(REAL_PATH "${_includedir}" _includedir)
file(REAL_PATH "${PREFIX}" _prefix)
if(NOT EXISTS "${_includedir}/gpusafe/gpusafe.hpp")
  message(FATAL_ERROR "gpusafe.pc: includedir ${_includedir} has no gpusafe/gpusafe.hpp")
endif()
string(FIND "${_includedir}" "${_prefix}/" _pos)
if(NOT _pos EQUAL 0)
  message(FATAL_ERROR "gpusafe.pc: includedir ${_includedir} is not under ${PREFIX}")
endif()
if(NOT _flags MATCHES "(^| )-pthread( |$)")
  message(FATAL_ERROR "pkg-config --libs ${MODULE} lacks -pthread: ${_flags}")
endif()

separate_arguments(_flags UNIX_COMMAND "${_flags}")
set(_exe "${WORK_DIR}/consumer_pkg_config")
set(_cmd "${CXX}" -std=c++17 "${MAIN}" "-DCONSUMER_NAME=\"pkg_config/${MODULE}\"")
if(MODULE STREQUAL "gpusafe-cuda")
  list(APPEND _cmd -DGPUSAFE_EXPECT_CUDA=1)
  # libcudart at run time (the toolkit's library folder may not be known to the loader).
  _pkg_config(_cudalibdir --variable=cudalibdir gpusafe-cuda)
  set(ENV{LD_LIBRARY_PATH} "${_cudalibdir}:$ENV{LD_LIBRARY_PATH}")
else()
  # gpusafe.pc has no CUDA: on machines whose compiler finds the CUDA headers by default, the
  # documented way to build without libcudart.
  list(APPEND _cmd -DGPUSAFE_WITH_CUDA=0 -DGPUSAFE_EXPECT_CUDA=0)
endif()
list(APPEND _cmd ${_flags} -o "${_exe}")
gpusafe_consumer_compile_and_run("${_exe}" ${_cmd})
