"""Which pod and container a host process belongs to, from ``/proc/PID/cgroup``.

NVML names the processes holding a GPU by host PID; the kubelet and the container runtime
put every container's processes in a cgroup whose path carries the pod UID and the
container ID. This module reads that path, in every layout seen in the field:

* cgroup v1, ``cgroupfs`` driver: one line per controller,
  ``4:memory:/kubepods/besteffort/pod<uid>/<64-hex id>`` (``burstable`` likewise; a
  Guaranteed pod sits directly under ``/kubepods``);
* the ``systemd`` driver (v1 or v2): ``kubepods.slice/kubepods-burstable.slice/``
  ``kubepods-burstable-pod<uid with _ for ->.slice/<runtime>-<id>.scope`` where the
  runtime prefix is ``docker-``, ``cri-containerd-`` or ``crio-``;
* cgroup v2 (unified): the single ``0::/...`` line, same paths as above; a reader in a
  private cgroup namespace sees the path relative to its own root (``0::/../../...``);
* hybrid hosts: v1 controller lines plus a ``0::`` line;
* containerd's systemd "colon form" as it appears on some v1 hosts:
  ``.../kubepods-besteffort-pod<uid>.slice:cri-containerd:<id>``;
* static (and their mirror) pods, whose UID is the 32-hex hash of the manifest rather
  than a dashed UUID (``kubepods-burstable-pod36b6d6be73b1065af369b3985edafa09.slice``);
* nested nodes (kind, minikube), whose kubepods tree hangs below ``/docker/<id>/``.

Pod UIDs are returned in the API's dashed 36-character form (systemd slice names replace
``-`` by ``_``); a static pod's 32-hex hash is returned as is, since that *is* its UID.
Nothing here raises on bad content: an unrecognised file gives ``None`` and the caller
counts it.
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass
from pathlib import Path

from gpuledger.collectors.workload.cgroupfile import tally_paths
from gpuledger.collectors.workload.slurm import SlurmJobRef, parse_slurm_cgroup

__all__ = ["CgroupRef", "ProcessInfo", "normalize_pod_uid", "parse_cgroup", "read_process"]

_MAX_READ = 64 * 1024  # a cgroup file is a few hundred bytes; a cmdline may be long

_DASHED_UID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_STATIC_UID = re.compile(r"[0-9a-f]{32}")

# systemd driver: "<prefix->kubepods[-<qos>]-pod<uid>.slice"; the prefix is e.g. "kubelet-"
# when the kubelet runs with --cgroup-root=/kubelet.slice (kind).
_SYSTEMD_POD = re.compile(
    r"^(?:[\w.-]*-)?kubepods(?:-(?P<qos>besteffort|burstable))?-pod(?P<uid>[0-9a-fA-F_-]{32,36})\.slice$"
)
# cgroupfs driver: a "pod<uid>" directory below "kubepods[/<qos>]".
_CGROUPFS_POD = re.compile(r"^pod(?P<uid>[0-9a-fA-F-]{32,36})$")
# systemd scopes of the container runtimes: "<prefix><id>.scope".
_SCOPE = re.compile(
    r"^(?P<prefix>docker-|cri-containerd-|crio-|containerd-|libpod-)(?P<id>[0-9a-f]{12,64})\.scope$"
)
_BARE_ID = re.compile(r"^[0-9a-f]{64}$")
_COLON_RUNTIMES = {
    "cri-containerd": "containerd",
    "containerd": "containerd",
    "crio": "cri-o",
    "docker": "docker",
}
_HEX_ID = re.compile(r"[0-9a-f]{12,64}")
_SCOPE_RUNTIMES = {
    "docker-": "docker",
    "cri-containerd-": "containerd",
    "containerd-": "containerd",
    "crio-": "cri-o",
    "libpod-": "podman",
}


@dataclass(frozen=True, slots=True)
class CgroupRef:
    """What a process's cgroup path says about it.

    ``pod_uid``: dashed UUID, or a static pod's 32-hex hash; ``None`` outside Kubernetes.
    ``container_id``: the runtime's ID without any prefix (what the API's
    ``containerStatuses[].containerID`` holds after ``containerd://`` etc.).
    ``runtime``: ``docker``, ``containerd``, ``cri-o``, ``podman`` or ``None`` (cgroupfs
    paths do not say). ``qos``: ``guaranteed``, ``burstable``, ``besteffort`` or ``None``.
    """

    pod_uid: str | None
    container_id: str | None
    runtime: str | None = None
    qos: str | None = None


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """One process as read from a proc root.

    ``cgroup`` is ``None`` when the process is in no container (a host process) or its
    cgroup file could not be read or understood; ``slurm`` names the Slurm job when the
    process is in one's cgroup (:mod:`gpuledger.collectors.workload.slurm`); ``problem``
    then says which, for the caller's counters: ``None`` (read fine), ``"permission"``
    or ``"unreadable"``.
    """

    pid: int
    cgroup: CgroupRef | None
    comm: str | None = None
    cmdline: str | None = None
    problem: str | None = None
    slurm: SlurmJobRef | None = None  # the Slurm job whose cgroup holds it, if any


def normalize_pod_uid(raw: str) -> str | None:
    """The API form of a pod UID found in a cgroup path, or ``None`` if it is not one.

    ``0125ec2f_b64a_4868_8f5b_94b56cbab864`` → ``0125ec2f-b64a-4868-8f5b-94b56cbab864``;
    a static pod's ``36b6d6be73b1065af369b3985edafa09`` is kept as is.
    """
    uid = raw.replace("_", "-").lower()
    if _DASHED_UID.fullmatch(uid) or _STATIC_UID.fullmatch(uid):
        return uid
    return None


def _parse_path(path: str) -> CgroupRef | None:
    """A cgroup path (the part after ``hierarchy:controllers:``) → what it names."""
    pod_uid: str | None = None
    qos: str | None = None
    container_id: str | None = None
    runtime: str | None = None
    previous = ""
    for raw in path.split("/"):
        if not raw or raw == "..":
            continue
        segment = raw
        colon_id: str | None = None
        colon_runtime: str | None = None
        if ":" in raw:  # containerd's systemd "colon form": <slice>:<runtime>:<id>
            parts = raw.split(":")
            if len(parts) == 3 and parts[1] in _COLON_RUNTIMES and _HEX_ID.fullmatch(parts[2]):
                segment, colon_runtime, colon_id = parts[0], _COLON_RUNTIMES[parts[1]], parts[2]
        m = _SYSTEMD_POD.match(segment)
        if m is not None:
            uid = normalize_pod_uid(m.group("uid"))
            if uid is not None:
                pod_uid, qos = uid, m.group("qos") or "guaranteed"
                container_id = runtime = None  # anything before the pod is the node's
        else:
            m = _CGROUPFS_POD.match(segment)
            uid = normalize_pod_uid(m.group("uid")) if m is not None else None
            if uid is not None and previous in ("kubepods", "besteffort", "burstable"):
                pod_uid = uid
                qos = "guaranteed" if previous == "kubepods" else previous
                container_id = runtime = None
            else:
                s = _SCOPE.match(segment)
                if s is not None:
                    container_id, runtime = s.group("id"), _SCOPE_RUNTIMES[s.group("prefix")]
                elif _BARE_ID.match(segment) and (
                    previous == "docker" or _CGROUPFS_POD.match(previous)
                ):
                    container_id = segment
                    runtime = "docker" if previous == "docker" else None
        if colon_id is not None:
            container_id, runtime = colon_id, colon_runtime
        previous = segment
    if pod_uid is None and container_id is None:
        return None
    return CgroupRef(pod_uid=pod_uid, container_id=container_id, runtime=runtime, qos=qos)


def parse_cgroup(text: str) -> CgroupRef | None:
    """The pod and container named by a ``/proc/PID/cgroup`` file, or ``None``.

    ``None`` means "no container found": a host process (``0::/init.scope``,
    ``0::/system.slice/containerd.service``, ``0::/user.slice/...``), or content that is
    not a cgroup file. A container outside Kubernetes (plain Docker) gives a ref without
    ``pod_uid``. On v1 and hybrid hosts every controller line is read and the most
    complete answer that most lines agree on wins (a few controllers, e.g. ``name=systemd``
    or ``rdma``, often stay at ``/``).
    """
    found = tally_paths(text, _parse_path)
    if not found:
        return None

    def rank(item: tuple[CgroupRef, int]) -> tuple[bool, bool, bool, int]:
        ref, count = item
        return (
            ref.pod_uid is not None,
            ref.container_id is not None,
            ref.runtime is not None,
            count,
        )

    return max(found.items(), key=rank)[0]


def _read_text(path: Path) -> str:
    with path.open("rb") as f:
        return f.read(_MAX_READ).decode("utf-8", errors="replace")


def read_process(proc_root: Path, pid: int, *, cmdline: bool = True) -> ProcessInfo | None:
    """Read ``<proc_root>/<pid>/{cgroup,comm,cmdline}``.

    ``None`` when the process is gone (it exited between NVML's listing and now) or the
    proc root does not exist; never raises for what the files contain. ``proc_root`` is
    ``/proc`` in a pod with ``hostPID: true``, or where the host's ``/proc`` is mounted.
    """
    base = proc_root / str(pid)
    try:
        text = _read_text(base / "cgroup")
    except FileNotFoundError:
        return None
    except ProcessLookupError:  # ESRCH: the process exited while we read
        return None
    except PermissionError:
        return ProcessInfo(
            pid=pid, cgroup=None, comm=_read_optional(base / "comm"), problem="permission"
        )
    except OSError as exc:
        if exc.errno in (errno.ESRCH, errno.ENOENT, errno.ENOTDIR):
            return None
        return ProcessInfo(pid=pid, cgroup=None, problem="unreadable")
    ref = parse_cgroup(text)
    comm = _read_optional(base / "comm")
    cmd = None
    if cmdline:
        raw = _read_optional(base / "cmdline")
        if raw is not None:
            cmd = raw.replace("\x00", " ").strip() or None
    slurm = parse_slurm_cgroup(text) if ref is None else None
    known = ref is not None or slurm is not None
    problem = None if known or _looks_like_cgroup(text) else "unreadable"
    return ProcessInfo(pid=pid, cgroup=ref, comm=comm, cmdline=cmd, problem=problem, slurm=slurm)


def _looks_like_cgroup(text: str) -> bool:
    return any(len(line.split(":", 2)) == 3 for line in text.splitlines())


def _read_optional(path: Path) -> str | None:
    try:
        value = _read_text(path).rstrip("\n")
    except OSError:
        return None
    return value or None
