"""Days scored against their trailing baselines; anomalies named with their drivers.

A service's day is judged only when the ledger holds something for that day and for at
least ``min_baseline_days`` of the ``window_days`` days before it (a day the ledger holds
nothing for at all is not observed, so it is left out of the window rather than counted
as $0). Within the observed days, a day the service did not run costs $0: a service
that stopped is a drop, one that started an increase. An anomaly is a day with
|robust z| ≥ ``z_threshold`` *and* |cost − median| ≥ ``min_delta_usd``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

from gpuledger.chargeback.anomalies.config import AnomaliesConfig
from gpuledger.chargeback.anomalies.daily import (
    DayCosts,
    Pricing,
    ServiceDay,
    ServiceKey,
    days,
    read_days,
)
from gpuledger.chargeback.anomalies.drivers import drivers
from gpuledger.chargeback.anomalies.model import DayScore, SpendAnomaly
from gpuledger.chargeback.anomalies.stats import baseline, robust_z
from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
from gpuledger.chargeback.report.model import Month


def _window(costs: DayCosts, d: date, cfg: AnomaliesConfig) -> list[date]:
    return [w for w in days(d - timedelta(days=cfg.window_days), d) if w in costs]


def _label(key: ServiceKey) -> str:
    return f"{key[0]}/{key[1]}" if key[0] else key[1]


def score_day(
    costs: DayCosts, d: date, key: ServiceKey, cfg: AnomaliesConfig
) -> tuple[DayScore, list[ServiceDay | None]] | None:
    """``key``'s day ``d`` against its window, with the window's days (None: the
    service did not run that day); None when ``d`` or too few window days are observed."""
    if d not in costs:
        return None
    window = _window(costs, d, cfg)
    if len(window) < cfg.min_baseline_days:
        return None
    held = [costs[w].get(key) for w in window]
    values = [s.total_usd if s is not None else 0.0 for s in held]
    base = baseline(values, floor_ratio=cfg.mad_floor_ratio, floor_usd=cfg.mad_floor_usd)
    today = costs[d].get(key)
    cost = today.total_usd if today is not None else 0.0
    score = DayScore(
        day=d.isoformat(), namespace=key[0], service=key[1], cost_usd=cost,
        baseline_usd=base.median, mad_usd=base.mad, scale_usd=base.scale,
        score=robust_z(cost, base), baseline_days=base.days,
    )  # fmt: skip
    return score, held


def _keys(costs: DayCosts, d: date, cfg: AnomaliesConfig) -> set[ServiceKey]:
    keys = set(costs.get(d, {}))
    for w in _window(costs, d, cfg):
        keys |= set(costs[w])
    return keys


def scores(costs: DayCosts, d: date, cfg: AnomaliesConfig) -> list[DayScore]:
    """Every service's score on day ``d`` (those seen that day or in its window)."""
    out = []
    for key in sorted(_keys(costs, d, cfg)):
        scored = score_day(costs, d, key, cfg)
        if scored is not None:
            out.append(scored[0])
    return out


def find_anomalies(
    costs: DayCosts, targets: Iterable[date], cfg: AnomaliesConfig
) -> list[SpendAnomaly]:
    """The anomalies of the ``targets`` days, by day, largest change first."""
    out: list[SpendAnomaly] = []
    for d in targets:
        for key in sorted(_keys(costs, d, cfg)):
            scored = score_day(costs, d, key, cfg)
            if scored is None:
                continue
            s, window = scored
            change = s.cost_usd - s.baseline_usd
            if abs(s.score) < cfg.z_threshold or abs(change) < cfg.min_delta_usd:
                continue
            found = drivers(_label(key), costs[d].get(key), window, s.baseline_usd, cfg)
            anomaly = SpendAnomaly(
                day=s.day, namespace=s.namespace, service=s.service,
                direction="increase" if change > 0 else "drop", cost_usd=s.cost_usd,
                baseline_usd=s.baseline_usd, change_usd=change, score=s.score,
                mad_usd=s.mad_usd, baseline_days=s.baseline_days, drivers=found,
            )  # fmt: skip
            out.append(anomaly)
    out.sort(key=lambda a: (a.day, -abs(a.change_usd), a.namespace, a.service))
    return out


def complete_days_before(now: datetime) -> date:
    """The first day not yet complete at ``now`` (UTC): today."""
    return now.astimezone(UTC).date()


def month_anomalies(
    store: AuditableLedgerStore,
    pricing: Pricing,
    month: Month,
    cfg: AnomaliesConfig,
    *,
    now: datetime,
) -> list[SpendAnomaly]:
    """The anomalies of ``month``'s complete days (the window reaches into the month
    before, so the 1st is judged like the 20th)."""
    first = month.start.date()
    end = min(month.end.date(), complete_days_before(now))
    if end <= first:
        return []
    costs = read_days(store, pricing, first - timedelta(days=cfg.window_days), end)
    return find_anomalies(costs, days(first, end), cfg)


def latest_scores(
    store: AuditableLedgerStore, pricing: Pricing, cfg: AnomaliesConfig, *, now: datetime
) -> tuple[date, list[DayScore]]:
    """The latest complete day (yesterday, UTC) and every service's score on it."""
    d = complete_days_before(now) - timedelta(days=1)
    costs = read_days(store, pricing, d - timedelta(days=cfg.window_days), d + timedelta(days=1))
    return d, scores(costs, d, cfg)
