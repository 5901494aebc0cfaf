#!/usr/bin/env bash
# Configures and builds forge (Release by default) into $FORGE_BUILD (default: ./build).
# usage: scripts/build.sh [Release|Debug|RelWithDebInfo]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
type="${1:-Release}"
torch_prefix="$("$FORGE_PYTHON" -c 'import torch; print(torch.utils.cmake_prefix_path)')"
launcher=()
# ccache with the precompiled header (CMakeLists.txt) and, through CCACHE_BASEDIR, paths
# relative to the checkout, so that another clone or worktree of the same sources hits the
# same cache (scripts/env.sh chooses the cache folder). In the launcher, so that a build
# started by hand (cmake --build build) compiles alike.
command -v ccache >/dev/null && launcher=(
  "-DCMAKE_CXX_COMPILER_LAUNCHER=env;CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime;CCACHE_BASEDIR=$FORGE_ROOT;ccache")
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
if [ ! -f "$FORGE_BUILD/CMakeCache.txt" ]; then
  cmake -S "$FORGE_ROOT" -B "$FORGE_BUILD" "${gen[@]}" "${launcher[@]}" \
    -DCMAKE_BUILD_TYPE="$type" -DCMAKE_PREFIX_PATH="$torch_prefix" \
    -DPython3_EXECUTABLE="$FORGE_PYTHON" -Wno-dev
else
  cmake "$FORGE_BUILD" -DCMAKE_BUILD_TYPE="$type" "${launcher[@]}" >/dev/null
fi
cmake --build "$FORGE_BUILD" --parallel "$(nproc)"
