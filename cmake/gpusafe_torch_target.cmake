# gpusafe::torch: how the target is made (included by gpusafe's CMakeLists.txt).
#
# CUDA follows the LibTorch that was found: gpusafe::torch links gpusafe::cuda (CUDA::cudart,
# GPUSAFE_WITH_CUDA=1) only when LibTorch itself was built with CUDA, or when the build asked for
# CUDA explicitly (GPUSAFE_WITH_CUDA=ON). Otherwise it defines GPUSAFE_WITH_CUDA=0, so that
# config.hpp does not switch CUDA on because some include path happens to hold
# cuda_runtime_api.h, and the program has no libcudart in its NEEDED entries: a CPU-only LibTorch
# program starts on a machine without the CUDA Toolkit's libraries.
include_guard(GLOBAL)

# Sets out_var to ON when the LibTorch found in the calling scope was built with CUDA.
function(_gpusafe_torch_has_cuda out_var)
  set(_has OFF)
  # TorchConfig sets TORCH_CUDA_LIBRARIES, Caffe2Config CAFFE2_USE_CUDA, and the CUDA builds of
  # LibTorch import torch_cuda and c10_cuda; CPU-only builds (Debian's) have none of them.
  if(CAFFE2_USE_CUDA OR TORCH_CUDA_LIBRARIES OR TARGET torch_cuda OR TARGET c10_cuda)
    set(_has ON)
  endif()
  set(${out_var} ${_has} PARENT_SCOPE)
endfunction()

# Defines gpusafe_torch / gpusafe::torch over the `torch` target visible in the calling scope.
#   cuda_found: whether gpusafe::cuda exists; cuda_mode: AUTO, ON or OFF (GPUSAFE_WITH_CUDA).
#   links_cuda_var: set in the caller to whether gpusafe::torch links gpusafe::cuda.
function(_gpusafe_define_torch_target cuda_found cuda_mode links_cuda_var)
  _gpusafe_torch_has_cuda(_torch_cuda)
  set(_links_cuda OFF)
  if(cuda_found AND (_torch_cuda OR cuda_mode STREQUAL "ON"))
    set(_links_cuda ON)
  endif()

  if(_torch_cuda)
    set(_what "LibTorch has CUDA")
  else()
    set(_what "LibTorch is CPU-only")
  endif()
  if(_links_cuda AND _torch_cuda)
    set(_summary "with CUDA (${_what})")
  elseif(_links_cuda)
    set(_summary "with CUDA (${_what}, but GPUSAFE_WITH_CUDA=ON asks for CUDA)")
  elseif(cuda_found)
    string(CONCAT _summary "without CUDA (${_what}; the CUDA Toolkit is not linked, no "
                  "libcudart needed at run time; GPUSAFE_WITH_CUDA=ON links it anyway)")
  elseif(_torch_cuda)
    set(_summary "without gpusafe's CUDA parts (${_what}, but gpusafe's CUDA is off or not found)")
  else()
    set(_summary "without CUDA (${_what})")
  endif()
  message(STATUS "gpusafe: gpusafe::torch ${_summary}")

  add_library(gpusafe_torch INTERFACE)
  add_library(gpusafe::torch ALIAS gpusafe_torch)
  if(TORCH_LIBRARIES)
    target_link_libraries(gpusafe_torch INTERFACE gpusafe::gpusafe ${TORCH_LIBRARIES})
  else()
    target_link_libraries(gpusafe_torch INTERFACE gpusafe::gpusafe torch)
  endif()
  target_compile_definitions(gpusafe_torch INTERFACE GPUSAFE_WITH_TORCH=1)
  if(_links_cuda)
    target_link_libraries(gpusafe_torch INTERFACE gpusafe::cuda)
  else()
    target_compile_definitions(gpusafe_torch INTERFACE GPUSAFE_WITH_CUDA=0)
  endif()
  set_target_properties(gpusafe_torch PROPERTIES EXPORT_NAME torch)
  set(${links_cuda_var} ${_links_cuda} PARENT_SCOPE)
endfunction()

# Appends to out_var the targets of `dir` and its subdirectories that link gpusafe::torch.
function(_gpusafe_targets_linking_torch dir out_var)
  set(_users ${${out_var}})
  get_property(_targets DIRECTORY "${dir}" PROPERTY BUILDSYSTEM_TARGETS)
  foreach(_t IN LISTS _targets)
    get_target_property(_type ${_t} TYPE)
    set(_links "")
    if(NOT _type STREQUAL "INTERFACE_LIBRARY")
      get_target_property(_direct ${_t} LINK_LIBRARIES)
      if(_direct)
        list(APPEND _links ${_direct})
      endif()
    endif()
    get_target_property(_iface ${_t} INTERFACE_LINK_LIBRARIES)
    if(_iface)
      list(APPEND _links ${_iface})
    endif()
    if(_links MATCHES "gpusafe::torch")
      list(APPEND _users ${_t})
    endif()
  endforeach()
  get_property(_subdirs DIRECTORY "${dir}" PROPERTY SUBDIRECTORIES)
  foreach(_d IN LISTS _subdirs)
    _gpusafe_targets_linking_torch("${_d}" _users)
  endforeach()
  set(${out_var} ${_users} PARENT_SCOPE)
endfunction()

# Deferred to the end of the top-level directory when gpusafe is a subproject and no `torch`
# target existed when it was added: the parent may find Torch after add_subdirectory(gpusafe).
function(_gpusafe_late_torch_target cuda_found cuda_mode)
  if(TARGET gpusafe::torch)
    return()
  endif()
  if(TARGET torch)
    _gpusafe_define_torch_target("${cuda_found}" "${cuda_mode}" _unused)
    message(STATUS "gpusafe: gpusafe::torch defined over the parent's torch target (found after "
                   "add_subdirectory(gpusafe))")
    return()
  endif()
  set(_users "")
  _gpusafe_targets_linking_torch("${CMAKE_SOURCE_DIR}" _users)
  if(_users)
    list(JOIN _users ", " _names)
    message(FATAL_ERROR
      "gpusafe: target(s) ${_names} link gpusafe::torch, but LibTorch was not found: there is no "
      "`torch` target in the top-level project at the end of its configuration. Call "
      "find_package(Torch REQUIRED GLOBAL) in the top-level CMakeLists.txt (before or after "
      "add_subdirectory(gpusafe)), or configure with -DGPUSAFE_WITH_TORCH=ON so that gpusafe "
      "calls find_package(Torch) itself (set Torch_DIR or CMAKE_PREFIX_PATH to LibTorch).")
  endif()
endfunction()
