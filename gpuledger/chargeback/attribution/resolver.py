"""Who holds each GPU: a device reading → the claims of the workloads holding it.

Sources, in the order they are consulted for one device reading (see docs/attribution.md):

a. **Static GPU mapping** (config ``attribution.static.gpus``): the device's MIG uuid or
   its GPU uuid names a service → that single claim, nothing else is consulted. For
   dedicated hardware outside Kubernetes, or to pin a GPU to a team.
b. **NVML processes**, one by one: ``/proc/<pid>/cgroup`` → pod UID and container ID →
   the :class:`~gpuledger.collectors.workload.pods.PodDirectory` → ``Owner(namespace, service, pod,
   container)``; failing that, the Slurm job whose cgroup holds the process (when
   ``attribution.slurm.enabled``) → its account (or the field ``service_from`` names),
   ``slurm-job-<id>`` until ``scontrol`` has answered; failing that, a static process
   pattern (``attribution.static.processes``, a regex searched in ``comm`` then the
   command line) → its service; failing that the process is held by
   :data:`~gpuledger.chargeback.attribution.claims.UNATTRIBUTED_OWNER` -- the GPU is busy
   for someone unknown, never silently idle. Each claim carries its processes' SM
   utilization and memory, summed per owner (a pod's several processes make one claim).
c. **The kubelet's pod-resources API** (``podresources:``, read by this agent), used when
   no process resolved to a pod: the pods the device plugin or a DRA driver gave the
   device to, even before (or without) a process on it -- their allocated time, busy 0.
d. **dcgm-exporter's workloads** (``GpuReading.workloads``, the same kubelet API read by
   dcgm-exporter), used when neither of the above decided. The service of c. and d.
   comes from the pod directory when it knows the pod, else from the pod name
   (ReplicaSet hash stripped).

An empty list means nobody holds the device; the share code turns that into idle.
Which of them decided each device is kept in :attr:`WorkloadResolver.decisions`
(``GET /api/v1/attribution``).
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Literal, Protocol

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from gpuledger.chargeback.attribution.claims import UNATTRIBUTED_OWNER, Claim, Owner
from gpuledger.collectors.gpu.readings import DeviceKey, GpuReading, ProcessReading, WorkloadRef
from gpuledger.collectors.workload.cgroup import ProcessInfo, read_process
from gpuledger.collectors.workload.hami import declared_core_share
from gpuledger.collectors.workload.podresources.types import Allocation, PodResourcesBoard
from gpuledger.collectors.workload.pods import (
    DEFAULT_LABEL_KEYS,
    PodDirectory,
    PodInfo,
    service_from_pod_name,
    service_name,
)
from gpuledger.collectors.workload.slurm import SlurmJob, SlurmJobRef

__all__ = [
    "AttributionConfig",
    "Decision",
    "KubernetesAttributionConfig",
    "SlurmAttributionConfig",
    "SlurmJobs",
    "SlurmNaming",
    "StaticAttributionConfig",
    "StaticGpuOwner",
    "StaticMapping",
    "StaticProcessRule",
    "WorkloadResolver",
    "build_resolver",
]

if TYPE_CHECKING:
    from gpuledger.collectors.base import Collector, Schedule

log = logging.getLogger(__name__)


# --- configuration -------------------------------------------------------------------------
class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _valid_regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    except OverflowError as exc:  # a{4294967296}
        raise ValueError(f"not a valid regular expression: {exc}") from None
    except RecursionError:  # ~1000 nested groups
        raise ValueError("not a valid regular expression: nested too deeply") from None
    return pattern


class StaticGpuOwner(_Section):
    service: str = Field(min_length=1)
    namespace: str = ""


class StaticProcessRule(_Section):
    pattern: Annotated[str, AfterValidator(_valid_regex)] = Field(min_length=1)
    service: str = Field(min_length=1)
    namespace: str = ""


class StaticAttributionConfig(_Section):
    gpus: dict[str, StaticGpuOwner] = Field(default_factory=dict)  # GPU-/MIG- uuid → owner
    processes: list[StaticProcessRule] = Field(default_factory=list)


class KubernetesAttributionConfig(_Section):
    enabled: bool = False
    kubeconfig: Path | None = None  # None: in-cluster service account, else ~/.kube/config
    resync_seconds: float = Field(60.0, gt=0, le=3600)
    watch: bool = True


SlurmField = Literal["account", "user", "partition", "job_name", "qos", "wckey", "comment"]


class SlurmAttributionConfig(_Section):
    """``attribution.slurm``: name processes in Slurm job cgroups from ``scontrol``."""

    enabled: bool = False
    scontrol: Path = Path("/usr/bin/scontrol")
    service_from: SlurmField = "account"
    namespace_from: SlurmField | Literal["none"] = "none"
    timeout_seconds: float = Field(5.0, gt=0, le=60)
    cache_seconds: float = Field(3600.0, gt=0, le=7 * 86400)
    retry_seconds: float = Field(30.0, gt=0, le=3600)


class AttributionConfig(_Section):
    """``attribution:`` in the agent's YAML."""

    proc_root: Path | None = Path("/proc")  # None: do not read processes' cgroups
    label_keys: tuple[str, ...] = DEFAULT_LABEL_KEYS
    kubernetes: KubernetesAttributionConfig = KubernetesAttributionConfig()
    static: StaticAttributionConfig = StaticAttributionConfig()
    slurm: SlurmAttributionConfig = SlurmAttributionConfig()


