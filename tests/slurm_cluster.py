"""Start and stop a real, private, single-node SLURM cluster (slurmctld + slurmd + munged).

Used by ``tests/test_slurm.py``; also usable by hand::

    sudo .venv/bin/python tests/slurm_cluster.py          # starts, prints `export SLURM_CONF=...`,
                                                          # waits for Ctrl-C, then tears down

Everything lives in a scratch STATE_DIR: ``slurm.conf`` (from ``shared/slurm/slurm.conf.example``
when present, else the identical built-in template), a private munge key and socket, state,
spool, logs, pid files and the job-completion log ``jobcomp.txt``.  Nothing is written to
``/etc``: clients and daemons find the configuration through the ``SLURM_CONF`` environment
variable (exported by :meth:`SlurmCluster.env`), and ``AuthInfo=socket=...`` points SLURM at the
private munged.  Free TCP ports are chosen so that a second cluster (or a system one) does not
clash.  Teardown cancels the cluster's jobs and kills the three daemons by their pid files, also
when start-up failed half-way.

Needs root (SlurmUser=root) and the Debian packages ``slurmctld slurmd slurm-client munge``
(``scripts/install-slurm.sh``).  :func:`require_slurm` skips a test when they are missing, except
under CI (env ``CI`` set), where a missing SLURM is a failure.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import shlex
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
PARTITION = "debug"
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "scancel")
CLIENTS = ("srun", "sbatch", "squeue", "sinfo", "scontrol", "scancel", "sacct", "salloc")
SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")

# Same as shared/slurm/slurm.conf.example (checked working on this machine); used when that file
# is not beside the checkout.
_TEMPLATE = """\
ClusterName=local
SlurmctldHost=HOSTNAME
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=STATE_DIR/state
SlurmdSpoolDir=STATE_DIR/spool
SlurmctldPidFile=STATE_DIR/slurmctld.pid
SlurmdPidFile=STATE_DIR/slurmd.pid
SlurmctldLogFile=STATE_DIR/slurmctld.log
SlurmdLogFile=STATE_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=STATE_DIR/jobcomp.txt
ReturnToService=2
NodeName=HOSTNAME CPUs=NCPU RealMemory=MEM_MB State=UNKNOWN
PartitionName=debug Nodes=HOSTNAME Default=YES MaxTime=INFINITE State=UP
"""


def find_binary(name: str) -> str | None:
    """Path of a SLURM/munge executable (also looks in sbin dirs, which may not be on PATH)."""
    found = shutil.which(name)
    if found:
        return found
    for d in SBIN:
        cand = Path(d) / name
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    return None


def missing_binaries() -> list[str]:
    """Names of the SLURM/munge executables that are not installed."""
    return [b for b in BINARIES if find_binary(b) is None]


def require_slurm() -> None:
    """Skip the calling test when a local SLURM cannot be started; fail instead under CI.

    Not root -> skip (daemons must run as SlurmUser=root).  Binaries missing -> skip with the
    install command, unless env ``CI`` is set: CI installs them (``scripts/install-slurm.sh``)
    and must run the cluster tests.
    """
    import pytest

    ci = bool(os.environ.get("CI"))
    if os.geteuid() != 0:
        pytest.skip("SLURM cluster test needs root (slurmctld/slurmd run as SlurmUser=root)")
    missing = missing_binaries()
    if missing:
        msg = (f"SLURM/munge binaries not installed: {', '.join(missing)} "
               "(run scripts/install-slurm.sh as root)")
        if ci:
            pytest.fail(f"CI is set but {msg}")
        pytest.skip(msg)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mem_mb() -> int:
    """A little under the machine's memory (MB): 90 % of MemTotal, leaving room for the OS."""
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(int(line.split()[1]) / 1024 * 0.9)
    raise RuntimeError("MemTotal not found in /proc/meminfo")


