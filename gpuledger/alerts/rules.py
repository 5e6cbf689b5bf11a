"""Prometheus recording and alerting rules, generated from the metric schema and config.

Every metric name comes from :mod:`gpuledger.schema`; recording-rule names are defined
once here (:data:`RECORDED`) and the dashboards import them from this module. The
generated document is checked before it is returned: a rule that selects a name neither
the schema nor :data:`RECORDED` defines is refused (:func:`unknown_names`).

Output forms: a Prometheus rule file (:func:`rules_document`) and a prometheus-operator
``PrometheusRule`` object (:func:`prometheus_rule`); :func:`to_yaml` renders either.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import yaml

from gpuledger import schema
from gpuledger.alerts.config import AlertsConfig, Severity
from gpuledger.alerts.promql import metric_names
from gpuledger.chargeback.report.ratecard import RateCard, load_rate_card

# --- recording-rule names (level:metric:operations) ----------------------------------


def _base(spec: schema.MetricSpec) -> str:
    """A counter's name without ``_total``, as Prometheus names its rate."""
    return spec.name.removesuffix("_total")


def _bucket(spec: schema.MetricSpec) -> str:
    return next(n for n in schema.series_names(spec) if n.endswith("_bucket"))


LATENCY_WINDOW = "5m"
"""Rate window of the p99 recording rules (part of their names, so not configurable)."""

TTFT_P99 = f"service:{schema.VLLM_TTFT.name}:p99_{LATENCY_WINDOW}"
ITL_P99 = f"service:{schema.VLLM_ITL.name}:p99_{LATENCY_WINDOW}"
E2E_P99 = f"service:{schema.VLLM_E2E.name}:p99_{LATENCY_WINDOW}"
QUEUE_TIME_P99 = f"service:{schema.VLLM_QUEUE_TIME.name}:p99_{LATENCY_WINDOW}"
GPU_UTILIZATION_AVG_1H = f"gpu:{schema.GPU_UTILIZATION.name}:avg_1h"
SERVICE_GPU_SECONDS_RATE_1H = f"service:{_base(schema.SERVICE_GPU_SECONDS)}:rate1h"
IDLE_GPU_SECONDS_RATE_1H = f"gpu_model:{_base(schema.IDLE_GPU_SECONDS)}:rate1h"
GPU_HOURLY_RATE_USD = "gpuledger:gpu_hourly_rate_usd"
SERVICE_COST_USD_PER_HOUR = "service:gpu_cost_usd_per_hour:rate1h"
IDLE_COST_USD_PER_HOUR = "gpu_model:idle_gpu_cost_usd_per_hour:rate1h"

RECORDED: Mapping[str, str] = {
    "ttft_p99": TTFT_P99,
    "itl_p99": ITL_P99,
    "e2e_p99": E2E_P99,
    "queue_time_p99": QUEUE_TIME_P99,
    "gpu_utilization_avg_1h": GPU_UTILIZATION_AVG_1H,
    "service_gpu_seconds_rate_1h": SERVICE_GPU_SECONDS_RATE_1H,
    "idle_gpu_seconds_rate_1h": IDLE_GPU_SECONDS_RATE_1H,
    "gpu_hourly_rate_usd": GPU_HOURLY_RATE_USD,
    "service_cost_usd_per_hour": SERVICE_COST_USD_PER_HOUR,
    "idle_cost_usd_per_hour": IDLE_COST_USD_PER_HOUR,
}
"""Every recording rule gpuledger defines, by a stable key. Dashboards use these names."""

PROMETHEUS_BUILTINS = frozenset({"up"})
"""Series Prometheus itself creates that a rule may select."""

RECORDING_GROUP = "gpuledger.recording"
ALERTING_GROUP = "gpuledger.alerts"


def known_names() -> frozenset[str]:
    """Every name a gpuledger rule or panel may select."""
    return schema.all_series_names() | frozenset(RECORDED.values()) | PROMETHEUS_BUILTINS


