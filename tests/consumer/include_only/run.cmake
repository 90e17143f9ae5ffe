# Consumer that copies only include/ and compiles with the compiler directly: no CMake target,
# no generated header, no definitions.
#
#   cmake -DGPUSAFE_SOURCE_DIR=... -DWORK_DIR=... -DCXX=... -P run.cmake
foreach(_var GPUSAFE_SOURCE_DIR WORK_DIR CXX)
  if(NOT DEFINED ${_var})
    message(FATAL_ERROR "run.cmake: -D${_var}=... is required")
  endif()
endforeach()

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")
file(COPY "${GPUSAFE_SOURCE_DIR}/include" DESTINATION "${WORK_DIR}")
file(COPY "${CMAKE_CURRENT_LIST_DIR}/../main.cpp" DESTINATION "${WORK_DIR}")

set(_exe "${WORK_DIR}/consumer_include_only")
set(_cmd "${CXX}" -std=c++17 "-I${WORK_DIR}/include" "${WORK_DIR}/main.cpp"
         "-DCONSUMER_NAME=\"include_only/core\"" -o "${_exe}" -pthread)
string(REPLACE ";" " " _shown "${_cmd}")
message(STATUS "${_shown}")
execute_process(COMMAND ${_cmd} WORKING_DIRECTORY "${WORK_DIR}" COMMAND_ERROR_IS_FATAL ANY)
execute_process(COMMAND "${_exe}" WORKING_DIRECTORY "${WORK_DIR}" COMMAND_ERROR_IS_FATAL ANY)
