#!/usr/bin/env bash
# The device run, for a machine with one or more NVIDIA GPUs, in one call of under 9
# minutes: probe, build forge with CUDA + NCCL, the `gpu` tests at 1 rank (ctest: NCCL
# collectives, and the end-to-end test: fp32, bf16, preemption and a bit-exact resume,
# Python reading the GPU-written checkpoint), 2 NCCL ranks (on one GPU when there is only
# one: each rank poses as its own host) with a 2-epoch training that must match a CPU run of
# the same config, the default config in fp32 and bf16, and samples/s against Python PyTorch
# on the same GPU. Each step prints passed / FAILED / skipped and the run goes on; logs are
# files, and --out DIR gets the summary and one archive of them.
#
# Rerunnable: a second call on the same machine reuses the build (nothing is rebuilt when
# nothing changed) and the unpacked dependencies.
#
# What the machine needs: CUDA (nvcc anywhere scripts/gpu-cuda.sh looks), cmake, ninja (or
# make), a C++ compiler, and a Python whose torch is a CUDA build. Open MPI, yaml-cpp, HDF5,
# protobuf, GoogleTest, nlohmann-json and the data come from the system when it has them, else
# from .deb files fetched beforehand with scripts/fetch-gpu-deps.sh (scripts/gpu-deps.sh).
# On a machine without a GPU the GPU steps are skipped, saying so; scripts/gpu-rehearse.sh
# runs this script that way with the system's packages hidden.
#
#   usage: scripts/gpu-check.sh [--deps DIR] [--build DIR] [--epochs N] [--logs DIR] [--out DIR]
#   env:   FORGE_PYTHON (a python3 with torch), NCCL_HOME (another NCCL),
#          FORGE_GPU_USE_DEBS=1 (use the .deb files even where the system has the packages),
#          FORGE_GPU_BUDGET_S (seconds the whole run may take; default 520)
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
deps="$root/.gpu-deps"
build="$root/build-gpu"
epochs=3
logs=""
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --deps) deps="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    --epochs) epochs="$2"; shift 2 ;;
    --logs) logs="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "gpu-check: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$logs" ] || logs="$build/logs"
mkdir -p "$build" "$logs"
build="$(cd "$build" && pwd)"
start=$SECONDS
say() { printf '[gpu-check %4ds] %s\n' $((SECONDS - start)) "$*"; }
results=()
failed=0
result() { results+=("$(printf '%-46s %s' "$1" "$2")"); say "$1: $2"; }
fail() { failed=1; result "$1" "FAILED ($2)"; }
finish() {
  {
    echo "== forge GPU check: $(date -u '+%Y-%m-%d %H:%M UTC'), $((SECONDS - start)) s =="
    for line in "${results[@]}"; do echo "  $line"; done
    [ "$failed" -eq 0 ] && echo "  all GPU checks passed (or skipped, as said)" || echo "  SOME GPU CHECKS FAILED"
  } | tee "$logs/summary.txt"
  if [ -n "$out" ]; then
    mkdir -p "$out" && cp "$logs/summary.txt" "$out/" && tar -czf "$out/logs.tar.gz" -C "$logs" .
  fi
  exit "$failed"
}
die() { fail "$1" "$2"; finish; }

# --- Probe: GPU, driver, nvcc, torch, NCCL ------------------------------------------------
py="${FORGE_PYTHON:-}"
if [ -z "$py" ]; then
  for c in python3 "$HOME/.cache/forge/venv/bin/python"; do
    if "$c" -c 'import torch' 2>/dev/null; then py="$c"; break; fi
  done
fi
[ -n "$py" ] || die "probe" "no Python with torch found (set FORGE_PYTHON to a python3 whose torch is a CUDA build)"
py="$(command -v "$py")"
"$py" - >"$logs/probe.txt" 2>&1 <<'PY'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "gpus", torch.cuda.device_count())
print("torch_nccl", ".".join(map(str, torch.cuda.nccl.version())) if torch.cuda.is_available() else "n/a")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print("gpu", i, p.name, f"{p.total_memory / 2**30:.0f} GiB", "uuid", getattr(p, "uuid", "?"))
PY
read -r _ torch_version _ torch_cuda _ gpus <<<"$(head -1 "$logs/probe.txt")"
[ -n "${gpus:-}" ] || die "probe" "torch did not import (log: probe.txt)"
[ "$torch_cuda" != "None" ] || die "probe" "torch $torch_version in $py is a CPU-only build: forge's GPU path needs a CUDA build"
torch_prefix="$("$py" -c 'import torch; print(torch.utils.cmake_prefix_path)')"
gpu_name="none"; driver="none"; gpu_uuid=""
if [ "$gpus" -gt 0 ] && command -v nvidia-smi >/dev/null; then
  nvidia-smi >>"$logs/probe.txt" 2>&1
  IFS=, read -r gpu_name driver gpu_uuid <<<"$(nvidia-smi --query-gpu=name,driver_version,uuid --format=csv,noheader | head -1 | sed 's/, /,/g')"
fi
if [ "$gpus" -gt 0 ] && [ -z "$gpu_uuid" ]; then
  gpu_uuid="$(awk '$1 == "gpu" && $2 == 0 {print $NF}' "$logs/probe.txt")"
  case "$gpu_uuid" in ""|"?") gpu_uuid="" ;; GPU-*) ;; *) gpu_uuid="GPU-$gpu_uuid" ;; esac
