"""The forecast method: exact on a line plus a weekly pattern (figures summed by hand
below), the run rate under 14 days, nothing without a day, zeros stay zeros, never
negative.

The synthetic series: day t (t = 0 is Monday 2026-11-02) costs 100 + 5 t + S[t mod 7],
S = (10, 20, 0, -5, 15, -20, -20) by weekday (Σ S = 0); 21 days of history (to Sunday
2026-11-22), now = Monday 2026-11-23 00:00 UTC, so all of today is still to come.

- rest of November, t = 21..28: the week t = 21..27 is 7 × 100 + 5 × (21 + … + 27 = 168)
  + Σ S = 700 + 840 + 0 = 1540; t = 28 (a Monday) is 100 + 140 + 10 = 250; 1790 in all.
- December, t = 29..59 (1 December 2026 is a Tuesday, 29 mod 7 = 1): 31 × 100 +
  5 × (29 + … + 59 = 31 × 44 = 1364) + four whole weeks (0) + S[1] + S[2] + S[3] for
  t = 57, 58, 59 (20 + 0 - 5 = 15) = 3100 + 6820 + 15 = 9935.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from gpuledger.chargeback.forecast.method import MIN_SEASONAL_DAYS, fit, total
from gpuledger.chargeback.forecast.month import forecast_month, scope_forecast

S = (10.0, 20.0, 0.0, -5.0, 15.0, -20.0, -20.0)
FIRST = date(2026, 11, 2)
NOW = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)


def _series(days: int) -> list[float]:
    return [100.0 + 5.0 * t + S[t % 7] for t in range(days)]


def test_exact_on_a_line_plus_a_weekly_pattern() -> None:
    model = fit(FIRST, _series(21))
    assert model is not None
    assert model.method == "trend+weekday"
    assert FIRST.weekday() == 0
    assert model.slope == pytest.approx(5.0, abs=1e-9)
    assert model.seasonal_indices == pytest.approx(S, abs=1e-9)
    assert model.predict(date(2026, 11, 23)) == pytest.approx(100 + 5 * 21 + 10)  # Monday
    assert model.predict(date(2026, 11, 30)) == pytest.approx(250.0)  # t = 28, Monday
    assert model.predict(date(2026, 11, 28)) == pytest.approx(100 + 5 * 26 - 20)  # Saturday
    fc = forecast_month(model, 4000.0, NOW)
    assert fc.end_of_month_usd == pytest.approx(4000.0 + 1790.0)
    assert fc.next_month_usd == pytest.approx(9935.0)
    assert fc.method == "trend+weekday"
    assert fc.history_days == 21


def test_the_rest_of_today_counts_by_the_hours_left() -> None:
    model = fit(FIRST, _series(21))
    assert model is not None
    # at 18:00, 6 of today's 24 hours are to come: today (t = 21) is 100 + 105 + 10 = 215,
    # so 215 × 6/24; then t = 22..28, a whole week: 700 + 5 × 175 + 0 = 1575
    fc = forecast_month(model, 0.0, NOW.replace(hour=18))
    assert fc.end_of_month_usd == pytest.approx(215.0 * 6 / 24 + 1575.0)


def test_under_fourteen_days_the_run_rate() -> None:
    values = [10.0, 30.0, 20.0]  # mean 20
    model = fit(FIRST, values)
    assert model is not None
    assert model.method == "run-rate"
    assert total(model, date(2026, 12, 1), date(2027, 1, 1)) == pytest.approx(31 * 20.0)
    assert MIN_SEASONAL_DAYS == 14
    assert fit(FIRST, _series(13)).method == "run-rate"  # type: ignore[union-attr]
    assert fit(FIRST, _series(14)).method == "trend+weekday"  # type: ignore[union-attr]


def test_no_complete_day_is_no_forecast() -> None:
    assert fit(FIRST, []) is None
    fc = scope_forecast({}, {("ns", "new"): 12.5}, [("ns", "new")], NOW)
    assert fc.end_of_month_usd is None
    assert fc.next_month_usd is None
    assert fc.month_to_date_usd == 12.5
    assert fc.method == "none"


def test_zeros_forecast_zeros() -> None:
    model = fit(FIRST, [0.0] * 28)
    assert model is not None
    assert forecast_month(model, 0.0, NOW).end_of_month_usd == 0.0
    assert forecast_month(model, 0.0, NOW).next_month_usd == 0.0


def test_a_falling_trend_never_forecasts_below_zero() -> None:
    values = [max(0.0, 280.0 - 10.0 * t) for t in range(28)]  # reaches 0 at t = 28
    model = fit(FIRST, values)
    assert model is not None
    assert model.slope < 0
    assert all(model.predict(FIRST + timedelta(days=t)) >= 0.0 for t in range(28, 90))
    assert forecast_month(model, 0.0, datetime(2026, 12, 1, tzinfo=UTC)).next_month_usd == 0.0


def test_a_scope_sums_its_services_and_fills_missing_days_with_zero() -> None:
    # service a: 10 a day from day 0; service b: 5 a day on days 2 and 4 only
    daily = {
        ("n", "a"): {FIRST + timedelta(days=t): 10.0 for t in range(6)},
        ("n", "b"): {FIRST + timedelta(days=2): 5.0, FIRST + timedelta(days=4): 5.0},
    }
    now = datetime.combine(FIRST + timedelta(days=6), datetime.min.time(), UTC)
    fc = scope_forecast(daily, {("n", "a"): 60.0, ("n", "b"): 10.0}, daily, now)
    # run rate over 6 days: (60 + 10) / 6 a day; 2026-11-08 to 11-30 is 23 days to come
    assert fc.method == "run-rate"
    assert fc.history_days == 6
    assert fc.end_of_month_usd == pytest.approx(70.0 + 23 * 70.0 / 6)
