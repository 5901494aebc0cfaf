"""forge under a real multi-node Slurm on this machine: two "nodes" made of network and UTS
namespaces (tests/cluster/netns_hosts.py: own hostname, own address on a private bridge),
one slurmd in each, slurmctld in node 0's, munged shared (tests/slurm/slurm_cluster.py with
hosts=). A 2-node x 2-task job submitted with launch/forge.sbatch (srun --mpi=pmix, so the
ranks on different nodes talk over TCP between the namespaces):
  1. trains on both nodes (forge sees 4 ranks on 2 nodes, 2 per node, and names both hosts);
  2. preempted mid-run (the batch shell gets USR1, as --signal=B:USR1 delivers it), it saves,
     requeues itself, resumes from the checkpoint on both nodes, and finishes with a final
     checkpoint equal, tensor for tensor, to an uninterrupted run's (the same config under
     mpirun with 4 ranks).
Slurm's hold on a requeued job (the credential lifetime, 120 s by default) is cut to a few
seconds in this cluster's slurm.conf. Exits 77 (skipped) without root, namespaces or Slurm."""
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "cluster"))
from harness import Harness, small_config  # noqa: E402
from harness import final_checkpoint as harness_final_checkpoint  # noqa: E402
from harness import same_checkpoint as harness_same_checkpoint  # noqa: E402
from netns_hosts import NetnsHosts, why_not_available  # noqa: E402
from slurm_cluster import SlurmCluster, SlurmUnavailable  # noqa: E402

why = why_not_available()
if why:
    print(f"skipped: {why}")
    sys.exit(77)

t0 = time.time()
h = Harness()
template = os.path.join(h.repo, "launch", "forge.sbatch")
fp = re.compile(r"fingerprint ([0-9a-f]{16})")
EPOCHS = 10  # the signal comes after epoch 1: most of the run is still ahead on a fast machine
h.run(["data", "synthetic", "--out", "syn.h5", "--samples", "8000", "--features", "32", "--classes", "4"])
cfg = small_config(h, "job.yaml", "syn.h5", "unused", epochs=EPOCHS, features=32)
common = ["--set", "run.threads=1", "--set", "model.hidden=256"]

# The uninterrupted reference: the same config under mpirun, 4 ranks on one host.
p = h.run(["train", cfg, "--set", "run.dir=ref", *common], ranks=4)
ref_fp, ref_ckpt = fp.search(p.stdout).group(1), harness_final_checkpoint(h, "ref")
print(f"  reference run: {time.time() - t0:.0f} s")

# The ranks wait on each other over TCP with more ranks than cores on this machine: a rank
# that waits gives the CPU to the kernel's network processing (as in tests/cluster).
env = {"FORGE_BIN": h.forge, "OMPI_MCA_mpi_yield_when_idle": "1", "OMPI_MCA_btl_tcp_if_include": "eth0"}
with NetnsHosts(2, "fsl") as hosts:
    try:
        cluster = SlurmCluster(cpus=2, hosts=hosts, requeue_delay_s=10)
    except SlurmUnavailable as e:
        print(f"skipped: {e}")
        sys.exit(77)
    with cluster as c:
        def out(j):
            path = h.path(f"job-{j}.out")
            return open(path).read() if os.path.exists(path) else ""

        start = time.time()
        j = c.sbatch(["--nodes=2", "--ntasks-per-node=2", f"--output={h.path('job-%j.out')}", template, cfg,
                      "--set", "run.dir=pre", *common], cwd=h.work, extra_env=env)
        c.wait_for(j, {"RUNNING"}, 120)
        deadline = time.time() + 180
        while f"epoch 1/{EPOCHS}" not in out(j) and time.time() < deadline:  # into training
            time.sleep(0.2)
        log = out(j)
        h.check(f"epoch 1/{EPOCHS}" in log, f"the 2-node job trains ({time.time() - start:.0f} s to epoch 1)",
                log[-3000:] + c.logs())
        # The ranks' own connections between the nodes: TCP from node 0's forge processes to
        # node 1's address.
        ss = subprocess.run(["nsenter", "-t", str(hosts.host_pid(0)), "-n", "--", "ss", "-tnpH", "state",
                             "established"], capture_output=True, text=True).stdout
        links = [line for line in ss.splitlines() if '"forge"' in line and f"{hosts.addresses[1]}:" in line]
        h.check(links, f"the ranks on node 0 talk to node 1 over TCP ({len(links)} connection(s) from forge "
                       f"to {hosts.addresses[1]})", ss)
        h.check(re.search(r"4 rank\(s\) on 2 node\(s\), 2 per node", log) is not None,
                "forge sees 4 ranks on 2 nodes, 2 per node", log[:3000])
        h.check(all(n in log for n in hosts.names), f"the log names both nodes ({', '.join(hosts.names)})",
                log[:3000])
        sent = c.run(["scancel", "--signal=USR1", "--batch", j])
        h.check(sent.returncode == 0, "the preemption signal is delivered to the batch shell", sent.stderr)
        preempted = time.time()
        # The job saves, exits 75, requeues itself, waits out Slurm's hold, runs again on both
        # nodes and completes.
        deadline = time.time() + 360
        info = {}
        while time.time() < deadline:
            info = c.job(j)
            if info.get("JobState") in {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"} and \
                    "[sbatch] forge exited" in out(j):
                break
            time.sleep(0.5)
        log = out(j)
        h.check(info.get("JobState") == "COMPLETED" and info.get("Restarts") == "1",
                f"the preempted job requeues once and completes ({info.get('JobState')}, restarts "
                f"{info.get('Restarts')}, {time.time() - preempted:.0f} s after the signal, "
                f"{time.time() - start:.0f} s in all)", log[-3000:] + c.logs())
        h.check("USR1: passing it to the ranks" in log and "exit 75 = please requeue" in log,
                "the ranks on both nodes are told, save and exit 75", log[-3000:])
        restart = re.search(r"\[sbatch\] job \d+ restart 1 on (\S+):", log)
        h.check(restart is not None and restart.group(1) == "fsl-node[0-1]",
                f"the requeued job runs again on both nodes ({restart.group(1) if restart else None})", log[-3000:])
        resumed = re.search(r"resumed from \S+ at epoch (\d+) step (\d+) \(global step (\d+)\)", log)
        h.check(resumed is not None and int(resumed.group(3)) > 0,
                f"it resumes from the saved step (global step {resumed.group(3) if resumed else None})", log[-3000:])
        m = fp.search(log)
        h.check(m is not None and m.group(1) == ref_fp,
                f"its final weights equal the uninterrupted run's ({m.group(1) if m else None} vs {ref_fp})")
        final = harness_final_checkpoint(h, "pre")
        same = harness_same_checkpoint(final, ref_ckpt) if final else (False, "no checkpoint")
        h.check(same[0], "and so does its final checkpoint, tensor for tensor, with zero tolerance", same[1])
    leftover = hosts.processes_in_hosts()
    h.check(not leftover, f"nothing the job started still runs on the nodes ({leftover})")

daemons = [pid for pid in cluster.pids.values() if os.path.exists(f"/proc/{pid}")]
h.check(not daemons and not os.path.exists(cluster.dir),
        f"every daemon the test started is gone, its state folder too ({daemons})")
print(f"  the whole test took {time.time() - t0:.0f} s")
h.finish()
