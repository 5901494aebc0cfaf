#!/usr/bin/env bash
# Runs forge's benchmarks, each against its baseline side by side in this one invocation
# (machines are noisy: compare the ratios, not the absolute figures), and prints a summary.
#   bench/run_benchmarks.sh            everything (about 3 minutes on 2 cores)
#   bench/run_benchmarks.sh python     one of: python scaling loop allreduce ckpt loader
# Needs a build (scripts/build.sh) and data/fashion_mnist.h5 (scripts/main-job.sh makes it).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$FORGE_ROOT"
what="${1:-all}"
forge="$FORGE_BUILD/forge"
data="data/fashion_mnist.h5"
[ -f "$data" ] || "$forge" data fashion-mnist --out "$data"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
epochs=4
cores=$(nproc)
bind=(--map-by "slot:PE=$((cores / 2 > 0 ? cores / 2 : 1))" --bind-to core)
summary=()

# Mean samples/s over the epochs after the first (which warms up) in a forge run dir.
forge_rate() {
  "$FORGE_PYTHON" -c "import json,sys; r=[e['samples_per_s'] for e in map(json.loads, open(sys.argv[1])) if e['type']=='epoch'][1:]; print(sum(r)/len(r))" "$1/metrics.jsonl"
}
ratio() { "$FORGE_PYTHON" -c "import sys; print(f'{float(sys.argv[1])/float(sys.argv[2]):.2f}')" "$1" "$2"; }

if [ "$what" = all ] || [ "$what" = python ]; then
  echo "== forge vs Python DDP (gloo): default MLP, Fashion-MNIST, 2 ranks x 1 thread, batch 64/rank, $epochs epochs"
  mpirun -np 2 "${bind[@]}" "$forge" train configs/fashion_mnist_mlp.yaml --set run.dir="$out/forge2" \
    --set run.epochs=$epochs --set run.threads=1 > "$out/forge2.log"
  f=$(forge_rate "$out/forge2")
  p=$(mpirun -np 2 "${bind[@]}" -x MASTER_PORT=29571 "$FORGE_PYTHON" bench/python_ddp.py --data "$data" \
      --epochs $epochs --threads 1 | "$FORGE_PYTHON" -c "import json,sys; r=json.loads(sys.stdin.read())['samples_per_s'][1:]; print(sum(r)/len(r))")
  printf "forge %.0f samples/s   Python DDP %.0f samples/s\n" "$f" "$p"
  summary+=("forge / Python DDP (2 ranks, default MLP): $(ratio "$f" "$p")x   (target >= 1.5x)")
fi

if [ "$what" = all ] || [ "$what" = scaling ]; then
  echo "== scaling: default MLP, 2 ranks x 1 thread against 1 rank x $cores threads, $epochs epochs"
  [ -f "$out/forge2/metrics.jsonl" ] || mpirun -np 2 "${bind[@]}" "$forge" train configs/fashion_mnist_mlp.yaml \
    --set run.dir="$out/forge2" --set run.epochs=$epochs --set run.threads=1 > "$out/forge2.log"
  "$forge" train configs/fashion_mnist_mlp.yaml --set run.dir="$out/forge1" --set run.epochs=$epochs > "$out/forge1.log"
  two=$(forge_rate "$out/forge2")
  one=$(forge_rate "$out/forge1")
  printf "2 ranks %.0f samples/s   1 rank %.0f samples/s\n" "$two" "$one"
  summary+=("scaling 2 ranks / 1 rank (default MLP): $(ratio "$two" "$one")x   (target >= 1.9x)")
fi

if [ "$what" = all ] || [ "$what" = loop ]; then
  for model in mlp wide; do
    echo "== forge step against a hand-written LibTorch + MPI loop (one blocking all-reduce per parameter): $model"
    mpirun -np 2 "${bind[@]}" "$FORGE_BUILD/bench/sync_bench" loop --model "$model" --rounds 5 | tee "$out/loop_$model.log"
    summary+=("forge / hand-written loop ($model): $(sed -n 's/^ratio forge\/hand-written = //p' "$out/loop_$model.log")x   (target: mlp >= 0.97x, wide > 1x)")
  done