# --- helpers ---------------------------------------------------------------------------


def _q(value: str) -> str:
    """A double-quoted PromQL (and Go template) string literal."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _num(value: float) -> str:
    return repr(float(value))


def _human_seconds(seconds: float) -> str:
    return f"{seconds * 1000:g} ms" if seconds < 1 else f"{seconds:g} s"


def _by(*labels: str) -> str:
    return f"by ({', '.join(labels)})"


_GPU_KEY = ("cluster", "node", *schema.GPU_LABELS)  # + gpu, uuid, model, mig_instance, mig_profile


# --- recording rules -------------------------------------------------------------------


def _p99(spec: schema.MetricSpec) -> str:
    return (
        f"histogram_quantile(0.99, sum {_by('cluster', 'service', 'namespace', 'le')} "
        f"(rate({_bucket(spec)}[{LATENCY_WINDOW}])))"
    )


_RE2_SPECIAL = frozenset(".^$+()[]{}|\\")


def glob_regex(patterns: tuple[str, ...]) -> str:
    """A rate card class's shell globs as one case-insensitive RE2 pattern (Prometheus
    anchors ``=~`` at both ends): ``*`` → ``.*``, ``?`` → ``.``, metacharacters escaped."""

    def one(pattern: str) -> str:
        out = []
        for ch in pattern:
            if ch == "*":
                out.append(".*")
            elif ch == "?":
                out.append(".")
            elif ch in _RE2_SPECIAL:
                out.append("\\" + ch)
            else:
                out.append(ch)
        return "".join(out)

    return "(?i)(?:" + "|".join(one(p) for p in patterns) + ")"


def rate_card_expr(card: RateCard) -> str | None:
    """The card's internal capacity rate ($ per allocated GPU-hour, from its TCO rows) per
    ``gpu_model`` label present on the GPU-seconds series, matched with the card's own
    class globs. ``or`` keeps the left-most match: the card's first-match-wins order. A
    model without a TCO row gets no series, so dashboards show no cost rather than 0."""
    parts = []
    for cls in card.gpu_models:
        tco = next((t for t in card.tco if t.gpu == cls.name), None)
        if tco is None:
            continue
        match = f"gpu_model=~{_q(glob_regex(cls.match))}"
        parts.append(
            f"group {_by('gpu_model')} ({SERVICE_GPU_SECONDS_RATE_1H}{{{match}}} "
            f"or {IDLE_GPU_SECONDS_RATE_1H}{{{match}}}) * {_num(tco.capacity_usd_per_gpu_hour)}"
        )
    return " or ".join(parts) if parts else None


def hourly_rate_expr(rates: Mapping[str, float]) -> str | None:
    """A constant series per GPU model carrying its hourly rate (None when no rates)."""
    parts = [
        f"label_replace(vector({_num(rate)}), {_q('gpu_model')}, "
        f'{_q(model.replace("$", "$$"))}, "", "")'
        for model, rate in sorted(rates.items())
    ]
    return " or ".join(parts) if parts else None


def recording_rules(cfg: AlertsConfig, card: RateCard | None = None) -> list[dict[str, Any]]:
    """The recording rules, in evaluation order (a rule only uses those above it)."""
    rules: list[dict[str, Any]] = [
        {"record": TTFT_P99, "expr": _p99(schema.VLLM_TTFT)},
        {"record": ITL_P99, "expr": _p99(schema.VLLM_ITL)},
        {"record": E2E_P99, "expr": _p99(schema.VLLM_E2E)},
        {"record": QUEUE_TIME_P99, "expr": _p99(schema.VLLM_QUEUE_TIME)},
        {
            "record": GPU_UTILIZATION_AVG_1H,
            "expr": f"avg {_by(*_GPU_KEY)} (avg_over_time({schema.GPU_UTILIZATION.name}[1h]))",
        },
        {
            "record": SERVICE_GPU_SECONDS_RATE_1H,
            "expr": f"sum {_by('cluster', 'service', 'namespace', 'gpu_model', 'kind')} "
            f"(rate({schema.SERVICE_GPU_SECONDS.name}[1h]))",
        },
        {
            "record": IDLE_GPU_SECONDS_RATE_1H,
            "expr": f"sum {_by('cluster', 'gpu_model')} (rate({schema.IDLE_GPU_SECONDS.name}[1h]))",
        },
    ]
    rate_expr = (
        hourly_rate_expr(cfg.gpu_hourly_rates_usd)
        if cfg.gpu_hourly_rates_usd
        else rate_card_expr(card or load_rate_card())
    )
    if rate_expr is not None:
        rules += [
            {"record": GPU_HOURLY_RATE_USD, "expr": rate_expr},
            {
                "record": SERVICE_COST_USD_PER_HOUR,
                "expr": f"sum {_by('cluster', 'service', 'namespace')} "
                f'({SERVICE_GPU_SECONDS_RATE_1H}{{kind="allocated"}} '
                f"* on (gpu_model) group_left () {GPU_HOURLY_RATE_USD})",
            },
            {
                "record": IDLE_COST_USD_PER_HOUR,
                "expr": f"sum {_by('cluster', 'gpu_model')} "
                f"({IDLE_GPU_SECONDS_RATE_1H} "
                f"* on (gpu_model) group_left () {GPU_HOURLY_RATE_USD})",
            },
        ]
    return rules


# --- alerting rules --------------------------------------------------------------------

TENANT_ALERT_NAMES = (
    "GpuledgerUntenantedTrafficHigh",
    "GpuledgerTenantGatewayDown",
    "GpuledgerTenantOverflow",
)
"""The alerts on the tenants of shared endpoints (issue 14), last in the rule file."""

SPEND_ALERT_NAMES = ("GpuledgerSpendAnomaly",)
"""The alerts on spend (issue 18), before the tenants' in the rule file."""

