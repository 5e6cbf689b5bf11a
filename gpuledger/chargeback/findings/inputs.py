"""What the findings engine reads: one month of the ledger as typed hourly series.

Everything comes from the store's grouped ``usage()`` read (on PostgreSQL answered from
the hourly rollup, docs/ledger.md "Rollups"), so a month of a 1,000-GPU fleet is a few
thousand service-hours, not the ledger's millions of buckets:

- per (namespace, service, GPU model) per hour: allocated and busy GPU-seconds (and the
  peak GPU memory of its busiest GPU that hour, where the store can say);
- per GPU model per hour: GPU-seconds observed (Σ allocated over every owner, ``__idle__``
  included: the ledger's invariant makes that Σ observed), held by ``__idle__`` and held
  by ``__unattributed__``;
- per (namespace, service, GPU model): the GPUs it ran on (evidence only).

Peak memory comes from the store's ``peak_memory()`` read (migration 9; a caller can pass
another reader). An hour without a measured peak (rows written before migration 9, an
owner whose processes report no memory) is None, and the kinds that need memory (smaller
GPU class, MIG fit) judge a service only when every hour it held GPU time has one
(:func:`~gpuledger.chargeback.findings.kinds.common.peak_memory_gib`): a class is never
chosen blind.
Tests state these types by hand (no store) with the same meaning.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from gpuledger.chargeback.attribution.claims import IDLE, UNATTRIBUTED
from gpuledger.chargeback.ledger.model import LedgerStore, PeakMemoryGroup

SECONDS_PER_HOUR = 3600.0
RESERVED = (IDLE, UNATTRIBUTED)
"""Owners that are not services: never right-sized, never moved to another class."""


@dataclass(frozen=True, slots=True)
class ServiceHour:
    """One hour of one service on one GPU model."""

    hour: int  # unix seconds of the hour start
    allocated_gpu_seconds: float
    busy_gpu_seconds: float
    peak_memory_bytes: float | None = None  # its largest per-GPU peak that hour; None: unknown

    @property
    def allocated_gpus(self) -> float:
        return self.allocated_gpu_seconds / SECONDS_PER_HOUR

    @property
    def busy_gpus(self) -> float:
        return self.busy_gpu_seconds / SECONDS_PER_HOUR


@dataclass(frozen=True, slots=True)
class ServiceUsage:
    """A service's month on one GPU model: its hours (ascending) and its GPUs."""

    namespace: str
    service: str
    gpu_model: str  # the reported name (NVML / dcgm-exporter), matched by the rate card
    hours: tuple[ServiceHour, ...]
    gpus: tuple[str, ...] = ()  # "node/gpu_uuid" it ran on

    def evidence_hours(self) -> tuple[ServiceHour, ...]:
        """The hours it held any GPU time: what every service kind rests on."""
        return tuple(h for h in self.hours if h.allocated_gpu_seconds > 0)


@dataclass(frozen=True, slots=True)
class ModelHour:
    """One hour of one GPU model across the fleet."""

    hour: int
    observed_gpu_seconds: float  # Σ allocated over every owner, idle included
    idle_gpu_seconds: float  # held by __idle__ (allocated to nobody)
    unattributed_gpu_seconds: float = 0.0  # held by a process with no pod

    @property
    def observed_gpus(self) -> float:
        return self.observed_gpu_seconds / SECONDS_PER_HOUR

    @property
    def used_gpus(self) -> float:
        """GPUs concurrently allocated to someone (unattributed holders included)."""
        return (self.observed_gpu_seconds - self.idle_gpu_seconds) / SECONDS_PER_HOUR


@dataclass(frozen=True, slots=True)
class ModelUsage:
    gpu_model: str
    hours: tuple[ModelHour, ...]


@dataclass(frozen=True, slots=True)
class FindingsInputs:
    """One month, as the kinds read it."""

    start: int  # unix seconds, first hour of the month
    end: int  # unix seconds, first hour after it
    services: tuple[ServiceUsage, ...]  # __idle__ excluded; __unattributed__ included
    models: tuple[ModelUsage, ...]


@dataclass(frozen=True, slots=True)
class PeakMemoryRow:
    """The peak GPU memory a service held on its busiest GPU of a model in one hour."""

    hour: int
    namespace: str
    service: str
    gpu_model: str
    peak_memory_bytes: float


