"""When a job hangs, rank 0 names the rank that held it up, what it was doing and the
collective the others waited in, prints a line per rank, writes RUN_DIR/hang-report.json and
ends the job with exit 3 within the deadline + 10 s. One injected fault per run, each the
kind users meet: a rank slow in evaluation, a rank stuck in a forward (the reporting rank
itself), a rank frozen inside a collective (as a dead node or NIC looks), a replica that
drifts; then what must not trip it, and the straggler report."""
import json
import os
import re
import subprocess
import time

from harness import Harness, forge_processes, small_config

h = Harness()
h.run(["data", "synthetic", "--out", "syn.h5", "--samples", "20000", "--features", "16", "--classes", "4"])
TIMEOUT_S = 3
cfg = small_config(h, "small.yaml", "syn.h5", "run", epochs=30, timeout_s=TIMEOUT_S)


def run_fault(name, env, ranks=2, extra=()):
    """Runs the job with the fault's variables; returns (exit code, output, seconds from the
    fault's first line to the job's end)."""
    run_dir = f"run.dir={name}"
    full = dict(os.environ, **env)
    mpirun_args = [a for k in env for a in ("-x", k)]
    cmd = h.command(["train", cfg, "--set", run_dir, *extra], ranks=ranks, mpirun_args=mpirun_args)
    proc = subprocess.Popen(cmd, cwd=h.work, env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, fault_at = [], None
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        lines.append(line)
        if fault_at is None and "injected fault" in line:
            fault_at = time.monotonic()
        if time.monotonic() > deadline:
            proc.kill()
            break
    proc.wait()
    took = time.monotonic() - fault_at if fault_at else float("inf")
    out = "".join(lines)
    print(f"$ {name}: exit {proc.returncode}, {took:.1f} s after the fault")
    h.check(forge_processes(run_dir) == [], f"{name}: no rank is left running")
    return proc.returncode, out, took


def report(name):
    path = h.path(name, "hang-report.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def check_verdict(name, rc, out, took, pattern, culprit, phase):
    h.check(rc == 3, f"{name}: exit 3 (got {rc})", out[-3000:])
    h.check(took < TIMEOUT_S + 10, f"{name}: ends within the deadline + 10 s of the fault ({took:.1f} s)")
    m = re.search(r"\[rank 0\] \[hang\] " + pattern, out)
    h.check(m is not None, f"{name}: rank 0's verdict matches /{pattern}/", out[-3000:])
    h.check(re.search(r"\[hang\]\s+rank\s+host\s+phase\s+for", out) is not None, f"{name}: a line per rank follows")
    r = report(name)
    h.check(r is not None, f"{name}: hang-report.json is written")
    if r is None or m is None:
        return
    h.check(r["culprits"] == [culprit], f"{name}: the report names rank {culprit} ({r['culprits']})", r)
    if phase is not None:  # a frozen rank's is whatever its last report said
        h.check(r["ranks"][culprit].get("phase") == phase, f"{name}: rank {culprit}'s phase is {phase}", r["ranks"])
    h.check(m.group(0).split("[hang] ", 1)[1] in r["verdict"] or r["verdict"] in out,
            f"{name}: the report's verdict is the printed one", r["verdict"])
    if "op" in m.groupdict():
        h.check(r["collective"] == {"op": m.group("op"), "seq": int(m.group("seq"))},
                f"{name}: the report's collective is the verdict's ({r['collective']})")


# 1. Of 3 ranks, rank 2 sleeps in evaluation: the others wait for it at the end of the epoch.
rc, out, took = run_fault("eval", {"FORGE_FAULT_HANG_RANK": "2", "FORGE_FAULT_HANG_PHASE": "evaluation"}, ranks=3)
check_verdict("eval", rc, out, took,
              r"rank 2 on \S+ never entered (?P<op>\w+) #(?P<seq>\d+): it has been in evaluation for [\d.]+ s",
              2, "evaluation")

# 2. Rank 0, the one that reports, is stuck in a forward (a user model that blocks): its
#    watchdog thread still hears rank 1 time out and gives the verdict against itself.
rc, out, took = run_fault("forward", {"FORGE_FAULT_HANG_RANK": "0", "FORGE_FAULT_HANG_PHASE": "forward",
                                      "FORGE_FAULT_HANG_STEP": "20"})
check_verdict("forward", rc, out, took,
              r"rank 0 on \S+ never entered (?P<op>\w+) #(?P<seq>\d+): it has been in forward for [\d.]+ s",
              0, "forward")

# 3. Rank 1 freezes (SIGSTOP: every thread, its watchdog too) inside an all-reduce, as a rank
#    whose node or network dies mid-collective. Rank 0 is slowed a little so that rank 1 has
#    reported from the training loop before it freezes.
rc, out, took = run_fault("frozen", {"FORGE_FAULT_FREEZE_RANK": "1", "FORGE_FAULT_FREEZE_STEP": "400",
                                     "FORGE_FAULT_SLOW_RANK": "0", "FORGE_FAULT_SLOW_MS": "3"})
check_verdict("frozen", rc, out, took,
              r"rank 1 on \S+ stopped responding: nothing heard from it for [\d.]+ s, while the others wait in "
              r"(?P<op>allReduce) #(?P<seq>\d+)", 1, None)

# 4. Rank 1's parameters drift after step 5; the replica check every 4 steps stops the job at
#    step 8, naming the rank and the first parameter that differs (with 2 ranks, which side
#    drifted cannot be told, and the message says so); with 3 ranks the odd one out is named,
#    even when it is rank 0.
rc, out, took = run_fault("drift", {"FORGE_FAULT_PERTURB_RANK": "1", "FORGE_FAULT_PERTURB_STEP": "5"},
                          extra=["--set", "distributed.verify_every_steps=4"])
h.check(rc == 3, f"drift: exit 3 (got {rc})", out[-3000:])
h.check(took < TIMEOUT_S + 10, f"drift: ends within the deadline + 10 s of the fault ({took:.1f} s)")
h.check(re.search(r"\[rank 0\] replicas differ after global step 8: 1 rank\(s\) differ from rank 0 \(no majority "
                  r"among the 2 ranks[^)]*\) \(rank 1 first in fc1\.weight\)", out) is not None,
        "drift: the message names the step, rank 1 and fc1.weight", out[-3000:])
rc, out, took = run_fault("drift3", {"FORGE_FAULT_PERTURB_RANK": "0", "FORGE_FAULT_PERTURB_STEP": "5"}, ranks=3,
                          extra=["--set", "distributed.verify_every_steps=4"])
h.check(rc == 3 and re.search(r"replicas differ after global step 8: 1 rank\(s\) differ from rank 1 and the 2 "
                              r"rank\(s\) that agree with it \(rank 0 first in fc1\.weight\)", out) is not None,
        f"drift3: of 3 ranks, rank 0 is named as the one that drifted (exit {rc})", out[-3000:])

# 4b. A rank late past the deadline by less than a report period: by the time the verdict
#     is made it may already have entered the collective, and it is still the one named.
for late in ("0.4", "0.8"):
    name = f"late{late}"
    rc, out, took = run_fault(name, {"FORGE_FAULT_HANG_RANK": "2", "FORGE_FAULT_HANG_PHASE": "evaluation",
                                     "FORGE_FAULT_HANG_SECONDS": str(TIMEOUT_S + float(late))}, ranks=3)
    r = report(name)
    h.check(rc == 3 and r is not None and r["culprits"] == [2],
            f"{name}: rank 2, late by {late} s past the deadline, is the one named (exit {rc}, "
            f"culprits {r and r['culprits']})", out[-2500:])

# 5. What must not trip it: a rank that sleeps in evaluation for half the deadline, and a
#    replica check at every step. The run completes, replicas identical, no report.
rc, out, took = run_fault("slow-eval", {"FORGE_FAULT_HANG_RANK": "1", "FORGE_FAULT_HANG_PHASE": "evaluation",
                                        "FORGE_FAULT_HANG_SECONDS": str(TIMEOUT_S / 2)},
                          extra=["--set", "run.epochs=2", "--set", "distributed.verify_every_steps=1"])
h.check(rc == 0, f"slow-eval: a rank slower than its peers but within the deadline completes (exit {rc})",
        out[-3000:])
h.check("[hang]" not in out and report("slow-eval") is None, "slow-eval: no verdict, no report")

# 6. The straggler report: rank 1 is 5 ms slower in every forward; the summary and
#    summary.json name it as the slowest, with the others' share of waiting.
rc, out, took = run_fault("straggler", {"FORGE_FAULT_SLOW_RANK": "1", "FORGE_FAULT_SLOW_MS": "5"},
                          extra=["--set", "run.epochs=1"])
h.check(rc == 0, f"straggler: completes (exit {rc})", out[-3000:])
h.check(re.search(r"slowest rank\s+rank 1 on \S+: busy [\d.]+ ms per step", out) is not None,
        "straggler: the summary names rank 1 as the slowest", out[-3000:])
with open(h.path("straggler", "summary.json")) as f:
    summary = json.load(f)
slowest = summary.get("slowest_rank", {})
h.check(slowest.get("rank") == 1, f"straggler: summary.json's slowest rank is 1 ({slowest})")
h.check(slowest.get("others_waiting_share", 0) > 0.3,
        f"straggler: rank 0 spends most of its steps waiting ({slowest.get('others_waiting_share')})")
ranks = summary.get("ranks", [])
h.check(len(ranks) == 2 and ranks[1]["busy_seconds"] > ranks[0]["busy_seconds"] + 0.004,
        "straggler: summary.json has each rank's step, busy and waiting times", ranks)

# 7. With distributed.watchdog off, a stall still ends at the deadline (exit 3), without a verdict.
rc, out, took = run_fault("no-watchdog", {"FORGE_FAULT_HANG_RANK": "1", "FORGE_FAULT_HANG_PHASE": "forward"},
                          extra=["--set", "distributed.watchdog=false"])
h.check(rc == 3 and "timeout in" in out and "[hang]" not in out,
        f"no-watchdog: the deadline alone ends the job (exit {rc}), no verdict", out[-2000:])

h.finish()
