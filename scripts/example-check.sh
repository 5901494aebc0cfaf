#!/usr/bin/env bash
# forge as a package, the way a user meets it: installs the build in $FORGE_BUILD into a
# temporary prefix, builds examples/custom_model (its own model and metric) against that
# install only, and trains it on 2 ranks for one epoch on a small synthetic data set.
# Fails, saying what is missing, unless the run exits 0, its epoch line shows the example's
# metric, its log names the example's model and a checkpoint is written.
# usage: scripts/example-check.sh   (after scripts/build.sh; FORGE_BUILD as there)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

say() { echo "[example] $*"; }
fail() {
  echo "[example] FAILED: $1" >&2
  if [ -n "${2:-}" ] && [ -f "$2" ]; then
    echo "[example] --- last lines of $2:" >&2
    tail -n 40 "$2" >&2
  fi
  exit 1
}

[ -x "$FORGE_BUILD/forge" ] || fail "no forge in $FORGE_BUILD: run scripts/build.sh first (or set FORGE_BUILD)"
start=$SECONDS
tmp="$(mktemp -d "${TMPDIR:-/tmp}/forge-example.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
prefix="$tmp/prefix"

say "installing forge from $FORGE_BUILD into a temporary prefix"
cmake --install "$FORGE_BUILD" --prefix "$prefix" >"$tmp/install.log" 2>&1 || fail "cmake --install" "$tmp/install.log"
[ -f "$prefix/lib/cmake/forge/forgeConfig.cmake" ] || fail "the install has no lib/cmake/forge/forgeConfig.cmake"
[ -f "$prefix/include/forge/forge.h" ] || fail "the install has no include/forge/forge.h"
# The package must stand on its own: no path into the source tree or the build folder.
if grep -lF -e "$FORGE_ROOT/" -e "$FORGE_BUILD/" "$prefix"/lib/cmake/forge/*.cmake; then
  fail "the installed CMake files above name the source tree or the build folder"
fi

say "configuring examples/custom_model against the install (find_package(forge))"
torch_prefix="$("$FORGE_PYTHON" -c 'import torch; print(torch.utils.cmake_prefix_path)')"
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
cmake -S "$FORGE_ROOT/examples/custom_model" -B "$tmp/build" "${gen[@]}" "${launcher[@]}" \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix;$torch_prefix" -Wno-dev \
  >"$tmp/configure.log" 2>&1 || fail "configuring examples/custom_model" "$tmp/configure.log"

say "building examples/custom_model"
# The temporary folder's name changes every run; ccache should not see it.
CCACHE_BASEDIR="$tmp" cmake --build "$tmp/build" --parallel "$(nproc)" >"$tmp/build.log" 2>&1 \
  || fail "building examples/custom_model" "$tmp/build.log"
example="$tmp/build/custom_model"
[ -x "$example" ] || fail "the build made no $example"

say "writing a synthetic data set (2000 samples, 32 features, 4 classes)"
"$FORGE_BUILD/forge" data synthetic --out "$tmp/data.h5" --samples 2000 --features 32 --classes 4 \
  >"$tmp/data.log" 2>&1 || fail "forge data synthetic" "$tmp/data.log"

say "training it: mpirun -np 2 custom_model train examples/custom_model/config.yaml, one epoch"
rc=0
(cd "$tmp" && mpirun -np 2 --oversubscribe "$example" train "$FORGE_ROOT/examples/custom_model/config.yaml" \
  --set data.path="$tmp/data.h5" --set run.dir="$tmp/run" --set run.epochs=1) >"$tmp/train.log" 2>&1 || rc=$?
[ "$rc" = 0 ] || fail "the training run exited $rc" "$tmp/train.log"
grep -q '^\[train\] model res_mlp: ' "$tmp/train.log" || fail "the log does not name the model res_mlp" "$tmp/train.log"
epoch_line="$(grep '^\[train\] epoch 1/1 ' "$tmp/train.log" || true)"
[ -n "$epoch_line" ] || fail "the log has no epoch line" "$tmp/train.log"
case "$epoch_line" in
  *" top2 "*" top2 "*) ;;  # train and test
  *) fail "the epoch line lacks top2_accuracy (label top2) for train and test: $epoch_line" ;;
esac
compgen -G "$tmp/run/checkpoints/ckpt-e0001-*.pt" >/dev/null \
  || fail "no epoch-1 checkpoint in the run's checkpoints/" "$tmp/train.log"
say "$epoch_line"
say "passed in $((SECONDS - start)) s"
