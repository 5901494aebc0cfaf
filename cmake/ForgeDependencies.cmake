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
