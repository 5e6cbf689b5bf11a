"""The budget alerts (issue 18) through ``promtool test rules``: series that cross each
threshold and series that stop at it, with the times worked out here.

Samples every 5 minutes (Prometheus' lookback: a sparser series would vanish between
samples and reset ``for:``); the rules are evaluated every minute.

- ``search`` (cost center): budget 1000 throughout; forecast 900 for the first two hours
  (samples 0..115 m), 1200 from 120 m. Over from 120 m, for 3 h → firing from 300 m (5 h),
  pending before: nothing at 4h50m, firing at 5h10m with value 1200.
- ``llm-prod/chat`` (service): month to date 800 to 55 m, 1000.5 from 60 m, budget 1000:
  over from 60 m, for 5 m → firing from 65 m: nothing at 1h, firing at 1h10m (1000.5).
- ``lab`` (namespace): forecast and month to date equal to the budget exactly (1000):
  never above it, never fires.
"""

from __future__ import annotations

from pathlib import Path

from gpuledger import schema
from gpuledger.alerts import rules
from gpuledger.alerts.config import AlertsConfig
from tests.support.promtool_rules import Case, needs_promtool, run_promtool_tests

SEARCH = {"node": "r1", "scope": "cost_center", "name": "search"}
CHAT = {"node": "r1", "scope": "service", "name": "llm-prod/chat", "namespace": "llm-prod",
        "service": "chat"}  # fmt: skip
LAB = {"node": "r1", "scope": "namespace", "name": "lab", "namespace": "lab"}


def _series(case: Case, metric: str, values: str, labels: dict[str, str]) -> None:
    """``Case.series`` takes labels as keywords, and a budget's ``name`` label is one its
    own parameter already has: the selector is written here."""
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    case.doc["input_series"].append({"series": f"{metric}{{{inner}}}", "values": values})


def test_budget_alerts_sit_before_the_spend_and_tenant_alerts() -> None:
    names = [r["alert"] for r in rules.alert_rules(AlertsConfig())]
    n = len(rules.TENANT_ALERT_NAMES) + len(rules.SPEND_ALERT_NAMES)
    assert names[-n - 2 : -n] == list(rules.BUDGET_ALERT_NAMES)
    assert names == list(rules.ALERT_NAMES)
    by_name = {r["alert"]: r for r in rules.alert_rules(AlertsConfig(budget_forecast_for="6h"))}
    assert by_name["GpuledgerBudgetForecastOver"]["for"] == "6h"
    assert by_name["GpuledgerBudgetForecastOver"]["labels"]["severity"] == "warning"
    assert by_name["GpuledgerBudgetExceeded"]["labels"]["severity"] == "critical"


@needs_promtool
def test_promtool_budget_alerts(tmp_path: Path) -> None:
    cfg = AlertsConfig()
    assert (cfg.budget_forecast_for, cfg.budget_exceeded_for) == ("3h", "5m")
    s = schema
    c = Case(cfg, interval="5m")
    _series(c, s.BUDGET.name, "1000x96", SEARCH)
    _series(c, s.BUDGET_FORECAST.name, "900x23 1200x72", SEARCH)
    _series(c, s.BUDGET_MONTH_TO_DATE.name, "500x96", SEARCH)
    _series(c, s.BUDGET.name, "1000x96", CHAT)
    _series(c, s.BUDGET_MONTH_TO_DATE.name, "800x11 1000.5x84", CHAT)
    _series(c, s.BUDGET_FORECAST.name, "900x96", CHAT)
    _series(c, s.BUDGET.name, "1000x96", LAB)
    _series(c, s.BUDGET_FORECAST.name, "1000x96", LAB)
    _series(c, s.BUDGET_MONTH_TO_DATE.name, "1000x96", LAB)
    c.expect("4h50m", "GpuledgerBudgetForecastOver", [])
    c.expect("5h10m", "GpuledgerBudgetForecastOver", [(SEARCH, 1200)])
    c.expect("1h", "GpuledgerBudgetExceeded", [])
    c.expect("1h10m", "GpuledgerBudgetExceeded", [(CHAT, 1000.5)])
    c.expect("6h", "GpuledgerBudgetExceeded", [(CHAT, 1000.5)])
    run_promtool_tests(tmp_path, cfg, [c])
