"""``GpuledgerSpendAnomaly`` (issue 18, item 5) through ``promtool test rules``: series
of the reporter's spend families that cross the thresholds and ones that do not.

Defaults: |score| ≥ 3.5 and |cost − baseline| ≥ $50, for 15 m. Each service's values
are constant over the input (the reporter refreshes hourly; a day's score holds):

==========  =====  =====  ========  ======  =========================================
service     score  cost   baseline  change  fires
==========  =====  =====  ========  ======  =========================================
surge        5.2    200     100      100    yes
slump       −4.0     20     120     −100    yes (a drop: the sign is kept)
edge         3.5    160     100       60    yes (at the threshold)
meek         3.4    200     100      100    no (score below)
cheap        9.0     30      10       20    no (change below $50)
exact        4.0    150     100       50    yes (at the dollar floor)
fading       5→1    200     100      100    no once a refresh brought it down
==========  =====  =====  ========  ======  =========================================
"""

from __future__ import annotations

from pathlib import Path

from gpuledger import schema
from gpuledger.alerts import rules
from gpuledger.alerts.config import AlertsConfig
from tests.support.promtool_rules import Case, needs_promtool, run_promtool_tests

ALERT = "GpuledgerSpendAnomaly"
# service: (score values, cost, baseline)
SERIES = {
    "surge": ("5.2x30", 200, 100),
    "slump": ("-4x30", 20, 120),
    "edge": ("3.5x30", 160, 100),
    "meek": ("3.4x30", 200, 100),
    "cheap": ("9x30", 30, 10),
    "exact": ("4x30", 150, 100),
    "fading": ("5x10 1x20", 200, 100),
}


def _labels(service: str) -> dict[str, str]:
    return {"node": "reporter-0", "namespace": "team", "service": service}


def _case(cfg: AlertsConfig) -> Case:
    c = Case(cfg)
    for service, (score, cost, base) in SERIES.items():
        c.series(schema.SPEND_ANOMALY_SCORE.name, score, **_labels(service))
        c.series(schema.SPEND_DAILY_COST.name, f"{cost}x30", **_labels(service))
        c.series(schema.SPEND_DAILY_BASELINE.name, f"{base}x30", **_labels(service))
    return c


def test_the_thresholds_and_duration_come_from_the_config() -> None:
    cfg = AlertsConfig(
        spend_anomaly_score=5, spend_anomaly_min_delta_usd=250, spend_anomaly_for="1h"
    )
    (rule,) = (r for r in rules.alert_rules(cfg) if r["alert"] == ALERT)
    assert rule["expr"] == (
        f"({schema.SPEND_ANOMALY_SCORE.name} >= 5.0 or {schema.SPEND_ANOMALY_SCORE.name} <= -5.0) "
        f"and abs({schema.SPEND_DAILY_COST.name} - {schema.SPEND_DAILY_BASELINE.name}) >= 250.0"
    )
    assert rule["for"] == "1h"
    assert rule["labels"]["severity"] == "warning"
    assert "$250.00" in rule["annotations"]["description"]
    defaults = AlertsConfig()
    assert (defaults.spend_anomaly_score, defaults.spend_anomaly_min_delta_usd) == (3.5, 50)


def test_the_spend_alert_sits_before_the_tenant_alerts() -> None:
    names = [r["alert"] for r in rules.alert_rules(AlertsConfig())]
    assert names.index(ALERT) == len(names) - len(rules.TENANT_ALERT_NAMES) - 1
    assert set(rules.SPEND_ALERT_NAMES) <= set(rules.ALERT_NAMES)


@needs_promtool
def test_promtool_spend_anomaly(tmp_path: Path) -> None:
    cfg = AlertsConfig()
    c = _case(cfg)
    c.expect("14m", ALERT, [])  # pending: for 15m
    firing = [
        (_labels("surge"), 5.2),
        (_labels("slump"), -4.0),
        (_labels("edge"), 3.5),
        (_labels("exact"), 4.0),
    ]
    c.expect("16m", ALERT, firing)
    c.expect("25m", ALERT, firing)  # fading fell to 1 at minute 10, before it could fire
    covered = {t["alertname"] for t in c.doc["alert_rule_test"]}
    assert covered == set(rules.SPEND_ALERT_NAMES)
    run_promtool_tests(tmp_path, cfg, [c])


@needs_promtool
def test_promtool_a_stricter_config_fires_less(tmp_path: Path) -> None:
    """Score 5 and $90: surge (5.2, $100) alone; slump (−4), edge, exact fall short."""
    cfg = AlertsConfig(spend_anomaly_score=5, spend_anomaly_min_delta_usd=90)
    c = _case(cfg)
    c.expect("16m", ALERT, [(_labels("surge"), 5.2)])
    run_promtool_tests(tmp_path, cfg, [c])