fi
source "$root/scripts/gpu-cuda.sh"
nvcc_version="$( [ -n "$cuda_root" ] && "$cuda_root/bin/nvcc" --version | grep -o 'release [0-9.]*' )"
result "GPUs" "$gpus x $gpu_name, driver $driver"
result "torch / CUDA / NCCL (torch's)" "$torch_version / $torch_cuda / $(sed -n 's/^torch_nccl //p' "$logs/probe.txt")"
result "CUDA toolkit" "${cuda_root:-none found} ${nvcc_version:-}"
[ -n "$cuda_root" ] || die "CUDA toolkit" "no nvcc + CUDA headers in CUDA_HOME, CUDA_PATH, PATH, /usr/local/cuda*, or the nvidia wheels beside torch; set CUDA_HOME"

# --- Dependencies, configure, build -------------------------------------------------------
source "$root/scripts/gpu-deps.sh"
# Without mpirun a rank is an MPI singleton; it needs no orted beside it.
export OMPI_MCA_ess_singleton_isolated=1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
if [ ! -f "$build/CMakeCache.txt" ]; then
  say "configuring $build against $torch_prefix"
  cmake -S "$root" -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$torch_prefix" \
    -DFORGE_WITH_NCCL=ON -DPython3_EXECUTABLE="$py" "${cuda_args[@]}" "${cmake_args[@]}" -Wno-dev \
    >"$logs/configure.log" 2>&1 || { rm -f "$build/CMakeCache.txt"; tail -30 "$logs/configure.log"; die "configure" "cmake (log: configure.log)"; }
fi
grep "forge:" "$logs/configure.log" 2>/dev/null | sed 's/^-- /  /'
say "building forge, test_gpu, test_device with $(nproc) jobs"
t0=$SECONDS
cmake --build "$build" --parallel "$(nproc)" --target forge test_gpu test_device >"$logs/build.log" 2>&1 ||
  { grep -E "error|Error" "$logs/build.log" | head -30; die "build (CUDA + NCCL)" "log: build.log"; }
result "build (CUDA + NCCL)" "ok in $((SECONDS - t0)) s"
# One CUDA runtime in the process, and the one LibTorch itself would load.
cudart_paths() { ldd "$1" | grep -o 'libcudart[^ ]* => [^ ]*' | sed 's/.* => //' | xargs -r -n1 readlink -f | sort -u; }
cudarts="$(cudart_paths "$build/forge")"
torch_cudart="$(cudart_paths "$("$py" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cuda.so"))')")"
if [ "$(printf '%s\n' "$cudarts" | grep -c libcudart)" -eq 1 ] && [ "$cudarts" = "$torch_cudart" ]; then
  result "one CUDA runtime in forge" "$cudarts"
else
  fail "one CUDA runtime in forge" "forge: $(echo $cudarts); LibTorch alone: $torch_cudart"
fi

# --- Tests at 1 rank ------------------------------------------------------------------------
gtest_step() {  # name, log, command...
  local name="$1" log="$2"; shift 2
  if timeout 240 "$@" >"$logs/$log" 2>&1; then
    if grep -q "no CUDA GPU visible" "$logs/$log"; then
      result "$name" "skipped (no CUDA GPU visible)"
    else
      result "$name" "passed ($(grep -o '[0-9]* tests\? from [0-9]* test suites\? ran' "$logs/$log" | head -1))"
    fi
  else
    fail "$name" "log: $log"
    grep -E "Failure|FAILED|error" "$logs/$log" | head -10
  fi
}
gtest_step "test_device (CPU-side checks)" test_device.log "$build/tests/test_device"
# ctest -L gpu: test_gpu, and e2e_gpu_train (fp32, bf16, preemption and bit-exact resume,
# Python reading the checkpoint); the e2e test skips (exit 77) without a GPU.
if (cd "$build" && timeout 300 ctest -L gpu --timeout 200 --output-on-failure) >"$logs/ctest_gpu.log" 2>&1; then
  result "ctest -L gpu at 1 rank" "$(grep -o '[0-9]*% tests passed.*' "$logs/ctest_gpu.log"); $(grep -c '\*\*\*Skipped' "$logs/ctest_gpu.log") skipped"
else
  fail "ctest -L gpu at 1 rank" "log: ctest_gpu.log"
  grep -E "FAIL|\*\*\*" "$logs/ctest_gpu.log" | head -10
fi

if [ "$gpus" -eq 0 ]; then
  for step in "2 NCCL ranks: test_gpu" "2 NCCL ranks: training vs CPU" "forge fp32 / bf16 on the GPU" "python baseline"; do
    result "$step" "skipped (no CUDA GPU visible)"
  done
  finish
fi
# The call has 9 minutes in all; a cold build takes a good part of them. A step that would
# not fit is skipped, saying so: a second call on the warm machine rebuilds nothing.
in_time() {  # step name, seconds it needs at most
  if [ $((SECONDS - start + $2)) -le "${FORGE_GPU_BUDGET_S:-520}" ]; then return 0; fi
  result "$1" "skipped (out of time: $((SECONDS - start)) s used; rerun, the build is kept)"
  return 1
}
in_time "2 NCCL ranks" 150 && source "$root/scripts/gpu-ranks.sh"
in_time "forge fp32 / bf16 and python baseline" 150 && source "$root/scripts/gpu-speed.sh"
finish
