# Sourced by scripts/gpu-check.sh: where the GPU build finds its dependencies.
#
# In:  root, build, deps (folder of .deb files), py, say/die functions.
# Out: cmake_args (array), mpirun_bin, fashion_source; in the .deb route py becomes a
#      wrapper (below).
#
# Open MPI, yaml-cpp, HDF5, protobuf, GoogleTest, nlohmann-json and zlib's headers come from
# the system when it has them, else from .deb files fetched beforehand with
# scripts/fetch-gpu-deps.sh and unpacked into $build/prefix. Debian's Open MPI libraries and
# plugins carry RUNPATH /usr/lib/x86_64-linux-gnu/openmpi/lib, so their own dependencies are
# found through LD_LIBRARY_PATH only (it comes before RUNPATH): forge, its tests and mpirun
# run with the prefix on it. The machine's own Python (torch, h5py) must not load Debian 12's
# libraries: $py becomes a wrapper that runs it with the library path it had before, and
# FORGE_DEPS_LIBRARY_PATH tells the test harness (tests/e2e/harness.py) to put the prefix
# back for the forge processes it starts.
cmake_args=()
forge_ld=""
fashion_source=/usr/share/datasets/fashion-mnist
mpirun_bin="$(command -v mpirun || echo mpirun)"

# -s, not -e: a file that is there but empty (hidden, or a broken install) is no header, and
# no command (bash's `command -v` names a file it cannot run when it finds nothing better).
have_cmd() {
  local p
  p="$(command -v "$1")" && [ -x "$(readlink -f "$p")" ] && [ -s "$(readlink -f "$p")" ]
}
system_has() {
  have_cmd mpirun && have_cmd mpicc &&
    { [ -s /usr/include/hdf5/serial/hdf5.h ] || [ -s /usr/include/hdf5.h ]; } &&
    [ -s /usr/include/yaml-cpp/yaml.h ] && [ -s /usr/include/gtest/gtest.h ] && [ -s /usr/include/zlib.h ] &&
    have_cmd protoc && [ -s /usr/include/google/protobuf/message_lite.h ] &&
    [ -s /usr/include/nlohmann/json.hpp ]
}