BUDGET_ALERT_NAMES = (
    "GpuledgerBudgetForecastOver",
    "GpuledgerBudgetExceeded",
)
"""The alerts on budgets (issue 18), before the spend and tenant alerts in the rule file."""

ALERT_NAMES = (
    "GpuledgerTtftP99High",
    "GpuledgerInterTokenLatencyP99High",
    "GpuledgerE2eLatencyP99High",
    "GpuledgerGpuOverProvisioned",
    "GpuledgerGpuUnallocated",
    "GpuledgerKvCacheNearlyFull",
    "GpuledgerRequestQueueHigh",
    "GpuledgerProbeFailureRateHigh",
    "GpuledgerGpuXidError",
    "GpuledgerGpuThermalThrottling",
    "GpuledgerPgvectorDiskFillingUp",
    "GpuledgerCollectorDown",
    "GpuledgerAgentTargetDown",
    "GpuledgerAgentAbsent",
    "GpuledgerLedgerFlushFailing",
    "GpuledgerZombieGpuHolders",
    "GpuledgerReportDeliveryFailing",  # issue 18: the monthly report's delivery
    *BUDGET_ALERT_NAMES,
    *SPEND_ALERT_NAMES,
    *TENANT_ALERT_NAMES,
)
"""Every alert, in the order of the rule file; ``docs/runbooks.md`` has one section each."""


def runbook_anchor(alertname: str) -> str:
    """The anchor of the alert's section in docs/runbooks.md (its ``## Name`` heading)."""
    return alertname.lower()


def _alert(
    cfg: AlertsConfig,
    name: str,
    expr: str,
    for_: str | None,
    severity: Severity,
    summary: str,
    description: str,
) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": name, "expr": expr}
    if for_ and for_.strip("0msdhwy"):
        rule["for"] = for_
    rule["labels"] = {"severity": severity, **cfg.extra_labels}
    rule["annotations"] = {
        "summary": summary,
        "description": description,
        "runbook_url": f"{cfg.runbook_base_url}#{runbook_anchor(name)}",
    }
    return rule


