"""The ledger's daily cost series, priced exactly as the bill prices the month.

One grouped read per UTC day of the history window (``report/daily.py``, which the spend
anomalies read through too): allocated/busy GPU-seconds and energy per (namespace,
service, GPU model, cluster) over the day (on PostgreSQL the hourly rollup answers it;
the day still under way is read to its last complete hour). Per day and not
per hour because the groups are what costs: 1,000 GPUs' 400 services over 27 days are
~261 k hourly groups (7.6 s read, 2.4 s of Python at the bench) but ~11 k daily ones; the
number of reads depends on the window, never on the number of budgets. Each UTC day's
groups are priced by ``report/build.py``'s own per-(service, GPU model) line
(capacity rate × GPU-hours + kWh × PUE × $/kWh) and idle is handled by its own
``share_idle`` under the configured idle policy, day by day. The month-to-date figure of
each (namespace, service) is priced over the month's hours at once, so it is the figure
the report of the month so far shows (under a share policy, spreading idle per day and
per month differ slightly; the forecast uses the days, the budget the month).

A GPU model the rate card cannot price adds nothing to a cost and its GPU-hours are kept
beside it (``unpriced_gpu_hours``), as the report's totals do: never a silent zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from gpuledger.chargeback.ledger.model import LedgerStore, UsageGroup
from gpuledger.chargeback.report.daily import ServiceKey, day_ranges, priced_lines, read_days
from gpuledger.chargeback.report.model import IdlePolicy, Month
from gpuledger.chargeback.report.ratecard import RateCard

Key = ServiceKey  # (namespace, service)


@dataclass(slots=True)
class CostSeries:
    """Cost per (namespace, service) per complete UTC day, and month to date."""

    today: date  # the first day not complete (its hours count in month to date only)
    daily: dict[Key, dict[date, float]] = field(default_factory=dict)
    month_to_date: dict[Key, float] = field(default_factory=dict)
    unpriced_gpu_hours: dict[Key, float] = field(default_factory=dict)


def price_groups(
    card: RateCard, rows: Iterable[UsageGroup], policy: IdlePolicy
) -> tuple[dict[Key, float], dict[Key, float]]:
    """Cost and unpriced GPU-hours per (namespace, service) of ``rows`` taken as one
    period: the report's model lines, idle shared by ``policy`` (``report/daily.py``)."""
    cost: dict[Key, float] = {}
    unpriced: dict[Key, float] = {}
    for key, models in priced_lines(card, rows, policy).items():
        cost[key] = sum(m.total_cost_usd or 0.0 for m in models)
        missing = sum(m.allocated_gpu_hours for m in models if m.total_cost_usd is None)
        if missing:
            unpriced[key] = missing
    return cost, unpriced


def as_of(now: datetime, month: Month | None = None) -> tuple[datetime, Month]:
    """The end of the complete hours at ``now`` (capped at ``month``'s end: a past
    month is read whole) and the month the figures are for (default: ``now``'s)."""
    hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    month = month or Month.of(hour)
    return min(hour, month.end), month


def history_start(end: datetime, month: Month, history_days: int) -> datetime:
    """The window's first hour: ``history_days`` whole days before ``end``'s day, or
    the month's start if earlier (month to date always needs the whole month)."""
    day = datetime(end.year, end.month, end.day, tzinfo=UTC)
    return min(day - timedelta(days=history_days), month.start)


def read_series(
    store: LedgerStore,
    card: RateCard,
    now: datetime,
    *,
    month: Month | None = None,
    policy: IdlePolicy = "separate",
    history_days: int = 56,
) -> CostSeries:
    """The series as of ``now`` (complete hours only) for ``month`` (default: now's),
    from one grouped read per day of the window."""
    end, month = as_of(now, month)
    ranges = day_ranges(history_start(end, month, history_days), end)
    got = read_days(store, ranges)
    by_day = {lo.date(): rows for (lo, _), rows in zip(ranges, got, strict=True)}
    return series_of(by_day, card, end, month=month, policy=policy)


def series_of(
    by_day: Mapping[date, Sequence[UsageGroup]],
    card: RateCard,
    now: datetime,
    *,
    month: Month | None = None,
    policy: IdlePolicy,
) -> CostSeries:
    """:func:`read_series` on the days already read (each day's groups by ``report/daily``'s
    ``DAY_GROUP_BY``; the day of ``now`` holds its complete hours)."""
    end, month = as_of(now, month)
    today = end.date()
    out = CostSeries(today)
    this_month: list[UsageGroup] = []
    for day in sorted(by_day):
        if day >= month.start.date():
            this_month.extend(by_day[day])
        if day >= today:
            continue
        cost, _ = price_groups(card, by_day[day], policy)
        for key, usd in cost.items():
            out.daily.setdefault(key, {})[day] = usd
    out.month_to_date, out.unpriced_gpu_hours = price_groups(card, this_month, policy)
    return out