unpack_debs() {  # into $1
  local prefix="$1" f
  rm -rf "$prefix" && mkdir -p "$prefix"
  for f in "$deps"/*.deb; do
    if command -v dpkg-deb >/dev/null; then
      dpkg-deb -x "$f" "$prefix" || die "dependencies" "cannot unpack $f"
    else
      (cd "$prefix" && ar p "$f" "$(ar t "$f" | grep '^data.tar')" | tar -x -a -f - 2>/dev/null ||
        ar p "$f" "$(ar t "$f" | grep '^data.tar')" | tar -xJ) || die "dependencies" "cannot unpack $f (no dpkg-deb)"
    fi
  done
  # Debian names the commands *.openmpi and links the plain names through alternatives,
  # which unpacking does not run.
  for f in "$prefix"/usr/bin/*.openmpi; do ln -sf "$(basename "$f")" "${f%.openmpi}"; done
  # Links that point at /usr would leave the prefix for this machine's own files.
  find "$prefix" -lname '/*' | while read -r link; do
    ln -sfn "$prefix$(readlink "$link")" "$link"
  done
  # pkg-config files name their prefix as /usr.
  find "$prefix" -name '*.pc' -exec sed -i "s|=/usr|=$prefix/usr|" {} +
  touch "$prefix/.unpacked"
}

if [ "${FORGE_GPU_USE_DEBS:-0}" != 1 ] && system_has; then
  say "Open MPI, yaml-cpp, HDF5, protobuf, GoogleTest and zlib come from the system"
else
  compgen -G "$deps/*.deb" >/dev/null ||
    die "dependencies" "this machine lacks Open MPI / yaml-cpp / HDF5 / protobuf / GoogleTest headers and $deps holds no .deb files: run scripts/fetch-gpu-deps.sh on a Debian 12 machine with apt and copy $deps here (or pass --deps DIR)"
  prefix="$build/prefix"
  if [ ! -e "$prefix/.unpacked" ]; then
    say "unpacking $(ls "$deps"/*.deb | wc -l) .deb files from $deps into $prefix"
    unpack_debs "$prefix"
  fi
  P="$prefix/usr"
  L="$P/lib/x86_64-linux-gnu"
  forge_ld="$L:$L/openmpi/lib:$L/hdf5/serial:$L/pmix2/lib"
  mkdir -p "$build/bin"
  outer_ld="${LD_LIBRARY_PATH:-}"
  {
    echo '#!/bin/sh'
    echo '# The machine'"'"'s Python, without Debian 12'"'"'s libraries on its path (scripts/gpu-deps.sh).'
    if [ -n "$outer_ld" ]; then echo "export LD_LIBRARY_PATH='$outer_ld'"; else echo 'unset LD_LIBRARY_PATH'; fi
    echo "exec '$py' \"\$@\""
  } >"$build/bin/python3"
  chmod +x "$build/bin/python3"
  py="$build/bin/python3"
  export FORGE_DEPS_LIBRARY_PATH="$forge_ld"
  export LD_LIBRARY_PATH="$forge_ld${outer_ld:+:$outer_ld}"
  # Open MPI finds its plugins, help texts and orted relative to OPAL_PREFIX, PMIx relative
  # to PMIX_PREFIX; both are compiled in as /usr otherwise.
  export OPAL_PREFIX="$P" PMIX_PREFIX="$L/pmix2"
  export PMIX_MCA_mca_base_component_path="$L/pmix2/lib/pmix"
  export PATH="$P/bin:$PATH"
  mpirun_bin="$P/bin/mpirun"
  # zlib's runtime is the system's (every Linux has it); the headers come from the prefix.
  # (|| true: awk leaves early, and a caller with pipefail and -e must not stop on it)
  zlib_so="$(ldconfig -p 2>/dev/null | awk '/libz\.so\.1 .*x86-64/{print $NF; exit}' || true)"
  [ -n "$zlib_so" ] || zlib_so="$(ls /lib/x86_64-linux-gnu/libz.so.1 /usr/lib/x86_64-linux-gnu/libz.so.1 2>/dev/null | head -1 || true)"
  # The linker, too, must take libmpi's own dependencies from the prefix, not from its RUNPATH.
  cmake_args+=(
    -DMPI_C_COMPILER="$P/bin/mpicc" -DMPIEXEC_EXECUTABLE="$mpirun_bin"
    -DHDF5_C_INCLUDE_DIR="$P/include/hdf5/serial" -DHDF5_hdf5_LIBRARY_RELEASE="$L/hdf5/serial/libhdf5.so"
    -DHDF5_ROOT="$L/hdf5/serial" -DHDF5_NO_FIND_PACKAGE_CONFIG_FILE=ON
    -Dyaml-cpp_DIR="$L/cmake/yaml-cpp" -DGTest_DIR="$L/cmake/GTest"
    -DZLIB_INCLUDE_DIR="$P/include" -DZLIB_LIBRARY="$zlib_so"
    -DProtobuf_PROTOC_EXECUTABLE="$P/bin/protoc" -DProtobuf_INCLUDE_DIR="$P/include"
    -DProtobuf_LIBRARY="$L/libprotobuf.so" -DProtobuf_LITE_LIBRARY="$L/libprotobuf-lite.so"
    -DProtobuf_PROTOC_LIBRARY="$L/libprotoc.so"
    -Dnlohmann_json_DIR="$P/share/cmake/nlohmann_json"
    -DCMAKE_EXE_LINKER_FLAGS="-Wl,-rpath-link,$forge_ld" -DCMAKE_SHARED_LINKER_FLAGS="-Wl,-rpath-link,$forge_ld"
  )
  [ -d "$fashion_source" ] || fashion_source="$P/share/datasets/fashion-mnist"
fi
