#!/usr/bin/env bash
# Installs what forge needs on Debian 12 and skips what is already there:
#   - system packages with apt (compilers, CMake, Open MPI, yaml-cpp, HDF5, GoogleTest,
#     the Fashion-MNIST data set, and Slurm with munge for the tests that bring up a
#     single-node Slurm; the install starts none of their daemons);
#   - a Python virtual environment outside the clone with the pinned torch wheel (its
#     LibTorch is what forge links against) and the packages the tests use.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

APT_PACKAGES=(build-essential cmake ninja-build ccache pkg-config python3 python3-venv
  libopenmpi-dev openmpi-bin libyaml-cpp-dev libhdf5-dev libgtest-dev zlib1g-dev
  dataset-fashion-mnist fortunes slurm-wlm munge gnuplot-nox libprotobuf-dev protobuf-compiler nlohmann-json3-dev)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[setup] installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "[setup] Debian packages: all present"
fi

req="$FORGE_ROOT/scripts/requirements.txt"
stamp="$FORGE_VENV/.forge-requirements"
if [ -x "$FORGE_PYTHON" ] && [ -f "$stamp" ] && cmp -s "$req" "$stamp"; then
  echo "[setup] Python environment $FORGE_VENV: up to date"
else
  echo "[setup] preparing Python environment in $FORGE_VENV (the torch wheel is large; this runs once per machine)"
  mkdir -p "$FORGE_CACHE"
  [ -x "$FORGE_PYTHON" ] || python3 -m venv "$FORGE_VENV"
  "$FORGE_PYTHON" -m pip install -q --upgrade pip
  "$FORGE_PYTHON" -m pip install -q -r "$req"
  cp "$req" "$stamp"
fi
