"""Who holds each GPU: a device reading → the claims of the workloads holding it.

Sources, in the order they are consulted for one device reading (see docs/attribution.md):

a. **Static GPU mapping** (config ``attribution.static.gpus``): the device's MIG uuid or
   its GPU uuid names a service → that single claim, nothing else is consulted. For
   dedicated hardware outside Kubernetes, or to pin a GPU to a team.
b. **NVML processes**, one by one: ``/proc/<pid>/cgroup`` → pod UID and container ID →
   the :class:`~gpuledger.collectors.workload.pods.PodDirectory` → ``Owner(namespace, service, pod,
   container)``; failing that, a static process pattern (``attribution.static.processes``,
   a regex searched in ``comm`` then the command line) → its service; failing that the
   process is held by :data:`~gpuledger.chargeback.attribution.claims.UNATTRIBUTED_OWNER`
   -- the GPU is busy for someone unknown, never silently idle. Each claim carries its processes' SM
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
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from gpuledger.chargeback.attribution.claims import UNATTRIBUTED_OWNER, Claim, Owner
from gpuledger.collectors.gpu.readings import DeviceKey, GpuReading, ProcessReading, WorkloadRef
from gpuledger.collectors.workload.cgroup import ProcessInfo, read_process
from gpuledger.collectors.workload.podresources.types import Allocation, PodResourcesBoard
from gpuledger.collectors.workload.pods import (
    DEFAULT_LABEL_KEYS,
    PodDirectory,
    PodInfo,
    service_from_pod_name,
    service_name,
)

__all__ = [
    "AttributionConfig",
    "Decision",
    "KubernetesAttributionConfig",
    "StaticAttributionConfig",
    "StaticGpuOwner",
    "StaticMapping",
    "StaticProcessRule",
    "WorkloadResolver",
    "build_resolver",
]

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


class AttributionConfig(_Section):
    """``attribution:`` in the agent's YAML."""

    proc_root: Path | None = Path("/proc")  # None: do not read processes' cgroups
    label_keys: tuple[str, ...] = DEFAULT_LABEL_KEYS
    kubernetes: KubernetesAttributionConfig = KubernetesAttributionConfig()
    static: StaticAttributionConfig = StaticAttributionConfig()


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
    ``pod``, ``static_process``, ``unattributed``, and why not: ``exited`` (gone before
    it was read), ``no_cgroup`` (host process or unknown layout), ``permission``,
    ``unreadable``, ``unknown_pod`` (a pod UID the directory does not know).
    """

    def __init__(
        self,
        *,
        proc_root: Path | None,
        pods: PodDirectory | None,
        static: StaticMapping | None,
        label_keys: Sequence[str] = DEFAULT_LABEL_KEYS,
        allocations: PodResourcesBoard | None = None,
    ) -> None:
        self.proc_root = proc_root
        self.pods = pods
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
        unresolved = _Sum()
        unresolved_count = 0
        for p in reading.processes:
            owner = self._process_owner(p)
            if owner is None:
                unresolved_count += 1
                unresolved.add(p.sm_utilization_ratio, p.used_memory_bytes)
            else:
                resolved.setdefault(owner, _Sum()).add(p.sm_utilization_ratio, p.used_memory_bytes)
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
        claims = [s.claim(o) for o, s in sorted(resolved.items())]
        if unresolved_count:
            self.counters["unattributed"] += unresolved_count
            claims.append(unresolved.claim(UNATTRIBUTED_OWNER))
        if resolved:
            return "process", claims
        return ("unattributed" if claims else "idle"), claims

    def close(self) -> None:
        closer = getattr(self.pods, "close", None)
        if callable(closer):
            closer()

    # --- per source ----------------------------------------------------------------------
    def _process_owner(self, p: ProcessReading) -> Owner | None:
        info: ProcessInfo | None = None
        if self.proc_root is not None:
            info = read_process(self.proc_root, p.pid)
            if info is None:
                self.counters["exited"] += 1
            elif info.problem is not None:
                self.counters[info.problem] += 1
            elif info.cgroup is None:
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
                return Owner(
                    namespace=pod.namespace,
                    service=service_name(pod, self.label_keys),
                    pod=pod.name,
                    container=container,
                )
            if ref.pod_uid is not None:
                self.counters["unknown_pod"] += 1
        if self.static is not None and info is not None:
            owner = self.static.for_process(info.comm, info.cmdline)
            if owner is not None:
                self.counters["static_process"] += 1
                return owner
        return None

    def _allocated_owners(self, reading: GpuReading) -> list[Owner]:
        index = self.allocations.current() if self.allocations is not None else None
        if index is None:
            return []
        found: Sequence[Allocation] = index.holding(
            gpu_uuid=reading.uuid,
            index=reading.index,
            mig_device_uuid=reading.mig_device_uuid,
            mig_profile=reading.mig_profile,
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


def build_resolver(
    config: AttributionConfig, node_name: str, allocations: PodResourcesBoard | None = None
) -> WorkloadResolver:
    """The resolver an agent runs with; starts the Kubernetes pod directory when enabled
    (its first list happens in the background; :meth:`WorkloadResolver.close` stops it)."""
    pods: PodDirectory | None = None
    if config.kubernetes.enabled:
        from gpuledger.collectors.workload.kubernetes import KubernetesPodDirectory

        pods = KubernetesPodDirectory(
            node_name,
            kubeconfig=config.kubernetes.kubeconfig,
            resync_seconds=config.kubernetes.resync_seconds,
            watch=config.kubernetes.watch,
        )
    static = StaticMapping.from_config(config.static)
    return WorkloadResolver(
        proc_root=config.proc_root,
        pods=pods,
        static=static if static else None,
        label_keys=config.label_keys,
        allocations=allocations,
    )