# --- static mapping ------------------------------------------------------------------------
class StaticMapping:
    """GPU uuid → owner, and process patterns → owner (first matching rule wins)."""

    def __init__(
        self,
        gpus: dict[str, Owner] | None = None,
        processes: Iterable[tuple[str, Owner]] = (),
    ) -> None:
        self.gpus = dict(gpus or {})
        self.processes = tuple((re.compile(p), owner) for p, owner in processes)

    @classmethod
    def from_config(cls, cfg: StaticAttributionConfig) -> StaticMapping:
        return cls(
            {u: Owner(namespace=o.namespace, service=o.service) for u, o in cfg.gpus.items()},
            [(r.pattern, Owner(namespace=r.namespace, service=r.service)) for r in cfg.processes],
        )

    def __bool__(self) -> bool:
        return bool(self.gpus or self.processes)

    def for_device(self, reading: GpuReading) -> Owner | None:
        if reading.mig_device_uuid is not None:
            owner = self.gpus.get(reading.mig_device_uuid)
            if owner is not None:
                return owner
        return self.gpus.get(reading.uuid)

    def for_process(self, comm: str | None, cmdline: str | None) -> Owner | None:
        for pattern, owner in self.processes:
            if (comm and pattern.search(comm)) or (cmdline and pattern.search(cmdline)):
                return owner
        return None


# --- Slurm jobs ----------------------------------------------------------------------------
class SlurmJobs(Protocol):
    """Job metadata from memory only (:class:`~gpuledger.collectors.workload.slurm_jobs.
    ScontrolJobDirectory`): ``None`` while unknown, the lookup then runs elsewhere."""

    def lookup(self, job: str) -> SlurmJob | None: ...


@dataclass(frozen=True)
class SlurmNaming:
    """How a Slurm job becomes an owner: the service is the job's ``service_from`` field,
    else its account, else its user, else ``slurm-job-<id>`` (also while the lookup has
    not landed); the namespace is its ``namespace_from`` field or ``""``; the pod label
    is ``slurm-job-<id>``."""

    jobs: SlurmJobs
    service_from: str = "account"
    namespace_from: str = "none"

    def owner(self, ref: SlurmJobRef) -> tuple[Owner, bool]:
        """The owner and whether the job's metadata was known."""
        placeholder = f"slurm-job-{ref.job}"
        job = self.jobs.lookup(ref.job)
        if job is None:
            return Owner(namespace="", service=placeholder, pod=placeholder), False
        service = job.field(self.service_from) or job.account or job.user or placeholder
        namespace = job.field(self.namespace_from) if self.namespace_from != "none" else None
        return Owner(namespace=namespace or "", service=service, pod=placeholder), True