def render_conf(state_dir: Path, hostname: str, ncpu: int, mem_mb: int,
                ctld_port: int, slurmd_port: int, munge_socket: Path,
                fake_gpus: int = 0, template: str | None = None) -> str:
    """slurm.conf text: the shared example with its placeholders filled in, plus private
    ports, the private munge socket and a loopback node address.

    ``fake_gpus > 0`` declares that many GPUs (GRES backed by /dev/null, see
    :func:`render_gres_conf`) on the node and adds a partition ``gpu`` on it, so that
    ``sbatch --gpus=N -p gpu`` is scheduled (jobs get CUDA_VISIBLE_DEVICES, no real device).
    """
    if template is None:
        shared = Path(os.environ.get("MATFUSE_SHARED", REPO.parent / "shared"))
        example = shared / "slurm" / "slurm.conf.example"
        template = example.read_text() if example.is_file() else _TEMPLATE
    text = (template.replace("STATE_DIR", str(state_dir))
            .replace("HOSTNAME", hostname)
            .replace("NCPU", str(ncpu))
            .replace("MEM_MB", str(mem_mb)))
    lines = []
    for line in text.splitlines():
        if line.startswith("SlurmctldHost="):
            line = f"SlurmctldHost={hostname}(127.0.0.1)"  # no DNS needed
        elif line.startswith("NodeName="):
            gres = f"Gres=gpu:{fake_gpus} " if fake_gpus else ""
            line = line.replace(f"NodeName={hostname} ",
                                f"NodeName={hostname} NodeAddr=127.0.0.1 {gres}", 1)
        lines.append(line)
    lines += [
        f"SlurmctldPort={ctld_port}",
        f"SlurmdPort={slurmd_port}",
        f"AuthInfo=socket={munge_socket}",
        # squeue must still see finished jobs when the executor polls (plugin needs >= 3x its
        # first status-check delay); 300 s is SLURM's default, stated here on purpose.
        "MinJobAge=300",
        "SlurmdTimeout=60",
        # jobs that request no memory get 1 GB per CPU instead of the whole node
        "DefMemPerCPU=1000",
    ]
    if fake_gpus:
        lines += ["GresTypes=gpu", f"PartitionName=gpu Nodes={hostname} MaxTime=INFINITE State=UP"]
    return "\n".join(lines) + "\n"


def render_gres_conf(hostname: str, fake_gpus: int) -> str:
    """gres.conf declaring ``fake_gpus`` GPUs backed by /dev/null (no autodetection)."""
    return f"AutoDetect=off\nNodeName={hostname} Name=gpu File=/dev/null Count={fake_gpus}\n"


