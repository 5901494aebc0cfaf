"""Several "hosts" on this machine: network + UTS namespaces, each with its own hostname and
an address on a private bridge that only these namespaces share, so that Open MPI's ranks on
different hosts talk over TCP as they would between nodes. Open MPI starts the remote ranks
through its rsh agent setting: a small script that enters the host's namespaces instead of
ssh. Needs root. stop() kills whatever runs in the namespaces and their holders; if the
test process dies without it (kill -9), each holder notices within a second, kills every
process left in its namespace and ends, and the kernel removes the namespaces.

Traffic goes only to the addresses of the namespaces made here."""
import os
import shutil
import signal
import subprocess
import tempfile
import time

SUBNET = "10.77.0"  # private to the namespaces: nothing outside them has these addresses


# A holder keeps its namespaces alive while the test process lives; when that process is
# gone, it kills everything left in its network namespace (ranks, Open MPI daemons) and ends.
HOLDER = """hostname {name}; ip link set lo up; {setup}
while kill -0 $PPID 2>/dev/null; do sleep 1; done
me=$(readlink /proc/$$/ns/net)
for p in /proc/[0-9]*; do
  pid=${{p#/proc/}}
  [ "$pid" != $$ ] && [ "$(readlink $p/ns/net 2>/dev/null)" = "$me" ] && kill -9 "$pid" 2>/dev/null
done
rm -rf {dir}
"""


