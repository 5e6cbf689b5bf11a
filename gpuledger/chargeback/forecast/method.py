"""The forecast of a daily cost series: a linear trend plus one level per weekday.

Why this method (``docs/budgets.md``, "The forecast"): a ledger holds weeks of history,
not years, so nothing yearly (Prophet's seasonality, Holt-Winters' annual cycle) can be
estimated; GPU spend moves with the working week (batch jobs and interactive load drop at
weekends) and drifts as services grow. The model

    cost(day t) = slope × t + level[weekday(t)]

fitted by ordinary least squares (the seasonal indices are the weekday levels minus their
mean: an additive decomposition whose trend is fitted on the deseasonalized series) has
eight numbers finance can read ("+$41 a day per day; Saturdays $900 below the week"),
no tuning, no random state, and is exact on a series that is a line plus a weekly
pattern. Least squares within each weekday has a closed form, so no solver is needed.

History rules (each stated in the docs):

- at least :data:`MIN_SEASONAL_DAYS` (14) complete days: trend + weekday levels (two of
  every weekday, so a weekday's level is not one day's noise);
- 1 to 13 days: the run rate, the mean of the days seen, flat (a trend over a few days
  would extrapolate a start-up ramp or a one-off spike over a whole month);
- no complete day (a service first seen today): no forecast, said so (``None``);
- a series of zeros forecasts zeros; a forecast day below 0 is 0 (a falling trend
  extrapolated far never makes spend negative).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

MIN_SEASONAL_DAYS = 14
"""Complete days needed for the trend + weekday method (two of each weekday)."""

Method = Literal["trend+weekday", "run-rate"]


@dataclass(frozen=True, slots=True)
class DailyModel:
    """A fitted series: ``predict(d)`` is the expected cost of calendar day ``d``."""

    method: Method
    origin: date  # day index 0
    slope: float  # USD per day, per day (0 for the run rate)
    levels: tuple[float, ...]  # by weekday (Monday = 0): the cost at index 0's trend
    days: int  # complete days the fit used

    def predict(self, day: date) -> float:
        t = (day - self.origin).days
        return max(0.0, self.slope * t + self.levels[day.weekday()])

    @property
    def seasonal_indices(self) -> tuple[float, ...]:
        """Each weekday's level minus the mean level (sum 0): what a weekday adds."""
        mean = sum(self.levels) / 7
        return tuple(level - mean for level in self.levels)


def fit(first: date, values: Sequence[float]) -> DailyModel | None:
    """The model of ``values`` (one per day, ``first`` onwards, no gaps), or None when
    there is no day at all."""
    n = len(values)
    if n == 0:
        return None
    if n < MIN_SEASONAL_DAYS:
        mean = sum(values) / n
        return DailyModel("run-rate", first, 0.0, (mean,) * 7, n)
    by_weekday: list[list[tuple[int, float]]] = [[] for _ in range(7)]
    for t, y in enumerate(values):
        by_weekday[(first + timedelta(days=t)).weekday()].append((t, y))
    # slope: pooled within-weekday regression (each weekday centred on its own means)
    sxy = sxx = 0.0
    means: list[tuple[float, float]] = []
    for points in by_weekday:
        tm = sum(t for t, _ in points) / len(points)
        ym = sum(y for _, y in points) / len(points)
        means.append((tm, ym))
        for t, y in points:
            sxy += (t - tm) * (y - ym)
            sxx += (t - tm) ** 2
    slope = sxy / sxx  # n >= 14: every weekday twice, so sxx > 0
    levels = tuple(ym - slope * tm for tm, ym in means)
    return DailyModel("trend+weekday", first, slope, levels, n)


def total(model: DailyModel, start: date, end: date) -> float:
    """Σ of the predicted cost of the days ``start <= day < end``."""
    out = 0.0
    day = start
    while day < end:
        out += model.predict(day)
        day += timedelta(days=1)
    return out