# --- the resolver --------------------------------------------------------------------------
DecidedBy = str
"""``static``, ``process``, ``podresources``, ``dcgm``, ``unattributed`` or ``idle``."""


@dataclass(frozen=True, slots=True)
class Decision:
    """How one device's claims were decided at its last attribution."""

    uuid: str
    index: int
    mig_instance: int | None
    mig_device_uuid: str | None
    decided_by: DecidedBy
    owners: tuple[Owner, ...]


@dataclass
class _Sum:
    util: float | None = None
    memory: int | None = None

    def add(self, util: float | None, memory: int | None) -> None:
        if util is not None:
            self.util = (self.util or 0.0) + util
        if memory is not None:
            self.memory = (self.memory or 0) + memory

    def claim(self, owner: Owner) -> Claim:
        return Claim(owner=owner, sm_utilization_ratio=self.util, memory_bytes=self.memory)


class WorkloadResolver:
    """Turns a :class:`GpuReading` into claims. Reads ``/proc`` and memory only; the pod
    directory is filled elsewhere (in the background), so :meth:`claims` is cheap and
    safe to call inside a collection.

    ``counters`` counts, over the resolver's life, how each process was resolved:
    ``pod``, ``slurm`` (named from the job's metadata), ``slurm_pending`` (named
    ``slurm-job-<id>``: the lookup has not landed or failed), ``static_process``,
    ``unattributed``, and why not: ``exited`` (gone before
    it was read), ``no_cgroup`` (host process or unknown layout), ``permission``,
    ``unreadable``, ``unknown_pod`` (a pod UID the directory does not know); on a GPU
    whose MPS clients NVML listed, ``mps_client`` per client and ``mps_server`` per MPS
    daemon left out of the split; ``hami_declared`` per claim that carries a HAMi
    declared core share.
    """

    def __init__(
        self,
        *,
        proc_root: Path | None,
        pods: PodDirectory | None,
        static: StaticMapping | None,
        label_keys: Sequence[str] = DEFAULT_LABEL_KEYS,
        slurm: SlurmNaming | None = None,
        allocations: PodResourcesBoard | None = None,
    ) -> None:
        self.proc_root = proc_root
        self.pods = pods
        self.slurm = slurm
        self.static = static if static else None
        self.label_keys = tuple(label_keys)
        self.allocations = allocations
        self.counters: Counter[str] = Counter()
        self._decisions: dict[DeviceKey, Decision] = {}
        self._decisions_lock = threading.Lock()

    @property
    def decisions(self) -> Mapping[DeviceKey, Decision]:
        """Each device's last decision (a copy; written from the ledger's thread)."""
        with self._decisions_lock:
            return MappingProxyType(dict(self._decisions))

    def claims(self, reading: GpuReading) -> list[Claim]:
        decided_by, claims = self._claims(reading)
        decision = Decision(
            uuid=reading.uuid,
            index=reading.index,
            mig_instance=reading.mig_instance,
            mig_device_uuid=reading.mig_device_uuid,
            decided_by=decided_by,
            owners=tuple(c.owner for c in claims),
        )
        with self._decisions_lock:
            self._decisions[reading.key] = decision
        return claims

    def _claims(self, reading: GpuReading) -> tuple[DecidedBy, list[Claim]]:
        if self.static is not None:
            owner = self.static.for_device(reading)
            if owner is not None:
                total = _Sum()
                for p in reading.processes:
                    total.add(p.sm_utilization_ratio, p.used_memory_bytes)
                return "static", [total.claim(owner)]
        resolved: dict[Owner, _Sum] = {}
        pods: dict[Owner, PodInfo] = {}
        unresolved = _Sum()
        unresolved_count = 0
        for p in self._without_mps_server(reading.processes):
            owner, pod = self._process_owner(p)
            if owner is None:
                unresolved_count += 1
                unresolved.add(p.sm_utilization_ratio, p.used_memory_bytes)
            else:
                resolved.setdefault(owner, _Sum()).add(p.sm_utilization_ratio, p.used_memory_bytes)
                if pod is not None:
                    pods[owner] = pod
        if not resolved:
            # A device nobody's process resolved on: the pods it was allocated to, from
            # this agent's own kubelet answer first, else dcgm-exporter's labels.
            for decided_by, owners in (
                ("podresources", self._allocated_owners(reading)),
                ("dcgm", [self._workload_owner(w) for w in reading.workloads]),
            ):
                owners = list(dict.fromkeys(owners))
                if len(owners) == 1:
                    return decided_by, [unresolved.claim(owners[0])]
                if owners:
                    return decided_by, [Claim(owner=o) for o in owners]
        declared = self._declared(reading, pods)
        claims = [
            replace(s.claim(o), declared_share=declared.get(o)) for o, s in sorted(resolved.items())
        ]
        if unresolved_count:
            self.counters["unattributed"] += unresolved_count
            claims.append(unresolved.claim(UNATTRIBUTED_OWNER))
        if resolved:
            return "process", claims
        return ("unattributed" if claims else "idle"), claims

    def health_collectors(self, interval_s: float) -> list[tuple[Collector, Schedule]]:
        """Collectors that report the health of the resolver's background lookups (the
        Slurm job directory's ``scontrol`` worker), for the agent to schedule: the agent
        never imports a source's implementation, so the resolver hands them over."""
        from gpuledger.collectors.base import Schedule
        from gpuledger.collectors.workload.slurm_jobs import (
            ScontrolJobDirectory,
            SlurmLookupHealth,
            SlurmLookupStatus,
        )

        jobs = self.slurm.jobs if self.slurm is not None else None
        if not isinstance(jobs, ScontrolJobDirectory):
            return []
        schedule = Schedule(interval_s=interval_s, timeout_s=1.0, expect=SlurmLookupStatus)
        return [(SlurmLookupHealth(jobs), schedule)]

    def close(self) -> None:
        for part in (self.pods, self.slurm.jobs if self.slurm is not None else None):
            closer = getattr(part, "close", None)
            if callable(closer):
                closer()

    # --- per source ----------------------------------------------------------------------
    def _without_mps_server(self, processes: Sequence[ProcessReading]) -> Sequence[ProcessReading]:
        """The device's processes less its MPS server(s) when NVML listed MPS clients: the
        clients then hold the GPU time, not the daemon they run through. A server is told
        by its ``comm`` (the kernel keeps 15 characters: ``nvidia-cuda-mps``) or command
        line; one that cannot be read stays (today's attribution)."""
        if self.proc_root is None or not any(p.mps_client for p in processes):
            return processes
        kept: list[ProcessReading] = []
        for p in processes:
            if not p.mps_client:
                info = read_process(self.proc_root, p.pid)
                if info is not None and _is_mps_daemon(info.comm, info.cmdline):
                    self.counters["mps_server"] += 1
                    continue
            else:
                self.counters["mps_client"] += 1
            kept.append(p)
        return kept

    def _declared(self, reading: GpuReading, pods: dict[Owner, PodInfo]) -> dict[Owner, float]:
        """Each owner's declared fraction of a whole GPU (HAMi's allocation annotation). A
        pod's declaration covers the pod: when several of its containers hold the device,
        they share it equally."""
        if reading.mig_instance is not None or not pods:
            return {}
        by_pod: dict[str, list[Owner]] = {}
        for owner, pod in pods.items():
            by_pod.setdefault(pod.uid, []).append(owner)
        out: dict[Owner, float] = {}
        for owners in by_pod.values():
            share = declared_core_share(pods[owners[0]].annotations, reading.uuid)
            if share is not None:
                self.counters["hami_declared"] += len(owners)
                out.update({o: share / len(owners) for o in owners})
        return out

    def _process_owner(self, p: ProcessReading) -> tuple[Owner | None, PodInfo | None]:
        info: ProcessInfo | None = None
        if self.proc_root is not None:
            info = read_process(self.proc_root, p.pid)
            if info is None:
                self.counters["exited"] += 1
            elif info.problem is not None:
                self.counters[info.problem] += 1
            elif info.cgroup is None and info.slurm is None:
                self.counters["no_cgroup"] += 1
        if info is not None and info.cgroup is not None and self.pods is not None:
            ref = info.cgroup
            pod: PodInfo | None = None
            if ref.pod_uid is not None:
                pod = self.pods.by_uid(ref.pod_uid)
            if pod is None and ref.container_id is not None:
                pod = self.pods.by_container_id(ref.container_id)
            if pod is not None:
                self.counters["pod"] += 1
                container = pod.container_ids.get(ref.container_id or "", "")
                owner = Owner(
                    namespace=pod.namespace,
                    service=service_name(pod, self.label_keys),
                    pod=pod.name,
                    container=container,
                )
                return owner, pod
            if ref.pod_uid is not None:
                self.counters["unknown_pod"] += 1
        if info is not None and info.slurm is not None and self.slurm is not None:
            job_owner, known = self.slurm.owner(info.slurm)
            self.counters["slurm" if known else "slurm_pending"] += 1
            return job_owner, None
        if self.static is not None and info is not None:
            static_owner = self.static.for_process(info.comm, info.cmdline)
            if static_owner is not None:
                self.counters["static_process"] += 1
                return static_owner, None
        return None, None

    def _allocated_owners(self, reading: GpuReading) -> list[Owner]:
        index = self.allocations.current() if self.allocations is not None else None
        if index is None:
            return []
        found: Sequence[Allocation] = index.holding(
            gpu_uuid=reading.uuid,
            index=reading.index,
            mig_device_uuid=reading.mig_device_uuid,
            mig_profile=reading.mig_profile,
            minor=reading.minor_number,
            mig_placement=reading.mig_placement_start,
        )
        return sorted(
            self._pod_owner(a.holder.namespace, a.holder.pod, a.holder.container) for a in found
        )

    def _workload_owner(self, w: WorkloadRef) -> Owner:
        return self._pod_owner(w.namespace, w.pod, w.container)

    def _pod_owner(self, namespace: str, pod_name: str, container: str) -> Owner:
        pod = self.pods.by_name(namespace, pod_name) if self.pods is not None else None
        service = service_name(pod, self.label_keys) if pod else service_from_pod_name(pod_name)
        return Owner(namespace=namespace, service=service, pod=pod_name, container=container)


