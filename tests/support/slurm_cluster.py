"""A real single-node Slurm for the tests: Debian's ``munged``, ``slurmctld`` and
``slurmd`` started from a private ``slurm.conf`` in a temporary folder, on ports of
their own, so jobs run for real and their processes live in the cgroups Slurm itself
makes (``docs/slurm.md``).

Why a private cluster: the machine's own ``/etc/slurm`` and ``/etc/munge`` may hold
anything or nothing; the tests need to know the accounts, the node name (it is part of
the cgroup path on Debian's multiple-slurmd build) and that nothing else runs jobs.
``make test`` installs ``slurm-wlm`` and ``munge`` (the Makefile's ``system-packages``);
slurmd needs root to make job cgroups, so without root or the daemons the tests that
use this are skipped with the reason.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

DAEMONS = (
    "munged",
    "slurmctld",
    "slurmd",
    "sbatch",
    "srun",
    "scontrol",
    "scancel",
    "sinfo",
    "squeue",
)


def missing_requirement() -> str | None:
    """Why a real Slurm cannot run here, or ``None`` when it can."""
    if os.geteuid() != 0:
        return "slurmd needs root to create job cgroups"
    absent = [name for name in DAEMONS if shutil.which(name) is None]
    if absent:
        return f"not installed: {', '.join(absent)} (Debian packages slurm-wlm, munge)"
    if not Path("/sys/fs/cgroup").is_dir():
        return "no /sys/fs/cgroup"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cgroup_plugin() -> str:
    """``cgroup/v2`` on a unified hierarchy, else ``cgroup/v1`` (what ``autodetect``
    would pick; named explicitly so the log says which)."""
    unified = Path("/sys/fs/cgroup/cgroup.controllers").exists()
    return "cgroup/v2" if unified else "cgroup/v1"


@dataclass
class SlurmCluster:
    """A running private cluster. ``env`` is what Slurm's client commands need
    (``SLURM_CONF``); ``node`` is the node's name, part of its jobs' cgroup paths."""

    root: Path
    node: str
    env: dict[str, str]
    partition: str = "gpu"

    def run(self, *argv: str, timeout: float = 30) -> str:
        done = subprocess.run(
            argv, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def submit(self, *sbatch_args: str) -> str:
        """``sbatch --parsable`` the arguments; the job id."""
        out = self.run(
            "sbatch",
            "--parsable",
            "-p",
            self.partition,
            f"--chdir={self.root}",
            f"--output={self.root}/job-%j.out",
            *sbatch_args,
        )
        return out.strip().split(";")[0]

    def state(self, job: str) -> str:
        out = self.run("scontrol", "show", "job", "-o", job)
        for field in out.split():
            if field.startswith("JobState="):
                return field.removeprefix("JobState=")
        raise RuntimeError(f"no JobState in {out!r}")

    def job_pids(self, job: str, command: str, timeout: float = 30) -> list[int]:
        """The job's processes whose ``comm`` is ``command`` (as ``scontrol listpids``
        reports them: the step's processes, slurmstepd excluded), once there are any."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids: list[int] = []
            try:
                listed = self.run("scontrol", "listpids", job)
            except RuntimeError:
                listed = ""
            for line in listed.splitlines()[1:]:
                pid = int(line.split()[0])
                try:
                    comm = Path(f"/proc/{pid}/comm").read_text().strip()
                except OSError:
                    continue
                if comm == command:
                    pids.append(pid)
            if pids:
                return sorted(pids)
            time.sleep(0.2)
        raise TimeoutError(f"job {job} has no {command!r} process after {timeout} s")

    def cancel_all(self) -> None:
        subprocess.run(
            ["scancel", "--full", "-p", self.partition],
            env=self.env,
            capture_output=True,
            timeout=30,
            check=False,
        )


def _write_config(root: Path, node: str) -> None:
    host = socket.gethostname().split(".")[0]
    (root / "plugstack.conf").write_text("")
    (root / "state").mkdir()
    (root / "spool").mkdir()
    conf = f"""\
ClusterName=gpltest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge.sock
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
PlugStackConfig={root}/plugstack.conf
MailProg=/bin/true
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
NodeName={node} NodeAddr=127.0.0.1 NodeHostname={socket.gethostname()} CPUs=2 State=UNKNOWN
PartitionName=gpu Nodes={node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
"""
    (root / "slurm.conf").write_text(conf)
    (root / "cgroup.conf").write_text(f"CgroupPlugin={_cgroup_plugin()}\nConstrainCores=no\n")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _tail(path: Path) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-15:])
    except OSError:
        return "(no log)"


@contextmanager
def slurm_cluster(root: Path, *, start_timeout: float = 60) -> Iterator[SlurmCluster]:
    """Start munged, slurmctld and slurmd in the foreground under ``root``; stop them
    (jobs cancelled first) on exit."""
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)  # munged wants the socket's folder searchable by everyone
    node = "gpl" + secrets.token_hex(3)
    _write_config(root, node)
    key = root / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    key.chmod(0o600)
    env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}
    procs: list[subprocess.Popen[bytes]] = []
    cluster = SlurmCluster(root=root, node=node, env=env)

    def start(*argv: str, log: str) -> None:
        with (root / log).open("wb") as out:
            procs.append(subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT))

    try:
        start(
            "munged",
            "-F",
            "-f",
            f"--key-file={key}",
            f"--socket={root}/munge.sock",
            f"--pid-file={root}/munged.pid",
            f"--log-file={root}/munged.log",
            f"--seed-file={root}/munged.seed",
            log="munged.out",
        )
        _wait_for(lambda: (root / "munge.sock").exists(), start_timeout, "munged's socket")
        start("slurmctld", "-D", "-i", "-f", str(root / "slurm.conf"), log="slurmctld.out")
        start("slurmd", "-D", "-N", node, "-f", str(root / "slurm.conf"), log="slurmd.out")

        def node_idle() -> bool:
            for p in procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{p.args[0]!s} exited ({p.returncode})")
            done = subprocess.run(
                ["sinfo", "-h", "-n", node, "-o", "%t"],
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            return done.stdout.strip() == "idle"

        try:
            _wait_for(node_idle, start_timeout, f"node {node} idle")
        except (RuntimeError, TimeoutError) as exc:
            logs = {name: _tail(root / name) for name in ("slurmctld.out", "slurmd.out")}
            raise RuntimeError(f"the private Slurm did not start: {exc}; {logs}") from exc
        yield cluster
    finally:
        if procs:
            cluster.cancel_all()
            _wait_for_no_jobs(cluster)
        for proc in reversed(procs):
            _stop(proc)


def _wait_for_no_jobs(cluster: SlurmCluster, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = subprocess.run(
            ["squeue", "-h", "-o", "%i"],
            env=cluster.env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0 or not done.stdout.strip():
            return
        time.sleep(0.3)


def _wait_for(ready: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what}: not ready after {timeout} s")
