# cmake -DGPUSAFE_SOURCE_DIR=... -DWORK_DIR=... -DTorch_DIR=... -DEXPECT_CUDA=ON|OFF
#       [-DCUDAToolkit_ROOT=...] [-DGENERATOR=...] -P run.cmake
# (1) find_package(Torch) after add_subdirectory(gpusafe): gpusafe::torch exists, configure says
#     whether it links CUDA, the program builds, runs, and needs libcudart only with CUDA.
# (2) gpusafe::torch linked but LibTorch never found: configure fails with gpusafe's message.
set(_src "${CMAKE_CURRENT_LIST_DIR}")
set(_common "-DGPUSAFE_SOURCE_DIR=${GPUSAFE_SOURCE_DIR}" "-DEXPECT_CUDA=${EXPECT_CUDA}")
if(CUDAToolkit_ROOT)
  list(APPEND _common "-DCUDAToolkit_ROOT=${CUDAToolkit_ROOT}")
endif()
if(GENERATOR)
  list(APPEND _common -G "${GENERATOR}")
endif()

file(REMOVE_RECURSE "${WORK_DIR}/late" "${WORK_DIR}/missing")
execute_process(
  COMMAND "${CMAKE_COMMAND}" -S "${_src}" -B "${WORK_DIR}/late" ${_common} -DMODE=late
          "-DTorch_DIR=${Torch_DIR}"
  OUTPUT_VARIABLE _out ERROR_VARIABLE _err RESULT_VARIABLE _rc)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "late: configure failed:\n${_out}\n${_err}")
endif()
if(EXPECT_CUDA)
  set(_expected "gpusafe: gpusafe::torch with CUDA")
else()
  set(_expected "gpusafe: gpusafe::torch without CUDA")
endif()
string(FIND "${_out}" "${_expected}" _at)
if(_at EQUAL -1)
  message(FATAL_ERROR "late: configure did not say '${_expected}':\n${_out}")
endif()
string(FIND "${_out}" "defined over the parent's torch target" _at)
if(_at EQUAL -1)
  message(FATAL_ERROR "late: configure did not define gpusafe::torch late:\n${_out}")
endif()
execute_process(COMMAND "${CMAKE_COMMAND}" --build "${WORK_DIR}/late"
                OUTPUT_VARIABLE _out ERROR_VARIABLE _err RESULT_VARIABLE _rc)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "late: build failed:\n${_out}\n${_err}")
endif()
execute_process(
  COMMAND "${CMAKE_COMMAND}" "-DEXE=${WORK_DIR}/late/consumer_torch_probe"
          "-DEXPECT_CUDART=${EXPECT_CUDA}" -P "${_src}/../check_no_cudart.cmake"
  RESULT_VARIABLE _rc)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "late: the program's libraries are not as expected")
endif()

execute_process(
  COMMAND "${CMAKE_COMMAND}" -S "${_src}" -B "${WORK_DIR}/missing" ${_common} -DMODE=missing
  OUTPUT_VARIABLE _out ERROR_VARIABLE _err RESULT_VARIABLE _rc)
if(_rc EQUAL 0)
  message(FATAL_ERROR "missing: configure succeeded although gpusafe::torch has no LibTorch")
endif()
string(REGEX REPLACE "[ \t\r\n]+" " " _err_flat "${_err}")  # CMake wraps long messages
string(FIND "${_err_flat}" "link gpusafe::torch, but LibTorch was not found" _at)
if(_at EQUAL -1)
  message(FATAL_ERROR "missing: configure failed without gpusafe's message:\n${_err}")
endif()
message(STATUS "torch_order: late definition and missing-LibTorch message both as expected")
