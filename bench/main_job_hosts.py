"""The main job (configs/fashion_mnist_mlp.yaml, all its epochs) on one host against two
namespace hosts with the same world size, side by side: 2 ranks against 2 hosts x 1, and 4
ranks against 2 hosts x 2 (tests/cluster/netns_hosts.py; TCP between hosts). Prints each
run's final accuracy, replica fingerprint, time and samples/s. Needs root; about 10 minutes
on 2 cores.

  source scripts/env.sh && $FORGE_PYTHON bench/main_job_hosts.py [--forge build/forge] [--data data/fashion_mnist.h5]
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "cluster"))
from netns_hosts import NetnsHosts, why_not_available  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--forge", default=os.path.join(here, "..", "build", "forge"))
p.add_argument("--data", default=os.path.join(here, "..", "data", "fashion_mnist.h5"))
a = p.parse_args()
why = why_not_available()
if why:
    sys.exit(f"main_job_hosts: {why}")
forge, data = os.path.abspath(a.forge), os.path.abspath(a.data)
config = os.path.join(here, "..", "configs", "fashion_mnist_mlp.yaml")
work = tempfile.mkdtemp(prefix="forge-main-hosts-")
# The same intra-op threads everywhere (1 per rank), so that only the hosts differ.
common = ["train", config, "--set", f"data.path={data}", "--set", "run.threads=1", "--set", "log.progress=off"]


def run(name, cmd):
    t0 = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=work)
    took = time.time() - t0
    text = out.stdout + out.stderr
    acc = re.search(r"final test accuracy ([0-9.]+)%", text)
    fp = re.search(r"fingerprint ([0-9a-f]{16})", text)
    sps = re.search(r"throughput\s+([0-9,]+) samples/s", text)
    row = (name, out.returncode, acc.group(1) if acc else None, fp.group(1) if fp else None,
           sps.group(1) if sps else None, f"{took:.0f} s")
    print(" | ".join(str(x) for x in row), flush=True)
    return row


rows = []
with NetnsHosts(2, "fmj") as hosts:
    for per_host in (1, 2):
        world = 2 * per_host
        rows.append(run(f"1 host x {world}", ["mpirun", "-np", str(world), "--oversubscribe", "--bind-to", "none", forge,
                                             *common, "--set", f"run.dir={work}/local{world}"]))
        rows.append(run(f"2 hosts x {per_host}", hosts.mpirun(per_host, [forge, *common,
                                                                         "--set", f"run.dir={work}/hosts{world}"])))
print("\n| layout | exit | final accuracy | fingerprint | samples/s | wall |")
print("|---|---|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(str(x) for x in r) + " |")
shutil.rmtree(work, ignore_errors=True)
