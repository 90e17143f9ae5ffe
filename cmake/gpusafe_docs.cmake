# The API reference: target gpusafe_docs (Doxygen, HTML in <build>/docs/api), the README as its
# main page and the guides in docs/ as related pages. Doxygen's warnings are errors, and the test
# gpusafe_docs_reference (label `docs`) builds it, so an undocumented parameter or a broken link
# fails CI wherever Doxygen is installed. Configure says when it is not.
find_package(Doxygen QUIET)
if(NOT DOXYGEN_FOUND)
  message(STATUS "gpusafe: Doxygen not found: no gpusafe_docs target (install doxygen for the API "
                 "reference)")
  return()
endif()

set(DOXYGEN_PROJECT_NAME "gpusafe")
set(DOXYGEN_PROJECT_NUMBER "${PROJECT_VERSION}")
set(DOXYGEN_PROJECT_BRIEF "${PROJECT_DESCRIPTION}")
set(DOXYGEN_OUTPUT_DIRECTORY "${PROJECT_BINARY_DIR}/docs/api")
set(DOXYGEN_STRIP_FROM_INC_PATH "${PROJECT_SOURCE_DIR}/include")
set(DOXYGEN_STRIP_FROM_PATH "${PROJECT_SOURCE_DIR}")
set(DOXYGEN_FILE_PATTERNS "*.hpp" "*.md")
# The reference is the public API: the internals (detail), and the test double's state behind
# its interface, stay out.
set(DOXYGEN_EXCLUDE_PATTERNS "*/detail/*")
set(DOXYGEN_EXCLUDE_SYMBOLS "detail" "*::detail::*" "detail_fake" "*::detail_fake::*")
set(DOXYGEN_EXTRACT_ALL NO)
set(DOXYGEN_EXTRACT_STATIC YES)
set(DOXYGEN_HIDE_UNDOC_MEMBERS YES)
set(DOXYGEN_HIDE_UNDOC_CLASSES YES)
set(DOXYGEN_WARN_IF_UNDOCUMENTED NO)
set(DOXYGEN_WARN_AS_ERROR FAIL_ON_WARNINGS)
set(DOXYGEN_GENERATE_LATEX NO)
set(DOXYGEN_HAVE_DOT NO)
set(DOXYGEN_GENERATE_HTML YES)
set(DOXYGEN_QUIET YES)
set(DOXYGEN_ENABLE_PREPROCESSING YES)
set(DOXYGEN_MACRO_EXPANSION YES)
set(DOXYGEN_EXPAND_ONLY_PREDEF YES)
# The ABI namespace (gpusafe::v0_1_cuda, ...) is an implementation detail of linking: the
# reference shows the names users write.
set(DOXYGEN_PREDEFINED
    "GPUSAFE_WITH_CUDA=1" "GPUSAFE_WITH_TORCH=1" "GPUSAFE_WITH_CUBLAS=1" "GPUSAFE_WITH_CUDNN=1"
    "GPUSAFE_WITH_CUFFT=1" "GPUSAFE_WITH_NCCL=1"
    "GPUSAFE_NAMESPACE_BEGIN=namespace gpusafe {" "GPUSAFE_NAMESPACE_END=}"
    "GPUSAFE_PROCESS_NAMESPACE_BEGIN=namespace gpusafe {" "GPUSAFE_PROCESS_NAMESPACE_END=}"
    "GPUSAFE_PROCESS_WIDE=" "GPUSAFE_CHECK_RUNTIME(x)=")
set(DOXYGEN_EXPAND_AS_DEFINED "")
set(DOXYGEN_IMAGE_PATH "${PROJECT_SOURCE_DIR}/docs/images" "${PROJECT_SOURCE_DIR}")
set(DOXYGEN_USE_MDFILE_AS_MAINPAGE "${PROJECT_SOURCE_DIR}/README.md")
set(DOXYGEN_MARKDOWN_SUPPORT YES)
set(DOXYGEN_AUTOLINK_SUPPORT YES)
set(DOXYGEN_EXAMPLE_PATH "${PROJECT_SOURCE_DIR}/examples")

file(GLOB _gpusafe_guides "${PROJECT_SOURCE_DIR}/docs/*.md")
doxygen_add_docs(gpusafe_docs
  "${PROJECT_SOURCE_DIR}/include/gpusafe" "${PROJECT_SOURCE_DIR}/README.md" ${_gpusafe_guides}
  WORKING_DIRECTORY "${PROJECT_SOURCE_DIR}"
  COMMENT "Generating the gpusafe API reference in ${PROJECT_BINARY_DIR}/docs/api")

if(GPUSAFE_BUILD_TESTS AND GPUSAFE_BUILD_CHECKS)
  add_test(NAME gpusafe_docs_reference
    COMMAND "${CMAKE_COMMAND}" --build "${PROJECT_BINARY_DIR}" --target gpusafe_docs)
  set_tests_properties(gpusafe_docs_reference PROPERTIES LABELS docs TIMEOUT 600)
endif()
