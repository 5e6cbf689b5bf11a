"""A budget's line: what the report's Budgets section, ``gpuledger budgets show`` and the
reporter's metrics show. Apart from ``status.py`` so that the report's model can hold
these lines without importing the ledger reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gpuledger.chargeback.budgets.config import Scope

Status = Literal["over", "forecast-over", "ok", "no-forecast"]


@dataclass(frozen=True, slots=True)
class BudgetLine:
    """One budget against the ledger (USD; ratios of the budget)."""

    scope: Scope
    name: str  # cost center, namespace, or namespace/service
    namespace: str
    service: str
    budget_usd: float
    month_to_date_usd: float
    forecast_usd: float | None  # end of this month; None: no history to forecast from
    next_month_forecast_usd: float | None
    used_ratio: float  # month to date / budget
    forecast_ratio: float | None
    status: Status
    method: str  # the forecast's: trend+weekday, run-rate, none
    history_days: int
    unpriced_gpu_hours: float  # month to date, not in the cost (no rate-card price)


ForecastScope = Literal["cost_center", "service"]


@dataclass(frozen=True, slots=True)
class ForecastLine:
    """The forecast of one service or cost center, budget or not (the report's
    Forecasts table, ``report.forecasts: true``)."""

    scope: ForecastScope
    name: str  # cost center, or namespace/service
    namespace: str
    service: str
    month_to_date_usd: float
    forecast_usd: float | None  # end of the month; None: no complete day yet
    next_month_forecast_usd: float | None
    method: str
    history_days: int
