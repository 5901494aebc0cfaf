#!/usr/bin/env bash
# Rehearses the device run (scripts/gpu-check.sh) on a Debian machine without a GPU, as the
# bare GPU image will see it: inside a private mount namespace every file of Debian's Open
# MPI, PMIx, HDF5, yaml-cpp, protobuf, GoogleTest, nlohmann-json and Fashion-MNIST packages
# (and the libraries only they need) is covered by an empty file, so the build and the runs
# can use nothing but the .deb files in the carried folder. A path into /usr that the route
# still takes then fails here instead of on the GPU machine. The CPU steps must pass; the
# GPU steps skip with their reason. Then it measures what the device run carries.
#
# Needs root (unshare -m, mount --bind) and the .deb files (scripts/fetch-gpu-deps.sh).
#   usage: scripts/gpu-rehearse.sh [--build DIR] [--deps DIR]     (default build-rehearse/)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build-rehearse"
deps="$root/.gpu-deps"
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build="$2"; shift 2 ;;
    --deps) deps="$2"; shift 2 ;;
    --inside) inside=1; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "gpu-rehearse: unknown option '$1'" >&2; exit 2 ;;
  esac
done

# The packages the GPU image lacks; those not installed here are skipped.
hidden_packages=(
  libopenmpi-dev libopenmpi3 openmpi-bin openmpi-common libpmix2 libpmix-dev libhwloc15 libhwloc-plugins
  libhwloc-dev libevent-core-2.1-7 libevent-pthreads-2.1-7 libevent-dev libfabric1 libucx0 libpsm2-2
  libpsm-infinipath1 libmunge2
  libhdf5-dev libhdf5-103-1 libhdf5-hl-100 libhdf5-cpp-103-1 libhdf5-hl-cpp-100 libhdf5-fortran-102
  libhdf5-hl-fortran-100 hdf5-helpers libaec0 libaec-dev libsz2
  libyaml-cpp-dev libyaml-cpp0.7
  libprotobuf-dev libprotobuf32 libprotobuf-lite32 protobuf-compiler libprotoc32 libprotoc-dev
  libgtest-dev googletest nlohmann-json3-dev zlib1g-dev dataset-fashion-mnist
)

if [ -z "${inside:-}" ]; then
  [ "$(id -u)" = 0 ] || { echo "gpu-rehearse: needs root (a mount namespace)" >&2; exit 2; }
  compgen -G "$deps/*.deb" >/dev/null || { echo "gpu-rehearse: no .deb files in $deps: run scripts/fetch-gpu-deps.sh" >&2; exit 2; }
  set +e
  unshare -m --propagation private "$0" --inside --build "$build" --deps "$deps"
  rc=$?
  set -e
  # What the device run carries: the working tree it copies (tracked and untracked files
  # that git does not ignore) plus the .deb folder.
  tree=$(cd "$root" && git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null |
    awk '{s += $1} END {print s + 0}')
  debs=$(du -sb "$deps" | cut -f1)
  limit=$((64 * 1024 * 1024))
  total=$((tree + debs))
  printf 'carried: working tree %.1f MiB + %s %.1f MiB = %.1f MiB of %d MiB\n' \
    "$(echo "$tree / 1048576" | bc -l)" "$(basename "$deps")" "$(echo "$debs / 1048576" | bc -l)" \
    "$(echo "$total / 1048576" | bc -l)" $((limit / 1048576))
  [ "$total" -le "$limit" ] || { echo "gpu-rehearse: FAILED: the device run cannot carry this much"; rc=1; }
  [ "$rc" -eq 0 ] && echo "gpu-rehearse: passed" || echo "gpu-rehearse: FAILED (exit $rc)"
  exit "$rc"
fi

# --- Inside the namespace: hide, then run the device script ---------------------------------
empty="$(mktemp /tmp/forge-rehearse-empty.XXXXXX)"
chmod 0644 "$empty"
n=0
for p in "${hidden_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || continue
  while read -r f; do
    # Files only: a bind mount follows a link onto its target, which may belong to a package
    # the image has (zlib1g-dev's libz.so -> zlib1g's runtime). Links between hidden files
    # then lead to an empty file.
    [ -f "$f" ] && [ ! -L "$f" ] || continue
    mount --bind "$empty" "$f" 2>/dev/null && n=$((n + 1))
  done < <(dpkg -L "$p")
done
echo "gpu-rehearse: $n files of Debian's MPI, PMIx, HDF5, yaml-cpp, protobuf, GoogleTest, json and data packages hidden"
if [ -s "$(readlink -f "$(command -v mpirun || echo /nonexistent)")" ] || [ -s /usr/include/yaml-cpp/yaml.h ]; then
  echo "gpu-rehearse: FAILED: the system's packages are still visible" >&2
  exit 1
fi
# A clean environment for the route: no library path, the image's Python.
unset LD_LIBRARY_PATH OPAL_PREFIX
set +e
FORGE_GPU_USE_DEBS=1 "$root/scripts/gpu-check.sh" --build "$build" --deps "$deps" --logs "$build/logs"
rc=$?
# From here on each check sets rc itself.
# The route end to end on the CPU, which the device script's own steps skip without a GPU:
# Python's test harness starting forge at 2 ranks under the prefix's mpirun, and reading the
# checkpoint with the machine's torch.
if [ -x "$build/forge" ]; then
  say() { echo "[gpu-rehearse] $*"; }
  die() { echo "gpu-rehearse: FAILED: $*"; exit 1; }
  source "$root/scripts/env.sh"
  py="${FORGE_PYTHON:-python3}"
  source "$root/scripts/gpu-deps.sh"
  if (cd "$build" && ctest -R '^e2e_python_interop$' --output-on-failure) >"$build/logs/e2e_cpu.log" 2>&1; then
    echo "gpu-rehearse: e2e_python_interop (2 ranks, the prefix's mpirun, Python reading the checkpoint) passed"
  else
    echo "gpu-rehearse: FAILED: e2e_python_interop through the route (log: $build/logs/e2e_cpu.log)"
    rc=1
  fi
fi
# Every library forge loads resolves to the carried prefix or to what the image has.
if [ -x "$build/forge" ]; then
  if ldd "$build/forge" | grep -E "not found|=> (/usr)?/lib/x86_64-linux-gnu/(openmpi|hdf5|pmix2|libmpi|libopen-|libhdf5|libyaml|libprotobuf|libpmix|libhwloc|libevent)"; then
    echo "gpu-rehearse: FAILED: forge loads a library the GPU image does not have (above)"
    rc=1
  else
    echo "gpu-rehearse: forge's libraries all resolve without the system's packages"
  fi
fi
exit "$rc"
