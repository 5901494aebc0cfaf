"""Launch mistakes refused before any work, and the node's allotment respected: the real
forge binary started the wrong way (torchrun's variables, srun's without PMI), two jobs on
one run dir, ranks that run different builds or read different configs; intra-op threads
from the affinity mask, OMP_NUM_THREADS and SLURM_CPUS_PER_TASK; an HDF5 file that another
process holds locked (as an NFS server's lock manager would refuse) still read."""
import fcntl
import os
import re
import subprocess
import time

from harness import Harness, small_config, forge_processes

h = Harness()
h.run(["data", "synthetic", "--out", "syn.h5", "--samples", "800", "--features", "16", "--classes", "4"])
cfg = small_config(h, "small.yaml", "syn.h5", "runs/base", epochs=1)


def env_run(args, env, expect_rc=None, prefix=()):
    proc = subprocess.run([*prefix, h.forge, *args], cwd=h.work, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})
    print(f"$ {' '.join(f'{k}={v}' for k, v in env.items())} {' '.join(prefix)} forge {' '.join(args)}"
          f"  -> exit {proc.returncode}")
    return proc


# 1. torchrun's variables: every process would train alone.
p = env_run(["train", cfg, "--set", "run.dir=runs/torchrun"], {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"})
h.check(p.returncode == 2, f"started with WORLD_SIZE=2 but alone in MPI: exit 2 (got {p.returncode})")
h.check("WORLD_SIZE=2" in p.stderr and "mpirun -np N" in p.stderr, "the message names the mistake and how to launch",
        p.stderr)
h.check(not os.path.exists(h.path("runs", "torchrun")), "nothing was written")
p = env_run(["train", cfg, "--set", "run.dir=runs/ws1", "--set", "run.epochs=1"], {"WORLD_SIZE": "1", "RANK": "0"})
h.check(p.returncode == 0, f"WORLD_SIZE=1 on 1 rank is no mistake (exit {p.returncode})", p.stderr[-800:])

p = env_run(["train", cfg, "--set", "run.dir=runs/mpich"], {"PMI_SIZE": "2", "PMI_RANK": "1"})
h.check(p.returncode == 2 and "PMI_SIZE=2" in p.stderr and "MPICH" in p.stderr,
        f"started by another MPI's mpiexec (PMI_SIZE=2), alone in MPI: exit 2 naming it ({p.returncode})", p.stderr)

# 2. srun without PMI: N one-rank jobs.
p = env_run(["train", cfg, "--set", "run.dir=runs/srun"], {"SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": "2",
                                                            "SLURM_NTASKS": "4", "SLURM_JOB_ID": "77"})
h.check(p.returncode == 2, f"srun's 4 tasks, alone in MPI: exit 2 (got {p.returncode})")
h.check("srun started 4 tasks" in p.stderr and "--mpi=pmix" in p.stderr and "MPI_Init" not in p.stderr,
        "forge's message, before MPI starts, says to give srun PMI",
        p.stderr)

# 3. Two jobs on one run dir: the second is refused, naming the first's host and pid.
long_cfg = small_config(h, "long.yaml", "syn.h5", "runs/shared", epochs=400)
first = subprocess.Popen(h.command(["train", long_cfg], ranks=2), cwd=h.work, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
deadline = time.time() + 60
while time.time() < deadline and not os.path.exists(h.path("runs", "shared", "metrics.jsonl")):
    time.sleep(0.2)
holder = forge_processes(long_cfg)
p = h.run(["train", long_cfg, "--resume", "auto"], ranks=2, expect_rc=None)
h.check(p.returncode == 2, f"a second job on the same run dir: exit 2 (got {p.returncode})", p.stdout + p.stderr)
m = re.search(r"in use by another job \(forge on host (\S+), pid (\d+)", p.stderr)
h.check(m is not None and int(m.group(2)) in holder,
        f"the message names the running job's host and pid (running: {holder})", p.stderr[-1500:])
h.check(first.poll() is None, "the first job keeps training")
first.kill()
first.communicate()
time.sleep(1)
p = h.run(["train", long_cfg, "--resume", "auto", "--set", "run.epochs=1"], ranks=2, expect_rc=None)
h.check("in use by another" not in p.stderr, "a killed job leaves no lock behind (the OS released it)",
        p.stderr[-1500:])

# A run dir moved away under a running job: the job stops at its next save instead of
# writing a new folder at the old path (where another job could now lock and write).
moved_cfg = small_config(h, "moved.yaml", "syn.h5", "runs/moved", epochs=400)
job = subprocess.Popen(h.command(["train", moved_cfg, "--set", "checkpoint.every_steps=5"], ranks=2), cwd=h.work,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
deadline = time.time() + 60
while time.time() < deadline and not os.path.exists(h.path("runs", "moved", "metrics.jsonl")):
    time.sleep(0.2)
os.rename(h.path("runs", "moved"), h.path("runs", "moved.away"))
try:
    out, _ = job.communicate(timeout=60)
except subprocess.TimeoutExpired:
    job.kill()
    out, _ = job.communicate()
h.check(job.returncode == 2 and "was moved, renamed or deleted while this job ran" in out,
        f"a run dir renamed under the job: it stops with exit 2 at its next save ({job.returncode})", out[-1500:])
h.check(not os.path.exists(h.path("runs", "moved", "checkpoints")), "no checkpoint was written at the old path")
os.makedirs(h.path("runs", "sym"))
with open(h.path("victim.txt"), "w") as f:
    f.write("keep me\n")
os.symlink(h.path("victim.txt"), h.path("runs", "sym", ".forge.lock"))
p = env_run(["train", cfg, "--set", "run.dir=runs/sym"], {})
h.check(p.returncode == 2 and "symbolic link" in p.stderr, f"a lock file that is a symlink is refused ({p.returncode})",
        p.stderr[-800:])
h.check(open(h.path("victim.txt")).read() == "keep me\n", "and its target is untouched")

# 4. Ranks that disagree on the build or the config (mpirun's MPMD form: one program each).
other = small_config(h, "other.yaml", "syn.h5", "runs/mpmd", epochs=1, extra="schedule:\n  name: cosine\n")
same = small_config(h, "same.yaml", "syn.h5", "runs/mpmd", epochs=1)
mpmd = [h.mpirun, "--oversubscribe", "-np", "1", h.forge, "train", same, ":", "-np", "1", h.forge, "train", other]
p = subprocess.run(mpmd, cwd=h.work, capture_output=True, text=True, timeout=120)
print(f"$ mpirun -np 1 forge train same.yaml : -np 1 forge train other.yaml  -> exit {p.returncode}")
h.check(p.returncode == 2, f"ranks reading different configs: exit 2 (got {p.returncode})")
h.check("disagree on the config" in p.stderr and "rank 0 (" in p.stderr and "rank 1 (" in p.stderr,
        "the message names the ranks and their hosts", p.stderr[-1500:])
h.check(re.search(r"first difference, line \d+: rank 0 has `[^`]*`, rank 1 has `schedule:`", p.stderr) is not None,
        "and the first line where rank 1's config differs", p.stderr[-1500:])
mpmd = [h.mpirun, "--oversubscribe", "-np", "1", h.forge, "train", same, ":", "-np", "1", h.forge, "doctor"]
p = subprocess.run(mpmd, cwd=h.work, capture_output=True, text=True, timeout=120)
h.check(p.returncode == 2 and "disagree on the command" in p.stderr,
        f"ranks running different commands (train : doctor): exit 2, not a hang ({p.returncode})", p.stderr[-1000:])
mpmd = [h.mpirun, "--oversubscribe", "-np", "1", "-x", "FORGE_FAULT_VERSION=0.0.1-other", h.forge, "train", same,
        ":", "-np", "1", h.forge, "train", same]
p = subprocess.run(mpmd, cwd=h.work, capture_output=True, text=True, timeout=120)
print(f"$ mpirun -np 1 (another forge version) : -np 1 forge train same.yaml  -> exit {p.returncode}")
h.check(p.returncode == 2, f"ranks running different forge versions: exit 2 (got {p.returncode})")
h.check(re.search(r"disagree on forge's version: rank 0 \(\S+\) has 0\.0\.1-other; rank 1 \(\S+\) has", p.stderr)
        is not None, "the message names each rank's version", p.stderr[-1500:])
h.check(not os.path.exists(h.path("runs", "mpmd", "metrics.jsonl")), "no training happened")

# 5. Threads: the affinity mask, OMP_NUM_THREADS, SLURM_CPUS_PER_TASK, in that order of
# precedence reversed (each later one wins over the mask), never above the allowed cores.
threads = re.compile(r"(\d+) intra-op thread\(s\) per rank \(([^)]*)\)")


def threads_of(env, prefix=(), extra=()):
    proc = env_run(["train", cfg, "--set", f"run.dir=runs/t{len(os.listdir(h.path('runs')))}", *extra], env,
                   prefix=prefix)
    m = threads.search(proc.stdout + proc.stderr)
    return (int(m.group(1)), m.group(2)) if m else (None, proc.stdout[-500:] + proc.stderr[-500:])


cores = len(os.sched_getaffinity(0))
n, why = threads_of({})
h.check(n == cores and "CPU affinity" in why, f"alone: the {cores} core(s) of the affinity mask ({n}: {why})")
n, why = threads_of({}, prefix=("taskset", "-c", "0"))
h.check(n == 1 and "CPU affinity: 1 of" in why and "shared by 1 rank" in why, f"taskset -c 0: 1 thread ({n}: {why})")
n, why = threads_of({"OMP_NUM_THREADS": "1"})
h.check(n == 1 and why.startswith("OMP_NUM_THREADS"), f"OMP_NUM_THREADS=1: 1 thread ({n}: {why})")
n, why = threads_of({"SLURM_CPUS_PER_TASK": "1"})
h.check(n == 1 and why.startswith("SLURM_CPUS_PER_TASK"), f"SLURM_CPUS_PER_TASK=1: 1 thread ({n}: {why})")
p = env_run(["train", cfg, "--set", "run.dir=runs/omp-abc"], {"OMP_NUM_THREADS": "abc"})
h.check("OMP_NUM_THREADS='abc' is not a positive thread count: ignored" in p.stderr,
        "an OMP_NUM_THREADS that is no count is said and ignored", p.stderr[-800:])
n, why = threads_of({"OMP_NUM_THREADS": "1,1"})
h.check(n == 1 and why.startswith("OMP_NUM_THREADS"), f"OMP_NUM_THREADS=1,1 (OpenMP's list): its first entry ({n})")
n, why = threads_of({"OMP_NUM_THREADS": "64"}, prefix=("taskset", "-c", "0"))
h.check(n == 1 and "capped" in why, f"OMP_NUM_THREADS=64 on 1 allowed core: capped to 1 ({n}: {why})")
for bind, expect in (("none", f"shared by 2 ranks"), ("core", "1 of")):
    proc = subprocess.run(h.command(["train", cfg, "--set", f"run.dir=runs/two-{bind}"], ranks=2,
                                    mpirun_args=("--bind-to", bind)), cwd=h.work, capture_output=True, text=True,
                          timeout=120)
    m = threads.search(proc.stdout + proc.stderr)
    want = max(1, cores // 2) if bind == "none" else 1
    h.check(m is not None and int(m.group(1)) == want and expect in m.group(2),
            f"2 ranks, mpirun --bind-to {bind}: {want} thread(s) each ({m.group(0) if m else None})",
            proc.stdout[-800:])

# 6. HDF5 read without file locks: a data file another process holds an exclusive lock on
# (what a lock-refusing NFS/Lustre mount amounts to for HDF5's own locking) still trains.
with open(h.path("syn.h5"), "rb") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    p = env_run(["train", cfg, "--set", "run.dir=runs/locked"], {})
h.check(p.returncode == 0, f"a locked HDF5 file is read without HDF5's file locks (exit {p.returncode})",
        p.stderr[-800:])

# 7. forge doctor: a healthy pair, then the same causes named.
h.check(re.match(r"forge \S+ \(build [0-9a-f]{16}\)", h.run(["--version"]).stdout) is not None,
        "forge --version names the build it compares across ranks")
p = h.run(["doctor", cfg, "--seconds", "0.2"], ranks=2)
h.check("2 rank(s) on 1 host(s)" in p.stdout and "same host (shared memory)" in p.stdout
        and re.search(r"forge \(mpi\)\s+[0-9.]+ ms", p.stdout) is not None,
        "forge doctor reports the ranks, the link and the bucket all-reduce", p.stdout[-1500:])
p = h.run(["doctor", cfg, "--set", "run.device=cuda"], ranks=2, expect_rc=None)
h.check(p.returncode == 2 and "cuda" in p.stderr.lower(), f"doctor, a rank without the GPU the config asks for: "
        f"exit 2 naming it ({p.returncode})", p.stderr[-800:])
mpmd = [h.mpirun, "--oversubscribe", "-np", "1", "-x", "FORGE_FAULT_VERSION=0.0.1-other", h.forge, "doctor", ":",
        "-np", "1", h.forge, "doctor"]
p = subprocess.run(mpmd, cwd=h.work, capture_output=True, text=True, timeout=120)
h.check(p.returncode == 2 and "disagree on forge's version" in p.stderr,
        f"doctor, ranks with different versions: exit 2 naming them ({p.returncode})", p.stderr[-800:])

h.finish()