_SERVICE = "{{ $labels.service }} (namespace {{ $labels.namespace }})"


def _latency_alert(
    cfg: AlertsConfig,
    name: str,
    what: str,
    recorded: str,
    default: float,
    override: Callable[[str], float | None],
    for_: str,
) -> dict[str, Any]:
    overrides = {
        svc: thr for svc in sorted(cfg.service_overrides) if (thr := override(svc)) is not None
    }
    if overrides:
        excluded = ", ".join(f"service!={_q(s)}" for s in overrides)
        parts = [f"({recorded}{{{excluded}}} > {_num(default)})"]
        parts += [f"({recorded}{{service={_q(s)}}} > {_num(t)})" for s, t in overrides.items()]
        expr = " or ".join(parts)
        threshold = "".join(
            f"{{{{ {'if' if i == 0 else 'else if'} eq $labels.service {_q(s)} }}}}"
            f"{_human_seconds(t)}"
            for i, (s, t) in enumerate(overrides.items())
        )
        threshold += f"{{{{ else }}}}{_human_seconds(default)}{{{{ end }}}}"
    else:
        expr = f"{recorded} > {_num(default)}"
        threshold = _human_seconds(default)
    return _alert(
        cfg,
        name,
        expr,
        for_,
        "critical",
        f"p99 {what} of {{{{ $labels.service }}}} is above its threshold",
        f"p99 {what} of service {_SERVICE} is {{{{ $value | humanizeDuration }}}} over the "
        f"last {LATENCY_WINDOW}, above the threshold of {threshold} for {for_}.",
    )


