# Finds every external dependency and exposes two interface targets:
#   forge::deps_light  MPI-free, torch-free: yaml-cpp and the standard library only
#   forge::deps        everything a torch-using module needs (LibTorch, MPI, HDF5, zlib)
# All torch-using targets link forge::deps so that they share one set of compile flags
# and therefore one precompiled header.

find_package(Torch REQUIRED)
find_package(MPI REQUIRED COMPONENTS C)
find_package(yaml-cpp REQUIRED)
find_package(HDF5 REQUIRED COMPONENTS C)
find_package(ZLIB REQUIRED)
find_package(Threads REQUIRED)
# TensorBoard event files are protobuf messages (trainer/tensorboard/event.proto).
find_package(Protobuf REQUIRED)
# JSON files (summary.json, metrics.jsonl, --json outputs) are written and read with it.
find_package(nlohmann_json 3 REQUIRED)

# The torch wheel keeps CUDA, cuDNN and NCCL in sibling nvidia-* packages and finds them at
# run time through its own RPATH. The linker must see the same copies when it resolves
# libtorch_cuda.so's dependencies, not an older NCCL from a system CUDA toolkit.
set(FORGE_TORCH_LINK_DIRS "")
get_filename_component(_forge_site_packages "${TORCH_INSTALL_PREFIX}/.." ABSOLUTE)
file(GLOB _forge_nvidia_libs LIST_DIRECTORIES true "${_forge_site_packages}/nvidia/*/lib")
foreach(_dir IN LISTS _forge_nvidia_libs)
  if(IS_DIRECTORY "${_dir}")
    list(APPEND FORGE_TORCH_LINK_DIRS "${_dir}")
  endif()
endforeach()

# One CUDA runtime per process. LibTorch's CMake config links forge against the toolkit's
# libcudart and libnvrtc (CUDA::cudart, CUDA::nvrtc, e.g. /usr/local/cuda 13.0), while
# libtorch_cuda.so loads the wheel's copies beside torch (nvidia/cu*/lib, the version torch
# was built for) through its own RPATH. Each pair has one SONAME, so whichever forge's RUNPATH
# finds first is the process's, LibTorch's included (and across major versions there would
# be two runtimes). forge therefore links the wheel's libraries when there are any: then the
# toolkit's folder is not on its RUNPATH at all.
foreach(_lib IN ITEMS cudart nvrtc)
  if(NOT TARGET CUDA::${_lib} OR NOT FORGE_TORCH_LINK_DIRS)
    continue()
  endif()
  set(_forge_wheel_lib "")
  foreach(_dir IN LISTS FORGE_TORCH_LINK_DIRS)
    file(GLOB _found "${_dir}/lib${_lib}.so.[0-9]*")
    if(_found AND NOT _forge_wheel_lib)
      list(SORT _found)
      list(GET _found 0 _forge_wheel_lib)
    endif()
  endforeach()
  if(_forge_wheel_lib)
    set_property(TARGET CUDA::${_lib} PROPERTY IMPORTED_LOCATION "${_forge_wheel_lib}")
    # Torch's config also names the toolkit's libnvrtc by path, in TORCH_LIBRARIES.
    list(TRANSFORM TORCH_LIBRARIES REPLACE "^/.*/lib${_lib}\\.so[.0-9]*$" "${_forge_wheel_lib}")
    message(STATUS "forge: ${_lib} ${_forge_wheel_lib} (the one LibTorch loads)")
  endif()
endforeach()

# Exported with the installed package (cmake/ForgeInstall.cmake): what forge_deps names may
# point at LibTorch and system libraries, never into the source or build tree.
add_library(forge_deps INTERFACE)
add_library(forge::deps ALIAS forge_deps)
target_link_libraries(forge_deps INTERFACE ${TORCH_LIBRARIES} MPI::MPI_C hdf5::hdf5
  yaml-cpp ZLIB::ZLIB Threads::Threads)
