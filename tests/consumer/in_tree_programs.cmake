# The programs of a consumer that builds gpusafe in its own tree (add_subdirectory, FetchContent):
# each target it links, checked to give what it promises. Expects CONSUMER_WAY (a label),
# EXPECT_CUDA and EXPECT_TORCH.
# Nothing of gpusafe's own tests, examples or benchmarks may leak into a parent project.
foreach(_t gpusafe_self_contained gpusafe_hazards run_examples run_benchmarks gpusafe_docs)
  if(TARGET ${_t})
    message(FATAL_ERROR "gpusafe leaked target '${_t}' into its parent project")
  endif()
endforeach()

enable_testing()
set(_main "${CMAKE_CURRENT_SOURCE_DIR}/../main.cpp")

add_executable(consumer_core "${_main}")
target_link_libraries(consumer_core PRIVATE gpusafe::gpusafe)
target_compile_definitions(consumer_core PRIVATE CONSUMER_NAME="${CONSUMER_WAY}/core")
add_test(NAME consumer_core COMMAND consumer_core)

if(EXPECT_CUDA)
  add_executable(consumer_cuda "${_main}")
  target_link_libraries(consumer_cuda PRIVATE gpusafe::cuda)
  target_compile_definitions(consumer_cuda PRIVATE
    CONSUMER_NAME="${CONSUMER_WAY}/cuda" GPUSAFE_EXPECT_CUDA=1 GPUSAFE_EXPECT_TORCH=0)
  add_test(NAME consumer_cuda COMMAND consumer_cuda)
  # The GPU library handle parts found by gpusafe, all in one program.
  set(_handle_targets "")
  set(_handle_defs "")
  foreach(_part cublas cufft cudnn nccl)
    if(TARGET gpusafe::${_part})
      string(TOUPPER "${_part}" _up)
      list(APPEND _handle_targets gpusafe::${_part})
      list(APPEND _handle_defs GPUSAFE_EXPECT_${_up}=1)
    endif()
  endforeach()
  if(_handle_targets)
    add_executable(consumer_handles "${_main}")
    target_link_libraries(consumer_handles PRIVATE ${_handle_targets})
    target_compile_definitions(consumer_handles PRIVATE CONSUMER_NAME="${CONSUMER_WAY}/handles"
      GPUSAFE_EXPECT_CUDA=1 GPUSAFE_EXPECT_TORCH=0 ${_handle_defs})
    add_test(NAME consumer_handles COMMAND consumer_handles)
  endif()
elseif(TARGET gpusafe::cuda)
  message(FATAL_ERROR "gpusafe::cuda exists although CUDA was not expected")
endif()

if(EXPECT_TORCH)
  add_executable(consumer_torch "${_main}")
  target_link_libraries(consumer_torch PRIVATE gpusafe::torch)
  if(EXPECT_CUDA)
    set(_cuda 1)
  else()
    set(_cuda 0)
  endif()
  target_compile_definitions(consumer_torch PRIVATE
    CONSUMER_NAME="${CONSUMER_WAY}/torch" GPUSAFE_EXPECT_CUDA=${_cuda} GPUSAFE_EXPECT_TORCH=1)
  add_test(NAME consumer_torch COMMAND consumer_torch)
elseif(TARGET gpusafe::torch)
  message(FATAL_ERROR "gpusafe::torch exists although LibTorch was not expected")
endif()
