"""The generated Prometheus rules: promtool check, promtool unit tests for every alert
(thresholds and ``for:`` boundaries), annotations and runbooks, one source of truth."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from gpuledger import schema
from gpuledger.alerts import rules
from gpuledger.alerts.config import AlertsConfig
from gpuledger.alerts.promql import metric_names, unknown_metric_names
from gpuledger.cli import app
from tests.support import rates
from tests.support.paths import REPO_ROOT
from tests.support.promtool_rules import Case, needs_promtool, promtool, run_promtool_tests, sel

ROOT = REPO_ROOT

H100 = "NVIDIA H100 80GB HBM3"
RATE_H100 = rates.capacity_rate("H100-80GB")
RATE_L4 = rates.capacity_rate("L4")


# --- label sets ----------------------------------------------------------------------

GPU_A = {"node": "n1", "gpu": "0", "uuid": "GPU-a", "model": H100}
GPU_B = {"node": "n1", "gpu": "1", "uuid": "GPU-b", "model": H100}
GPU_C = {"node": "n1", "gpu": "2", "uuid": "GPU-c", "model": H100}
POD = {
    "node": "n1",
    "service": "api",
    "namespace": "ml",
    "pod": "api-0",
    "model_name": "llama",
    "engine": "vllm",
}
POD2 = {**POD, "pod": "api-1"}


def _alloc(uuid: str) -> dict[str, str]:
    return {
        "node": "n1",
        "uuid": uuid,
        "namespace": "ml",
        "pod": "api-0",
        "container": "vllm",
        "service": "api",
    }


def _latency_buckets(
    case: Case, spec: schema.MetricSpec, bounds: tuple[str, ...], fast_until: int, **labels: str
) -> None:
    """60 observations a minute: under ``bounds[0]`` until minute ``fast_until``, then in
    (bounds[1], bounds[2]], so p99 = bounds[1] + 0.99 * (bounds[2] - bounds[1])."""
    bucket = rules._bucket(spec)
    end = 60
    for i, le in enumerate((*bounds, "+Inf")):
        if i < 2:  # fast only
            values = (
                f"0+60x{fast_until - 1} {60 * (fast_until - 1)}+0x{end - fast_until + 1}"
                if fast_until > 0
                else f"0x{end}"
            )
        else:
            values = f"0+60x{end}"
        case.series(bucket, values, **labels, le=le)


# --- tests ---------------------------------------------------------------------------


def test_every_alert_is_generated_once() -> None:
    names = [r["alert"] for r in rules.alert_rules(AlertsConfig())]
    assert names == list(rules.ALERT_NAMES)


@needs_promtool
@pytest.mark.parametrize("form", ["rulefile", "prometheusrule"])
def test_promtool_check_rules(tmp_path: Path, form: str) -> None:
    cfg = AlertsConfig(service_overrides={"chat": {"ttft_p99_seconds": 0.5}})
    if form == "rulefile":
        doc = rules.rules_document(cfg)
    else:
        obj = rules.prometheus_rule(cfg, namespace="monitoring", name="gpuledger")
        assert obj["apiVersion"] == "monitoring.coreos.com/v1"
        assert obj["kind"] == "PrometheusRule"
        assert obj["metadata"]["namespace"] == "monitoring"
        doc = {"groups": obj["spec"]["groups"]}
    path = tmp_path / "rules.yml"
    path.write_text(rules.to_yaml(doc))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_cli_writes_both_forms(tmp_path: Path) -> None:
    config = tmp_path / "agent.yml"
    config.write_text("alerts:\n  ttft_p99_seconds: 0.25\n  ttft_for: 3m\n")
    runner = CliRunner()
    out = tmp_path / "rules.yml"
    res = runner.invoke(app, ["alerts", "--out", str(out), "--config", str(config)])
    assert res.exit_code == 0, res.output
    doc = yaml.safe_load(out.read_text())
    ttft = next(
        r for g in doc["groups"] for r in g["rules"] if r.get("alert") == rules.ALERT_NAMES[0]
    )
    assert ttft["expr"].endswith("> 0.25")
    assert ttft["for"] == "3m"
    out2 = tmp_path / "pr.yml"
    res = runner.invoke(
        app, ["alerts", "--out", str(out2), "--prometheusrule", "--namespace", "obs"]
    )
    assert res.exit_code == 0, res.output
    obj = yaml.safe_load(out2.read_text())
    assert obj["kind"] == "PrometheusRule"
    assert obj["metadata"]["namespace"] == "obs"
    assert obj["spec"]["groups"] == rules.rules_document(AlertsConfig())["groups"]


def test_cli_refuses_bad_alerts_config(tmp_path: Path) -> None:
    config = tmp_path / "agent.yml"
    config.write_text("alerts:\n  ttft_p99_secondz: 0.25\n")
    res = CliRunner().invoke(app, ["alerts", "--out", str(tmp_path / "r.yml"), "-c", str(config)])
    assert res.exit_code == 2
    assert "ttft_p99_secondz" in res.output
    assert not (tmp_path / "r.yml").exists()


def test_config_rejects_bad_duration() -> None:
    with pytest.raises(ValueError, match="ttft_for"):
        AlertsConfig(ttft_for="ten minutes")


# Alerts whose condition is a state (1/0), not a quantity: their description names the
# state and its duration instead of a value.
BOOLEAN_ALERTS = {
    "GpuledgerGpuUnallocated",
    "GpuledgerGpuThermalThrottling",
    "GpuledgerCollectorDown",
    "GpuledgerAgentTargetDown",
    "GpuledgerAgentAbsent",
    "GpuledgerTenantGatewayDown",
}


def _runbook_anchors() -> set[str]:
    text = (ROOT / "docs" / "runbooks.md").read_text(encoding="utf-8")
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_every_alert_has_annotations_severity_and_runbook() -> None:
    anchors = _runbook_anchors()
    for rule in rules.alert_rules(AlertsConfig()):
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
        ann = rule["annotations"]
        assert ann["summary"].strip(), name
        if name not in BOOLEAN_ALERTS:
            assert "$value" in ann["description"], name
        assert ann["description"].strip(), name
        base, _, anchor = ann["runbook_url"].partition("#")
        assert base == "docs/runbooks.md", name
        assert anchor in anchors, f"{name}: no section #{anchor} in docs/runbooks.md"


def test_runbook_base_url_is_configurable() -> None:
    cfg = AlertsConfig(runbook_base_url="https://example.com/gpuledger/runbooks")
    urls = [r["annotations"]["runbook_url"] for r in rules.alert_rules(cfg)]
    assert all(u.startswith("https://example.com/gpuledger/runbooks#") for u in urls)


# --- one source of truth -------------------------------------------------------------


def test_metric_names_lexer() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (service, le) (rate(foo_bucket{job="x", le!="1"}[5m])))'
        " / on (node) group_left (model) bar_total offset 5m > bool 1e3"
        ' and {__name__="baz"} or absent(qux) unless sum(rate(a:b:c[1h:1m])) without (pod)'
        ' or label_replace(vector(1), "gpu_model", "NVIDIA H100", "", "") or Inf'
    )
    assert metric_names(expr) == {"foo_bucket", "bar_total", "baz", "qux", "a:b:c"}
    assert metric_names("up == 0") == {"up"}
    assert metric_names("count by (x) (sum(y))") == {"y"}


def test_every_rule_names_only_defined_metrics() -> None:
    cfg = AlertsConfig(service_overrides={"chat": {"ttft_p99_seconds": 0.5}})
    doc = rules.rules_document(cfg)
    known = schema.all_series_names() | set(rules.RECORDED.values()) | {"up"}
    for group in doc["groups"]:
        for rule in group["rules"]:
            names = metric_names(rule["expr"])
            assert names or rule.get("record") == rules.GPU_HOURLY_RATE_USD, rule  # constants
            assert unknown_metric_names(rule["expr"], known) == set(), rule
    # every recording rule is defined under its RECORDED name, and used or exported
    records = {r["record"] for g in doc["groups"] for r in g["rules"] if "record" in r}
    assert records == set(rules.RECORDED.values())
    assert rules.unknown_names(doc) == {}


def test_checker_catches_a_made_up_name() -> None:
    doc = rules.rules_document(AlertsConfig())
    bad = doc["groups"][1]["rules"][0]
    bad["expr"] = bad["expr"].replace(rules.TTFT_P99, "gpuledger_vllm_time_to_first_token_secs")
    assert rules.unknown_names(doc) == {bad["alert"]: {"gpuledger_vllm_time_to_first_token_secs"}}
    assert unknown_metric_names("sum(gpuledger_made_up_total) + up", rules.known_names()) == {
        "gpuledger_made_up_total"
    }


def test_generation_refuses_a_made_up_name(monkeypatch: pytest.MonkeyPatch) -> None:
    real = rules.recording_rules

    def with_typo(cfg: AlertsConfig, card: Any = None) -> list[dict[str, Any]]:
        return [*real(cfg, card), {"record": "x:y:z", "expr": "rate(gpuledger_nope_total[5m])"}]

    monkeypatch.setattr(rules, "recording_rules", with_typo)
    with pytest.raises(ValueError, match="gpuledger_nope_total"):
        rules.rules_document(AlertsConfig())


def test_no_literal_metric_names_in_the_module() -> None:
    for path in (ROOT / "gpuledger" / "alerts").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"[\"'`]gpuledger_", text), path


# --- promtool unit tests, one per alert ----------------------------------------------


@needs_promtool
def test_promtool_unit_tests_every_alert(tmp_path: Path) -> None:
    cfg = AlertsConfig()
    s = schema
    cases: list[Case] = []
    covered: set[str] = set()

    def add(case: Case) -> None:
        cases.append(case)
        covered.update(t["alertname"] for t in case.doc["alert_rule_test"])

    # TTFT p99: 0.2485 s (> 100 ms) from minute 20; pending 9 min later, firing 11 min later.
    svc = {"service": "api", "namespace": "ml"}
    c = Case(cfg)
    _latency_buckets(c, s.VLLM_TTFT, ("0.05", "0.1", "0.25", "0.5"), 20, **POD)
    c.expect("19m", "GpuledgerTtftP99High", [])
    c.expect("29m", "GpuledgerTtftP99High", [])
    c.expect("31m", "GpuledgerTtftP99High", [(svc, 0.2485)])
    c.expr("31m", rules.TTFT_P99, [(sel(rules.TTFT_P99, **svc), 0.2485)])
    c.expr("15m", rules.TTFT_P99, [(sel(rules.TTFT_P99, **svc), 0.0495)])
    add(c)

    # Inter-token latency and e2e, the same shape.
    c = Case(cfg)
    _latency_buckets(c, s.VLLM_ITL, ("0.025", "0.05", "0.2", "0.5"), 20, **POD)
    c.expect("29m", "GpuledgerInterTokenLatencyP99High", [])
    c.expect("31m", "GpuledgerInterTokenLatencyP99High", [(svc, 0.05 + 0.99 * 0.15)])
    add(c)
    c = Case(cfg)
    _latency_buckets(c, s.VLLM_E2E, ("10", "20", "60", "120"), 20, **POD)
    c.expect("29m", "GpuledgerE2eLatencyP99High", [])
    c.expect("31m", "GpuledgerE2eLatencyP99High", [(svc, 20 + 0.99 * 40)])
    add(c)

    # GPU over-provisioned: 39 % fires, 41 % does not, an unallocated 10 % GPU does not.
    c = Case(cfg)
    c.series(s.GPU_UTILIZATION.name, "0.39x120", **GPU_A)
    c.series(s.GPU_UTILIZATION.name, "0.41x120", **GPU_B)
    c.series(s.GPU_UTILIZATION.name, "0.1x120", **GPU_C)
    c.series(s.GPU_ALLOCATION.name, "1x120", **_alloc("GPU-a"))
    c.series(s.GPU_ALLOCATION.name, "1x120", **_alloc("GPU-b"))
    c.expect("14m", "GpuledgerGpuOverProvisioned", [])
    c.expect("90m", "GpuledgerGpuOverProvisioned", [(GPU_A, 0.39)])
    add(c)

    # GPU unallocated for 6 h.
    c = Case(cfg, interval="5m")
    c.series(s.GPU_INFO.name, "1x90", **GPU_A, driver="550")
    c.series(s.GPU_INFO.name, "1x90", **GPU_B, driver="550")
    c.series(s.GPU_ALLOCATION.name, "1x90", **_alloc("GPU-a"))
    c.expect("5h50m", "GpuledgerGpuUnallocated", [])
    c.expect("6h10m", "GpuledgerGpuUnallocated", [({**GPU_B, "driver": "550"}, 1)])
    add(c)

    # KV cache > 95 % for 5 m; waiting queue > 10 for 5 m.
    c = Case(cfg)
    c.series(s.VLLM_KV_CACHE_USAGE.name, "0.96x20", **POD)
    c.series(s.VLLM_KV_CACHE_USAGE.name, "0.94x20", **POD2)
    c.series(s.VLLM_REQUESTS_WAITING.name, "25x20", **POD)
    c.series(s.VLLM_REQUESTS_WAITING.name, "10x20", **POD2)
    c.expect("4m", "GpuledgerKvCacheNearlyFull", [])
    c.expect("6m", "GpuledgerKvCacheNearlyFull", [(POD, 0.96)])
    c.expect("4m", "GpuledgerRequestQueueHigh", [])
    c.expect("6m", "GpuledgerRequestQueueHigh", [(POD, 25)])
    add(c)

    # Probe failure rate over 15 m > 10 %: 20 % fires, 1/21 does not, all-failing fires.
    probe = {"node": "n1", "service": "api", "namespace": "ml", "model_name": "llama"}
    c = Case(cfg)
    c.series(s.PROBE_FAILURES.name, "0+1x30", **probe, endpoint="e1", reason="timeout")
    c.series(s.PROBE_SUCCESS.name, "0+4x30", **probe, endpoint="e1")
    c.series(s.PROBE_FAILURES.name, "0+1x30", **probe, endpoint="e2", reason="timeout")
    c.series(s.PROBE_SUCCESS.name, "0+20x30", **probe, endpoint="e2")
    c.series(s.PROBE_FAILURES.name, "0+1x30", **probe, endpoint="e3", reason="connect")
    alert_labels = {"service": "api", "namespace": "ml"}
    c.expect(
        "20m",
        "GpuledgerProbeFailureRateHigh",
        [({**alert_labels, "endpoint": "e1"}, 0.2), ({**alert_labels, "endpoint": "e3"}, 1.0)],
    )
    add(c)

    # XID: a counter increase, or a change of the last XID code (dcgm-exporter).
    c = Case(cfg)
    c.series(s.GPU_XID_ERRORS.name, "0x10 1x20", **GPU_A)
    c.series(s.GPU_LAST_XID.name, "0x10 79x20", **GPU_B)
    c.series(s.GPU_LAST_XID.name, "0x30", **GPU_C)
    c.expect("9m", "GpuledgerGpuXidError", [])
    c.expect("15m", "GpuledgerGpuXidError", [(GPU_A, 1), (GPU_B, 1)])
    c.expect("25m", "GpuledgerGpuXidError", [])
    add(c)

    # Thermal throttling for 5 m; power capping is not thermal.
    c = Case(cfg)
    c.series(s.GPU_THROTTLED.name, "1x20", **GPU_A, reason="hw_thermal_slowdown")
    c.series(s.GPU_THROTTLED.name, "1x20", **GPU_B, reason="sw_power_cap")
    c.expect("4m", "GpuledgerGpuThermalThrottling", [])
    c.expect(
        "6m", "GpuledgerGpuThermalThrottling", [({**GPU_A, "reason": "hw_thermal_slowdown"}, 1)]
    )
    add(c)

    # pgvector: 7 days left fires after 30 m, 30 days does not.
    c = Case(cfg)
    c.series(s.PG_DAYS_UNTIL_FULL.name, "7x60", node="n1", database="vectors")
    c.series(s.PG_DAYS_UNTIL_FULL.name, "30x60", node="n1", database="docs")
    c.expect("29m", "GpuledgerPgvectorDiskFillingUp", [])
    c.expect("31m", "GpuledgerPgvectorDiskFillingUp", [({"node": "n1", "database": "vectors"}, 7)])
    add(c)

    # Collector down for 10 m; agent target down for 5 m (only gpuledger jobs).
    c = Case(cfg)
    c.series(s.COLLECTOR_UP.name, "0x20", node="n1", collector="dcgm")
    c.series(s.COLLECTOR_UP.name, "1x20", node="n1", collector="nvml")
    c.series("up", "0x20", job="gpuledger-agent", instance="10.0.0.1:9835")
    c.series("up", "1x20", job="gpuledger-agent", instance="10.0.0.2:9835")
    c.series("up", "0x20", job="node-exporter", instance="10.0.0.1:9100")
    c.series(s.BUILD_INFO.name, "1x20", node="n2", version="0.1.0")
    c.expect("9m", "GpuledgerCollectorDown", [])
    c.expect("11m", "GpuledgerCollectorDown", [({"node": "n1", "collector": "dcgm"}, 0)])
    c.expect("4m", "GpuledgerAgentTargetDown", [])
    c.expect(
        "6m",
        "GpuledgerAgentTargetDown",
        [({"job": "gpuledger-agent", "instance": "10.0.0.1:9835"}, 0)],
    )
    c.expect("20m", "GpuledgerAgentAbsent", [])
    add(c)

    # Agent absent: no build_info at all for 15 m.
    c = Case(cfg)
    c.series("up", "1x30", job="other", instance="x")
    c.expect("14m", "GpuledgerAgentAbsent", [])
    c.expect("16m", "GpuledgerAgentAbsent", [({}, 1)])
    add(c)

    # Ledger flush failing with rows pending for 10 m; failures without pending rows: no.
    c = Case(cfg)
    c.series(s.LEDGER_FLUSH_FAILURES.name, "0+1x30", node="n1")
    c.series(s.LEDGER_PENDING_ROWS.name, "5x30", node="n1")
    c.series(s.LEDGER_FLUSH_FAILURES.name, "0+1x30", node="n2")
    c.series(s.LEDGER_PENDING_ROWS.name, "0x30", node="n2")
    c.expect("9m", "GpuledgerLedgerFlushFailing", [])
    c.expect("20m", "GpuledgerLedgerFlushFailing", [({"node": "n1"}, 15)])
    add(c)

    # Zombie GPU holders (the reporter's findings): a zombie finding reported for 24 h
    # fires; one reported only since hour 12.5 does not yet; other kinds never do.
    c = Case(cfg, interval="5m")
    ghost = {"namespace": "prod", "service": "ghost"}
    c.series(s.FINDING_SAVINGS.name, "1200.25x330", node="r1", kind="zombie", **ghost)
    c.series(s.FINDING_SAVINGS.name, "_x150 5x180", node="r1", kind="zombie",
             namespace="lab", service="late")  # fmt: skip
    c.series(s.FINDING_SAVINGS.name, "3600x330", node="r1", kind="over_provisioned",
             namespace="prod", service="chat")  # fmt: skip
    c.expect("23h50m", "GpuledgerZombieGpuHolders", [])
    c.expect("24h10m", "GpuledgerZombieGpuHolders", [(ghost, 1200.25)])
    add(c)

    # Report delivery: a pass that gave up (failed +1 at minute 65) fires while it is in
    # the 2 h window (increase exactly 1: the counter starts at 0, so no extrapolation
    # before it) and clears after; tries that failed but were retried (error) never do.
    c = Case(cfg, interval="5m")
    email = {"node": "r1", "channel": "email"}
    hook = {"node": "r1", "channel": "webhook"}
    c.series(s.REPORT_DELIVERIES.name, "0x12 1x40", **email, outcome="failed")
    c.series(s.REPORT_DELIVERIES.name, "0x12 3x40", **email, outcome="error")
    c.series(s.REPORT_DELIVERIES.name, "0x12 2x40", **hook, outcome="error")
    c.series(s.REPORT_DELIVERIES.name, "0x12 1x40", **hook, outcome="sent")
    c.series(s.REPORT_DELIVERIES.name, "0x52", **hook, outcome="failed")
    c.expect("60m", "GpuledgerReportDeliveryFailing", [])
    c.expect("70m", "GpuledgerReportDeliveryFailing", [({**email, "outcome": "failed"}, 1)])
    c.expect("190m", "GpuledgerReportDeliveryFailing", [])
    add(c)

    # Cost recording rules: 2 H100s held for a service, 1 idle L4, priced with the shipped
    # rate card's capacity rates (computed here from its YAML figures).
    c = Case(cfg)
    gpu_s = {"service": "api", "namespace": "ml", "gpu_model": H100}
    c.series(s.SERVICE_GPU_SECONDS.name, "0+120x120", node="n1", **gpu_s, kind="allocated")
    c.series(s.SERVICE_GPU_SECONDS.name, "0+30x120", node="n1", **gpu_s, kind="busy")
    c.series(s.IDLE_GPU_SECONDS.name, "0+60x120", node="n1", gpu_model="NVIDIA L4")
    c.expr(
        "90m",
        rules.SERVICE_GPU_SECONDS_RATE_1H,
        [
            (sel(rules.SERVICE_GPU_SECONDS_RATE_1H, **gpu_s, kind="allocated"), 2),
            (sel(rules.SERVICE_GPU_SECONDS_RATE_1H, **gpu_s, kind="busy"), 0.5),
        ],
    )
    c.expr(
        "90m",
        rules.SERVICE_COST_USD_PER_HOUR,
        [(sel(rules.SERVICE_COST_USD_PER_HOUR, service="api", namespace="ml"), 2 * RATE_H100)],
    )
    c.expr(
        "90m",
        rules.IDLE_COST_USD_PER_HOUR,
        [(sel(rules.IDLE_COST_USD_PER_HOUR, gpu_model="NVIDIA L4"), RATE_L4)],
    )
    c.expr(
        "1m",
        f'{rules.GPU_HOURLY_RATE_USD}{{gpu_model="{H100}"}}',
        [(sel(rules.GPU_HOURLY_RATE_USD, gpu_model=H100), RATE_H100)],
    )
    c.expr(
        "90m",
        rules.GPU_UTILIZATION_AVG_1H,
        [],
    )
    add(c)

    # the tenant, spend and budget alerts have their own modules, test_tenant_alerts.py,
    # test_spend_alerts.py and test_budget_alerts.py
    assert covered == set(rules.ALERT_NAMES) - {
        *rules.TENANT_ALERT_NAMES,
        *rules.SPEND_ALERT_NAMES,
        *rules.BUDGET_ALERT_NAMES,
    }
    run_promtool_tests(tmp_path, cfg, cases)


@needs_promtool
def test_promtool_service_override_changes_threshold(tmp_path: Path) -> None:
    cfg = AlertsConfig(service_overrides={"chat": {"ttft_p99_seconds": 0.5}})
    c = Case(cfg)
    _latency_buckets(c, schema.VLLM_TTFT, ("0.05", "0.1", "0.25", "0.5"), 0, **POD)
    _latency_buckets(
        c, schema.VLLM_TTFT, ("0.05", "0.1", "0.25", "0.5"), 0, **{**POD, "service": "chat"}
    )
    # both at p99 = 0.2485 s: over the default 100 ms, under chat's 500 ms
    c.expect("15m", "GpuledgerTtftP99High", [({"service": "api", "namespace": "ml"}, 0.2485)])
    run_promtool_tests(tmp_path, cfg, [c])

    # and an override lower than the default makes a service fire that otherwise would not
    cfg = AlertsConfig(service_overrides={"chat": {"ttft_p99_seconds": 0.01}})
    c = Case(cfg)
    _latency_buckets(c, schema.VLLM_TTFT, ("0.025", "0.05", "0.1", "0.5"), 60, **POD)
    _latency_buckets(
        c, schema.VLLM_TTFT, ("0.025", "0.05", "0.1", "0.5"), 60, **{**POD, "service": "chat"}
    )
    # all under 25 ms: p99 = 0.02475 s, over 10 ms, under 100 ms
    c.expect("15m", "GpuledgerTtftP99High", [({"service": "chat", "namespace": "ml"}, 0.02475)])
    run_promtool_tests(tmp_path, cfg, [c])
