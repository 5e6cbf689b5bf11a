"""The ledger's usage read day by day and priced as the bill prices the month: the one
read and the one pricing behind the forecast's daily series (``forecast/series.py``) and
the spend anomalies' days (``anomalies/daily.py``), so both see the same figures.

One grouped ``usage()`` read per UTC day, a few at a time (on PostgreSQL the hourly
rollup answers each; SQLite's store serializes them under its lock), grouped by
(namespace, service, GPU model, cluster): the cluster because the bill shares idle
capacity within its own (GPU model, cluster), and a day priced otherwise would not add
up to the bill under a share policy. Each group is priced by ``build.py``'s own model
line (capacity rate x GPU-hours + kWh x the rate card's energy price) with no cloud
quotes (a daily figure needs none), and idle is shared by ``build.share_idle``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from gpuledger.chargeback.ledger.model import LedgerStore, UsageGroup
from gpuledger.chargeback.report.build import price_model_line, share_idle
from gpuledger.chargeback.report.model import IdlePolicy, LineKind, ModelLine
from gpuledger.chargeback.report.ratecard import RateCard

ServiceKey = tuple[str, str]  # (namespace, service)
DAY_GROUP_BY = ("namespace", "service", "gpu_model", "cluster")
READERS = 3  # at most this many day reads at once, where the store gains from it
# (``concurrent_reads``: PostgreSQL's pool, not SQLite's one locked connection)
_NO_QUOTES: LineKind = "idle"  # the same cost figures; a line's kind only adds cloud quotes


def day_ranges(first: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """``[first, end)`` cut at each UTC midnight after ``first`` (the last one may be a
    part of a day: the hours complete so far)."""
    out: list[tuple[datetime, datetime]] = []
    day = first
    while day < end:
        nxt = datetime(day.year, day.month, day.day, tzinfo=day.tzinfo) + timedelta(days=1)
        out.append((day, min(nxt, end)))
        day = out[-1][1]
    return out


def read_days(
    store: LedgerStore, ranges: Sequence[tuple[datetime, datetime]]
) -> list[list[UsageGroup]]:
    """Each range's groups by :data:`DAY_GROUP_BY`, in the order of ``ranges``."""
    readers = min(READERS, getattr(store, "concurrent_reads", 1), len(ranges))
    if readers <= 1:
        return [list(store.usage(lo, hi, DAY_GROUP_BY)) for lo, hi in ranges]
    with ThreadPoolExecutor(readers, thread_name_prefix="day-read") as pool:
        return list(pool.map(lambda r: list(store.usage(r[0], r[1], DAY_GROUP_BY)), ranges))


def priced_lines(
    card: RateCard, rows: Iterable[UsageGroup], policy: IdlePolicy
) -> dict[ServiceKey, list[ModelLine]]:
    """``rows`` taken as one period (groups of the same key summed, so several days'
    rows price as their month), one model line per (service, GPU model, cluster), idle
    shared by ``policy``."""
    sums: dict[tuple[str, str, str, str], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for r in rows:
        key = (r.namespace or "", r.service or "", r.gpu_model or "", r.cluster or "")
        s = sums[key]
        s[0] += r.allocated_gpu_seconds
        s[1] += r.busy_gpu_seconds
        s[2] += r.energy_joules
    lines: dict[ServiceKey, list[ModelLine]] = defaultdict(list)
    for (ns, svc, model, cluster), (alloc, busy, energy) in sums.items():
        group = UsageGroup(alloc, busy, energy, alloc / 3600.0, gpu_model=model,
                           cluster=cluster or None)  # fmt: skip
        lines[(ns, svc)].append(price_model_line(card, group, _NO_QUOTES))
    return share_idle(dict(lines), policy)
