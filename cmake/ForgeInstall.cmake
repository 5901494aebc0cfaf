# `cmake --install build --prefix P` makes forge a CMake package, so that a program of a
# user's own finds it and links one target:
#   find_package(forge REQUIRED)                     # CMAKE_PREFIX_PATH=P
#   target_link_libraries(app PRIVATE forge::forge)  # #include <forge/forge.h>
# Installed: the headers under P/include/forge (the same paths as in this repository, since
# sources include them from the repository root), the static libraries and their export set,
# the package config (cmake/forgeConfig.cmake.in) and the forge command.

include(CMakePackageConfigHelpers)

set(FORGE_INSTALL_CMAKEDIR "${CMAKE_INSTALL_LIBDIR}/cmake/forge")

# Every module's headers, since a header of one module includes the others'. Listed file by
# file (install(DIRECTORY) would also make folders without headers); CONFIGURE_DEPENDS picks
# up a new header at the next build.
file(GLOB_RECURSE _forge_headers RELATIVE "${PROJECT_SOURCE_DIR}" CONFIGURE_DEPENDS
     "${PROJECT_SOURCE_DIR}/core/*.h" "${PROJECT_SOURCE_DIR}/data/*.h" "${PROJECT_SOURCE_DIR}/distributed/*.h"
     "${PROJECT_SOURCE_DIR}/checkpoint/*.h" "${PROJECT_SOURCE_DIR}/trainer/*.h")
foreach(_header IN LISTS _forge_headers)
  get_filename_component(_dir "${_header}" DIRECTORY)
  install(FILES "${PROJECT_SOURCE_DIR}/${_header}" DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}/forge/${_dir}")
endforeach()
# The umbrella header, also where its own comment promises it: <forge/forge.h>.
install(FILES "${PROJECT_SOURCE_DIR}/trainer/forge.h" DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}/forge")

# The libraries keep their build-tree names in the package (forge::core, forge::engine, ...,
# forge::forge); forge_pch is not among them: REUSE_FROM only borrows its compiled header.
set(_forge_libraries core distributed data checkpoint tensorboard spec models tasks optim builtin config module
    report engine app)
set(_forge_exported options deps forge ${_forge_libraries})
foreach(_name IN LISTS _forge_exported)
  set_target_properties(forge_${_name} PROPERTIES EXPORT_NAME ${_name})
endforeach()
list(TRANSFORM _forge_exported PREPEND forge_)
install(TARGETS ${_forge_exported} EXPORT forgeTargets
        ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}")

# The installed command finds LibTorch, MPI and HDF5 where the build found them (their
# directories lie outside the build tree, so CMake would otherwise strip them).
set_target_properties(forge PROPERTIES INSTALL_RPATH_USE_LINK_PATH ON)
install(TARGETS forge RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}")

install(EXPORT forgeTargets NAMESPACE forge:: DESTINATION "${FORGE_INSTALL_CMAKEDIR}")

# forgeConfig.cmake finds the same dependencies again; a user's find_package(forge) need not
# repeat where LibTorch is.
set(FORGE_TORCH_DIR "${Torch_DIR}")
configure_package_config_file("${PROJECT_SOURCE_DIR}/cmake/forgeConfig.cmake.in"
                              "${PROJECT_BINARY_DIR}/forgeConfig.cmake"
                              INSTALL_DESTINATION "${FORGE_INSTALL_CMAKEDIR}")
# 0.x: a minor version may change the API.
write_basic_package_version_file("${PROJECT_BINARY_DIR}/forgeConfigVersion.cmake"
                                 COMPATIBILITY SameMinorVersion)
install(FILES "${PROJECT_BINARY_DIR}/forgeConfig.cmake" "${PROJECT_BINARY_DIR}/forgeConfigVersion.cmake"
        DESTINATION "${FORGE_INSTALL_CMAKEDIR}")
if(FORGE_NCCL)
  # forge::deps links NCCL::NCCL, which only forge's own find module defines.
  install(FILES "${PROJECT_SOURCE_DIR}/cmake/FindNCCL.cmake" DESTINATION "${FORGE_INSTALL_CMAKEDIR}")
endif()
