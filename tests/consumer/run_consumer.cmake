# The steps shared by the consumer scripts that CTest runs with cmake -P (pkg_config/,
# system_include/ and include_only/run.cmake): checking their -D arguments, a fresh work
# directory, configuring and building a CMake project, compiling and running a program.
#
#   include(${CMAKE_CURRENT_LIST_DIR}/../run_consumer.cmake)
#
# The functions read the script's own -D arguments: WORK_DIR, CXX and, when given, GENERATOR.
include_guard(GLOBAL)

# Fails unless each variable named was given as -D<name>=...
function(gpusafe_consumer_require)
  foreach(_var IN LISTS ARGN)
    if(NOT DEFINED ${_var})
      message(FATAL_ERROR "run.cmake: -D${_var}=... is required")
    endif()
  endforeach()
endfunction()

# Removes what an earlier run left in WORK_DIR and creates it empty.
function(gpusafe_consumer_fresh_work_dir)
  file(REMOVE_RECURSE "${WORK_DIR}")
  file(MAKE_DIRECTORY "${WORK_DIR}")
endfunction()

# Configures the project in <source> into <binary> with the compiler CXX, the generator GENERATOR
# (when given) and the options after <binary>; its output is not shown, a failure is fatal.
function(gpusafe_consumer_configure source binary)
  set(_cmd "${CMAKE_COMMAND}" -S "${source}" -B "${binary}" "-DCMAKE_CXX_COMPILER=${CXX}" ${ARGN})
  if(GENERATOR)
    list(APPEND _cmd -G "${GENERATOR}")
  endif()
  execute_process(COMMAND ${_cmd} COMMAND_ERROR_IS_FATAL ANY OUTPUT_QUIET)
endfunction()

# Builds the configured project in <binary>; a failure is fatal.
function(gpusafe_consumer_build binary)
  execute_process(COMMAND "${CMAKE_COMMAND}" --build "${binary}" COMMAND_ERROR_IS_FATAL ANY)
endfunction()

# Shows and runs the compiler command given after <exe>, which writes the program <exe>, then
# runs <exe>; both in WORK_DIR, and a failure of either is fatal.
function(gpusafe_consumer_compile_and_run exe)
  string(REPLACE ";" " " _shown "${ARGN}")
  message(STATUS "${_shown}")
  execute_process(COMMAND ${ARGN} WORKING_DIRECTORY "${WORK_DIR}" COMMAND_ERROR_IS_FATAL ANY)
  execute_process(COMMAND "${exe}" WORKING_DIRECTORY "${WORK_DIR}" COMMAND_ERROR_IS_FATAL ANY)
endfunction()
