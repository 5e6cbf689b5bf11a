"""Dashboards and rules against a real Prometheus that has scraped a real agent.

One Prometheus (Debian's package, 127.0.0.1, temporary TSDB) scrapes one agent for the
module: a simulated GPU node, a vLLM stand-in that the agent scrapes and probes, a
LiteLLM gateway stand-in whose tenants share the simulated chat service (its page moves
on once, so the tenant counters have a rate; a cap of 2 tenants per service folds some
into ``__other__``), and a real PostgreSQL with pgvector. The generated rule file is
loaded, so recording rules are evaluated by Prometheus itself. Then:

- every panel query of every dashboard parses and returns at least one series;
- every recording rule evaluates without error and its series exists;
- every alert rule evaluates without error, and every metric its expression names has
  data (an alert's full expression is empty unless it fires, which a healthy simulated
  node should not do).
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import yaml

from gpuledger import schema
from gpuledger.alerts.config import AlertsConfig
from gpuledger.alerts.promql import metric_names
from gpuledger.alerts.rules import rules_document
from gpuledger.dashboards.output import all_dashboards, to_json
from gpuledger.dashboards.queries import all_queries, concrete
from tests.support.harness import AgentProcess, PrometheusServer, http_get, prometheus_binary
from tests.support.paths import FIXTURES
from tests.support.standins import Behaviour, StandIn, wait_until
from tests.support.vllm_standin import VllmBehaviour, VllmStandIn

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(prometheus_binary() is None, reason="make test installs prometheus"),
]


@pytest.fixture(scope="module")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: Any
) -> Iterator[PrometheusServer]:
    workdir = tmp_path_factory.mktemp("observability")
    postgres_server.admin("DROP DATABASE IF EXISTS obs")
    postgres_server.admin("CREATE DATABASE obs")
    pg_url = postgres_server.url_for("obs")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute("CREATE TABLE docs (id bigserial PRIMARY KEY, embedding vector(8))")
        conn.execute("CREATE INDEX docs_hnsw ON docs USING hnsw (embedding vector_l2_ops)")
        conn.execute(
            "INSERT INTO docs (embedding) SELECT array_fill(1.0::real, ARRAY[8])::vector "
            "FROM generate_series(1, 500)"
        )
    rules_path = workdir / "rules.yaml"
    # evaluate every second so a minute of test covers many evaluations
    fast = AlertsConfig(recording_interval="1s", alerting_interval="1s")
    rules_path.write_text(yaml.safe_dump(rules_document(fast)), encoding="utf-8")
    behaviour = VllmBehaviour(
        served_model="meta-llama/Llama-3.1-8B-Instruct",
        first_token_delay_s=0.05,
        per_token_delay_s=0.005,
    )
    config = {
        "node_name": "obs-node",
        "simulate": {"enabled": True},
        "collection": {"interval_seconds": 1.0},
        "ledger": {"flush_interval_seconds": 1.0},
        "probes": {"interval_seconds": 1.0, "max_tokens": 4},
        "pgvector": {
            "enabled": True,
            "interval_seconds": 1.0,
            "growth_min_samples": 2,
            "databases": [{"name": "rag", "dsn": pg_url, "capacity_bytes": 10**11}],
        },
    }
    pages = FIXTURES / "gateways"
    with (
        VllmStandIn(behaviour) as vllm,
        StandIn(Behaviour(body=(pages / "litellm-1.prom").read_bytes())) as gateway,
    ):
        config["vllm"] = {
            "enabled": True,
            # the vLLM server is the simulated node's chat service (its GPUs, its tokens)
            "endpoints": [{"url": vllm.url, "service": "chat-llama-70b", "namespace": "llm-prod"}],
        }
        config["gateways"] = {
            "enabled": True,
            "interval_seconds": 1.0,
            "max_tenants_per_service": 2,
            "endpoints": [
                {
                    "url": gateway.url,
                    "preset": "litellm",
                    "models": {
                        "llama-70b": "llm-prod/chat-llama-70b",
                        "mistral-7b": "llm-batch/summarize-mistral-7b",
                    },
                }
            ],
        }
        with (
            AgentProcess(workdir, config) as agent,
            PrometheusServer(
                workdir, [f"127.0.0.1:{agent.port}"], "1s", rule_files=[rules_path]
            ) as prom,
        ):
            wait_until(prom.targets_up, timeout=30)
            # the pgvector table grows while Prometheus watches, so growth has a slope;
            # the gateway's counters move on once, so tenant tokens have a rate
            for i in range(3):
                time.sleep(5)
                if i == 0:
                    gateway.behaviour = Behaviour(body=(pages / "litellm-2.prom").read_bytes())
                with psycopg.connect(pg_url, autocommit=True) as conn:
                    conn.execute(
                        "INSERT INTO docs (embedding) SELECT "
                        "array_fill(2.0::real, ARRAY[8])::vector FROM generate_series(1, 500)"
                    )
            time.sleep(20)  # rate() windows and probe histograms fill
            yield prom


def query_result(prom: PrometheusServer, expr: str) -> tuple[str, list[Any]]:
    status, body = http_get(f"{prom.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
    doc = yaml.safe_load(body)
    if status != 200 or doc.get("status") != "success":
        return f"HTTP {status}: {doc.get('error', body[:200])}", []
    return "", list(doc["data"]["result"])


# The reporter's findings exist only once a monthly report with findings is written, and
# its spend scores only on a reporter, which this node-role agent is not: their panels and
# alerts must parse and run here, and promtool checks their values
# (tests/dashboards/test_findings_panels.py, test_spend_panel.py, tests/alerts/); the same
# holds for the delivery counters and the budget refresh (test_budget_alerts.py).
REPORTER_ONLY = frozenset({
    schema.FINDING_SAVINGS.name, schema.FINDINGS.name, schema.SPEND_ANOMALY_SCORE.name,
    schema.SPEND_DAILY_COST.name, schema.SPEND_DAILY_BASELINE.name,
    # issue 18: the reporter's delivery counters and budget refresh (this agent is a node)
    schema.REPORT_DELIVERIES.name, schema.REPORT_DELIVERY_LAST_SUCCESS.name,
    schema.BUDGET.name, schema.BUDGET_MONTH_TO_DATE.name, schema.BUDGET_FORECAST.name,
    schema.BUDGET_REFRESH_LAST_SUCCESS.name, schema.BUDGET_REFRESH_DURATION.name,
    schema.BUDGET_REFRESH_FAILURES.name,
})  # fmt: skip


def test_every_panel_query_returns_data(prometheus: PrometheusServer) -> None:
    problems = []
    checked = 0
    for uid, exprs in all_queries().items():
        for expr in exprs:
            checked += 1
            error, result = query_result(prometheus, concrete(expr))
            if error:
                problems.append(f"{uid}: {expr!r}: {error}")
            elif not result and not metric_names(expr) <= REPORTER_ONLY:
                problems.append(f"{uid}: {expr!r}: no series")
    assert checked >= 30
    assert problems == []


def _panel_targets() -> list[tuple[str, str, str, str]]:
    """(dashboard uid, panel title, expr, legendFormat) of every target, read from the
    JSON Grafana imports (rows' nested panels included)."""
    out = []
    for uid, board in all_dashboards().items():
        panels = json.loads(to_json(board)).get("panels", [])
        for panel in [*panels, *(p for row in panels for p in row.get("panels", []))]:
            for target in panel.get("targets", []):
                expr, legend = target.get("expr", ""), target.get("legendFormat", "")
                if expr:
                    out.append((uid, panel.get("title", ""), expr, legend))
    return out


def test_every_legend_label_survives_its_query(prometheus: PrometheusServer) -> None:
    """A legend's ``{{label}}`` must be a label of every series the query returns: an
    aggregation or a ``on (…)`` match that drops it leaves legends Grafana cannot tell
    apart (the fleet dashboard's memory-share panel lost ``gpu`` this way)."""
    problems, checked = [], 0
    for uid, title, expr, legend in _panel_targets():
        wanted = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
        if not wanted:
            continue
        _, result = query_result(prometheus, concrete(expr))
        # Prometheus leaves out a label whose value is empty (mig_instance of a whole
        # GPU, pod of a static endpoint), so a label counts as dropped only when no
        # series of the result has it while a series the expression reads does
        seen = {name for series in result for name in series["metric"]}
        checked += 1 if result else 0
        names = "|".join(sorted(metric_names(expr)))
        for label in sorted(wanted - seen):
            _, present = query_result(prometheus, f'{{__name__=~"{names}",{label}!=""}}')
            if result and present:
                problems.append(f"{uid} / {title}: {expr!r} drops {label!r} ({legend!r})")
    assert checked >= 20
    assert problems == [], "\n".join(problems)


def test_every_recording_rule_evaluates(prometheus: PrometheusServer) -> None:
    rules = [r for r in prometheus.rules_health() if r["type"] == "recording"]
    assert rules
    problems = [f"{r['name']}: {r.get('lastError')}" for r in rules if r["health"] != "ok"]
    for r in rules:
        _, result = query_result(prometheus, r["name"])
        if not result:
            problems.append(f"{r['name']}: recorded no series")
    assert problems == []


def test_every_alert_evaluates_and_its_metrics_have_data(prometheus: PrometheusServer) -> None:
    alerts = [r for r in prometheus.rules_health() if r["type"] == "alerting"]
    assert len(alerts) >= 14
    problems = [f"{r['name']}: {r.get('lastError')}" for r in alerts if r["health"] != "ok"]
    for r in alerts:
        error, _ = query_result(prometheus, r["query"])
        if error:
            problems.append(f"{r['name']}: {error}")
        for name in sorted(metric_names(r["query"]) - REPORTER_ONLY):
            _, result = query_result(prometheus, name)
            if not result:
                problems.append(f"{r['name']}: {name} has no data")
    assert problems == []
    firing = [r["name"] for r in alerts if r["state"] == "firing"]
    assert firing == [], "a healthy simulated node should not page anyone"
