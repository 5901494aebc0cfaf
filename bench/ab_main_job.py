"""Two forge builds on the main job, alternately: A, B, A, B, ... so that this machine's drift
hits both alike. Prints each run's training time and samples/s (from its summary.json), the
fingerprint and final accuracy (which must agree), and the ratio B / A of the medians.

    bench/ab_main_job.py --a OLD/build/forge --b build/forge [--pairs 3] [--set key=value ...]
    bench/ab_main_job.py --a build/forge --b build/forge --set-a distributed.watchdog=false

--set applies to both sides; --set-a / --set-b to one (one build, two settings).

Needs data/fashion_mnist.h5 (scripts/main-job.sh makes it). Each run gets a fresh run dir."""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile

p = argparse.ArgumentParser()
p.add_argument("--a", required=True, help="the baseline forge binary")
p.add_argument("--b", required=True, help="the forge binary measured against it")
p.add_argument("--pairs", type=int, default=3)
p.add_argument("--config", default="configs/fashion_mnist_mlp.yaml")
p.add_argument("--set", action="append", default=[])
p.add_argument("--set-a", action="append", default=[])
p.add_argument("--set-b", action="append", default=[])
a = p.parse_args()
repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
work = tempfile.mkdtemp(prefix="forge_ab_")
cores = os.cpu_count() or 2
bind = ["--map-by", f"slot:PE={max(1, cores // 2)}", "--bind-to", "core"]
results = {"a": [], "b": []}
try:
    for i in range(a.pairs):
        for side in ("a", "b"):
            run = os.path.join(work, f"{side}{i}")
            sets = sum((["--set", s] for s in a.set + getattr(a, f"set_{side}")), [])
            cmd = ["mpirun", "-np", "2", *bind, getattr(a, side), "train", a.config, "--set", f"run.dir={run}",
                   "--set", "log.progress=off", *sets]
            out = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(f"{side} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
            s = json.load(open(os.path.join(run, "summary.json")))
            train_s = s["seconds"]["compute"] + s["seconds"]["communication"] + s["seconds"]["data_wait"]
            r = {"session_s": s["session_seconds"], "train_s": train_s, "samples_per_s": s["samples_per_s"],
                 "fingerprint": s["fingerprint"], "accuracy": s["final_eval_accuracy"]}
            results[side].append(r)
            print(f"{side} run {i + 1}: session {r['session_s']:.2f} s, training {r['train_s']:.2f} s, "
                  f"{r['samples_per_s']:,.0f} samples/s, fingerprint {r['fingerprint']}, "
                  f"accuracy {100 * r['accuracy']:.2f}%", flush=True)
            shutil.rmtree(run, ignore_errors=True)
finally:
    shutil.rmtree(work, ignore_errors=True)
fa = {r["fingerprint"] for r in results["a"]} | {r["fingerprint"] for r in results["b"]}
print(f"fingerprints: {', '.join(sorted(fa))} ({'the same' if len(fa) == 1 else 'DIFFERENT'})")
for key, what in [("samples_per_s", "samples/s"), ("session_s", "session seconds")]:
    ma = statistics.median(r[key] for r in results["a"])
    mb = statistics.median(r[key] for r in results["b"])
    print(f"median {what}: a {ma:,.2f}, b {mb:,.2f}, b / a = {mb / ma:.3f}")
