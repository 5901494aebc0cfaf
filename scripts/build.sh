#!/usr/bin/env bash
# Configures and builds forge (Release by default) into $FORGE_BUILD (default: ./build).
# usage: scripts/build.sh [Release|Debug|RelWithDebInfo]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
type="${1:-Release}"
torch_prefix="$("$FORGE_PYTHON" -c 'import torch; print(torch.utils.cmake_prefix_path)')"
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
if [ ! -f "$FORGE_BUILD/CMakeCache.txt" ]; then
  cmake -S "$FORGE_ROOT" -B "$FORGE_BUILD" "${gen[@]}" "${launcher[@]}" \
    -DCMAKE_BUILD_TYPE="$type" -DCMAKE_PREFIX_PATH="$torch_prefix" \
    -DPython3_EXECUTABLE="$FORGE_PYTHON" -Wno-dev
else
  cmake "$FORGE_BUILD" -DCMAKE_BUILD_TYPE="$type" >/dev/null
fi
cmake --build "$FORGE_BUILD" --parallel "$(nproc)"