fi

if [ "$what" = all ] || [ "$what" = allreduce ]; then
  for tensors in 50 5000; do
    echo "== bucketed all-reduce of 50 MiB in $tensors gradients against one MPI_Allreduce of 50 MiB"
    mpirun -np 2 "${bind[@]}" "$FORGE_BUILD/bench/sync_bench" allreduce --mib 50 --tensors "$tensors" | tee "$out/ar_$tensors.log"
    summary+=("bus bandwidth forge / raw MPI_Allreduce (50 MiB, $tensors tensors): $(sed -n 's/^ratio forge\/raw = //p' "$out/ar_$tensors.log")x   (target >= 0.9x)")
  done
fi

if [ "$what" = all ] || [ "$what" = ckpt ]; then
  echo "== checkpoint save against dd conv=fsync of the same bytes; async stall against a sync save"
  "$FORGE_BUILD/bench/ckpt_bench" --dir "$out/ckpt" | tee "$out/ckpt.log"
  summary+=("save throughput forge / dd with fsync (25M params + momentum): $(sed -n 's/^ratio save throughput forge\/dd = //p' "$out/ckpt.log")x   (target >= 0.7x)")
  summary+=("async save stall / sync save time: $(sed -n 's/^ratio stall async\/sync = //p' "$out/ckpt.log")   (target <= 0.1)")
fi

if [ "$what" = all ] || [ "$what" = loader ]; then
  big="${FORGE_BENCH_BIG_FILE:-/tmp/forge_loader_bench.h5}"
  echo "== streaming loader against a raw sequential HDF5 read of the same 4 GiB file ($big), warm page cache"
  "$FORGE_BUILD/bench/loader_bench" --file "$big" --gib 4 | tee "$out/loader_warm.log"
  summary+=("loader / raw HDF5 read, 4 GiB warm: $(sed -n 's/^ratio loader\/raw = //p' "$out/loader_warm.log")x   (target >= 0.8x)")
  summary+=("peak RSS streaming 4 GiB: $(sed -n 's/^peak rss MiB = //p' "$out/loader_warm.log") MiB   (target < 512 MiB)")
  if [ "$(id -u)" = 0 ]; then
    echo "== the same from storage (page cache emptied before each read)"
    "$FORGE_BUILD/bench/loader_bench" --file "$big" --gib 4 --cold 1 | tee "$out/loader_cold.log"
    summary+=("loader / raw HDF5 read, 4 GiB cold: $(sed -n 's/^ratio loader\/raw = //p' "$out/loader_cold.log")x   (target >= 0.8x)")
  fi
  echo "== time waiting for data in the main job (2 ranks, $epochs epochs)"
  mpirun -np 2 "${bind[@]}" "$forge" train configs/fashion_mnist_mlp.yaml --set run.dir="$out/wait" \
    --set run.epochs=$epochs > "$out/wait.log"
  # Worst epoch, and the whole run (epochs weighted by their time). After --cold above, the
  # data set comes from storage in the first epoch.
  share=$("$FORGE_PYTHON" -c "
import json, sys
r = [e for e in map(json.loads, open(sys.argv[1])) if e['type'] == 'epoch']
worst = max(r, key=lambda e: e['data_wait_share'])
whole = sum(e['data_wait_share'] * e['seconds'] for e in r) / sum(e['seconds'] for e in r)
print(f\"{100 * worst['data_wait_share']:.3f} % (epoch {worst['epoch']}), whole run {100 * whole:.3f}\")" "$out/wait/metrics.jsonl")
  echo "largest share of an epoch rank 0 spent waiting for a batch: $share %"
  summary+=("data wait / step time, main job (worst epoch): $share %   (target < 1 %)")
fi

echo
echo "== summary ($(date -u +%Y-%m-%d), $(nproc) cores)"
for line in "${summary[@]}"; do echo "$line"; done
