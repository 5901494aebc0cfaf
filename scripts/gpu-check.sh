#!/usr/bin/env bash
# The GPU check, for a machine with one or more NVIDIA GPUs: builds forge with CUDA + NCCL,
# runs the `gpu` tests (NCCL all-reduce correctness at 1 rank without mpirun, and under
# mpirun at every GPU count present), trains the default config on the GPU (fp32 and bf16),
# and prints samples/s of forge against the same model in Python PyTorch on the same GPU.
#
# What the machine needs: CUDA, cmake, ninja (or make), a C++ compiler and a Python whose
# torch is a CUDA build (forge builds against that torch's LibTorch). Open MPI, yaml-cpp,
# HDF5, protobuf, GoogleTest and the data come from the system when it has them, else from .deb files
# fetched beforehand with scripts/fetch-gpu-deps.sh and unpacked into a prefix here: no
# network access is needed.
#
# On a machine without a GPU it still builds the whole GPU path and runs the CPU-side
# checks, and says what it skipped.
#
#   usage: scripts/gpu-check.sh [--deps DIR] [--build DIR] [--epochs N] [--logs DIR]
#   env:   FORGE_PYTHON (a python3 with torch), NCCL_HOME (another NCCL),
#          FORGE_GPU_USE_DEBS=1 (use the .deb files even where the system has the packages)
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
deps="$root/.gpu-deps"
build="$root/build-gpu"
epochs=3
logs=""
while [ $# -gt 0 ]; do
  case "$1" in
    --deps) deps="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    --epochs) epochs="$2"; shift 2 ;;
    --logs) logs="$2"; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "gpu-check: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$logs" ] || logs="$build/logs"
mkdir -p "$build" "$logs"
start=$SECONDS
say() { printf '[gpu-check %4ds] %s\n' $((SECONDS - start)) "$*"; }
die() { say "FAILED: $*"; exit 1; }
results=()
result() { results+=("$(printf '%-44s %s' "$1" "$2")"); }
failed=0

# --- Python, torch, GPUs ------------------------------------------------------------------
py="${FORGE_PYTHON:-}"
if [ -z "$py" ]; then
  for c in python3 "$HOME/.cache/forge/venv/bin/python"; do
    if "$c" -c 'import torch' 2>/dev/null; then py="$c"; break; fi
  done
fi
[ -n "$py" ] || die "no Python with torch found (set FORGE_PYTHON to a python3 whose torch is a CUDA build)"
read -r torch_version torch_cuda gpus <<<"$("$py" -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.device_count())')"
torch_prefix="$("$py" -c 'import torch; print(torch.utils.cmake_prefix_path)')"
[ "$torch_cuda" != "None" ] || die "torch $torch_version in $py is a CPU-only build: forge's GPU path needs a CUDA build"
gpu_name="none"
[ "$gpus" -gt 0 ] && gpu_name="$("$py" -c 'import torch; print(torch.cuda.get_device_name(0))')"
say "torch $torch_version (CUDA $torch_cuda) from $py; $gpus GPU(s): $gpu_name"
result "GPUs" "$gpus x $gpu_name"
result "torch / CUDA" "$torch_version / $torch_cuda"

# --- Open MPI, yaml-cpp, HDF5, GoogleTest: the system's, or unpacked from .deb files -------
cmake_args=()
system_has() {
  command -v mpirun >/dev/null && command -v mpicc >/dev/null &&
    { [ -e /usr/include/hdf5/serial/hdf5.h ] || [ -e /usr/include/hdf5.h ]; } &&
    [ -e /usr/include/yaml-cpp/yaml.h ] && [ -e /usr/include/gtest/gtest.h ] && [ -e /usr/include/zlib.h ] &&
    command -v protoc >/dev/null && [ -e /usr/include/google/protobuf/message_lite.h ] &&
    [ -e /usr/include/nlohmann/json.hpp ]
}
# FORGE_GPU_USE_DEBS=1 takes the .deb files even where the system has the packages (to
# test that path on a machine with apt).
if [ "${FORGE_GPU_USE_DEBS:-0}" != 1 ] && system_has; then
  say "Open MPI, yaml-cpp, HDF5, protobuf, GoogleTest and zlib come from the system"
