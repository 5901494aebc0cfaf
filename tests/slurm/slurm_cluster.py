"""A real single-node Slurm on localhost for tests: munged, slurmctld and slurmd started as
root with their configuration, state, spool, sockets and logs in one temporary folder
(select/cons_tres, MpiDefault=pmix), and stopped again by their pids, whatever happens:
`with SlurmCluster() as c:` tears down on exceptions, and atexit plus SIGTERM/SIGINT
handlers cover the rest. Commands run against it with c.env (SLURM_CONF pointing at its
slurm.conf).

With hosts= (a started tests/cluster/netns_hosts.NetnsHosts) it is a multi-node cluster:
one slurmd per host namespace, each with that host's hostname and address (NodeName =
NodeHostname = the host's name, NodeAddr = its address; per-node pid file, spool and log
through %n), slurmctld in host 0's namespace, munged shared (its socket is a path, reached
from every network namespace). Slurm's clients must reach slurmctld on the hosts' bridge,
so c.run and c.sbatch run them inside host 0's namespaces."""
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
    def __init__(self, cpus=None, keep=False, hosts=None, requeue_delay_s=None):
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
        self.hosts = hosts
        self.host = hosts.names[0] if hosts else socket.gethostname().split(".")[0]
        self.nodes = list(hosts.names) if hosts else [self.host]
        # Slurm holds a requeued job for the job credential's lifetime (cred_expire, 120 s by
        # default) before it may start again; a shorter one keeps requeue tests short.
        self.requeue_delay_s = requeue_delay_s
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

    def _ns(self, i=0):
        """The command prefix that runs a command in node i's namespaces (nothing on localhost)."""
        if not self.hosts:
            return []
        return ["nsenter", "-t", str(self.hosts.host_pid(i)), "-n", "-u", "--"]

    def start(self):
        for d in ["state", "spool", "log", "munge"]:
            os.makedirs(self.path(d), mode=0o700, exist_ok=True)
        for node in self.nodes:
            os.makedirs(self.path("spool", node), mode=0o700, exist_ok=True)
            if self.hosts:
                os.makedirs(self.path("tmp", node), mode=0o1777, exist_ok=True)
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
        if self.hosts:
            ctl_host = f"{self.host}({self.hosts.addresses[0]})"
            # TmpFS per node too: the PMIx plugin makes its step's client folder
            # (spmix_appdir_UID_JOB.STEP) under it, and two nodes sharing one /tmp would collide.
            slurmd_paths = (f"SlurmdSpoolDir={self.path('spool', '%n')}\nSlurmdPidFile={self.path('slurmd-%n.pid')}\n"
                            f"SlurmdLogFile={self.path('log', 'slurmd-%n.log')}\nTmpFS={self.path('tmp', '%n')}")
            nodes = "\n".join(f"NodeName={n} NodeAddr={a} NodeHostname={n} CPUs={self.cpus} RealMemory={mem} "
                              f"State=UNKNOWN" for n, a in zip(self.nodes, self.hosts.addresses))
        else:
            ctl_host = self.host
            slurmd_paths = (f"SlurmdSpoolDir={self.path('spool')}\nSlurmdPidFile={self.path('slurmd.pid')}\n"
                            f"SlurmdLogFile={self.path('log', 'slurmd.log')}")
            nodes = f"NodeName={self.host} CPUs={self.cpus} RealMemory={mem} State=UNKNOWN"
        auth = f"socket={sock}" + (f",cred_expire={self.requeue_delay_s}" if self.requeue_delay_s else "")
        with open(self.conf, "w") as f:
            f.write(f"""\
ClusterName=forgetest
SlurmctldHost={ctl_host}
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo={auth}
{"PluginDir=" + plugins if plugins else ""}
StateSaveLocation={self.path('state')}
SlurmctldPidFile={self.path('slurmctld.pid')}
SlurmctldLogFile={self.path('log', 'slurmctld.log')}
{slurmd_paths}
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
{nodes}
PartitionName=test Nodes={",".join(self.nodes)} Default=YES MaxTime=30 State=UP OverSubscribe=NO
""")
        self._daemon("slurmctld", 0, self.path("slurmctld.pid"))
        for i, node in enumerate(self.nodes):
            pid_file = self.path(f"slurmd-{node}.pid") if self.hosts else self.path("slurmd.pid")
            self._daemon("slurmd", i, pid_file, name=f"slurmd-{node}" if self.hosts else "slurmd")
        self._wait_idle()

    def _daemon(self, prog, node, pid_file, name=None):
        p = subprocess.run([*self._ns(node), prog, "-f", self.conf], capture_output=True, text=True, env=self.env)
        if p.returncode != 0:
            raise RuntimeError(f"{prog} on {self.nodes[node]} did not start: {p.stderr}\n{self.logs()}")
        self.pids[name or prog] = self._read_pid(pid_file)

    def stop(self):
        if self._stopped:
            return
        self._stopped = True
        try:
            subprocess.run([*self._ns(0), "scancel", "--full", "--user", "root"], env=self.env, capture_output=True,
                           timeout=10)
        except Exception:
            pass
        # Every daemon this cluster started, by its pid: TERM, then KILL if it lingers.
        slurmds = [n for n in self.pids if n.startswith("slurmd")]
        for name in [*slurmds, "slurmctld", "munged"]:
            pid = self.pids.get(name)
            if pid:
                self._kill(pid)
        if self.hosts:
            # Job steps (slurmstepd and the tasks) ran inside the hosts' namespaces: whatever
            # still runs there is ours.
            for pid in self.hosts.processes_in_hosts():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        else:
            # Job steps slurmd started run in their own sessions: the slurmstepd processes
            # that carry this cluster's SLURM_CONF are ours (another test's cluster may be
            # running beside this one).
            for pid in self._own_stepds():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _own_stepds(self):
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if not f.read().startswith(b"slurmstepd"):
                        continue
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if f"SLURM_CONF={self.conf}".encode() not in f.read().split(b"\0"):
                        continue
            except OSError:
                continue
            found.append(int(entry))
        return found

    # --- helpers -----------------------------------------------------------------------------
    def run(self, args, **kw):
        return subprocess.run([*self._ns(0), *args], env=self.env, capture_output=True, text=True, **kw)

    def sbatch(self, args, cwd, extra_env=None):
        env = dict(self.env, **(extra_env or {}))
        p = subprocess.run([*self._ns(0), "sbatch", "--parsable", *args], cwd=cwd, env=env, capture_output=True, text=True)
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
        names = ["slurmctld.log", *([f"slurmd-{n}.log" for n in self.nodes] if self.hosts else ["slurmd.log"])]
        for name in names:
            try:
                with open(self.path("log", name)) as f:
                    out.append(f"--- {name}\n" + "".join(f.readlines()[-lines:]))
            except OSError:
                pass
        return "\n".join(out)

    def _wait_idle(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            p = self.run(["sinfo", "-h", "-N", "-o", "%N %t"])
            states = dict(line.split() for line in p.stdout.splitlines() if line.strip())
            if p.returncode == 0 and set(states) == set(self.nodes) and \
                    all(s in ("idle", "idle~", "mix") for s in states.values()):
                return
            time.sleep(0.5)
        raise RuntimeError(f"the nodes did not become idle within {timeout} s\n{self.logs()}")

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