def alert_rules(cfg: AlertsConfig) -> list[dict[str, Any]]:
    """One alerting rule per name in :data:`ALERT_NAMES`, in that order."""
    s = schema
    so = cfg.service_overrides
    gpu = "GPU {{ $labels.gpu }} ({{ $labels.uuid }}, {{ $labels.model }}) on {{ $labels.node }}"
    pod = "pod {{ $labels.pod }} of service " + _SERVICE + " on {{ $labels.node }}"
    probe_by = _by("cluster", "service", "namespace", "endpoint")
    failures = f"sum {probe_by} (increase({s.PROBE_FAILURES.name}[{cfg.probe_failure_window}]))"
    successes = f"sum {probe_by} (increase({s.PROBE_SUCCESS.name}[{cfg.probe_failure_window}]))"
    thermal = '{reason=~"hw_thermal_slowdown|sw_thermal_slowdown"}'
    return [
        _latency_alert(
            cfg, "GpuledgerTtftP99High", "time to first token", TTFT_P99,
            cfg.ttft_p99_seconds, lambda x: so[x].ttft_p99_seconds, cfg.ttft_for,
        ),
        _latency_alert(
            cfg, "GpuledgerInterTokenLatencyP99High", "inter-token latency", ITL_P99,
            cfg.itl_p99_seconds, lambda x: so[x].itl_p99_seconds, cfg.itl_for,
        ),
        _latency_alert(
            cfg, "GpuledgerE2eLatencyP99High", "end-to-end request latency", E2E_P99,
            cfg.e2e_p99_seconds, lambda x: so[x].e2e_p99_seconds, cfg.e2e_for,
        ),
        _alert(
            cfg, "GpuledgerGpuOverProvisioned",
            f"{GPU_UTILIZATION_AVG_1H} < {_num(cfg.gpu_underutilized_ratio)} "
            f"and on (cluster, node, uuid, mig_instance) ({s.GPU_ALLOCATION.name} > 0)",
            cfg.gpu_underutilized_for, "warning",
            "Allocated GPU {{ $labels.uuid }} on {{ $labels.node }} is mostly idle",
            f"{gpu} is allocated to a workload but its utilization averaged over 1h is "
            "{{ $value | humanizePercentage }}, under "
            f"{cfg.gpu_underutilized_ratio:.0%}: the service is over-provisioned.",
        ),
        _alert(
            cfg, "GpuledgerGpuUnallocated",
            f"{s.GPU_INFO.name} unless on (cluster, node, uuid) {s.GPU_ALLOCATION.name}",
            cfg.gpu_unallocated_for, "info",
            "GPU {{ $labels.uuid }} on {{ $labels.node }} has no workload",
            f"{gpu} has held no workload for {cfg.gpu_unallocated_for}; it is paid for "
            "and idle.",
        ),
        _alert(
            cfg, "GpuledgerKvCacheNearlyFull",
            f"{s.VLLM_KV_CACHE_USAGE.name} > {_num(cfg.kv_cache_usage_ratio)}",
            cfg.kv_cache_for, "warning",
            "KV cache of {{ $labels.service }} is nearly full",
            "KV-cache usage of " + pod + " is {{ $value | humanizePercentage }}, above "
            f"{cfg.kv_cache_usage_ratio:.0%} for {cfg.kv_cache_for}; requests will be "
            "preempted.",
        ),
        _alert(
            cfg, "GpuledgerRequestQueueHigh",
            f"{s.VLLM_REQUESTS_WAITING.name} > {_num(cfg.requests_waiting)}",
            cfg.requests_waiting_for, "warning",
            "Requests are queueing in {{ $labels.service }}",
            "{{ $value | humanize }} requests are waiting in " + pod
            + f", more than {cfg.requests_waiting:g} for {cfg.requests_waiting_for}.",
        ),
        _alert(
            cfg, "GpuledgerProbeFailureRateHigh",
            f"{failures} / ({failures} + ({successes} or 0 * {failures})) "
            f"> {_num(cfg.probe_failure_ratio)}",
            cfg.probe_failure_for, "critical",
            "Synthetic probes of {{ $labels.service }} are failing",
            "{{ $value | humanizePercentage }} of the synthetic probes to endpoint "
            "{{ $labels.endpoint }} of service " + _SERVICE + " failed over the last "
            f"{cfg.probe_failure_window} (threshold {cfg.probe_failure_ratio:.0%}).",
        ),
        _alert(
            cfg, "GpuledgerGpuXidError",
            f"increase({s.GPU_XID_ERRORS.name}[{cfg.xid_window}]) > 0 "
            f"or (changes({s.GPU_LAST_XID.name}[{cfg.xid_window}]) > 0 "
            f"and {s.GPU_LAST_XID.name} != 0)",
            None, "warning",
            "XID error on GPU {{ $labels.uuid }} on {{ $labels.node }}",
            f"{gpu} reported {{{{ $value | humanize }}}} XID error(s) in the last "
            f"{cfg.xid_window}.",
        ),
        _alert(
            cfg, "GpuledgerGpuThermalThrottling",
            f"{s.GPU_THROTTLED.name}{thermal} == 1",
            cfg.thermal_throttling_for, "warning",
            "GPU {{ $labels.uuid }} on {{ $labels.node }} is thermally throttled",
            f"{gpu} has had its clocks held down ({{{{ $labels.reason }}}}) for "
            f"{cfg.thermal_throttling_for}.",
        ),
        _alert(
            cfg, "GpuledgerPgvectorDiskFillingUp",
            f"{s.PG_DAYS_UNTIL_FULL.name} < {_num(cfg.pg_days_until_full)}",
            cfg.pg_days_until_full_for, "warning",
            "Database {{ $labels.database }} will be full within "
            f"{cfg.pg_days_until_full:g} days",
            "At its current growth, database {{ $labels.database }} (seen from "
            "{{ $labels.node }}) reaches its configured capacity in {{ $value | humanize }} "
            f"days, under {cfg.pg_days_until_full:g}.",
        ),
        _alert(
            cfg, "GpuledgerCollectorDown",
            f"{s.COLLECTOR_UP.name} == 0",
            cfg.collector_down_for, "warning",
            "Collector {{ $labels.collector }} on {{ $labels.node }} is failing",
            "The {{ $labels.collector }} collector of the gpuledger agent on "
            f"{{{{ $labels.node }}}} has failed every run for {cfg.collector_down_for}; "
            "its metrics are missing or stale.",
        ),
        _alert(
            cfg, "GpuledgerAgentTargetDown",
            f"up{{job=~{_q(cfg.agent_job_regex)}}} == 0",
            cfg.agent_down_for, "critical",
            "gpuledger agent {{ $labels.instance }} is down",
            "Prometheus has failed to scrape the gpuledger agent {{ $labels.instance }} "
            f"(job {{{{ $labels.job }}}}) for {cfg.agent_down_for}.",
        ),
        _alert(
            cfg, "GpuledgerAgentAbsent",
            f"absent({s.BUILD_INFO.name})",
            cfg.agent_absent_for, "critical",
            "No gpuledger agent is reporting",
            "No gpuledger agent has reported metrics to Prometheus for "
            f"{cfg.agent_absent_for}: GPU telemetry, alerts and chargeback are blind.",
        ),
        _alert(
            cfg, "GpuledgerLedgerFlushFailing",
            f"increase({s.LEDGER_FLUSH_FAILURES.name}[{cfg.ledger_flush_window}]) > 0 "
            f"and on (cluster, node) {s.LEDGER_PENDING_ROWS.name} > 0",
            cfg.ledger_flush_for, "warning",
            "The ledger of {{ $labels.node }} cannot be flushed",
            "The gpuledger agent on {{ $labels.node }} failed {{ $value | humanize }} "
            f"time(s) in the last {cfg.ledger_flush_window} to flush its spool to the "
            "ledger store, and rows are pending; chargeback data is held locally.",
        ),
        _alert(
            cfg, "GpuledgerZombieGpuHolders",
            f'max by (namespace, service) ({s.FINDING_SAVINGS.name}{{kind="zombie"}}) > 0',
            cfg.zombie_findings_for, "info",
            "GPUs held without work: {{ $labels.service }}",
            "The latest monthly report found GPU memory held with almost no busy time, or "
            "held by a process whose pod no longer exists, for service " + _SERVICE + " (an "
            "orphan holder has no service): about {{ $value | humanize }} USD a month, "
            f"still reported after {cfg.zombie_findings_for}. Details: "
            "gpuledger findings --kind zombie, or the report's Findings section.",
        ),
        _delivery_alert(cfg),
        *budget_alert_rules(cfg),
        *spend_alert_rules(cfg),
        *tenant_alert_rules(cfg),
    ]  # fmt: skip


