#!/usr/bin/env bash
# The main job, from a fresh Debian 12 machine: installs what is missing, builds forge
# (Release), converts Fashion-MNIST to HDF5 and trains the default config
# (configs/fashion_mnist_mlp.yaml) on 2 ranks under mpirun.
# Extra arguments go to `forge train`, e.g. scripts/main-job.sh --set run.epochs=3
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$FORGE_ROOT"
scripts/setup.sh
scripts/build.sh Release
data="data/fashion_mnist.h5"
if [ ! -f "$data" ]; then
  "$FORGE_BUILD/forge" data fashion-mnist --out "$data"
fi
# --resume auto: running the job again continues (or just reports) the run in runs/.
exec launch/mpirun.sh -n 2 -- train configs/fashion_mnist_mlp.yaml --resume auto "$@"
