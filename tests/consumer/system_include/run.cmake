# GPUSAFE_SYSTEM_INCLUDE: with ON, consumers get gpusafe's include directory as a system one
# (-isystem) and their warnings do not reach gpusafe's headers; with OFF (the default), a plain
# -I, so that gpusafe's own warning checks see them.
#
#   cmake -DGPUSAFE_SOURCE_DIR=... -DWORK_DIR=... -DCXX=... [-DGENERATOR=...] -P run.cmake
cmake_minimum_required(VERSION 3.25)
foreach(_var GPUSAFE_SOURCE_DIR WORK_DIR CXX)
  if(NOT DEFINED ${_var})
    message(FATAL_ERROR "run.cmake: -D${_var}=... is required")
  endif()
endforeach()
file(REMOVE_RECURSE "${WORK_DIR}")
set(_include "${GPUSAFE_SOURCE_DIR}/include")

foreach(_value ON OFF)
  set(_bin "${WORK_DIR}/${_value}")
  set(_cmd "${CMAKE_COMMAND}" -S "${CMAKE_CURRENT_LIST_DIR}" -B "${_bin}"
      "-DGPUSAFE_SOURCE_DIR=${GPUSAFE_SOURCE_DIR}" "-DGPUSAFE_SYSTEM_INCLUDE=${_value}"
      "-DCMAKE_CXX_COMPILER=${CXX}" -DGPUSAFE_WITH_CUDA=OFF -DGPUSAFE_WITH_TORCH=OFF)
  if(GENERATOR)
    list(APPEND _cmd -G "${GENERATOR}")
  endif()
  execute_process(COMMAND ${_cmd} COMMAND_ERROR_IS_FATAL ANY OUTPUT_QUIET)
  file(READ "${_bin}/compile_commands.json" _commands)
  string(FIND "${_commands}" "-isystem ${_include}" _system)
  string(FIND "${_commands}" "-I${_include}" _plain)
  if(_value)
    if(_system LESS 0 OR NOT _plain LESS 0)
      message(FATAL_ERROR "GPUSAFE_SYSTEM_INCLUDE=ON: expected -isystem ${_include}:\n${_commands}")
    endif()
    # A consumer's strict warnings (-Wpadded -Werror) do not reach gpusafe's headers.
    execute_process(COMMAND "${CMAKE_COMMAND}" --build "${_bin}" COMMAND_ERROR_IS_FATAL ANY)
  else()
    if(NOT _system LESS 0 OR _plain LESS 0)
      message(FATAL_ERROR "GPUSAFE_SYSTEM_INCLUDE=OFF: expected -I${_include}:\n${_commands}")
    endif()
  endif()
  message(STATUS "GPUSAFE_SYSTEM_INCLUDE=${_value}: include flags as expected")
endforeach()