_BUDGET = "{{ $labels.scope }} {{ $labels.name }}"


def budget_alert_rules(cfg: AlertsConfig) -> list[dict[str, Any]]:
    """The alerts of :data:`BUDGET_ALERT_NAMES`, in that order: each compares two series
    the reporter exports with the same labels (scope, name, namespace, service, node)."""
    s = schema
    return [
        _alert(
            cfg, "GpuledgerBudgetForecastOver",
            f"{s.BUDGET_FORECAST.name} > {s.BUDGET.name}",
            cfg.budget_forecast_for, "warning",
            "Budget of " + _BUDGET + " forecast to be exceeded",
            "The forecast of this month's cost of " + _BUDGET + " is {{ $value | humanize }} "
            f"USD, above its monthly budget, for {cfg.budget_forecast_for}. Details: "
            "gpuledger budgets show, or the report's Budgets section.",
        ),
        _alert(
            cfg, "GpuledgerBudgetExceeded",
            f"{s.BUDGET_MONTH_TO_DATE.name} > {s.BUDGET.name}",
            cfg.budget_exceeded_for, "critical",
            "Budget of " + _BUDGET + " exceeded",
            "This month's cost of " + _BUDGET + " so far is {{ $value | humanize }} USD, "
            "above its monthly budget. Details: gpuledger budgets show, or the report's "
            "Budgets section.",
        ),
    ]  # fmt: skip