else
  compgen -G "$deps/*.deb" >/dev/null ||
    die "this machine lacks Open MPI / yaml-cpp / HDF5 / protobuf / GoogleTest headers and $deps holds no .deb files: run scripts/fetch-gpu-deps.sh on a Debian 12 machine with apt and copy $deps here (or pass --deps DIR)"
  prefix="$build/prefix"
  if [ ! -e "$prefix/.unpacked" ]; then
    say "unpacking $(ls "$deps"/*.deb | wc -l) .deb files from $deps into $prefix"
    rm -rf "$prefix" && mkdir -p "$prefix"
    for f in "$deps"/*.deb; do
      if command -v dpkg-deb >/dev/null; then
        dpkg-deb -x "$f" "$prefix" || die "cannot unpack $f"
      else
        (cd "$prefix" && ar p "$f" "$(ar t "$f" | grep '^data.tar')" | tar -x -a -f - 2>/dev/null ||
          ar p "$f" "$(ar t "$f" | grep '^data.tar')" | tar -xJ) || die "cannot unpack $f (no dpkg-deb)"
      fi
    done
    # Debian names the commands *.openmpi and links the plain names through alternatives,
    # which unpacking does not run.
    for f in "$prefix"/usr/bin/*.openmpi; do ln -sf "$(basename "$f")" "${f%.openmpi}"; done
    touch "$prefix/.unpacked"
  fi
  P="$prefix/usr"
  L="$P/lib/x86_64-linux-gnu"
  # Open MPI finds its plugins, help texts and mpirun/orted relative to OPAL_PREFIX.
  export OPAL_PREFIX="$P"
  export PATH="$P/bin:$PATH"
  export LD_LIBRARY_PATH="$L:$L/openmpi/lib:$L/hdf5/serial${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  # zlib's runtime is the system's (every Linux has it); the headers come from the prefix.
  zlib_so="$(ldconfig -p 2>/dev/null | awk '/libz\.so\.1 .*x86-64/{print $NF; exit}')"
  [ -n "$zlib_so" ] || zlib_so="$(ls /lib/x86_64-linux-gnu/libz.so.1 /usr/lib/x86_64-linux-gnu/libz.so.1 2>/dev/null | head -1)"
  cmake_args+=(
    -DMPI_C_COMPILER="$P/bin/mpicc" -DMPIEXEC_EXECUTABLE="$P/bin/mpirun"
    -DHDF5_C_INCLUDE_DIR="$P/include/hdf5/serial" -DHDF5_hdf5_LIBRARY_RELEASE="$L/hdf5/serial/libhdf5.so"
    -DHDF5_ROOT="$L/hdf5/serial" -DHDF5_NO_FIND_PACKAGE_CONFIG_FILE=ON
    -Dyaml-cpp_DIR="$L/cmake/yaml-cpp" -DGTest_DIR="$L/cmake/GTest"
    -DZLIB_INCLUDE_DIR="$P/include" -DZLIB_LIBRARY="$zlib_so"
    -DProtobuf_PROTOC_EXECUTABLE="$P/bin/protoc" -DProtobuf_INCLUDE_DIR="$P/include"
    -DProtobuf_LIBRARY="$L/libprotobuf.so" -DProtobuf_LITE_LIBRARY="$L/libprotobuf-lite.so"
    -DProtobuf_PROTOC_LIBRARY="$L/libprotoc.so"
    -Dnlohmann_json_DIR="$P/share/cmake/nlohmann_json"
  )
  [ -d /usr/share/datasets/fashion-mnist ] || fashion_source="$P/share/datasets/fashion-mnist"
fi
# Without mpirun a rank is an MPI singleton; it needs no orted beside it.
export OMPI_MCA_ess_singleton_isolated=1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# --- Build ---------------------------------------------------------------------------------
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
say "configuring $build against $torch_prefix"
cmake -S "$root" -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$torch_prefix" \
  -DFORGE_WITH_NCCL=ON -DPython3_EXECUTABLE="$(command -v "$py")" "${cmake_args[@]}" -Wno-dev \
  >"$logs/configure.log" 2>&1 || { tail -30 "$logs/configure.log"; die "cmake configure (log: $logs/configure.log)"; }
grep "forge:" "$logs/configure.log" | sed 's/^-- /  /'
say "building forge, test_gpu, test_device with $(nproc) jobs"
cmake --build "$build" --parallel "$(nproc)" --target forge test_gpu test_device >"$logs/build.log" 2>&1 ||
  { grep -E "error|Error" "$logs/build.log" | head -30; die "build (log: $logs/build.log)"; }
result "build (CUDA + NCCL)" "ok in $((SECONDS - start)) s since start"
say "built"

# --- Tests ---------------------------------------------------------------------------------
run_test() {  # name, log, command...
  local name="$1" log="$2"; shift 2
  if "$@" >"$logs/$log" 2>&1; then
    if grep -q "no CUDA GPU visible" "$logs/$log"; then
      result "$name" "skipped (no GPU)"
    else
      result "$name" "passed ($(grep -o '[0-9]* tests\? from [0-9]* test suites\? ran' "$logs/$log" | head -1))"
    fi
  else
    failed=1
    result "$name" "FAILED (log: $logs/$log)"
    grep -E "Failure|FAILED|error" "$logs/$log" | head -20
  fi
}
run_test "test_device (CPU-side checks)" test_device.log "$build/tests/test_device"
run_test "test_gpu at 1 rank, no mpirun" test_gpu_np1.log "$build/tests/test_gpu"
if [ "$gpus" -gt 1 ]; then
  mpirun_bin="$(command -v mpirun)"
  run_test "test_gpu at $gpus ranks (mpirun)" "test_gpu_np$gpus.log" \
    "$mpirun_bin" -np "$gpus" --oversubscribe -x LD_LIBRARY_PATH -x OPAL_PREFIX "$build/tests/test_gpu"
fi
say "tests done"

# --- Training on the GPU, and the Python baseline -------------------------------------------
if [ "$gpus" -eq 0 ]; then
  result "training on the GPU" "skipped (no GPU)"
else
  data="$build/fashion_mnist.h5"
  if [ ! -f "$data" ]; then
    if [ -d "${fashion_source:-/usr/share/datasets/fashion-mnist}" ]; then
      "$build/forge" data fashion-mnist --out "$data" --source "${fashion_source:-/usr/share/datasets/fashion-mnist}" \
        >"$logs/data.log" 2>&1 || die "converting Fashion-MNIST (log: $logs/data.log)"
      result "data" "Fashion-MNIST"
    else
      "$build/forge" data synthetic --out "$data" --samples 70000 --features 784 --classes 10 \
        >"$logs/data.log" 2>&1 || die "writing synthetic data (log: $logs/data.log)"
      result "data" "synthetic, Fashion-MNIST's shape (no dataset-fashion-mnist here)"
    fi
  fi
  # Steady-state samples/s: the median over epochs after the first (CUDA warm-up).
  steady() {
    "$py" - "$1" <<'PY'
import json, sys
rates = [r["samples_per_s"] for r in map(json.loads, open(sys.argv[1])) if r["type"] == "epoch"]
later = sorted(rates[1:]) or rates
print(f"{later[len(later) // 2]:.0f}")
PY
  }
  cfg="$root/configs/fashion_mnist_mlp.yaml"
  for prec in fp32 bf16; do
    rm -rf "$build/run-$prec"
    say "forge: training the default config on cuda:0 ($prec, $epochs epochs)"
    if "$build/forge" train "$cfg" --set run.device=cuda --set run.precision=$prec --set run.epochs="$epochs" \
      --set run.dir="$build/run-$prec" --set data.path="$data" >"$logs/train_$prec.log" 2>&1; then
      rate=$(steady "$build/run-$prec/metrics.jsonl")
      eval "forge_$prec=$rate"
      acc=$(grep -o "final test accuracy [0-9.]*%" "$logs/train_$prec.log" | grep -o "[0-9.]*%")
      result "forge $prec on the GPU" "$rate samples/s, final accuracy $acc"
    else
      failed=1
      eval "forge_$prec=0"
      result "forge $prec on the GPU" "FAILED (log: $logs/train_$prec.log)"
      tail -15 "$logs/train_$prec.log"
    fi
  done
  for prec in fp32 bf16; do
    flag=""; [ $prec = bf16 ] && flag="--bf16"
    say "python: the same model and loop in PyTorch ($prec, $epochs epochs)"
    if "$py" "$root/bench/python_gpu.py" --data "$data" --epochs "$epochs" $flag >"$logs/python_$prec.json" 2>"$logs/python_$prec.err"; then
      read -r host resident <<<"$("$py" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(round(d["host_pipeline_samples_per_s"]), round(d["resident_samples_per_s"]))' "$logs/python_$prec.json")"
      f=$(eval echo "\$forge_$prec")
      ratio=$("$py" -c "print(f'{$f / $host:.2f}')")
      ratio_res=$("$py" -c "print(f'{$f / $resident:.2f}')")
      result "python $prec, same host pipeline" "$host samples/s  -> forge / python = $ratio"
      result "python $prec, data resident on the GPU" "$resident samples/s  -> forge / python = $ratio_res"
    else
      failed=1
      result "python $prec" "FAILED (log: $logs/python_$prec.err)"
      tail -5 "$logs/python_$prec.err"
    fi
  done
  say "end-to-end GPU test (fp32, bf16, preemption and resume, Python reads the checkpoint)"
  if "$py" "$root/tests/e2e/test_gpu_train.py" --forge "$build/forge" --mpirun "$(command -v mpirun || echo mpirun)" \
    --repo "$root" --workdir "$build/e2e_gpu" >"$logs/e2e_gpu.log" 2>&1; then
    result "e2e_gpu_train" "passed ($(grep -c '  ok:' "$logs/e2e_gpu.log") checks)"
  else
    failed=1
    result "e2e_gpu_train" "FAILED (log: $logs/e2e_gpu.log)"
    grep -E "FAIL|Error|error" "$logs/e2e_gpu.log" | head -10
  fi
fi

echo
echo "== forge GPU check: $(date -u '+%Y-%m-%d %H:%M UTC'), $((SECONDS - start)) s =="
for line in "${results[@]}"; do echo "  $line"; done
[ "$failed" -eq 0 ] && echo "  all GPU checks passed" || echo "  SOME GPU CHECKS FAILED"
exit "$failed"
