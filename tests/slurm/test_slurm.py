"""forge under a real Slurm (a single-node cluster brought up on localhost for this test):
  1. a 2-task job submitted with launch/forge.sbatch trains to the end, and its final
     checkpoint equals, with zero tolerance, that of the same config run under mpirun;
  2. preempted while it runs (the batch shell gets USR1, as --signal=B:USR1 delivers it),
     the job saves, requeues itself, resumes from the checkpoint (the log shows the restart
     count and the resumed step) and finishes with a final checkpoint equal to an
     uninterrupted run's;
  3. a job whose rank dies ends FAILED with a non-zero exit code, not in a hang;
  4. `srun --mpi=none` (no PMI: N one-rank jobs) is refused by every task before MPI starts;
  5. a job under a 1-minute time limit with run.max_time set ends each session itself with a
     checkpoint and exit 75, is requeued and resumed until it completes, never killed by Slurm,
     with the final checkpoint of an uninterrupted run.
Exits 77 (skipped) without root or without Slurm installed."""
import glob
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
from harness import Harness, small_config  # noqa: E402
from harness import final_checkpoint as harness_final_checkpoint  # noqa: E402
from harness import same_checkpoint as harness_same_checkpoint  # noqa: E402
from slurm_cluster import SlurmCluster, SlurmUnavailable  # noqa: E402


h = Harness()
template = os.path.join(h.repo, "launch", "forge.sbatch")
h.run(["data", "synthetic", "--out", "syn.h5", "--samples", "6000", "--features", "32", "--classes", "4"])
cfg = small_config(h, "job.yaml", "syn.h5", "unused", epochs=4, features=32)
fp = re.compile(r"fingerprint ([0-9a-f]{16})")


def final_checkpoint(run_dir):
    return harness_final_checkpoint(h, run_dir)


def same_checkpoint(a, b):
    return harness_same_checkpoint(a, b)[0]


