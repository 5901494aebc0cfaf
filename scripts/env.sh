# Sourced by forge's scripts: where the shared toolchain lives (outside the clone, so that
# CI runs and later sessions on the same machine reuse it) and the environment every
# forge command needs.
FORGE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FORGE_CACHE="${FORGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/forge}"
FORGE_VENV="${FORGE_VENV:-$FORGE_CACHE/venv}"
FORGE_PYTHON="$FORGE_VENV/bin/python"
FORGE_BUILD="${FORGE_BUILD:-$FORGE_ROOT/build}"
export FORGE_ROOT FORGE_CACHE FORGE_VENV FORGE_PYTHON FORGE_BUILD
# Open MPI refuses to start ranks as root unless told; this machine kind runs as root.
if [ "$(id -u)" = 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export CCACHE_DIR="${CCACHE_DIR:-$FORGE_CACHE/ccache}"
# Lets ccache cache compiles that use the precompiled LibTorch header.
export CCACHE_SLOPPINESS="${CCACHE_SLOPPINESS:-pch_defines,time_macros,include_file_mtime,include_file_ctime}"
