"""Each budget against the ledger: month to date, the end-of-month forecast, next
month's, % used and a status, from one grouped read per day of the window whatever the
number of budgets (``forecast/series.py``).

A scope's services: a cost center's are the (namespace, service) pairs the
:class:`~gpuledger.chargeback.costcenters.resolve.CostCenterMap` assigns to it (idle
capacity under the ``separate`` policy is the line ``("", "__idle__")``, whose cost
center is ``__unassigned__`` unless a static rule names it); a namespace's are its
services; a service is itself. Month to date is the report's figure for the month so
far; the forecast is fitted on the scope's summed daily series (``forecast/method.py``).

Status, worst first: ``over`` (month to date above the budget: the critical alert),
``forecast-over`` (the forecast above it: the warning), ``ok``, and ``no-forecast``
(no complete day of history yet, and not over).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from gpuledger.chargeback.budgets.config import Budget, unknown_cost_centers
from gpuledger.chargeback.budgets.model import BudgetLine, ForecastLine, ForecastScope, Status
from gpuledger.chargeback.costcenters.resolve import CostCenterMap
from gpuledger.chargeback.forecast.month import scope_forecast
from gpuledger.chargeback.forecast.series import CostSeries, Key, as_of, read_series
from gpuledger.chargeback.ledger.model import LedgerStore
from gpuledger.chargeback.report.model import IdlePolicy, Month
from gpuledger.chargeback.report.ratecard import RateCard


@dataclass(frozen=True, slots=True)
class BudgetReport:
    month: str
    as_of: str  # ISO-8601 UTC, the last complete hour
    lines: tuple[BudgetLine, ...]
    warnings: tuple[str, ...] = ()  # unknown cost centers, row by row
    forecasts: tuple[ForecastLine, ...] = ()  # every cost center, then every service


def _keys(series: CostSeries) -> set[Key]:
    return {*series.daily, *series.month_to_date}


def members(budget: Budget, keys: Iterable[Key], centers: CostCenterMap) -> list[Key]:
    """The (namespace, service) pairs a budget covers, among ``keys``."""
    if budget.scope == "cost_center":
        return sorted(k for k in keys if centers.of(*k) == budget.name)
    if budget.scope == "namespace":
        return sorted(k for k in keys if k[0] == budget.namespace)
    return [(budget.namespace, budget.service)]


def _status(budget: float, mtd: float, forecast: float | None) -> Status:
    if mtd > budget:
        return "over"
    if forecast is None:
        return "no-forecast"
    return "forecast-over" if forecast > budget else "ok"


def lines_of(
    budgets: Sequence[Budget],
    series: CostSeries,
    centers: CostCenterMap,
    now: datetime,
    month: Month | None = None,
) -> list[BudgetLine]:
    """Every budget's line from a series already read."""
    keys = _keys(series)
    by_center: dict[str, list[Key]] = {}
    if any(b.scope == "cost_center" for b in budgets):
        for k in sorted(keys):  # each key's cost center once, not once per budget
            by_center.setdefault(centers.of(*k), []).append(k)
    out: list[BudgetLine] = []
    for b in budgets:
        covered = (
            by_center.get(b.name, []) if b.scope == "cost_center" else members(b, keys, centers)
        )
        fc = scope_forecast(series.daily, series.month_to_date, covered, now, month)
        mtd = fc.month_to_date_usd
        out.append(
            BudgetLine(
                scope=b.scope,
                name=b.name,
                namespace=b.namespace,
                service=b.service,
                budget_usd=b.monthly_usd,
                month_to_date_usd=mtd,
                forecast_usd=fc.end_of_month_usd,
                next_month_forecast_usd=fc.next_month_usd,
                used_ratio=mtd / b.monthly_usd,
                forecast_ratio=(
                    fc.end_of_month_usd / b.monthly_usd if fc.end_of_month_usd is not None else None
                ),
                status=_status(b.monthly_usd, mtd, fc.end_of_month_usd),
                method=fc.method,
                history_days=fc.history_days,
                unpriced_gpu_hours=sum(series.unpriced_gpu_hours.get(k, 0.0) for k in covered),
            )
        )
    return out


def forecast_lines(
    series: CostSeries, centers: CostCenterMap, now: datetime, month: Month | None = None
) -> list[ForecastLine]:
    """The forecast of every cost center (by name) and every (namespace, service) the
    series holds (by name), from a series already read."""
    keys = sorted(_keys(series))
    by_center: dict[str, list[Key]] = {}
    for k in keys:
        by_center.setdefault(centers.of(*k), []).append(k)
    scopes: list[tuple[ForecastScope, str, str, str, list[Key]]] = [
        ("cost_center", name, "", "", members) for name, members in sorted(by_center.items())
    ]
    scopes += [("service", f"{ns}/{svc}", ns, svc, [(ns, svc)]) for ns, svc in keys]
    out = []
    for scope, name, ns, svc, members in scopes:
        fc = scope_forecast(series.daily, series.month_to_date, members, now, month)
        out.append(
            ForecastLine(
                scope,
                name,
                ns,
                svc,
                fc.month_to_date_usd,
                fc.end_of_month_usd,
                fc.next_month_usd,
                fc.method,
                fc.history_days,
            )
        )
    return out


def budget_report(
    store: LedgerStore,
    card: RateCard,
    budgets: Sequence[Budget],
    centers: CostCenterMap,
    now: datetime,
    *,
    month: Month | None = None,
    policy: IdlePolicy = "separate",
    history_days: int = 56,
    forecasts: bool = False,
) -> BudgetReport:
    """Every budget as of ``now`` (complete hours), from one grouped ledger read per day
    of the window. A cost center no rule, tenant or recorded label names is a warning
    here, not an error: its budget is shown with what it covers (nothing), and the
    warning says why."""
    end, month = as_of(now, month)
    series = read_series(store, card, end, month=month, policy=policy, history_days=history_days)
    warnings = tuple(f"{row}: {msg}" for row, msg in unknown_cost_centers(budgets, centers.names()))
    stamp = end.isoformat().replace("+00:00", "Z")
    return BudgetReport(
        month.label,
        stamp,
        tuple(lines_of(budgets, series, centers, end, month)),
        warnings,
        tuple(forecast_lines(series, centers, end, month)) if forecasts else (),
    )
