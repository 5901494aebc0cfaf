"""No silent hangs: a rank that stops responding makes its peers time out and the whole
job end, with a message naming the rank, the operation and its sequence number; a rank
killed with SIGKILL takes the whole job down."""
import os
import re
import signal
import subprocess
import time

from harness import Harness, forge_processes, small_config

h = Harness()
h.run(["data", "synthetic", "--out", "syn.h5", "--samples", "20000", "--features", "16", "--classes", "4"])
TIMEOUT_S = 3
cfg = small_config(h, "small.yaml", "syn.h5", "run", epochs=50, timeout_s=TIMEOUT_S)


# 1. Rank 1 stops responding at step 3 (test-only fault injection).
os.environ["FORGE_FAULT_STALL_RANK"] = "1"
os.environ["FORGE_FAULT_STALL_STEP"] = "3"
start = time.monotonic()
p = h.run(["train", cfg, "--set", "run.dir=stall"], ranks=2, expect_rc=None, timeout=TIMEOUT_S + 60,
          mpirun_args=["-x", "FORGE_FAULT_STALL_RANK", "-x", "FORGE_FAULT_STALL_STEP"])
took = time.monotonic() - start
del os.environ["FORGE_FAULT_STALL_RANK"], os.environ["FORGE_FAULT_STALL_STEP"]
h.check(p.returncode != 0, f"the job exits non-zero (exit {p.returncode})", p.stderr)
h.check(took < TIMEOUT_S + 30, f"within timeout + 30 s ({took:.1f} s)")
h.check("injected fault: rank 1 stops responding at step 3" in p.stderr, "the fault was injected", p.stderr)
m = re.search(r"\[rank 0\] timeout in (allReduce|broadcast) #\d+ after (\d+\.\d) s", p.stderr)
h.check(m is not None and abs(float(m.group(2)) - TIMEOUT_S) < 1.0,
        "rank 0 says: [rank 0] timeout in <op> #<sequence> after <t> s", p.stderr)
h.check(forge_processes("run.dir=stall") == [], "no rank is left running")

# 2. Rank 1 is killed with SIGKILL mid-training.
cmd = h.command(["train", cfg, "--set", "run.dir=killed"], ranks=2)
proc = subprocess.Popen(cmd, cwd=h.work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
pids = []
deadline = time.monotonic() + 60
while time.monotonic() < deadline and len(pids) < 2:
    time.sleep(0.5)
    pids = forge_processes("run.dir=killed")
time.sleep(2)  # let training get going
h.check(len(pids) == 2, f"two ranks are running ({pids})")
victim = max(pids)
os.kill(victim, signal.SIGKILL)
start = time.monotonic()
try:
    out, _ = proc.communicate(timeout=TIMEOUT_S + 30)
    took = time.monotonic() - start
    h.check(proc.returncode != 0, f"after kill -9 of one rank the job ends non-zero (exit {proc.returncode}, "
                                  f"{took:.1f} s)", out[-2000:])
except subprocess.TimeoutExpired:
    proc.kill()
    h.check(False, "after kill -9 of one rank the job ends (it hung)")
h.check(forge_processes("run.dir=killed") == [], "no survivor is left waiting")

h.finish()