MPS_DAEMON_COMM = "nvidia-cuda-mps"
"""``comm`` of nvidia-cuda-mps-server and nvidia-cuda-mps-control (cut to 15 characters)."""


def _is_mps_daemon(comm: str | None, cmdline: str | None) -> bool:
    if comm and comm.startswith(MPS_DAEMON_COMM):
        return True
    first = (cmdline or "").split(" ")[0]
    return first.rsplit("/", 1)[-1] in ("nvidia-cuda-mps-server", "nvidia-cuda-mps-control")


def build_resolver(
    config: AttributionConfig, node_name: str, allocations: PodResourcesBoard | None = None
) -> WorkloadResolver:
    """The resolver an agent runs with; starts the Kubernetes pod directory and the Slurm
    lookup worker when enabled (both work in the background;
    :meth:`WorkloadResolver.close` stops them). ``allocations``: the kubelet's
    pod-resources answers, when that source runs."""
    pods: PodDirectory | None = None
    if config.kubernetes.enabled:
        from gpuledger.collectors.workload.kubernetes import KubernetesPodDirectory

        pods = KubernetesPodDirectory(
            node_name,
            kubeconfig=config.kubernetes.kubeconfig,
            resync_seconds=config.kubernetes.resync_seconds,
            watch=config.kubernetes.watch,
        )
    slurm: SlurmNaming | None = None
    if config.slurm.enabled:
        from gpuledger.collectors.workload.slurm_jobs import ScontrolJobDirectory

        sc = config.slurm
        slurm = SlurmNaming(
            ScontrolJobDirectory(
                sc.scontrol,
                timeout_s=sc.timeout_seconds,
                cache_s=sc.cache_seconds,
                retry_s=sc.retry_seconds,
            ),
            service_from=sc.service_from,
            namespace_from=sc.namespace_from,
        )
    static = StaticMapping.from_config(config.static)
    return WorkloadResolver(
        proc_root=config.proc_root,
        pods=pods,
        static=static if static else None,
        label_keys=config.label_keys,
        slurm=slurm,
        allocations=allocations,
    )