def _delivery_alert(cfg: AlertsConfig) -> dict[str, Any]:
    """The monthly report's delivery gave up on a pass (every try failed): the report is
    on disk, but finance or a team did not get it (docs/delivery.md)."""
    s = schema
    return _alert(
        cfg, "GpuledgerReportDeliveryFailing",
        f'increase({s.REPORT_DELIVERIES.name}{{outcome="failed"}}'
        f"[{cfg.report_delivery_window}]) > 0",
        None, "warning",
        "The monthly report could not be delivered by {{ $labels.channel }}",
        "The reporter on {{ $labels.node }} gave up {{ $value | humanize }} time(s) in the "
        f"last {cfg.report_delivery_window} delivering the monthly report by "
        "{{ $labels.channel }} after every retry; it tries again every hour. The report is "
        "on disk; the reason is in the reporter's log and the ledger's ledger_deliveries rows.",
    )  # fmt: skip


def spend_alert_rules(cfg: AlertsConfig) -> list[dict[str, Any]]:
    """The alerts of :data:`SPEND_ALERT_NAMES`: a service's latest complete day far from
    its baseline, in either direction (``or`` keeps the score's sign for the message)."""
    s = schema
    score, t = s.SPEND_ANOMALY_SCORE.name, _num(cfg.spend_anomaly_score)
    change = f"abs({s.SPEND_DAILY_COST.name} - {s.SPEND_DAILY_BASELINE.name})"
    return [
        _alert(
            cfg, "GpuledgerSpendAnomaly",
            f"({score} >= {t} or {score} <= -{t}) "
            f"and {change} >= {_num(cfg.spend_anomaly_min_delta_usd)}",
            cfg.spend_anomaly_for, "warning",
            "Spend anomaly: {{ $labels.service }}",
            "The cost of service " + _SERVICE + " on the last complete day is "
            "{{ $value | humanize }} robust standard deviations from its baseline (the "
            "median of its trailing days), and at least "
            f"${cfg.spend_anomaly_min_delta_usd:,.2f} away from it; compare "
            f"{s.SPEND_DAILY_COST.name} with {s.SPEND_DAILY_BASELINE.name}. The drivers "
            "(GPU model, tenant, idle) are in the monthly report's What changed section.",
        ),
    ]  # fmt: skip


def untenanted_share_expr(window: str) -> str:
    """Per (service, namespace): the share of prompt + generation tokens counted with
    tenant ``__untenanted__`` over ``window``. A service with no untenanted series has no
    value (nothing to alert on); one that served no tokens divides 0 by 0 (NaN, never
    above a threshold)."""

    def tokens(*matchers: str) -> str:
        inner = "{" + ",".join(matchers) + "}" if matchers else ""
        return " + ".join(
            f"sum {_by('cluster', 'service', 'namespace')} (rate({spec.name}{inner}[{window}]))"
            for spec in (schema.TENANT_PROMPT_TOKENS, schema.TENANT_GENERATION_TOKENS)
        )

    untenanted = f"tenant={_q(schema.TENANT_UNTENANTED)}"
    return f"({tokens(untenanted)}) / ({tokens()})"