@dataclass
class SlurmCluster:
    """A private single-node SLURM; :meth:`start` brings it up, :meth:`stop` tears it down."""

    state_dir: Path
    hostname: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    ncpu: int = field(default_factory=lambda: len(os.sched_getaffinity(0)))  # as `nproc`
    mem_mb: int = field(default_factory=_mem_mb)
    partition: str = PARTITION
    fake_gpus: int = 0
    start_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)
        self.conf = self.state_dir / "slurm.conf"
        self.munge_dir = self.state_dir / "munge"
        self.munge_socket = self.munge_dir / "munge.socket"
        self.jobcomp = self.state_dir / "jobcomp.txt"
        self.bin_dir = self.state_dir / "bin"
        self.pid_files = {
            "slurmd": self.state_dir / "slurmd.pid",
            "slurmctld": self.state_dir / "slurmctld.pid",
            "munged": self.munge_dir / "munged.pid",
        }

    # -- environment -------------------------------------------------------------------------
    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for SLURM clients (and Snakemake) that talks to this cluster.

        Besides ``SLURM_CONF``, ``STATE_DIR/bin`` goes first on PATH: it holds wrappers of the
        client commands that set ``SLURM_CONF`` themselves, because inside a job the Snakemake
        jobstep executor removes every ``SLURM_*`` variable (SLURM_CONF included) before its
        nested ``srun``, which would then look for /etc/slurm/slurm.conf.
        """
        env = dict(os.environ if base is None else base)
        env["SLURM_CONF"] = str(self.conf)
        path = env.get("PATH", "")
        for d in SBIN:
            if d not in path.split(":"):
                path = f"{path}:{d}" if path else d
        env["PATH"] = f"{self.bin_dir}:{path}"
        for var in [k for k in env if k.startswith("SLURM_") and k != "SLURM_CONF"]:
            env.pop(var)  # never inherit an outer job's context
        return env

    def run(self, *cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a SLURM client command against this cluster."""
        exe = find_binary(cmd[0]) or cmd[0]
        return subprocess.run([exe, *cmd[1:]], env=self.env(), capture_output=True, text=True,
                              check=check, timeout=timeout)

    # -- start ------------------------------------------------------------------------------------
    def _write_files(self) -> None:
        for d in (self.state_dir, self.state_dir / "state", self.state_dir / "spool", self.munge_dir):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o700)
        key = self.munge_dir / "munge.key"
        with open(key, "wb") as fh:
            fh.write(os.urandom(1024))
        os.chmod(key, 0o400)
        self.conf.write_text(render_conf(self.state_dir, self.hostname, self.ncpu, self.mem_mb,
                                         _free_port(), _free_port(), self.munge_socket,
                                         fake_gpus=self.fake_gpus))
        if self.fake_gpus:  # read from the folder of slurm.conf
            (self.state_dir / "gres.conf").write_text(render_gres_conf(self.hostname, self.fake_gpus))
        self.jobcomp.touch()
        self.bin_dir.mkdir(exist_ok=True)
        for name in CLIENTS:
            exe = find_binary(name)
            if exe:
                wrapper = self.bin_dir / name
                wrapper.write_text(f'#!/bin/sh\nSLURM_CONF={shlex.quote(str(self.conf))} '
                                   f'exec {shlex.quote(exe)} "$@"\n')
                os.chmod(wrapper, 0o755)

    def _daemon(self, *cmd: str) -> None:
        exe = find_binary(cmd[0])
        if exe is None:
            raise RuntimeError(f"{cmd[0]} is not installed")
        proc = subprocess.run([exe, *cmd[1:]], env=self.env(), capture_output=True, text=True,
                              timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed to start (rc={proc.returncode}): "
                               f"{proc.stdout}{proc.stderr}\n{self.logs_tail()}")

    def start(self) -> "SlurmCluster":
        """Write the configuration and start munged, slurmctld, slurmd; wait for an idle node."""
        self._write_files()
        self._daemon("munged", "--force", f"--socket={self.munge_socket}",
                     f"--key-file={self.munge_dir / 'munge.key'}",
                     f"--pid-file={self.pid_files['munged']}",
                     f"--log-file={self.munge_dir / 'munged.log'}",
                     f"--seed-file={self.munge_dir / 'munged.seed'}")
        self._wait_for(lambda: self.munge_socket.exists(), "munged socket")
        # -c: clean start (ignore saved state); -f: our config file
        self._daemon("slurmctld", "-c", "-f", str(self.conf))
        self._wait_for(lambda: "UP" in self.run("scontrol", "ping", check=False).stdout,
                       "slurmctld to answer `scontrol ping`")
        self._daemon("slurmd", "-f", str(self.conf))
        self._wait_for(self.node_idle, f"node {self.hostname} to be idle in sinfo")
        log.info("SLURM up: SLURM_CONF=%s (%d CPUs, %d MB)", self.conf, self.ncpu, self.mem_mb)
        return self

    def node_idle(self) -> bool:
        """True when ``sinfo`` reports this cluster's node as idle."""
        proc = self.run("sinfo", "-h", "-N", "-o", "%N %t", check=False)
        return proc.returncode == 0 and any(
            line.split()[1:] == ["idle"] for line in proc.stdout.splitlines() if line.strip())

    def _wait_for(self, cond, what: str) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            try:
                if cond():
                    return
            except (OSError, subprocess.SubprocessError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"timed out after {self.start_timeout_s:.0f} s waiting for {what}\n"
                           f"{self.logs_tail()}")

    # -- inspect ----------------------------------------------------------------------------------
    def completed_jobs(self) -> list[dict[str, str]]:
        """Records of finished jobs from the jobcomp/filetxt log (one dict per job)."""
        out = []
        if not self.jobcomp.exists():
            return out
        for line in self.jobcomp.read_text().splitlines():
            rec = {}
            for tok in line.split():
                if "=" in tok:
                    k, v = tok.split("=", 1)
                    rec[k] = v
            if rec:
                out.append(rec)
        return out

    def logs_tail(self, n: int = 2000) -> str:
        """The end of each daemon log, for error messages."""
        parts = []
        for name in ("munge/munged.log", "slurmctld.log", "slurmd.log"):
            p = self.state_dir / name
            if p.exists():
                parts.append(f"--- {p} ---\n{p.read_text(errors='replace')[-n:]}")
        return "\n".join(parts)

    # -- stop -------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Cancel this cluster's jobs, then stop slurmd, slurmctld and munged by their pid files."""
        if self.conf.exists() and self.pid_files["slurmctld"].exists():
            with contextlib.suppress(Exception):
                self.run("scancel", "--user", str(os.geteuid()), check=False, timeout=15)
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    q = self.run("squeue", "-h", "-t", "PD,R,CG,CF", "-o", "%i", check=False, timeout=10)
                    if q.returncode != 0 or not q.stdout.strip():
                        break
                    time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            _kill_pidfile(self.pid_files[name], name)


def _kill_pidfile(pid_file: Path, name: str, timeout: float = 15.0) -> None:
    """SIGTERM the process named in ``pid_file`` (if it is ``name``), SIGKILL after ``timeout``."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return  # already gone
    if comm != name[:15]:
        log.warning("pid %d from %s is %r, not %s: not killing it", pid, pid_file, comm, name)
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def slurm_cluster(state_dir: str | os.PathLike[str] | None = None,
                  fake_gpus: int = 0) -> Iterator[SlurmCluster]:
    """Context manager: a started :class:`SlurmCluster`, always torn down on exit.

    ``state_dir`` defaults to a fresh short directory under /tmp (unix-socket paths must stay
    under ~100 characters); it is removed afterwards unless given by the caller.
    """
    own = state_dir is None
    path = Path(tempfile.mkdtemp(prefix="matfuse-slurm-")) if own else Path(state_dir)
    cluster = SlurmCluster(path, fake_gpus=fake_gpus)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        if own:
            shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":  # pragma: no cover - manual use
    logging.basicConfig(level=logging.INFO)
    with slurm_cluster() as c:
        print(f"export SLURM_CONF={c.conf}\n# cluster up; Ctrl-C to stop", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
