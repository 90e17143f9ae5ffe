# The GPU library parts of gpusafe's handles (gpusafe/handles/*.hpp): one INTERFACE target per
# library, created when the library is found. Used by gpusafe's own CMakeLists.txt and, after
# installation, by gpusafeConfig.cmake, so both ways of use get the same targets:
#
#   gpusafe::cublas  gpusafe::cuda + CUDA::cublas + CUDA::cublasLt, GPUSAFE_WITH_CUBLAS=1
#   gpusafe::cufft   gpusafe::cuda + CUDA::cufft, GPUSAFE_WITH_CUFFT=1
#   gpusafe::cudnn   gpusafe::cuda + libcudnn (cudnn.h), GPUSAFE_WITH_CUDNN=1
#   gpusafe::nccl    gpusafe::cuda + libnccl (nccl.h), GPUSAFE_WITH_NCCL=1
#
# cuBLAS and cuFFT come from find_package(CUDAToolkit). cuDNN and NCCL are searched under
# CUDNN_ROOT / NCCL_ROOT (CMake or environment variables), then under the CUDA Toolkit.
# Needs gpusafe::cuda to exist. Sets GPUSAFE_HANDLE_LIBS (the targets made) and
# GPUSAFE_<LIB>_FOUND, and _gpusafe_handle_summary (one line for the configure log).
include_guard(GLOBAL)

function(_gpusafe_handle_target name definition)
  if(NOT TARGET gpusafe::${name})
    add_library(gpusafe::${name} INTERFACE IMPORTED GLOBAL)
    set_target_properties(gpusafe::${name} PROPERTIES
      INTERFACE_LINK_LIBRARIES "gpusafe::cuda;${ARGN}"
      INTERFACE_COMPILE_DEFINITIONS "${definition}=1")
  endif()
endfunction()

# Finds <header> and library <lib> under <root_var> (CMake or environment) and the toolkit.
function(_gpusafe_find_toolkit_lib out_inc out_lib header lib root_var)
  set(_roots ${${root_var}} $ENV{${root_var}})
  if(CUDAToolkit_LIBRARY_ROOT)
    list(APPEND _roots "${CUDAToolkit_LIBRARY_ROOT}")
  endif()
  if(CUDAToolkit_BIN_DIR)
    get_filename_component(_tk "${CUDAToolkit_BIN_DIR}" DIRECTORY)
    list(APPEND _roots "${_tk}")
  endif()
  string(TOUPPER "${lib}" _up)
  find_path(GPUSAFE_${_up}_INCLUDE_DIR ${header}
    HINTS ${_roots} ${CUDAToolkit_INCLUDE_DIRS} PATH_SUFFIXES include)
  find_library(GPUSAFE_${_up}_LIBRARY ${lib}
    HINTS ${_roots} ${CUDAToolkit_LIBRARY_DIR} PATH_SUFFIXES lib lib64 lib/x64 targets/x86_64-linux/lib)
  set(${out_inc} "${GPUSAFE_${_up}_INCLUDE_DIR}" PARENT_SCOPE)
  set(${out_lib} "${GPUSAFE_${_up}_LIBRARY}" PARENT_SCOPE)
endfunction()

macro(gpusafe_add_handle_libs)
  set(GPUSAFE_HANDLE_LIBS "")
  set(_gpusafe_handle_summary "")
  foreach(_part cublas cufft cudnn nccl)
    string(TOUPPER "${_part}" _up)
    set(GPUSAFE_${_up}_FOUND OFF)
  endforeach()
  if(TARGET gpusafe::cuda)
    if(TARGET CUDA::cublas AND TARGET CUDA::cublasLt)
      _gpusafe_handle_target(cublas GPUSAFE_WITH_CUBLAS CUDA::cublas CUDA::cublasLt)
      set(GPUSAFE_CUBLAS_FOUND ON)
    endif()
    if(TARGET CUDA::cufft)
      _gpusafe_handle_target(cufft GPUSAFE_WITH_CUFFT CUDA::cufft)
      set(GPUSAFE_CUFFT_FOUND ON)
    endif()
    _gpusafe_find_toolkit_lib(_inc _lib cudnn.h cudnn CUDNN_ROOT)
    if(_inc AND _lib)
      _gpusafe_handle_target(cudnn GPUSAFE_WITH_CUDNN "${_lib}")
      set_property(TARGET gpusafe::cudnn PROPERTY INTERFACE_INCLUDE_DIRECTORIES "${_inc}")
      set(GPUSAFE_CUDNN_FOUND ON)
    endif()
    _gpusafe_find_toolkit_lib(_inc _lib nccl.h nccl NCCL_ROOT)
    if(_inc AND _lib)
      _gpusafe_handle_target(nccl GPUSAFE_WITH_NCCL "${_lib}")
      set_property(TARGET gpusafe::nccl PROPERTY INTERFACE_INCLUDE_DIRECTORIES "${_inc}")
      set(GPUSAFE_NCCL_FOUND ON)
    endif()
  endif()
  foreach(_part cublas cufft cudnn nccl)
    string(TOUPPER "${_part}" _up)
    if(GPUSAFE_${_up}_FOUND)
      list(APPEND GPUSAFE_HANDLE_LIBS gpusafe::${_part})
      string(APPEND _gpusafe_handle_summary " ${_part}=yes")
    else()
      string(APPEND _gpusafe_handle_summary " ${_part}=no")
    endif()
  endforeach()
  unset(_inc)
  unset(_lib)
  unset(_up)
  unset(_part)
endmacro()
