"""What every kind shares: its context (inputs, config, card) and how a finding is made."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from gpuledger.chargeback.findings.config import FindingsConfig
from gpuledger.chargeback.findings.inputs import (
    RESERVED,
    FindingsInputs,
    ServiceHour,
    ServiceUsage,
)
from gpuledger.chargeback.findings.stats import nearest_rank
from gpuledger.chargeback.report.ratecard import RateCard

GIB = float(1 << 30)
PEAK_HOURS_SHOWN = 5


@dataclass(frozen=True, slots=True)
class Context:
    inputs: FindingsInputs
    config: FindingsConfig
    card: RateCard


def frozen(evidence: Mapping[str, float | str]) -> Mapping[str, float | str]:
    return MappingProxyType(dict(evidence))


def sized_services(ctx: Context) -> Iterator[tuple[ServiceUsage, tuple[ServiceHour, ...]]]:
    """The services the right-sizing kinds judge, with their evidence hours: not the
    reserved owners (idle, unattributed), and only with ``min_evidence_hours`` of them."""
    for svc in ctx.inputs.services:
        if svc.service in RESERVED:
            continue
        hours = svc.evidence_hours()
        if len(hours) >= ctx.config.min_evidence_hours:
            yield svc, hours


def pct(ctx: Context) -> str:
    """The percentile's name, e.g. ``p95``."""
    return f"p{ctx.config.percentile * 100:g}"


def busy_percentile(ctx: Context, hours: tuple[ServiceHour, ...]) -> float:
    """The configured nearest-rank percentile of hourly busy GPUs."""
    return nearest_rank([h.busy_gpus for h in hours], ctx.config.percentile)


def peak_hours(hours: tuple[ServiceHour, ...], at_least: float) -> tuple[int, ...]:
    """The busiest hours at or above ``at_least`` busy GPUs (those that sized it)."""
    top = sorted(
        (h for h in hours if h.busy_gpus >= at_least), key=lambda h: (-h.busy_gpus, h.hour)
    )
    return tuple(sorted(h.hour for h in top[:PEAK_HOURS_SHOWN]))


def peak_memory_gib(hours: tuple[ServiceHour, ...]) -> float | None:
    """The largest per-GPU peak memory over ``hours`` in GiB; None unless every hour that
    held GPU time has a measured peak (a peak over part of the month could be below the
    real one, and a smaller GPU chosen on it would not hold the service)."""
    held = [h.peak_memory_bytes for h in hours if h.allocated_gpu_seconds > 0]
    if not held or any(p is None for p in held):
        return None
    return max(p for p in held if p is not None) / GIB


def gpus(n: int) -> str:
    """``1 GPU``, ``2 GPUs``: a recommendation reads as a sentence."""
    return f"{n} GPU" if n == 1 else f"{n} GPUs"


def money(v: float) -> str:
    return f"${v:,.0f}"