def wait_done(c, j, timeout):
    """The job's last state once it is done for good: a final state and the script's last
    line ("forge exited") in the output (a requeued job passes through COMPLETED-like states
    before it runs again); or what it was when `timeout` s ran out."""
    deadline = time.time() + timeout
    info = {}
    while time.time() < deadline:
        info = c.job(j)
        log = h.path(f"job-{j}.out")
        done = os.path.exists(log) and "[sbatch] forge exited" in open(log).read()
        if info.get("JobState") in {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"} and done:
            break
        time.sleep(0.5)
    return info


# The reference: the same config directly under mpirun.
p = h.run(["train", cfg, "--set", "run.dir=ref"], ranks=2)
ref_fp = fp.search(p.stdout).group(1)
ref_ckpt = final_checkpoint("ref")

try:
    cluster = SlurmCluster(cpus=max(2, os.cpu_count()), requeue_delay_s=15)
except SlurmUnavailable as e:
    print(f"skipped: {e}")
    sys.exit(77)

env = {"FORGE_BIN": h.forge}
with cluster as c:
    out = lambda j: open(h.path(f"job-{j}.out")).read() if os.path.exists(h.path(f"job-{j}.out")) else ""

    # 1. A plain job, to the end.
    start = time.time()
    j = c.sbatch(["--ntasks-per-node=2", f"--output={h.path('job-%j.out')}", template, cfg, "--set",
                  "run.dir=plain"], cwd=h.work, extra_env=env)
    info = c.wait_for(j, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}, 240)
    log = out(j)
    h.check(info["JobState"] == "COMPLETED", f"the sbatch job completes ({info['JobState']}, "
            f"{time.time() - start:.0f} s)", log[-3000:] + c.logs())
    m = fp.search(log)
    h.check(m is not None and m.group(1) == ref_fp,
            f"its final weights equal the mpirun run's (fingerprint {m.group(1) if m else None} vs {ref_fp})")
    h.check(final_checkpoint("plain") and same_checkpoint(final_checkpoint("plain"), ref_ckpt),
            "its final checkpoint equals the mpirun run's, tensor for tensor")
    h.check("launcher slurm" in log and "SLURM_PROCID=0" in log and "SLURM_NTASKS=2" in log,
            "the startup log names the launcher and Slurm's rank variables", log[:2000])

    # 2. Preempted mid-run: the batch shell gets USR1 and passes it on; the job requeues.
    # Long enough (a wider model on more samples, several seconds) to be signalled mid-run.
    h.run(["data", "synthetic", "--out", "syn_big.h5", "--samples", "24000", "--features", "32", "--classes", "4"])
    longer = ["--set", "run.epochs=8", "--set", "model.hidden=1024", "--set", "data.path=syn_big.h5"]
    p = h.run(["train", cfg, "--set", "run.dir=ref8", *longer], ranks=2)
    ref8_fp, ref8_ckpt = fp.search(p.stdout).group(1), final_checkpoint("ref8")
    start = time.time()
    j = c.sbatch(["--ntasks-per-node=2", f"--output={h.path('job-%j.out')}", template, cfg, "--set",
                  "run.dir=pre", *longer], cwd=h.work, extra_env=env)
    c.wait_for(j, {"RUNNING"}, 120)
    deadline = time.time() + 120
    while "epoch 1/8" not in out(j) and time.time() < deadline:  # into training
        time.sleep(0.2)
    sent = c.run(["scancel", "--signal=USR1", "--batch", j])
    h.check(sent.returncode == 0, "the preemption signal is delivered to the batch shell", sent.stderr)
    # The job saves, exits 75, requeues itself, runs again and completes.
    info = wait_done(c, j, 300)
    log = out(j)
    h.check(info.get("JobState") == "COMPLETED" and info.get("Restarts") == "1",
            f"the preempted job requeues once and completes ({info.get('JobState')}, restarts "
            f"{info.get('Restarts')}, {time.time() - start:.0f} s)", log[-3000:] + c.logs())
    h.check("USR1: passing it to the ranks" in log and "exit 75 = please requeue" in log,
            "the ranks are told, save and exit 75", log[-3000:])
    h.check(re.search(r"\[sbatch\] job \d+ restart 1 ", log) is not None, "the log shows the restart count",
            log[-3000:])
    resumed = re.search(r"resumed from \S+ at epoch (\d+) step (\d+) \(global step (\d+)\)", log)
    h.check(resumed is not None and int(resumed.group(3)) > 0,
            f"the requeued job resumes from the saved step (global step {resumed.group(3) if resumed else None})",
            log[-3000:])
    m = fp.search(log)
    h.check(m is not None and m.group(1) == ref8_fp,
            f"the resumed job's final weights equal an uninterrupted run's ({m.group(1) if m else None} vs {ref8_fp})")
    h.check(final_checkpoint("pre") and same_checkpoint(final_checkpoint("pre"), ref8_ckpt),
            "and so does its final checkpoint, tensor for tensor, with zero tolerance")

    # 5. run.max_time under a time limit: each session saves and exits 75 before its budget
    # runs out, the script requeues the job, and the run completes across sessions with the
    # weights of an uninterrupted run; Slurm never has to end it (no TIMEOUT, no signal).
    timed = ["--set", "run.epochs=40", "--set", "model.hidden=1024", "--set", "data.path=syn_big.h5"]
    p = h.run(["train", cfg, "--set", "run.dir=ref40", *timed], ranks=2)
    ref40_fp, ref40_ckpt = fp.search(p.stdout).group(1), final_checkpoint("ref40")
    start = time.time()
    j = c.sbatch(["--ntasks-per-node=2", "--time=1", "--signal=B:USR1@5", f"--output={h.path('job-%j.out')}",
                  template, cfg, "--set", "run.dir=timed", "--set", "run.max_time=12", *timed],
                 cwd=h.work, extra_env=env)
    info = wait_done(c, j, 400)
    log = out(j)
    restarts = int(info.get("Restarts", "0") or 0)
    h.check(info.get("JobState") == "COMPLETED" and restarts >= 1,
            f"a job under a 1-minute limit with run.max_time=12 requeues itself and completes "
            f"({info.get('JobState')}, restarts {restarts}, {time.time() - start:.0f} s)", log[-3000:] + c.logs())
    h.check(log.count("run.max_time = 12 s is nearly spent") == restarts and "exit 75 = please requeue" in log,
            f"each session ends itself with a checkpoint and exit 75 ({log.count('nearly spent')} of {restarts})",
            log[-3000:])
    # (The script's own `scontrol requeue` ends each session's allocation: slurmstepd may log
    # "CANCELLED ... DUE TO JOB REQUEUE" for it. Slurm ending the job would say TIME LIMIT.)
    h.check("TIME LIMIT" not in log and "USR1: passing it" not in log,
            "Slurm never had to signal or end it", log[-3000:])
    sessions = re.findall(r"resumed from \S+ at epoch (\d+) step (\d+) \(global step (\d+)\)", log)
    h.check(len(sessions) == restarts and all(int(g) > 0 for _, _, g in sessions),
            f"every requeued session resumes from the saved step ({[int(g) for _, _, g in sessions]})", log[-3000:])
    m = fp.search(log)
    h.check(m is not None and m.group(1) == ref40_fp,
            f"its final weights equal an uninterrupted run's ({m.group(1) if m else None} vs {ref40_fp})")
    h.check(final_checkpoint("timed") and same_checkpoint(final_checkpoint("timed"), ref40_ckpt),
            "and so does its final checkpoint, tensor for tensor")

    # 3. A rank dies: the job ends FAILED with a non-zero exit code, not in a hang.
    start = time.time()
    j = c.sbatch(["--ntasks-per-node=2", f"--output={h.path('job-%j.out')}", template, cfg, "--set",
                  "run.dir=crash"], cwd=h.work,
                 extra_env=dict(env, FORGE_FAULT_CRASH_RANK="1", FORGE_FAULT_CRASH_STEP="20"))
    info = c.wait_for(j, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"}, 180)
    h.check(info["JobState"] == "FAILED" and info.get("ExitCode", "0:0") != "0:0",
            f"a job whose rank dies ends {info['JobState']} with exit code {info.get('ExitCode')} "
            f"after {time.time() - start:.0f} s", out(j)[-3000:])
    h.check("injected fault: rank 1 dies" in out(j), "the dead rank is named in the log", out(j)[-2000:])

    # 4. srun without PMI: forge refuses before MPI starts (each task would train alone).
    p = c.run(["srun", "--mpi=none", "-n", "2", "-t", "2", h.forge, "train", cfg, "--set", "run.dir=nopmi"],
              cwd=h.work, timeout=120)
    h.check(p.returncode != 0 and "srun started 2 tasks" in p.stderr and "--mpi=pmix" in p.stderr,
            f"srun --mpi=none: every task refuses, saying how to launch (exit {p.returncode})", p.stderr[-1500:])
    h.check(not os.path.exists(h.path("nopmi")), "and nothing was written")

h.check(not subprocess.run(["pgrep", "-f", f"slurm.conf|{cluster.dir}"], capture_output=True).stdout.strip(),
        "every daemon the test started is gone")
h.finish()
