# FindNCCL: the NCCL headers and library.
#
# Search order:
#   1. NCCL_HOME (CMake variable or environment variable): <NCCL_HOME>/include, <NCCL_HOME>/lib
#   2. the NCCL that LibTorch itself loads: the nvidia-nccl wheel next to torch
#      (site-packages/nvidia/nccl), so that forge and LibTorch share one copy of libnccl.so.2
#   3. the CUDA toolkit (CUDAToolkit_ROOT, /usr/local/cuda) and the system paths
#
# Defines NCCL_FOUND, NCCL_INCLUDE_DIR, NCCL_LIBRARY, NCCL_VERSION and the target NCCL::NCCL.

set(_nccl_hints "")
if(NCCL_HOME)
  list(APPEND _nccl_hints "${NCCL_HOME}")
endif()
if(DEFINED ENV{NCCL_HOME})
  list(APPEND _nccl_hints "$ENV{NCCL_HOME}")
endif()
if(TORCH_INSTALL_PREFIX)
  get_filename_component(_nccl_site "${TORCH_INSTALL_PREFIX}/.." ABSOLUTE)
  list(APPEND _nccl_hints "${_nccl_site}/nvidia/nccl" "${_nccl_site}/nvidia/cu13" "${_nccl_site}/nvidia/cu12")
endif()
if(CUDAToolkit_ROOT)
  list(APPEND _nccl_hints "${CUDAToolkit_ROOT}")
endif()
list(APPEND _nccl_hints /usr/local/cuda)

find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${_nccl_hints} PATH_SUFFIXES include NO_CACHE)
# The wheel ships only the versioned name, libnccl.so.2.
find_library(NCCL_LIBRARY NAMES nccl libnccl.so.2 NAMES_PER_DIR HINTS ${_nccl_hints} PATH_SUFFIXES lib lib64 NO_CACHE)

if(NCCL_INCLUDE_DIR AND EXISTS "${NCCL_INCLUDE_DIR}/nccl.h")
  file(STRINGS "${NCCL_INCLUDE_DIR}/nccl.h" _nccl_defs REGEX "^#define NCCL_(MAJOR|MINOR|PATCH) ")
  foreach(_part MAJOR MINOR PATCH)
    string(REGEX REPLACE ".*#define NCCL_${_part} ([0-9]+).*" "\\1" NCCL_${_part} "${_nccl_defs}")
  endforeach()
  set(NCCL_VERSION "${NCCL_MAJOR}.${NCCL_MINOR}.${NCCL_PATCH}")
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(NCCL REQUIRED_VARS NCCL_LIBRARY NCCL_INCLUDE_DIR VERSION_VAR NCCL_VERSION)

if(NCCL_FOUND AND NOT TARGET NCCL::NCCL)
  add_library(NCCL::NCCL UNKNOWN IMPORTED)
  set_target_properties(NCCL::NCCL PROPERTIES IMPORTED_LOCATION "${NCCL_LIBRARY}"
                                              INTERFACE_INCLUDE_DIRECTORIES "${NCCL_INCLUDE_DIR}")
endif()
