"""What drove a service's change: its day and its baseline day split the same ways.

The baseline day is the window's median cost (``stats.py``), composed like the window's
average day: for a partition (by GPU model, by tenant, busy/idle), a part's baseline is
median × (the part's Σ over the window / the service's Σ over the window). The parts of
the baseline day then add up to the median, and the parts' changes (day − baseline) add
up to the day's change exactly.

A part carries the change *disproportionately* when its change exceeds its baseline share
of the whole change: excess = change_part − share_part × change. A service that simply
did more of the same (every GPU model, tenant and the idle part grew alike) has no
excess anywhere, and its driver is the service itself. A new GPU model (share 0) has all
its change as excess; a tenant whose traffic tripled has the change beyond its share.
Parts are named in order of excess (in the change's direction) while the excess is at
least ``min_driver_share`` of the change, up to ``max_drivers``; each is reported with
its own dollars of the change, so the reader sees what moved, not a residual.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gpuledger.chargeback.anomalies.config import AnomaliesConfig
from gpuledger.chargeback.anomalies.daily import IDLE_PART, ServiceDay
from gpuledger.chargeback.anomalies.model import Driver, DriverKind

Partition = Callable[[ServiceDay], dict[str, float]]
_PARTITIONS: tuple[tuple[DriverKind, Partition, frozenset[str] | None], ...] = (
    ("gpu_model", lambda d: d.by_model, None),
    ("tenant", lambda d: d.by_tenant, None),
    ("idle", lambda d: d.by_use, frozenset({IDLE_PART})),  # "busy" is no driver: more work
)
"""(kind, the partition, the parts that may be named; None: all)."""


def baseline_parts(
    window: Sequence[ServiceDay | None], part: Partition, median: float
) -> dict[str, float]:
    """Each part's baseline: median × its share of the window's cost, over the window's
    days where the service had this partition (a service shared on some days only is
    split among tenants by the days it was shared)."""
    sums: dict[str, float] = {}
    total = 0.0
    for day in window:
        if day is None:
            continue
        parts = part(day)
        if not parts:
            continue
        total += day.total_usd
        for name, usd in parts.items():
            sums[name] = sums.get(name, 0.0) + usd
    if total <= 0:
        return dict.fromkeys(sums, 0.0)
    return {name: median * (usd / total) for name, usd in sums.items()}


def drivers(
    label: str,
    today: ServiceDay | None,
    window: Sequence[ServiceDay | None],
    median: float,
    cfg: AnomaliesConfig,
) -> tuple[Driver, ...]:
    """The parts of ``today`` (None: the service was absent) that drove its change from
    ``median``, largest excess first; the service itself when no part stands out."""
    cost = today.total_usd if today is not None else 0.0
    change = cost - median
    sign = 1.0 if change >= 0 else -1.0
    ranked: list[tuple[float, Driver]] = []
    for kind, part, nameable in _PARTITIONS:
        now = part(today) if today is not None else {}
        base = baseline_parts(window, part, median)
        if not now and not base:
            continue
        for name in sorted(set(now) | set(base)):
            if nameable is not None and name not in nameable:
                continue
            d_usd, b_usd = now.get(name, 0.0), base.get(name, 0.0)
            share = b_usd / median if median > 0 else 0.0
            excess = sign * ((d_usd - b_usd) - share * change)
            if excess >= cfg.min_driver_share * abs(change) and excess > 0:
                ranked.append((excess, Driver(kind, name, d_usd, b_usd, d_usd - b_usd)))
    ranked.sort(key=lambda pair: (-pair[0], pair[1].kind, pair[1].name))
    if not ranked:
        return (Driver("service", label, cost, median, change),)
    return tuple(d for _, d in ranked[: cfg.max_drivers])
