"""The Services board's spend-anomaly panel (issue 18, item 5): its query, run by promtool
over stated series of the reporter's ``gpuledger_spend_anomaly_score``, returns one
score per (namespace, service), the stated one (two reporters exporting the same
service give one series, not two)."""

from __future__ import annotations

from pathlib import Path

import yaml
from grafana_foundation_sdk.models import dashboard as models

from gpuledger import schema
from gpuledger.dashboards import queries as q
from gpuledger.dashboards.boards import services
from gpuledger.dashboards.output import panel_exprs
from tests.support.promtool_rules import needs_promtool, promtool, sel

SCORE = schema.SPEND_ANOMALY_SCORE.name
STATED = {("team", "vision"): 55.25, ("team", "search"): 0.61, ("lab", "batch"): -4.0}


def test_the_board_has_the_spend_panel() -> None:
    board: models.Dashboard = services.build()
    titles = {str(p.title): p for p in board.panels or []}
    assert titles["Spend anomaly score (last complete day)"].type_val == "timeseries"
    assert q.spend_anomaly_score() in panel_exprs(board)


@needs_promtool
def test_the_query_gives_each_services_score(tmp_path: Path) -> None:
    series = [
        {"series": sel(SCORE, node=node, namespace=ns, service=svc), "values": f"{z}x10"}
        for (ns, svc), z in STATED.items()
        for node in ("reporter-0", "reporter-1")
    ]
    test = {
        "expr": q.concrete(q.spend_anomaly_score()),
        "eval_time": "5m",
        "exp_samples": [
            {"labels": sel("", namespace=ns, service=svc), "value": z}
            for (ns, svc), z in STATED.items()
        ],
    }
    (tmp_path / "rules.yml").write_text("groups: []\n")
    doc = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": [test]}],
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(doc, sort_keys=False, width=10000))
    result = promtool("test", "rules", str(tmp_path / "test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
