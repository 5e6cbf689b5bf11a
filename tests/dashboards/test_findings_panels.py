"""The Services board's findings panels (issue 17): the queries, run by promtool over
stated series of the reporter's ``gpuledger_finding_savings_usd`` and
``gpuledger_findings``, return what the panels say -- the ten largest findings, savings
summed per kind, a count per kind. Expected values are the stated ones, summed by hand.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from grafana_foundation_sdk.models import dashboard as models

from gpuledger import schema
from gpuledger.dashboards import queries as q
from gpuledger.dashboards.boards import services
from gpuledger.dashboards.output import panel_exprs
from tests.support.promtool_rules import needs_promtool, promtool, sel

SAVINGS = schema.FINDING_SAVINGS.name
COUNT = schema.FINDINGS.name
# (kind, namespace, service) -> monthly savings; idle capacity has no namespace/service
FOUND = {
    ("over_provisioned", "prod", "chat"): 3600.5,
    ("zombie", "prod", "ghost"): 1200.25,
    ("zombie", "lab", "old"): 100.0,
    ("idle_capacity", "", ""): 800.0,
}
# eleven small MIG findings, so the top ten must leave out the smallest ones
MIG = {("mig_fit", "search", f"svc-{i:02d}"): float(i) for i in range(1, 12)}
COUNTS = {"over_provisioned": 1, "zombie": 2, "idle_capacity": 1, "mig_fit": 11,
          "smaller_gpu_class": 0}  # fmt: skip


def _labels(kind: str, namespace: str, service: str) -> dict[str, str]:
    out = {"kind": kind}
    if namespace:
        out["namespace"] = namespace
    if service:
        out["service"] = service
    return out


def _sample(labels: dict[str, str], value: float) -> dict[str, object]:
    return {"labels": sel("", **labels), "value": value}


def test_the_board_has_the_findings_panels() -> None:
    board: models.Dashboard = services.build()
    titles = {str(p.title): p for p in board.panels or []}
    assert titles["Findings: top savings (latest report)"].type_val == "table"
    assert titles["Findings: savings by kind"].type_val == "bargauge"
    assert titles["Findings by kind"].type_val == "bargauge"
    exprs = panel_exprs(board)
    for expr in (q.finding_savings_top(), q.finding_savings_by_kind(), q.findings_by_kind()):
        assert expr in exprs


@needs_promtool
def test_the_queries_compute_what_the_panels_say(tmp_path: Path) -> None:
    series = [
        {"series": sel(SAVINGS, node="reporter-0", **_labels(*key)), "values": f"{usd}x10"}
        for key, usd in {**FOUND, **MIG}.items()
    ]
    series += [
        {"series": sel(COUNT, node="reporter-0", kind=kind), "values": f"{n}x10"}
        for kind, n in COUNTS.items()
    ]
    top = {**FOUND, **{k: v for k, v in MIG.items() if v >= 6.0}}  # the ten largest
    by_kind = {"over_provisioned": 3600.5, "zombie": 1300.25, "idle_capacity": 800.0,
               "mig_fit": sum(range(1, 12))}  # fmt: skip
    tests = [
        {
            "expr": q.concrete(q.finding_savings_top()),
            "eval_time": "5m",
            "exp_samples": [_sample(_labels(*k), v) for k, v in top.items()],
        },
        {
            "expr": q.concrete(q.finding_savings_by_kind()),
            "eval_time": "5m",
            "exp_samples": [_sample({"kind": k}, v) for k, v in by_kind.items()],
        },
        {
            "expr": q.concrete(q.findings_by_kind()),
            "eval_time": "5m",
            "exp_samples": [_sample({"kind": k}, n) for k, n in COUNTS.items()],
        },
    ]
    (tmp_path / "rules.yml").write_text("groups: []\n")
    doc = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": tests}],
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(doc, sort_keys=False, width=10000))
    result = promtool("test", "rules", str(tmp_path / "test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
