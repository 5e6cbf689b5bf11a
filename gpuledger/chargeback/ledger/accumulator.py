"""Integrate GPU shares over time into hourly buckets of running totals.

Each observation covers the interval since the previous one, measured on the monotonic
clock (a wall-clock step must not create or destroy GPU-seconds) and placed in UTC hours
by counting back from the current wall time (so a step moves seconds between hours but
never changes how many there are). The state seen now is taken to describe that interval:
NVML's utilization is itself an average over the sampling period just ended.

Never invented: the first observation after a start only sets the baseline, and an
interval longer than ``max_gap_s`` (the agent or every GPU source was away) is recorded
as a gap -- nothing is integrated over it -- so coverage (observed seconds per GPU and
hour) shows exactly where the ledger knows nothing.

Energy comes from the board's cumulative energy counter when it moved forward since the
last observation; a counter that went backwards (driver reload, GPU reset) or a GPU not
seen before falls back to power × duration; it is split among owners by share.

Peak memory is a running maximum per bucket: the memory a bucket's owner holds on the GPU
in an observation (``OwnerShare.memory_bytes``, summed over its shares of that GPU: two
MIG instances, two pods) raises the peak of every hour its interval touches, never lowers
it; a restart resumes it from the spool like the totals, so
replaying the spool gives the same peak.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from gpuledger.chargeback.attribution.claims import IDLE
from gpuledger.chargeback.attribution.shares import GpuAllocation
from gpuledger.chargeback.ledger.model import HOUR, hour_start
from gpuledger.chargeback.ledger.tables import CoverageRow, UsageRow, merge_peak
from gpuledger.cluster import DEFAULT_CLUSTER

UsageKey = tuple[int, str, str, str, str]  # hour, node, gpu_uuid, namespace, service
CoverageKey = tuple[int, str, str]  # hour, node, gpu_uuid


@dataclass(slots=True)
class _Usage:
    gpu_model: str
    profiles: set[str] = field(default_factory=set)
    allocated: float = 0.0
    busy: float = 0.0
    energy: float = 0.0
    peak_memory: float | None = None


@dataclass(slots=True)
class _Coverage:
    gpu_model: str
    observed: float = 0.0


@dataclass(frozen=True, slots=True)
class LifetimeTotals:
    """What this process accumulated since it started: the Prometheus counters."""

    service_seconds: dict[tuple[str, str, str, str], float]  # (service, ns, model, kind)
    idle_seconds: dict[str, float]  # gpu_model
    service_energy: dict[tuple[str, str], float]  # (service, namespace)
    gaps: int


def hour_segments(wall_end: float, duration: float) -> list[tuple[int, float]]:
    """Split ``[wall_end - duration, wall_end]`` at UTC hour boundaries."""
    start = wall_end - duration
    out: list[tuple[int, float]] = []
    t = start
    while t < wall_end:
        h = hour_start(t)
        end = min(wall_end, h + HOUR)
        out.append((h, end - t))
        t = end
    return out


def _memory_held(alloc: GpuAllocation) -> dict[tuple[str, str], float]:
    """The memory each bucket's owner holds on this GPU now: the sum over its shares (two
    MIG instances, or two pods of one service on a shared GPU, hold both their memory);
    owners with no measured share are absent."""
    out: dict[tuple[str, str], float] = {}
    for s in alloc.shares:
        if s.memory_bytes is not None:
            k = s.owner.ledger_key
            out[k] = out.get(k, 0.0) + s.memory_bytes
    return out


class Accumulator:
    def __init__(self, node: str, *, max_gap_s: float, cluster: str = DEFAULT_CLUSTER) -> None:
        self.node = node
        self.cluster = cluster
        self.max_gap_s = max_gap_s
        self._lock = threading.Lock()
        self._usage: dict[UsageKey, _Usage] = {}
        self._coverage: dict[CoverageKey, _Coverage] = {}
        self._dirty_usage: set[UsageKey] = set()
        self._dirty_coverage: set[CoverageKey] = set()
        self._last_mono: float | None = None
        self._last_energy: dict[str, float] = {}
        self._latest: tuple[GpuAllocation, ...] = ()
        self._service_seconds: dict[tuple[str, str, str, str], float] = {}
        self._idle_seconds: dict[str, float] = {}
        self._service_energy: dict[tuple[str, str], float] = {}
        self._gaps = 0

    # --- restart ------------------------------------------------------------------
    def restore(self, usage: Iterable[UsageRow], coverage: Iterable[CoverageRow]) -> None:
        """Resume from the spool: running totals continue from where they were."""
        with self._lock:
            for u in usage:
                self._usage[u.key] = _Usage(
                    u.gpu_model,
                    set(filter(None, u.mig_profile.split("+"))),
                    u.allocated_gpu_seconds,
                    u.busy_gpu_seconds,
                    u.energy_joules,
                    u.peak_memory_bytes,
                )
            for c in coverage:
                self._coverage[c.key] = _Coverage(c.gpu_model, c.observed_seconds)

    # --- integration --------------------------------------------------------------
    def observe(self, wall: float, mono: float, allocations: Sequence[GpuAllocation]) -> None:
        with self._lock:
            last, self._last_mono = self._last_mono, mono
            self._latest = tuple(allocations)
            energy_now = {a.uuid: a.energy_joules for a in allocations}
            energy_before = self._last_energy
            self._last_energy = {k: v for k, v in energy_now.items() if v is not None}
            if last is None:
                return
            dt = mono - last
            if dt <= 0:
                return
            if dt > self.max_gap_s:
                self._gaps += 1
                return
            segments = hour_segments(wall, dt)
            for alloc in allocations:
                self._integrate(alloc, dt, segments, energy_before.get(alloc.uuid))

    def _integrate(
        self,
        alloc: GpuAllocation,
        dt: float,
        segments: list[tuple[int, float]],
        energy_before: float | None,
    ) -> None:
        now = alloc.energy_joules
        if now is not None and energy_before is not None and now >= energy_before:
            energy = now - energy_before
        elif alloc.power_watts is not None:
            energy = alloc.power_watts * dt
        else:
            energy = 0.0
        node, model = self.node, alloc.model
        held = _memory_held(alloc)
        for hour, seconds in segments:
            ckey = (hour, node, alloc.uuid)
            cov = self._coverage.get(ckey)
            if cov is None:
                cov = self._coverage[ckey] = _Coverage(model)
            cov.observed += seconds
            self._dirty_coverage.add(ckey)
            fraction = seconds / dt
            for s in alloc.shares:
                ukey = (hour, node, alloc.uuid, s.owner.namespace, s.owner.service)
                u = self._usage.get(ukey)
                if u is None:
                    u = self._usage[ukey] = _Usage(model)
                if s.mig_profile:
                    u.profiles.add(s.mig_profile)
                allocated = s.share * seconds
                busy = allocated * s.busy_ratio
                joules = energy * fraction * s.share
                u.allocated += allocated
                u.busy += busy
                u.energy += joules
                u.peak_memory = merge_peak(u.peak_memory, held.get(s.owner.ledger_key))
                self._dirty_usage.add(ukey)
                self._count_lifetime(
                    s.owner.namespace, s.owner.service, model, allocated, busy, joules
                )

    def _count_lifetime(
        self, namespace: str, service: str, model: str, allocated: float, busy: float, joules: float
    ) -> None:
        if service == IDLE:
            self._idle_seconds[model] = self._idle_seconds.get(model, 0.0) + allocated
            return
        for kind, value in (("allocated", allocated), ("busy", busy)):
            key = (service, namespace, model, kind)
            self._service_seconds[key] = self._service_seconds.get(key, 0.0) + value
        ekey = (service, namespace)
        self._service_energy[ekey] = self._service_energy.get(ekey, 0.0) + joules

    # --- output -------------------------------------------------------------------
    def drain_dirty(self) -> tuple[list[UsageRow], list[CoverageRow]]:
        """Rows changed since the last drain, as running totals (for the spool)."""
        with self._lock:
            usage = [self._usage_row(k) for k in sorted(self._dirty_usage)]
            coverage = [self._coverage_row(k) for k in sorted(self._dirty_coverage)]
            self._dirty_usage.clear()
            self._dirty_coverage.clear()
        return usage, coverage

    def forget_before(self, hour: int) -> None:
        """Drop closed hours from memory (the spool and the store keep them)."""
        with self._lock:
            for key in [k for k in self._usage if k[0] < hour and k not in self._dirty_usage]:
                del self._usage[key]
            for ck in [k for k in self._coverage if k[0] < hour and k not in self._dirty_coverage]:
                del self._coverage[ck]

    def _usage_row(self, k: UsageKey) -> UsageRow:
        u = self._usage[k]
        return UsageRow(
            hour_start=k[0], node=k[1], gpu_uuid=k[2], namespace=k[3], service=k[4],
            gpu_model=u.gpu_model, mig_profile="+".join(sorted(u.profiles)),
            allocated_gpu_seconds=u.allocated, busy_gpu_seconds=u.busy, energy_joules=u.energy,
            peak_memory_bytes=u.peak_memory, cluster=self.cluster,
        )  # fmt: skip

    def _coverage_row(self, k: CoverageKey) -> CoverageRow:
        c = self._coverage[k]
        return CoverageRow(
            hour_start=k[0], node=k[1], gpu_uuid=k[2], gpu_model=c.gpu_model,
            observed_seconds=c.observed, cluster=self.cluster,
        )  # fmt: skip

    @property
    def latest(self) -> tuple[GpuAllocation, ...]:
        return self._latest

    def lifetime(self) -> LifetimeTotals:
        with self._lock:
            return LifetimeTotals(
                dict(self._service_seconds),
                dict(self._idle_seconds),
                dict(self._service_energy),
                self._gaps,
            )
