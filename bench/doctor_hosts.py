"""`forge doctor` on one host against two hosts, side by side in one invocation: 2 ranks on
this machine (Open MPI's shared memory), then 2 hosts x 1 rank and 2 hosts x 2 ranks made of
network namespaces on a private bridge (TCP between hosts; tests/cluster/netns_hosts.py).
Needs root. Prints each doctor report and a summary table.

  source scripts/env.sh && $FORGE_PYTHON bench/doctor_hosts.py [--forge build/forge] [--seconds 1]
"""
import argparse
import os
import re
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "cluster"))
from netns_hosts import NetnsHosts, why_not_available  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--forge", default=os.path.join(here, "..", "build", "forge"))
p.add_argument("--seconds", default="1")
a = p.parse_args()
why = why_not_available()
if why:
    sys.exit(f"doctor_hosts: {why}")
forge = os.path.abspath(a.forge)
doctor = [forge, "doctor", "--seconds", a.seconds]


def report(name, cmd):
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    print(f"== {name}: exit {out.returncode}\n{out.stdout}")
    links = re.findall(r"\((\S+)\)\s+(same host \(shared memory\)|between hosts \(network\))\s+([0-9.]+) us\s+([0-9.]+) GB/s",
                       out.stdout)
    raw = re.search(r"raw MPI_Allreduce\s+([0-9.]+) ms\s+([0-9.]+) GB/s", out.stdout)
    ours = re.search(r"forge \(mpi\)\s+([0-9.]+) ms\s+([0-9.]+) GB/s\s+\(([0-9.]+)x raw\)", out.stdout)
    return links, raw, ours


rows = [("1 host x 2 ranks", report("1 host x 2 ranks", ["mpirun", "-np", "2", "--bind-to", "none", *doctor]))]
with NetnsHosts(2, "fdoc") as hosts:
    for per_host in (1, 2):
        name = f"2 hosts x {per_host} rank(s)"
        rows.append((name, report(name, hosts.mpirun(per_host, doctor))))
print("| layout | link | latency | bandwidth (25 MiB) | bucket all-reduce: raw MPI | forge | forge/raw |")
print("|---|---|---|---|---|---|---|")
for name, (links, raw, ours) in rows:
    for i, (_, path, lat, bw) in enumerate(links):
        tail = (f"{raw.group(1)} ms ({raw.group(2)} GB/s bus) | {ours.group(1)} ms ({ours.group(2)} GB/s) | "
                f"{ours.group(3)}x") if i == 0 and raw and ours else "| |"
        print(f"| {name if i == 0 else ''} | {path.split(' (')[0]} | {lat} us | {bw} GB/s | {tail} |")