# LibTorch's CMake config hands its flags over as a string; keep only what matters to us.
# OMPI_SKIP_MPICXX: forge uses the C API; the deprecated C++ bindings would need libmpi_cxx.
target_compile_definitions(forge_deps INTERFACE _GLIBCXX_USE_CXX11_ABI=1 OMPI_SKIP_MPICXX=1 MPICH_SKIP_MPICXX=1)
if(FORGE_TORCH_LINK_DIRS)
  list(JOIN FORGE_TORCH_LINK_DIRS ":" _forge_rpath_link)
  target_link_options(forge_deps INTERFACE "LINKER:-rpath-link,${_forge_rpath_link}")
endif()

# The GPU path: CUDA placement needs a CUDA build of LibTorch, the NCCL backend needs NCCL too.
# FORGE_WITH_NCCL: AUTO (default) = on when both are there; ON = required (an error says what is
# missing); OFF = a CPU-only build even with a CUDA LibTorch.
set(FORGE_WITH_NCCL AUTO CACHE STRING "Build the NCCL backend and the CUDA path: AUTO, ON or OFF")
set_property(CACHE FORGE_WITH_NCCL PROPERTY STRINGS AUTO ON OFF)
set(FORGE_CUDA OFF)
if(CAFFE2_USE_CUDA AND NOT FORGE_WITH_NCCL STREQUAL "OFF")
  set(FORGE_CUDA ON)
endif()
set(FORGE_NCCL OFF)
if(NOT FORGE_WITH_NCCL STREQUAL "OFF")
  find_package(NCCL)
  if(FORGE_CUDA AND NCCL_FOUND)
    set(FORGE_NCCL ON)
  elseif(FORGE_WITH_NCCL STREQUAL "ON")
    if(NOT CAFFE2_USE_CUDA)
      message(FATAL_ERROR "FORGE_WITH_NCCL=ON, but the LibTorch found at ${TORCH_INSTALL_PREFIX} is a CPU-only "
                          "build: point CMAKE_PREFIX_PATH at a CUDA build (python3 -c 'import torch; "
                          "print(torch.utils.cmake_prefix_path)' of a CUDA wheel), or configure with "
                          "-DFORGE_WITH_NCCL=OFF")
    endif()
    message(FATAL_ERROR "FORGE_WITH_NCCL=ON, but NCCL was not found (looked for nccl.h and libnccl in NCCL_HOME, "
                        "the nvidia-nccl wheel beside torch, and the CUDA toolkit): set -DNCCL_HOME=<dir with "
                        "include/nccl.h and lib/libnccl.so*>, install the nvidia-nccl-cu13 wheel or libnccl-dev, "
                        "or configure with -DFORGE_WITH_NCCL=OFF")
  endif()
endif()
if(FORGE_NCCL)
  target_link_libraries(forge_deps INTERFACE NCCL::NCCL)
  target_compile_definitions(forge_deps INTERFACE FORGE_WITH_CUDA=1 FORGE_WITH_NCCL=1)
  message(STATUS "forge: CUDA placement and the NCCL backend are built (NCCL ${NCCL_VERSION} from ${NCCL_LIBRARY})")
elseif(FORGE_CUDA)
  target_compile_definitions(forge_deps INTERFACE FORGE_WITH_CUDA=1)
  message(STATUS "forge: CUDA placement is built, the NCCL backend is not (NCCL not found)")
else()
  message(STATUS "forge: CPU-only build (LibTorch without CUDA, or FORGE_WITH_NCCL=OFF)")
endif()

# Helper: give a torch-using target the shared precompiled header.
function(forge_use_pch target)
  if(NOT FORGE_PCH)
    return()
  endif()
  if(TARGET forge_pch)
    target_precompile_headers(${target} REUSE_FROM forge_pch)
  endif()
endfunction()

if(FORGE_PCH)
  add_library(forge_pch OBJECT "${CMAKE_CURRENT_LIST_DIR}/forge_pch.cpp")
  target_link_libraries(forge_pch PRIVATE forge_options forge_deps)
  target_precompile_headers(forge_pch PRIVATE "${CMAKE_CURRENT_LIST_DIR}/forge_pch.h")
endif()
