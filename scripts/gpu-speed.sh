# Sourced by scripts/gpu-check.sh on a machine with a GPU: the default config on cuda:0 in
# fp32, bf16 and fp32 with run.deterministic (its cost), and samples/s against the same
# model and loop in Python PyTorch on the same GPU (bench/python_gpu.py).
#
# In: root, build, logs, py, epochs, fashion_source, result/fail/say functions.
data="$build/fashion_mnist.h5"
data_kind="Fashion-MNIST"
if [ ! -f "$data" ]; then
  if [ -d "$fashion_source" ]; then
    "$build/forge" data fashion-mnist --out "$data" --source "$fashion_source" >"$logs/data.log" 2>&1 ||
      fail "data" "converting Fashion-MNIST (log: data.log)"
  else
    data_kind="synthetic data of Fashion-MNIST's shape"
    "$build/forge" data synthetic --out "$data" --samples 70000 --features 784 --classes 10 \
      >"$logs/data.log" 2>&1 || fail "data" "writing synthetic data (log: data.log)"
  fi
fi
result "data for the speed runs" "$data_kind"
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
forge_fp32=0 forge_bf16=0 forge_det=0
for prec in fp32 bf16 det; do
  rm -rf "$build/run-$prec"
  say "forge: training the default config on cuda:0 ($prec, $epochs epochs)"
  extra=(--set run.precision=$prec)
  [ $prec = det ] && extra=(--set run.precision=fp32 --set run.deterministic=true)
  if timeout 180 "$build/forge" train "$cfg" --set run.device=cuda "${extra[@]}" --set run.epochs="$epochs" \
    --set run.dir="$build/run-$prec" --set data.path="$data" --set log.progress=lines >"$logs/train_$prec.log" 2>&1; then
    rate=$(steady "$build/run-$prec/metrics.jsonl")
    eval "forge_$prec=$rate"
    acc=$(grep -o "final test accuracy [0-9.]*%" "$logs/train_$prec.log" | grep -o "[0-9.]*%")
    result "forge ${prec/det/fp32 + run.deterministic} on the GPU" "$rate samples/s, final accuracy $acc"
  else
    fail "forge $prec on the GPU" "log: train_$prec.log"
    tail -15 "$logs/train_$prec.log"
  fi
done
[ "$forge_fp32" != 0 ] && [ "$forge_bf16" != 0 ] &&
  result "forge bf16 / fp32" "$("$py" -c "print(f'{$forge_bf16 / $forge_fp32:.2f}')")"
[ "$forge_fp32" != 0 ] && [ "$forge_det" != 0 ] &&
  result "forge run.deterministic / fp32 (its cost)" "$("$py" -c "print(f'{$forge_det / $forge_fp32:.2f}')")"
for prec in fp32 bf16; do
  flag=""; [ $prec = bf16 ] && flag="--bf16"
  say "python: the same model and loop in PyTorch ($prec, $epochs epochs)"
  if timeout 180 "$py" "$root/bench/python_gpu.py" --data "$data" --epochs "$epochs" $flag >"$logs/python_$prec.json" 2>"$logs/python_$prec.err"; then
    read -r host resident <<<"$("$py" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(round(d["host_pipeline_samples_per_s"]), round(d["resident_samples_per_s"]))' "$logs/python_$prec.json")"
    f=$(eval echo "\$forge_$prec")
    result "python $prec, same host pipeline" "$host samples/s -> forge / python = $("$py" -c "print(f'{$f / $host:.2f}')")"
    result "python $prec, data resident on the GPU" "$resident samples/s -> forge / python = $("$py" -c "print(f'{$f / $resident:.2f}')")"
  else
    fail "python $prec" "log: python_$prec.err"
    tail -5 "$logs/python_$prec.err"
  fi
done
