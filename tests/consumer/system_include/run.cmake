# GPUSAFE_SYSTEM_INCLUDE: with ON, consumers get gpusafe's include directory as a system one
# (-isystem) and their warnings do not reach gpusafe's headers; with OFF (the default), a plain
# -I, so that gpusafe's own warning checks see them.
#
#   cmake -DGPUSAFE_SOURCE_DIR=... -DWORK_DIR=... -DCXX=... [-DGENERATOR=...] -P run.cmake
cmake_minimum_required(VERSION 3.25)
include(${CMAKE_CURRENT_LIST_DIR}/../run_consumer.cmake)
gpusafe_consumer_require(GPUSAFE_SOURCE_DIR WORK_DIR CXX)
gpusafe_consumer_fresh_work_dir()
set(_include "${GPUSAFE_SOURCE_DIR}/include")

foreach(_value ON OFF)
  set(_bin "${WORK_DIR}/${_value}")
  gpusafe_consumer_configure("${CMAKE_CURRENT_LIST_DIR}" "${_bin}"
    "-DGPUSAFE_SOURCE_DIR=${GPUSAFE_SOURCE_DIR}" "-DGPUSAFE_SYSTEM_INCLUDE=${_value}"
    -DGPUSAFE_WITH_CUDA=OFF -DGPUSAFE_WITH_TORCH=OFF)
  file(READ "${_bin}/compile_commands.json" _commands)
  string(FIND "${_commands}" "-isystem ${_include}" _system)
  string(FIND "${_commands}" "-I${_include}" _plain)
  if(_value)
    if(_system LESS 0 OR NOT _plain LESS 0)
      message(FATAL_ERROR "GPUSAFE_SYSTEM_INCLUDE=ON: expected -isystem ${_include}:\n${_commands}")
    endif()
    # A consumer's strict warnings (-Wpadded -Werror) do not reach gpusafe's headers.
    gpusafe_consumer_build("${_bin}")
  else()
    if(NOT _system LESS 0 OR _plain LESS 0)
      message(FATAL_ERROR "GPUSAFE_SYSTEM_INCLUDE=OFF: expected -I${_include}:\n${_commands}")
    endif()
  endif()
  message(STATUS "GPUSAFE_SYSTEM_INCLUDE=${_value}: include flags as expected")
endforeach()
