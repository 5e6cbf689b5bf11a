"""A scope's month: month to date, the end-of-month forecast and next month's.

A scope (a cost center, a namespace, one service) is a set of (namespace, service)
keys; its daily series is the sum of theirs, from the first day any of them appears to
the last complete day (a day between with no rows cost 0). The forecast of the month's
end is what was spent so far plus the model's prediction for the rest: the remaining
hours of today (its predicted day × the share of the day left) and every later day.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from gpuledger.chargeback.forecast.method import DailyModel, fit, total
from gpuledger.chargeback.forecast.series import as_of
from gpuledger.chargeback.report.model import Month

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class MonthForecast:
    month_to_date_usd: float
    end_of_month_usd: float | None  # None: no complete day of history
    next_month_usd: float | None
    method: str  # "trend+weekday", "run-rate" or "none"
    history_days: int


def combined(daily: Mapping[Key, Mapping[date, float]], keys: Iterable[Key],
             today: date) -> tuple[date | None, list[float]]:  # fmt: skip
    """The scope's series: its first day and one value per day up to yesterday."""
    total_by_day: dict[date, float] = {}
    for key in keys:
        for day, usd in daily.get(key, {}).items():
            total_by_day[day] = total_by_day.get(day, 0.0) + usd
    if not total_by_day:
        return None, []
    first = min(total_by_day)
    n = (today - first).days
    return first, [total_by_day.get(first + timedelta(days=i), 0.0) for i in range(n)]


def forecast_month(
    model: DailyModel | None, month_to_date: float, now: datetime, month: Month | None = None
) -> MonthForecast:
    """The end of ``month`` (default: ``now``'s) and all of the month after it from
    ``model``; the complete hours before ``now`` are month to date."""
    end, month = as_of(now, month)
    if model is None:
        return MonthForecast(month_to_date, None, None, "none", 0)
    rest = 0.0
    if end < month.end:
        today = end.date()
        left_today = (24 - end.hour) / 24  # the complete hours so far are in month to date
        tomorrow = today + timedelta(days=1)
        rest = model.predict(today) * left_today + total(model, tomorrow, month.end.date())
    nxt = month.next()
    return MonthForecast(
        month_to_date,
        month_to_date + rest,
        total(model, nxt.start.date(), nxt.end.date()),
        model.method,
        model.days,
    )


def scope_forecast(
    daily: Mapping[Key, Mapping[date, float]],
    month_to_date: Mapping[Key, float],
    keys: Iterable[Key],
    now: datetime,
    month: Month | None = None,
) -> MonthForecast:
    keys = list(keys)
    end, month = as_of(now, month)
    first, values = combined(daily, keys, end.date())
    model = fit(first, values) if first is not None else None
    return forecast_month(model, sum(month_to_date.get(k, 0.0) for k in keys), end, month)
