# Sourced by scripts/gpu-check.sh on a machine with a GPU: 2 NCCL ranks, on one GPU when
# there is only one.
#
# In:  build, logs, py, mpirun_bin, gpus, gpu_uuid, result/fail/say functions.
# Out: the data file $build/syn784.h5 (also used by scripts/gpu-speed.sh when there is no
#      Fashion-MNIST).
#
# NCCL refuses two ranks of one communicator on one GPU of one host. Each rank therefore
# poses as its own host: its own NCCL_HOSTID, the socket transport on loopback (no P2P, no
# shared memory), and the GPU seen by index by one rank and by UUID by the other (so their
# CUDA_VISIBLE_DEVICES differ, which forge also reads as "the launcher bound a GPU to each
# rank"). FORGE_SHARE_GPUS=1 lets forge bind both to the one device.
two_ranks() {  # runs "$@" as 2 ranks (at most 240 s)
  # Per rank through env(1): mpirun's -x before the first program applies to that one alone.
  local common=(NCCL_NET=Socket NCCL_SOCKET_IFNAME=lo NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1 NCCL_IB_DISABLE=1
    FORGE_SHARE_GPUS=1)
  if [ "$gpus" -ge 2 ]; then
    timeout 240 "$mpirun_bin" -np 2 --oversubscribe "$@"
    return
  fi
  local second="${gpu_uuid:-0}"
  timeout 240 "$mpirun_bin" --oversubscribe \
    -np 1 env "${common[@]}" NCCL_HOSTID=forge-rank0 CUDA_VISIBLE_DEVICES=0 "$@" : \
    -np 1 env "${common[@]}" NCCL_HOSTID=forge-rank1 CUDA_VISIBLE_DEVICES="$second" "$@"
}
where="two GPUs"
[ "$gpus" -ge 2 ] || where="one GPU, ranks posing as two hosts"

# NCCL collectives and the synchronizer at 2 ranks.
if two_ranks "$build/tests/test_gpu" >"$logs/test_gpu_np2.log" 2>&1; then
  result "2 NCCL ranks: test_gpu ($where)" "passed ($(grep -o '[0-9]* tests\? from [0-9]* test suites\? ran' "$logs/test_gpu_np2.log" | head -1))"
else
  fail "2 NCCL ranks: test_gpu ($where)" "log: test_gpu_np2.log"
  grep -E "Failure|FAILED|rror" "$logs/test_gpu_np2.log" | head -10
fi

# A 2-epoch training at 2 ranks on the GPU against the same config at 2 ranks on the CPU.
# The same global batch and data order: the curves differ only by the kernels' rounding,
# which 188 steps of SGD amplify a little. Tolerances: test accuracy within 1.5 points, test
# loss within 0.05 (the config reaches about 60% and 1.19 on this data, from 10% and 2.30).
data="$build/syn784.h5"
[ -f "$data" ] || "$build/forge" data synthetic --out "$data" --samples 12000 --features 784 --classes 10 \
  >"$logs/data_syn.log" 2>&1
same=(--set data.path="$data" --set run.epochs=2 --set data.normalize.scale=1 --set data.normalize.mean=0
  --set data.normalize.std=1 --set log.progress=lines)
cfg="$root/configs/fashion_mnist_mlp.yaml"
rm -rf "$build/np2-gpu" "$build/np2-cpu"
two_ranks "$build/forge" train "$cfg" "${same[@]}" --set run.device=cuda --set run.dir="$build/np2-gpu" \
  >"$logs/train_np2_gpu.log" 2>&1
gpu_rc=$?
timeout 240 "$mpirun_bin" -np 2 --oversubscribe "$build/forge" train "$cfg" "${same[@]}" --set run.device=cpu \
  --set run.dir="$build/np2-cpu" >"$logs/train_np2_cpu.log" 2>&1
cpu_rc=$?
final() { grep -o "final test accuracy [0-9.]*% (loss [0-9.]*)" "$1" | tail -1 | grep -o "[0-9.]\+" | tr '\n' ' '; }
if [ $gpu_rc -ne 0 ] || [ $cpu_rc -ne 0 ]; then
  fail "2 NCCL ranks: training vs CPU" "exit $gpu_rc (GPU) / $cpu_rc (CPU); logs: train_np2_gpu.log, train_np2_cpu.log"
  tail -5 "$logs/train_np2_gpu.log"
else
  read -r gacc gloss <<<"$(final "$logs/train_np2_gpu.log")"
  read -r cacc closs <<<"$(final "$logs/train_np2_cpu.log")"
  verdict="$("$py" -c "import sys; a, b, c, d = map(float, sys.argv[1:]); print('ok' if abs(a - c) <= 1.5 and abs(b - d) <= 0.05 else 'off')" \
    "$gacc" "$gloss" "$cacc" "$closs" 2>/dev/null)"
  replicas="$(grep -c "replicas identical on all 2 ranks" "$logs/train_np2_gpu.log")"
  backend="$(grep -c "backend nccl" "$logs/train_np2_gpu.log")"
  text="GPU ${gacc}% loss $gloss, CPU ${cacc}% loss $closs (tolerance 1.5 points, 0.05); replicas identical: $([ "$replicas" -gt 0 ] && echo yes || echo NO); nccl: $([ "$backend" -gt 0 ] && echo yes || echo NO)"
  if [ "$verdict" = ok ] && [ "$replicas" -gt 0 ] && [ "$backend" -gt 0 ]; then
    result "2 NCCL ranks: training vs CPU" "passed: $text"
  else
    fail "2 NCCL ranks: training vs CPU" "$text"
  fi
fi