def tenant_alert_rules(cfg: AlertsConfig) -> list[dict[str, Any]]:
    """The alerts of :data:`TENANT_ALERT_NAMES`, in that order."""
    s = schema
    return [
        _alert(
            cfg, "GpuledgerUntenantedTrafficHigh",
            f"{untenanted_share_expr(cfg.untenanted_traffic_window)} "
            f"> {_num(cfg.untenanted_traffic_ratio)}",
            cfg.untenanted_traffic_for, "warning",
            "Much of {{ $labels.service }}'s traffic has no tenant",
            "{{ $value | humanizePercentage }} of the prompt + generation tokens of service "
            + _SERVICE + f" over the last {cfg.untenanted_traffic_window} were counted "
            f"without a tenant ({s.TENANT_UNTENANTED}), above "
            f"{cfg.untenanted_traffic_ratio:.0%} for {cfg.untenanted_traffic_for}; the "
            "report cannot charge that share to a caller.",
        ),
        _alert(
            cfg, "GpuledgerTenantGatewayDown",
            f"{s.TENANT_GATEWAY_UP.name} == 0",
            cfg.tenant_gateway_down_for, "warning",
            "Gateway {{ $labels.endpoint }} cannot be read",
            "The gpuledger agent on {{ $labels.node }} has failed to read the gateway page "
            f"{{{{ $labels.endpoint }}}} for {cfg.tenant_gateway_down_for}; tenant tokens "
            "are not counted meanwhile (the gateway's counters cover the gap once it is "
            "back, unless it restarted too).",
        ),
        _alert(
            cfg, "GpuledgerTenantOverflow",
            f"{s.TENANT_OVERFLOW.name} > 0",
            cfg.tenant_overflow_for, "info",
            "Tenants of {{ $labels.service }} are folded into " + s.TENANT_OTHER,
            "{{ $value | humanize }} tenant(s) of service " + _SERVICE + " beyond "
            f"gateways.max_tenants_per_service are counted as {s.TENANT_OTHER} (seen "
            f"for {cfg.tenant_overflow_for}); their traffic is charged together, not by name.",
        ),
    ]  # fmt: skip


# --- documents -------------------------------------------------------------------------


def unknown_names(doc: Mapping[str, Any]) -> dict[str, set[str]]:
    """Rule name -> the metric names its expr selects that gpuledger does not define."""
    known = known_names()
    bad: dict[str, set[str]] = {}
    for group in doc.get("groups", []):
        for rule in group.get("rules", []):
            unknown = metric_names(rule["expr"]) - known
            if unknown:
                bad[rule.get("alert") or rule.get("record") or "?"] = unknown
    return bad


def _groups(cfg: AlertsConfig, card: RateCard | None = None) -> list[dict[str, Any]]:
    recording: dict[str, Any] = {"name": RECORDING_GROUP, "interval": cfg.recording_interval}
    recording["rules"] = recording_rules(cfg, card)
    alerting: dict[str, Any] = {"name": ALERTING_GROUP}
    if cfg.alerting_interval:
        alerting["interval"] = cfg.alerting_interval
    alerting["rules"] = alert_rules(cfg)
    groups = [recording, alerting]
    bad = unknown_names({"groups": groups})
    if bad:
        raise ValueError(f"rules select metric names the schema does not define: {bad}")
    return groups


def rules_document(cfg: AlertsConfig, card: RateCard | None = None) -> dict[str, Any]:
    """A Prometheus rule file (``rule_files:``). Cost rules price GPU-hours with ``card``
    (default: the shipped rate card) unless ``alerts.gpu_hourly_rates_usd`` is set."""
    return {"groups": _groups(cfg, card)}


def prometheus_rule(
    cfg: AlertsConfig,
    namespace: str = "monitoring",
    name: str = "gpuledger",
    labels: Mapping[str, str] | None = None,
    card: RateCard | None = None,
) -> dict[str, Any]:
    """A prometheus-operator ``PrometheusRule`` object holding the same groups."""
    meta_labels = {
        "app.kubernetes.io/name": "gpuledger",
        "app.kubernetes.io/component": "alerting",
        **(labels or {}),
    }
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": name, "namespace": namespace, "labels": meta_labels},
        "spec": {"groups": _groups(cfg, card)},
    }


def to_yaml(doc: Mapping[str, Any]) -> str:
    body = yaml.safe_dump(dict(doc), sort_keys=False, width=100000, allow_unicode=True)
    return (
        "# Generated by `gpuledger alerts`; edit the alerts: config section, not this file.\n"
        + body
    )
