#!/usr/bin/env bash
# Fetches, on a Debian 12 machine with apt, the .deb files that scripts/gpu-check.sh unpacks
# on a GPU machine that lacks Open MPI, yaml-cpp, HDF5, protobuf, nlohmann-json, GoogleTest or the Fashion-MNIST data
# and cannot download (a GPU node without network access, a container image with CUDA and
# PyTorch only). Copy the folder along with the repository.
#   usage: scripts/fetch-gpu-deps.sh [DIR]     (default: .gpu-deps, which git ignores)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${1:-$root/.gpu-deps}"
mkdir -p "$dir"
# Headers and CMake files forge builds against, the libraries behind them, and what those
# load at run time (Open MPI's transports and plugins, HDF5's compression and URL reading),
# except what every Linux has (libc, libstdc++, libgcc, zlib's runtime).
packages=(
  libopenmpi-dev libopenmpi3 openmpi-bin openmpi-common libhwloc15 libhwloc-plugins
  libevent-core-2.1-7 libevent-pthreads-2.1-7 libpmix2 libfabric1 libucx0 libibverbs1
  ibverbs-providers librdmacm1 libnl-3-200 libnl-route-3-200 libpsm2-2 libpsm-infinipath1
  libmunge2 libnuma1
  libhdf5-dev libhdf5-103-1 libaec0 libsz2 libcurl4 libssh2-1 librtmp1 libpsl5 libnghttp2-14
  libbrotli1 libldap-2.5-0 libsasl2-2 libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0
  libkeyutils1 libcom-err2 libgnutls30 libnettle8 libhogweed6 libgmp10 libidn2-0 libunistring2
  libp11-kit0 libtasn1-6 libffi8 libssl3 libzstd1 libatomic1 libuuid1
  libyaml-cpp-dev libyaml-cpp0.7 libgtest-dev zlib1g-dev
  libprotobuf-dev libprotobuf32 libprotobuf-lite32 protobuf-compiler libprotoc32
  nlohmann-json3-dev
  dataset-fashion-mnist
)
missing=()
for p in "${packages[@]}"; do
  compgen -G "$dir/${p}_*.deb" >/dev/null || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "all ${#packages[@]} packages already in $dir"
  exit 0
fi
[ -n "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v lock)" ] || apt-get update -q
echo "downloading ${#missing[@]} package(s) into $dir"
(cd "$dir" && apt-get download -q "${missing[@]}")
du -sh "$dir"
