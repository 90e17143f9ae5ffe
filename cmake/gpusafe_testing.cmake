# Shared helpers for gpusafe's tests, examples and benchmarks (never used by consumers).
#
#   GPUSAFE_TEST_TARGET    the gpusafe target test code links: gpusafe::torch when LibTorch is
#                          enabled (and has CUDA, or CUDA is off), else gpusafe::cuda when the
#                          CUDA Toolkit is, else gpusafe::gpusafe. torch_* files always get
#                          GPUSAFE_TORCH_TEST_TARGET (gpusafe::torch).
#   GPUSAFE_WARNING_FLAGS  the warnings every in-tree target compiles with (-Werror included).
#   gpusafe_add_test(NAME name SOURCES src... [LABELS l...] [TIMEOUT s] [NO_MAIN]
#                    [TARGET gpusafe-target] [LIBRARIES l...])
#     Builds executable `name` linking GTest::gtest_main (GTest::gtest with NO_MAIN) and
#     GPUSAFE_TEST_TARGET (or TARGET), registers it as one CTest test (one process per
#     executable).
include_guard(GLOBAL)

# gpusafe::torch links gpusafe::cuda only when LibTorch has CUDA (or GPUSAFE_WITH_CUDA=ON); with a
# CPU-only LibTorch in a CUDA build, the tests that do not need LibTorch keep gpusafe::cuda and
# the torch_* ones get gpusafe::torch (GPUSAFE_TORCH_TEST_TARGET).
if(GPUSAFE_TORCH_FOUND AND (GPUSAFE_TORCH_LINKS_CUDA OR NOT GPUSAFE_CUDA_FOUND))
  set(GPUSAFE_TEST_TARGET gpusafe::torch)
elseif(GPUSAFE_CUDA_FOUND)
  set(GPUSAFE_TEST_TARGET gpusafe::cuda)
else()
  set(GPUSAFE_TEST_TARGET gpusafe::gpusafe)
endif()
set(GPUSAFE_TORCH_TEST_TARGET "")
if(GPUSAFE_TORCH_FOUND)
  set(GPUSAFE_TORCH_TEST_TARGET gpusafe::torch)
endif()

# Sets out_var to GPUSAFE_TORCH_TEST_TARGET when one of the files is a torch_* one, else to
# GPUSAFE_TEST_TARGET.
function(gpusafe_target_for_sources out_var)
  set(_target ${GPUSAFE_TEST_TARGET})
  foreach(_f IN LISTS ARGN)
    get_filename_component(_name "${_f}" NAME)
    if(_name MATCHES "^torch_" AND GPUSAFE_TORCH_TEST_TARGET)
      set(_target ${GPUSAFE_TORCH_TEST_TARGET})
    endif()
  endforeach()
  set(${out_var} ${_target} PARENT_SCOPE)
endfunction()

set(GPUSAFE_WARNING_FLAGS -Wall -Wextra -Werror -Wundef)

# Sets out_var to the files matching `pattern` (a glob relative to the current source folder),
# sorted, without the torch_* ones when LibTorch is not enabled.
function(gpusafe_glob_sources out_var pattern)
  file(GLOB _found CONFIGURE_DEPENDS "${CMAKE_CURRENT_SOURCE_DIR}/${pattern}")
  list(SORT _found)
  set(_kept "")
  foreach(_f IN LISTS _found)
    get_filename_component(_name "${_f}" NAME)
    if(_name MATCHES "^torch_" AND NOT GPUSAFE_TORCH_FOUND)
      continue()
    endif()
    list(APPEND _kept "${_f}")
  endforeach()
  set(${out_var} "${_kept}" PARENT_SCOPE)
endfunction()

# Applies gpusafe's in-tree warnings to a target.
function(gpusafe_target_warnings target)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE ${GPUSAFE_WARNING_FLAGS})
  elseif(MSVC)
    target_compile_options(${target} PRIVATE /W4 /WX)
  endif()
endfunction()

# GoogleTest: an installed package first, else its sources (Debian's googletest package ships
# them in /usr/src/googletest). GPUSAFE_GTEST_FROM_SOURCE forces the sources (for example to
# build GoogleTest with the same sanitizer flags as the tests).
set(GPUSAFE_GTEST_SOURCE_DIR "" CACHE PATH
    "GoogleTest source tree used when no installed GoogleTest is found (default /usr/src/googletest)")
option(GPUSAFE_GTEST_FROM_SOURCE "Build GoogleTest from GPUSAFE_GTEST_SOURCE_DIR" OFF)

