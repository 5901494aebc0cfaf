"""forge across hosts: network namespaces on this machine, each with its own hostname and an
address on a private bridge, Open MPI starting the remote ranks through an rsh agent, so
ranks on different hosts talk over TCP as between nodes (tests/cluster/netns_hosts.py).
  1. the main job (Fashion-MNIST MLP, one epoch here) on 2 hosts x 1 rank and on 2 hosts x
     2 ranks reaches the same accuracy and replica fingerprint as on one host with the same
     world size;
  2. a rank on one host that stops responding (SIGSTOP: a frozen node, a dead NIC) ends the
     whole job within distributed.timeout_s + 30 s with exit 3 and a verdict naming that
     host; --resume auto then completes;
  3. a rank killed on one host (kill -9) ends the whole job at once; forge's launcher
     (launch/mpirun.sh, across the hosts) exits 3 naming the rank and host, no survivor
     left; --resume auto then completes;
  4. `forge doctor` on 2 hosts x 2 ranks: links within and between hosts, a bucket
     all-reduce against raw MPI.
Exits 77 (skipped) without root or namespaces."""
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
from harness import Harness, small_config, final_accuracy  # noqa: E402
from netns_hosts import NetnsHosts, why_not_available  # noqa: E402

why = why_not_available()
if why:
    print(f"skipped: {why}")
    sys.exit(77)

h = Harness()
fp = re.compile(r"fingerprint ([0-9a-f]{16})")
h.run(["data", "fashion-mnist", "--out", "fm.h5"])
main_cfg = os.path.join(h.repo, "configs", "fashion_mnist_mlp.yaml")
# One epoch keeps the suite short; run.threads 1 gives every run the same intra-op split.
main_set = ["--set", "data.path=fm.h5", "--set", "run.epochs=1", "--set", "run.threads=1",
            "--set", "log.progress=off"]


def run(cmd, timeout=600):
    t0 = time.time()
    p = subprocess.run(cmd, cwd=h.work, capture_output=True, text=True, timeout=timeout)
    print(f"$ {' '.join(cmd[cmd.index('mpirun'):] if 'mpirun' in cmd else cmd)[:160]}...  -> exit {p.returncode} "
          f"in {time.time() - t0:.1f} s")
    return p


def forge_pids(hosts, host_index):
    return [pid for pid in hosts.processes_in_hosts(h.forge + " train") if hosts.host_of(pid) == host_index
            and open(f"/proc/{pid}/cmdline", "rb").read().startswith(h.forge.encode())]


with NetnsHosts(2, "fcl") as hosts:
    # 1. The main job across hosts against one host, same world size.
    for per_host in (1, 2):
        world = 2 * per_host
        local = run(h.command(["train", main_cfg, *main_set, "--set", f"run.dir=runs/local{world}"], ranks=world))
        remote = run(hosts.mpirun(per_host, [h.forge, "train", main_cfg, *main_set,
                                             "--set", f"run.dir=runs/hosts2x{per_host}"]))
        h.check(local.returncode == 0 and remote.returncode == 0, f"{world} ranks: both runs end with exit 0",
                local.stderr[-1500:] + remote.stderr[-1500:])
        lf, rf = fp.search(local.stdout), fp.search(remote.stdout)
        la, ra = final_accuracy(local.stdout), final_accuracy(remote.stdout)
        h.check(lf is not None and rf is not None and lf.group(1) == rf.group(1),
                f"2 hosts x {per_host} rank(s): the replica fingerprint equals one host's with {world} ranks "
                f"({rf.group(1) if rf else None} vs {lf.group(1) if lf else None})")
        h.check(la is not None and la == ra, f"and so does the accuracy ({ra}% vs {la}%)")
        h.check(re.search(rf"{world} rank\(s\) on 2 node\(s\), {per_host} per node", remote.stdout + remote.stderr)
                is not None, "forge saw 2 nodes", (remote.stdout + remote.stderr)[:1500])
        h.check(all(f"fcl-node{i}" in remote.stdout + remote.stderr for i in (0, 1)),
                "its device map names both hosts")

    # 2. A rank on host 1 stops responding: exit 3 naming the host, then resume.
    h.run(["data", "synthetic", "--out", "syn.h5", "--samples", "4000", "--features", "16", "--classes", "4"])
    timeout_s = 10
    launcher = os.path.join(h.repo, "launch", "mpirun.sh")
    cfg = small_config(h, "hang.yaml", "syn.h5", "runs/frozen", epochs=60, timeout_s=timeout_s)
    for fault, sig in (("frozen", signal.SIGSTOP), ("killed", signal.SIGKILL)):
        run_dir = f"runs/{fault}"
        # Through forge's own launcher script, across the hosts.
        cmd = hosts.launch(1, launcher, ["--forge", h.forge, "--", "train", cfg, "--set", f"run.dir={run_dir}", "--set",
                                         "checkpoint.every_steps=20"])
        proc = subprocess.Popen(cmd, cwd=h.work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None and not os.path.exists(h.path(run_dir, "checkpoints")):
            time.sleep(0.2)
        time.sleep(3)  # past the first step checkpoints
        victims = forge_pids(hosts, 1)
        h.check(len(victims) == 1, f"one forge rank runs on host 1 ({victims})")
        hit = time.time()
        for pid in victims:
            os.kill(pid, sig)
        try:
            out, _ = proc.communicate(timeout=timeout_s + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        took = time.time() - hit
        print(f"  {fault}: the job ended {took:.1f} s later with exit {proc.returncode}")
        h.check(took <= timeout_s + 30, f"{fault} rank on host 1: the whole job ended within timeout_s + 30 s "
                                        f"({took:.1f} s)", out[-2000:])
        h.check(proc.returncode == 3, f"with exit 3 (got {proc.returncode})", out[-2000:])
        if fault == "frozen":
            h.check(re.search(r"rank 1 on fcl-node1 stopped responding", out) is not None,
                    "forge's verdict names the rank and its host", out[-2500:])
        else:
            h.check(f"[launch] rank 1 on {hosts.addresses[1]} died (signal 9)" in out,
                    "the launcher names the killed rank and its host", out[-2000:])
        left = forge_pids(hosts, 0) + forge_pids(hosts, 1)
        h.check(left == [], f"no forge process is left on either host ({left})")
        resumed = run(hosts.mpirun(1, [h.forge, "train", cfg, "--set", f"run.dir={run_dir}", "--set", "run.epochs=2",
                                       "--resume", "auto"]))
        h.check(resumed.returncode == 0 and "resum" in resumed.stdout + resumed.stderr,
                f"after the {fault} rank, --resume auto on both hosts completes", resumed.stderr[-1500:])

    # 4. forge doctor on 2 hosts x 2 ranks.
    doc = run(hosts.mpirun(2, [h.forge, "doctor", "--seconds", "0.5"]))
    print(doc.stdout[-3000:])
    h.check(doc.returncode == 0, f"forge doctor on 2 hosts x 2 ranks: exit 0 ({doc.returncode})", doc.stderr[-1500:])
    h.check("between hosts (network)" in doc.stdout and "same host (shared memory)" in doc.stdout,
            "it measured the links within and between hosts")
    h.check(re.search(r"forge \(mpi\)\s+[0-9.]+ ms", doc.stdout) is not None, "and the bucket all-reduce")
    h.check("4 rank(s) on 2 host(s)" in doc.stdout, "it saw 4 ranks on 2 hosts")

h.finish()
