"""A real single-node Slurm on localhost for tests: munged, slurmctld and slurmd started as
root with their configuration, state, spool, sockets and logs in one temporary folder
(select/cons_tres, MpiDefault=pmix), and stopped again by their pids, whatever happens:
`with SlurmCluster() as c:` tears down on exceptions, and atexit plus SIGTERM/SIGINT
handlers cover the rest. Commands run against it with c.env (SLURM_CONF pointing at its
slurm.conf)."""
import atexit
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

PLUGIN_DIRS = ["/usr/lib/x86_64-linux-gnu/slurm-wlm", "/usr/lib/slurm-wlm", "/usr/lib64/slurm", "/usr/lib/slurm"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlurmUnavailable(Exception):
    pass


class SlurmCluster:
    def __init__(self, cpus=None, keep=False):
        for tool in ["munged", "slurmctld", "slurmd", "sbatch", "scontrol"]:
            if shutil.which(tool) is None:
                raise SlurmUnavailable(f"{tool} is not installed (apt-get install slurm-wlm munge)")
        if os.geteuid() != 0:
            raise SlurmUnavailable("slurmd must run as root")
        self.cpus = cpus or os.cpu_count()
        self.keep = keep
        self.dir = tempfile.mkdtemp(prefix="forge_slurm_")
        os.chmod(self.dir, 0o755)
        self.pids = {}
        self.host = socket.gethostname().split(".")[0]
        self.conf = os.path.join(self.dir, "slurm.conf")
        self.env = dict(os.environ, SLURM_CONF=self.conf)
        self._stopped = False

    # --- lifecycle -------------------------------------------------------------------------
    def __enter__(self):
        atexit.register(self.stop)
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)

            def handler(signum, frame, previous=previous):
                self.stop()
                if callable(previous):
                    previous(signum, frame)
                raise SystemExit(128 + signum)

            signal.signal(sig, handler)
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def start(self):
        for d in ["state", "spool", "log", "munge"]:
            os.makedirs(self.path(d), mode=0o700, exist_ok=True)
        # munge: its own key, socket and pid file, so a system munged (if any) is untouched.
        key = self.path("munge", "munge.key")
        with open(key, "wb") as f:
            f.write(os.urandom(1024))
        os.chmod(key, 0o400)
        sock = self.path("munge", "munge.socket")
        subprocess.run(["munged", "--force", f"--key-file={key}", f"--socket={sock}",
                        f"--pid-file={self.path('munge', 'munged.pid')}", f"--log-file={self.path('log', 'munged.log')}",
                        f"--seed-file={self.path('munge', 'munged.seed')}"], check=True, capture_output=True)
        self.pids["munged"] = self._read_pid(self.path("munge", "munged.pid"))
        plugins = next((d for d in PLUGIN_DIRS if os.path.isdir(d)), None)
        mem = self._memory_mb()
        with open(self.conf, "w") as f:
            f.write(f"""\
ClusterName=forgetest
SlurmctldHost={self.host}
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={sock}
{"PluginDir=" + plugins if plugins else ""}
StateSaveLocation={self.path('state')}
SlurmdSpoolDir={self.path('spool')}
SlurmctldPidFile={self.path('slurmctld.pid')}
SlurmdPidFile={self.path('slurmd.pid')}
SlurmctldLogFile={self.path('log', 'slurmctld.log')}
SlurmdLogFile={self.path('log', 'slurmd.log')}
SlurmctldDebug=info
SlurmdDebug=info
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=pmix
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={self.path('log', 'jobcomp.log')}
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
ReturnToService=2
JobRequeue=1
MinJobAge=600
KillWait=10
InactiveLimit=0
MessageTimeout=20
NodeName={self.host} CPUs={self.cpus} RealMemory={mem} State=UNKNOWN
PartitionName=test Nodes={self.host} Default=YES MaxTime=30 State=UP OverSubscribe=NO
""")
        subprocess.run(["slurmctld", "-f", self.conf], check=True, capture_output=True, env=self.env)
        self.pids["slurmctld"] = self._read_pid(self.path("slurmctld.pid"))
        subprocess.run(["slurmd", "-f", self.conf], check=True, capture_output=True, env=self.env)
        self.pids["slurmd"] = self._read_pid(self.path("slurmd.pid"))
        self._wait_idle()

    def stop(self):
        if self._stopped:
            return
        self._stopped = True
        try:
            subprocess.run(["scancel", "--full", "--user", "root"], env=self.env, capture_output=True, timeout=10)
        except Exception:
            pass
        # Every daemon this cluster started, by its pid: TERM, then KILL if it lingers.
        for name in ["slurmd", "slurmctld", "munged"]:
            pid = self.pids.get(name)
            if pid:
                self._kill(pid)
        # Job steps slurmd started run in their own sessions: whatever still runs under the
        # spool folder is ours.
        subprocess.run(["pkill", "-9", "-f", "slurmstepd"], capture_output=True)
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    # --- helpers -----------------------------------------------------------------------------
    def run(self, args, **kw):
        return subprocess.run(args, env=self.env, capture_output=True, text=True, **kw)

    def sbatch(self, args, cwd, extra_env=None):
        env = dict(self.env, **(extra_env or {}))
        p = subprocess.run(["sbatch", "--parsable", *args], cwd=cwd, env=env, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"sbatch failed: {p.stderr}")
        return p.stdout.strip().split(";")[0]

    def job(self, jobid):
        """scontrol show job, as a dict (empty once the job is forgotten)."""
        p = self.run(["scontrol", "show", "job", "-o", str(jobid)])
        fields = {}
        for m in re.finditer(r"(\w+)=(\S*)", p.stdout):
            fields.setdefault(m.group(1), m.group(2))
        return fields

    def wait_for(self, jobid, states, timeout):
        """Waits until the job's state is one of `states`; returns the job's fields."""
        deadline = time.time() + timeout
        info = {}
        while time.time() < deadline:
            info = self.job(jobid)
            if info.get("JobState") in states:
                return info
            time.sleep(0.5)
        raise TimeoutError(f"job {jobid} not in {states} after {timeout} s (last: {info.get('JobState')}, "
                           f"reason {info.get('Reason')})\n{self.logs()}")

    def logs(self, lines=30):
        out = []
        for name in ["slurmctld.log", "slurmd.log"]:
            try:
                with open(self.path("log", name)) as f:
                    out.append(f"--- {name}\n" + "".join(f.readlines()[-lines:]))
            except OSError:
                pass
        return "\n".join(out)

    def _wait_idle(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            p = self.run(["sinfo", "-h", "-N", "-o", "%t"])
            if p.returncode == 0 and p.stdout.strip() in ("idle", "idle~", "mix"):
                return
            time.sleep(0.5)
        raise RuntimeError(f"the node did not become idle within {timeout} s\n{self.logs()}")

    @staticmethod
    def _read_pid(path, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with open(path) as f:
                    return int(f.read().strip())
            except (OSError, ValueError):
                time.sleep(0.1)
        raise RuntimeError(f"no pid file {path}")

    @staticmethod
    def _kill(pid, grace=10):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.time() + grace
        while time.time() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    @staticmethod
    def _memory_mb():
        with open("/proc/meminfo") as f:
            kb = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1))
        return max(1, kb // 1024 - 1024)