def why_not_available():
    """None when namespaces can be made here, else the reason (for a skip)."""
    if os.geteuid() != 0:
        return "needs root (network and UTS namespaces, veth links)"
    for tool in ("unshare", "nsenter", "ip", "mpirun", "setpriv"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    probe = subprocess.run(["unshare", "--net", "--uts", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot make namespaces here: {probe.stderr.strip()}"
    return None


class NetnsHosts:
    def __init__(self, count, tag="forge"):
        self.count, self.tag = count, tag
        self.names = [f"{tag}-node{i}" for i in range(count)]
        self.addresses = [f"{SUBNET}.{i + 1}" for i in range(count)]
        self.dir = tempfile.mkdtemp(prefix=f"{tag}-hosts-")
        self.holders = []  # the switch first, then one per host
        self.agent = os.path.join(self.dir, "agent.sh")

    # -- set up and tear down ---------------------------------------------------------
    def _holder(self, hostname, setup):
        p = subprocess.Popen(["unshare", "--net", "--uts", "--", "sh", "-c",
                              HOLDER.format(name=hostname, setup=setup, dir=self.dir)])
        self.holders.append(p)
        return p

    def _in(self, pid, *cmd):
        subprocess.run(["nsenter", "-t", str(pid), "-n", "-u", "--", *cmd], check=True)

    def start(self):
        switch = self._holder(f"{self.tag}-switch", "ip link add br0 type bridge && ip link set br0 up")
        hosts = [self._holder(name, "") for name in self.names]
        time.sleep(0.3)  # the holders have unshared and set their names
        for i, host in enumerate(hosts):
            self._in(switch.pid, "ip", "link", "add", f"p{i}", "type", "veth", "peer", "name", f"h{i}")
            self._in(switch.pid, "ip", "link", "set", f"h{i}", "netns", str(host.pid))
            self._in(switch.pid, "ip", "link", "set", f"p{i}", "master", "br0", "up")
            self._in(host.pid, "ip", "link", "set", f"h{i}", "name", "eth0")
            self._in(host.pid, "ip", "addr", "add", f"{self.addresses[i]}/24", "dev", "eth0")
            self._in(host.pid, "ip", "link", "set", "eth0", "up")
        with open(self.agent, "w") as f:
            f.write("#!/bin/sh\n# Open MPI's rsh agent: [options] HOST COMMAND... -> the host's namespaces\n"
                    "while [ \"${1#-}\" != \"$1\" ]; do shift; done\n"
                    "host=\"$1\"; shift\ncase \"$host\" in\n")
            for addr, name, holder in zip(self.addresses, self.names, hosts):
                f.write(f"  {addr}|{name}) pid={holder.pid} ;;\n")
            f.write("  *) echo \"agent: no host $host here\" >&2; exit 255 ;;\nesac\n"
                    "# As ssh would: a fresh environment (what the ranks need comes with mpirun -x).\n"
                    "exec nsenter -t \"$pid\" -n -u -- env -i PATH=\"$PATH\" HOME=\"$HOME\" "
                    "${OMPI_ALLOW_RUN_AS_ROOT:+OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1} "
                    "sh -c \"$*\"\n")
        os.chmod(self.agent, 0o755)
        return self

    def stop(self):
        # Whatever still runs in the hosts' namespaces (ranks, Open MPI daemons) goes first.
        for pid in self.processes_in_hosts():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in self.holders:
            p.kill()
            p.wait()
        self.holders = []
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- use ----------------------------------------------------------------------------
    def host_pid(self, i):
        return self.holders[1 + i].pid

    def netns_of(self, pid):
        try:
            return os.readlink(f"/proc/{pid}/ns/net")
        except OSError:
            return None

    def processes_in_hosts(self, name_contains=None):
        """Pids of processes inside the hosts' namespaces (not the holders nor their sleeps)."""
        nets = {self.netns_of(p.pid): i for i, p in enumerate(self.holders[1:])}
        holders = {p.pid for p in self.holders}
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in holders or self._parent(entry) in holders:
                continue  # a holder, or its `sleep`
            if self.netns_of(entry) not in nets:
                continue
            if name_contains is not None:
                try:
                    with open(f"/proc/{entry}/cmdline", "rb") as f:
                        if name_contains not in f.read().replace(b"\0", b" ").decode(errors="replace"):
                            continue
                except OSError:
                    continue
            found.append(int(entry))
        return found

    @staticmethod
    def _parent(pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                return int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return None

    def host_of(self, pid):
        """The index of the host whose namespace `pid` runs in, or None."""
        nets = {self.netns_of(p.pid): i for i, p in enumerate(self.holders[1:])}
        return nets.get(self.netns_of(pid))

    def hostfile(self, slots):
        path = os.path.join(self.dir, f"hosts-{slots}")
        with open(path, "w") as f:
            for addr in self.addresses:
                f.write(f"{addr} slots={slots}\n")
        return path

    def mca_env(self):
        """Open MPI settings for these hosts, as environment variables (how a launcher script
        that does not know them, like launch/mpirun.sh, passes them on)."""
        return {"OMPI_MCA_plm_rsh_agent": self.agent, "OMPI_MCA_oob_tcp_if_include": "eth0",
                "OMPI_MCA_btl_tcp_if_include": "eth0", "OMPI_MCA_mpi_yield_when_idle": "1"}

    def launch(self, per_host, script, args):
        """The command line that runs forge's launcher `script` (launch/mpirun.sh) on host 0
        with a hostfile of `per_host` slots on each host: `script -n N --hostfile H args`."""
        env = [f"{k}={v}" for k, v in self.mca_env().items()]
        return ["setpriv", "--pdeathsig", "KILL", "--", "nsenter", "-t", str(self.host_pid(0)), "-n", "-u", "--",
                "env", *env, script, "-n", str(self.count * per_host), "--hostfile", self.hostfile(per_host), *args]

    def mpirun(self, per_host, args, hosts=None, extra=()):
        """The command line that starts `args` on `per_host` ranks of each of the first
        `hosts` hosts (default all), mpirun itself running on host 0."""
        hosts = hosts or self.count
        # setpriv: mpirun dies with the test process, however that ends.
        return ["setpriv", "--pdeathsig", "KILL", "--", "nsenter", "-t", str(self.host_pid(0)), "-n", "-u", "--",
                "mpirun", "--hostfile", self.hostfile(per_host), "-np", str(hosts * per_host),
                "--map-by", f"ppr:{per_host}:node", "--bind-to", "none",
                "--mca", "plm_rsh_agent", self.agent,
                "--mca", "oob_tcp_if_include", "eth0", "--mca", "btl_tcp_if_include", "eth0",
                # More ranks than cores on this machine: a rank that waits must give the CPU
                # to the kernel's network processing (the veth links), as on any
                # oversubscribed node.
                "--mca", "mpi_yield_when_idle", "1",
                "-x", "FORGE_TERMINAL=0", *extra, *args]
