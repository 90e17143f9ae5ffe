# Consumer that copies only include/ and compiles with the compiler directly: no CMake target,
# no generated header, no definitions.
#
#   cmake -DGPUSAFE_SOURCE_DIR=... -DWORK_DIR=... -DCXX=... -P run.cmake
include(${CMAKE_CURRENT_LIST_DIR}/../run_consumer.cmake)
gpusafe_consumer_require(GPUSAFE_SOURCE_DIR WORK_DIR CXX)

gpusafe_consumer_fresh_work_dir()
file(COPY "${GPUSAFE_SOURCE_DIR}/include" DESTINATION "${WORK_DIR}")
file(COPY "${CMAKE_CURRENT_LIST_DIR}/../main.cpp" DESTINATION "${WORK_DIR}")

set(_exe "${WORK_DIR}/consumer_include_only")
set(_cmd "${CXX}" -std=c++17 "-I${WORK_DIR}/include" "${WORK_DIR}/main.cpp"
         "-DCONSUMER_NAME=\"include_only/core\"" -o "${_exe}" -pthread)
gpusafe_consumer_compile_and_run("${_exe}" ${_cmd})
