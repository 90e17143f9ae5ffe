# A required component that cannot be found makes find_package(gpusafe) fail and say why.
#
#   cmake -DCONSUMER_DIR=... -DWORK_DIR=... -DPREFIX=... -DCOMPONENT=cuda|torch
#         [-DCXX=...] [-DGENERATOR=...] -P missing_component.cmake
#
# The component's dependency is made impossible to find with CMAKE_DISABLE_FIND_PACKAGE_<Pkg>.
cmake_minimum_required(VERSION 3.25)
foreach(_var CONSUMER_DIR WORK_DIR PREFIX COMPONENT)
  if(NOT DEFINED ${_var})
    message(FATAL_ERROR "missing_component.cmake: -D${_var}=... is required")
  endif()
endforeach()
if(COMPONENT STREQUAL "cuda")
  set(_disable CUDAToolkit)
  set(EXPECTED "COMPONENTS cuda: the CUDA Toolkit was not found; install it or set CUDAToolkit_ROOT")
elseif(COMPONENT STREQUAL "torch")
  set(_disable Torch)
  set(EXPECTED "COMPONENTS torch: LibTorch was not found")
else()
  message(FATAL_ERROR "missing_component.cmake: COMPONENT must be cuda or torch")
endif()

file(REMOVE_RECURSE "${WORK_DIR}")
set(_cmd "${CMAKE_COMMAND}" -S "${CONSUMER_DIR}" -B "${WORK_DIR}"
    "-DCMAKE_PREFIX_PATH=${PREFIX}" "-DGPUSAFE_COMPONENT=${COMPONENT}"
    "-DCMAKE_DISABLE_FIND_PACKAGE_${_disable}=ON")
if(GENERATOR)
  list(APPEND _cmd -G "${GENERATOR}")
endif()
if(CXX)
  list(APPEND _cmd "-DCMAKE_CXX_COMPILER=${CXX}")
endif()
execute_process(COMMAND ${_cmd} RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _err)
set(_all "${_out}\n${_err}")
# CMake wraps long message lines: compare with runs of white space made one space.
string(REGEX REPLACE "[ \t\r\n]+" " " _flat "${_all}")
if(_rc EQUAL 0)
  message(FATAL_ERROR "find_package(gpusafe REQUIRED COMPONENTS ${COMPONENT}) succeeded without "
                      "${_disable}:\n${_all}")
endif()
string(FIND "${_flat}" "${EXPECTED}" _pos)
if(_pos LESS 0)
  message(FATAL_ERROR "The configure failed, but without saying \"${EXPECTED}\":\n${_all}")
endif()
message(STATUS "find_package(gpusafe REQUIRED COMPONENTS ${COMPONENT}) without ${_disable} "
               "fails and says: ${EXPECTED}")