macro(gpusafe_require_gtest)
  if(NOT TARGET GTest::gtest OR NOT TARGET GTest::gtest_main)
    if(NOT GPUSAFE_GTEST_FROM_SOURCE)
      find_package(GTest QUIET)
    endif()
    if(NOT TARGET GTest::gtest OR NOT TARGET GTest::gtest_main)
      set(_gpusafe_gtest_src "${GPUSAFE_GTEST_SOURCE_DIR}")
      if(NOT _gpusafe_gtest_src)
        set(_gpusafe_gtest_src "/usr/src/googletest")
      endif()
      if(NOT EXISTS "${_gpusafe_gtest_src}/CMakeLists.txt")
        message(FATAL_ERROR
          "gpusafe: GoogleTest not found. Install it (libgtest-dev), point GTest_DIR at its "
          "CMake config, set GPUSAFE_GTEST_SOURCE_DIR to a GoogleTest source tree, or configure "
          "with -DGPUSAFE_BUILD_TESTS=OFF.")
      endif()
      message(STATUS "gpusafe: building GoogleTest from ${_gpusafe_gtest_src}")
      set(BUILD_GMOCK OFF CACHE BOOL "" FORCE)
      set(INSTALL_GTEST OFF CACHE BOOL "" FORCE)
      set(gtest_force_shared_crt ON CACHE BOOL "" FORCE)
      add_subdirectory("${_gpusafe_gtest_src}" "${PROJECT_BINARY_DIR}/_deps/googletest"
                       EXCLUDE_FROM_ALL SYSTEM)
      # LibTorch may fix the libstdc++ ABI (-D_GLIBCXX_USE_CXX11_ABI=0 in older PyTorch
      # wheels); GoogleTest must then be built with the same ABI as the tests that use it.
      if(GPUSAFE_TORCH_FOUND AND TORCH_CXX_FLAGS)
        separate_arguments(_gpusafe_torch_cxx_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
        foreach(_gpusafe_gtest_target gtest gtest_main)
          target_compile_options(${_gpusafe_gtest_target} PRIVATE ${_gpusafe_torch_cxx_flags})
        endforeach()
      endif()
      if(NOT TARGET GTest::gtest)
        add_library(GTest::gtest ALIAS gtest)
      endif()
      if(NOT TARGET GTest::gtest_main)
        add_library(GTest::gtest_main ALIAS gtest_main)
      endif()
    endif()
  endif()
endmacro()

function(gpusafe_add_test)
  cmake_parse_arguments(PARSE_ARGV 0 arg "NO_MAIN" "NAME;TIMEOUT;TARGET" "SOURCES;LABELS;LIBRARIES")
  if(NOT arg_NAME OR NOT arg_SOURCES)
    message(FATAL_ERROR "gpusafe_add_test: NAME and SOURCES are required")
  endif()
  if(NOT arg_TIMEOUT)
    set(arg_TIMEOUT 120)
  endif()
  gpusafe_require_gtest()

  add_executable(${arg_NAME} ${arg_SOURCES})
  if(arg_NO_MAIN)
    target_link_libraries(${arg_NAME} PRIVATE GTest::gtest)
  else()
    target_link_libraries(${arg_NAME} PRIVATE GTest::gtest_main)
  endif()
  if(NOT arg_TARGET)
    gpusafe_target_for_sources(arg_TARGET ${arg_SOURCES})
  endif()
  target_link_libraries(${arg_NAME} PRIVATE ${arg_TARGET} ${arg_LIBRARIES})
  gpusafe_target_warnings(${arg_NAME})

  add_test(NAME ${arg_NAME} COMMAND ${arg_NAME})
  set_tests_properties(${arg_NAME} PROPERTIES
    TIMEOUT ${arg_TIMEOUT}
    LABELS "${arg_LABELS}")
endfunction()

# Links the GPU library handle targets that were found (gpusafe::cublas, ...) to `target`, and
# turns the parts that were not found off (GPUSAFE_WITH_<LIB>=0), so that a header found without
# its library does not leave undefined symbols. Compiling such a target checks that the library
# parts of gpusafe/handles/*.hpp build against the headers present.
function(gpusafe_link_handle_libs target)
  foreach(_part cublas cufft cudnn nccl)
    string(TOUPPER "${_part}" _up)
    if(GPUSAFE_${_up}_FOUND)
      target_link_libraries(${target} PRIVATE gpusafe::${_part})
    else()
      target_compile_definitions(${target} PRIVATE GPUSAFE_WITH_${_up}=0)
    endif()
  endforeach()
endfunction()
