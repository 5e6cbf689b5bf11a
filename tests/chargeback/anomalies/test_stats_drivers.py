"""The robust baseline and the driver split on hand-stated days, without a ledger."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from pydantic import ValidationError

from gpuledger.chargeback.anomalies.config import AnomaliesConfig
from gpuledger.chargeback.anomalies.daily import DayCosts, ServiceDay
from gpuledger.chargeback.anomalies.detect import find_anomalies, scores
from gpuledger.chargeback.anomalies.drivers import drivers
from gpuledger.chargeback.anomalies.model import Driver
from gpuledger.chargeback.anomalies.stats import baseline, robust_z

CFG = AnomaliesConfig()
KEY = ("ns", "svc")


def day(total: float, **models: float) -> ServiceDay:
    """A day that is all busy, on the GPU models given (default: one model ``A``)."""
    by_model = models or {"A": total}
    return ServiceDay(total, by_model, {}, {"busy": total, "idle": 0.0})


def test_median_and_mad_ignore_one_outlier_in_the_window() -> None:
    """[10, 11, 12, 13, 500]: median 12, deviations 2, 1, 0, 1, 488 → MAD 1; the mean
    (109.2) and σ would have hidden the next spike."""
    b = baseline([10, 11, 12, 13, 500], floor_ratio=0.0, floor_usd=0.01)
    assert (b.median, b.mad, b.days) == (12, 1, 5)
    assert b.scale == pytest.approx(1.4826)
    assert robust_z(15, b) == pytest.approx(3 / 1.4826)


def test_a_flat_series_takes_the_floor_not_zero() -> None:
    """MAD 0 → max(5 % × 100, $1) = $5: one extra cent is z 0.00135, not infinity."""
    b = baseline([100.0] * 28, floor_ratio=0.05, floor_usd=1.0)
    assert b.mad == 0
    assert b.scale == pytest.approx(1.4826 * 5)
    assert robust_z(100.01, b) == pytest.approx(0.01 / (1.4826 * 5))
    tiny = baseline([0.10] * 28, floor_ratio=0.05, floor_usd=1.0)
    assert tiny.scale == pytest.approx(1.4826)  # the dollar floor


def test_a_drop_is_reported_as_a_drop_with_a_negative_change() -> None:
    """28 days at $200 on models A ($150) and B ($50); day 29 B stops: $150, change −50,
    z = −50 / (1.4826 × 10) = −3.372 < 3.5 in size: not yet. With B at $0 and A at $100
    (−$100, z −6.74) it is, and both models carry it in proportion: the service."""
    first = date(2026, 1, 1)
    costs: DayCosts = {first + timedelta(days=i): {KEY: day(200, A=150, B=50)} for i in range(28)}
    d = first + timedelta(days=28)
    costs[d] = {KEY: day(150, A=150)}
    (s,) = scores(costs, d, CFG)
    assert s.score == pytest.approx(-50 / (1.4826 * 10))
    assert find_anomalies(costs, [d], CFG) == []
    costs[d] = {KEY: day(100, A=75, B=25)}
    (a,) = find_anomalies(costs, [d], CFG)
    assert (a.direction, a.change_usd) == ("drop", -100)
    assert a.score == pytest.approx(-100 / (1.4826 * 10))
    assert a.drivers == (Driver("service", "ns/svc", 100, 200, -100),)


def test_a_model_that_stopped_is_the_driver_of_a_drop() -> None:
    """Baseline $200 = A 150 + B 50; the day: A 150, B 0 → change −50, B's part −50 with
    a baseline share of ¼: excess −50 − ¼ · (−50) = −37.5, 75 % of the change; A's
    excess 0 − ¾ · (−50) = +37.5 goes the other way."""
    window = [day(200, A=150, B=50)] * 28
    got = drivers("ns/svc", day(150, A=150), window, 200.0, CFG)
    assert got == (Driver("gpu_model", "B", 0.0, 50.0, -50.0),)


def test_a_service_absent_on_the_day_costs_zero_and_a_day_not_observed_is_skipped() -> None:
    first = date(2026, 1, 1)
    costs: DayCosts = {first + timedelta(days=i): {KEY: day(100)} for i in range(10)}
    d = first + timedelta(days=10)
    costs[d] = {("ns", "other"): day(1)}  # observed, svc did not run
    (a,) = find_anomalies(costs, [d], CFG)
    assert (a.service, a.cost_usd, a.direction) == ("svc", 0, "drop")
    assert find_anomalies(costs, [d + timedelta(days=1)], CFG) == []  # not in the ledger


def test_too_few_baseline_days_are_not_judged() -> None:
    first = date(2026, 1, 1)
    costs: DayCosts = {first + timedelta(days=i): {KEY: day(100)} for i in range(6)}
    costs[first + timedelta(days=6)] = {KEY: day(10_000)}
    assert scores(costs, first + timedelta(days=6), CFG) == []
    costs[first + timedelta(days=6)] = {KEY: day(100)}
    costs[first + timedelta(days=7)] = {KEY: day(10_000)}  # 7 days before it now
    assert len(find_anomalies(costs, [first + timedelta(days=7)], CFG)) == 1


def test_the_config_refuses_a_minimum_above_the_window() -> None:
    with pytest.raises(ValidationError, match="min_baseline_days"):
        AnomaliesConfig(window_days=14, min_baseline_days=15)
    with pytest.raises(ValidationError, match="extra"):
        AnomaliesConfig.model_validate({"windw_days": 14})