PeakMemoryReader = Callable[[datetime, datetime], Iterable[PeakMemoryRow]]
"""Peak memory per (hour, namespace, service, GPU model) over ``[start, end)``."""


_PER_HOUR = ("hour", "namespace", "service", "gpu_model")


def _peak_rows(groups: Iterable[PeakMemoryGroup]) -> Iterable[PeakMemoryRow]:
    for g in groups:
        yield PeakMemoryRow(
            hour=_unix(g.hour),
            namespace=g.namespace or "",
            service=g.service or "",
            gpu_model=g.gpu_model or "",
            peak_memory_bytes=g.peak_memory_bytes,
        )


def _unix(iso: str | None) -> int:
    if iso is None:
        raise ValueError("usage row without its hour")
    return int(datetime.fromisoformat(iso).timestamp())


def read_inputs(
    store: LedgerStore,
    start: datetime,
    end: datetime,
    *,
    peak_memory: PeakMemoryReader | None = None,
) -> FindingsInputs:
    """The month ``[start, end)`` from ``store``: the sums and the measured peaks per
    (hour, namespace, service, GPU model) in one store read (``usage_and_peaks``: one scan
    on SQLite, rollup + rows on PostgreSQL), and the sums per GPU; ``peak_memory``, when
    given, replaces the store's peaks."""
    if peak_memory is None:
        per_hour, groups = store.usage_and_peaks(start, end, _PER_HOUR)
        peak_rows: Iterable[PeakMemoryRow] = _peak_rows(groups)
    else:
        per_hour = store.usage(start, end, _PER_HOUR)
        peak_rows = peak_memory(start, end)
    per_gpu = store.usage(start, end, ["namespace", "service", "gpu_model", "node", "gpu_uuid"])
    peaks: dict[tuple[int, str, str, str], float] = {}
    for p in peak_rows:
        if not (math.isfinite(p.peak_memory_bytes) and p.peak_memory_bytes >= 0):
            raise ValueError(
                f"peak memory of {p.namespace}/{p.service} on {p.gpu_model!r} at hour "
                f"{p.hour}: {p.peak_memory_bytes!r} bytes is not a size"
            )
        key = (p.hour, p.namespace, p.service, p.gpu_model)
        peaks[key] = max(peaks.get(key, 0.0), p.peak_memory_bytes)

    svc_hours: dict[tuple[str, str, str], list[ServiceHour]] = defaultdict(list)
    model_hours: dict[str, dict[int, list[float]]] = defaultdict(dict)
    for g in per_hour:
        hour = _unix(g.hour)
        ns, svc, model = g.namespace or "", g.service or "", g.gpu_model or ""
        acc = model_hours[model].setdefault(hour, [0.0, 0.0, 0.0])
        acc[0] += g.allocated_gpu_seconds
        if svc == IDLE:
            acc[1] += g.allocated_gpu_seconds
            continue
        if svc == UNATTRIBUTED:
            acc[2] += g.allocated_gpu_seconds
        # an hour without a measured peak stays None: "held nothing" is never assumed
        peak = peaks.get((hour, ns, svc, model))
        svc_hours[(ns, svc, model)].append(
            ServiceHour(hour, g.allocated_gpu_seconds, g.busy_gpu_seconds, peak)
        )
    gpus: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for g in per_gpu:
        if g.allocated_gpu_seconds > 0:
            gkey = (g.namespace or "", g.service or "", g.gpu_model or "")
            gpus[gkey].append(f"{g.node}/{g.gpu_uuid}")
    return FindingsInputs(
        start=int(start.timestamp()),
        end=int(end.timestamp()),
        services=tuple(
            ServiceUsage(
                ns,
                svc,
                model,
                tuple(sorted(hs, key=lambda h: h.hour)),
                tuple(sorted(gpus.get((ns, svc, model), ()))),
            )
            for (ns, svc, model), hs in sorted(svc_hours.items())
        ),
        models=tuple(
            ModelUsage(model, tuple(ModelHour(h, *v) for h, v in sorted(hours.items())))
            for model, hours in sorted(model_hours.items())
        ),
    )
