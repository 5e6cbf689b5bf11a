"""PromQL for the dashboards, written as functions of the metric schema.

No metric name is spelled here: every series comes from a :mod:`gpuledger.schema`
``MetricSpec`` (histogram series through :func:`gpuledger.schema.series_names`), and every
recorded series from the alert module's recording-rule registry (see
:func:`recording_rule`). Selectors get ``node=~"$node"``, ``namespace=~"$namespace"`` and
``service=~"$service"`` matchers only for the labels the metric actually has.

:func:`all_queries` lists every panel query of every dashboard, and :func:`concrete`
turns a templated query into one Prometheus accepts, so that a test can run them all
against a real Prometheus.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from gpuledger import schema
from gpuledger.alerts.rules import RECORDED
from gpuledger.schema import MetricSpec

# Dashboard template variables that become label matchers, in matcher order.
VARIABLE_LABELS: tuple[str, ...] = ("cluster", "node", "namespace", "service")

# --- recording rules (owned by gpuledger.alerts: its RECORDED registry) ----------------


def recording_rule(key: str) -> str:
    """The recorded series name for ``key`` in :data:`gpuledger.alerts.rules.RECORDED`."""
    return RECORDED[key]


def recording_rule_names() -> frozenset[str]:
    """Every recording-rule name the dashboards may use."""
    return frozenset(RECORDED.values())


# --- selectors -------------------------------------------------------------------------


def _matchers(labels: tuple[str, ...], extra: tuple[str, ...]) -> str:
    ms = [f'{label}=~"${label}"' for label in VARIABLE_LABELS if label in labels]
    return "{" + ",".join([*ms, *extra]) + "}"


def sel(spec: MetricSpec, *extra: str, series: str | None = None) -> str:
    """``name{node=~"$node",...,extra}`` for ``spec``; ``series`` picks one of a histogram's
    series (``_bucket``/``_sum``/``_count``)."""
    name = spec.name if series is None else series
    if name not in schema.series_names(spec):
        raise ValueError(f"{name!r} is not a series of {spec.name}")
    return name + _matchers(spec.all_labels, extra)


def eq(label: str, value: str) -> str:
    return f'{label}="{value}"'


def ne(label: str, value: str) -> str:
    return f'{label}!="{value}"'


def rule_sel(key: str) -> str:
    """A recorded series (labels ``service``, ``namespace``) with the variable matchers."""
    return recording_rule(key) + _matchers(("namespace", "service"), ())


def bucket(spec: MetricSpec) -> str:
    if spec.kind is not schema.Kind.HISTOGRAM:
        raise ValueError(f"{spec.name} is not a histogram")
    return schema.series_names(spec)[0]


def rate(spec: MetricSpec, *extra: str, window: str = "$__rate_interval") -> str:
    if spec.kind is not schema.Kind.COUNTER:
        raise ValueError(f"rate() of {spec.name}, which is a {spec.kind}")
    return f"rate({sel(spec, *extra)}[{window}])"


def increase(spec: MetricSpec, *extra: str, window: str = "$__rate_interval") -> str:
    if spec.kind is not schema.Kind.COUNTER:
        raise ValueError(f"increase() of {spec.name}, which is a {spec.kind}")
    return f"increase({sel(spec, *extra)}[{window}])"


def quantile(q: float, spec: MetricSpec, by: str = "service") -> str:
    """``histogram_quantile`` of a histogram, aggregated ``by`` (plus ``le``)."""
    inner = f"rate({sel(spec, series=bucket(spec))}[$__rate_interval])"
    return f"histogram_quantile({q}, sum by ({by}, le) ({inner}))"


# --- GPU fleet -------------------------------------------------------------------------

GPU_SERIES_LEGEND = "{{node}} GPU {{gpu}} {{mig_instance}}"


def gpu_utilization() -> str:
    return sel(schema.GPU_UTILIZATION)


def gpu_fleet_utilization() -> str:
    return f"avg({sel(schema.GPU_UTILIZATION)})"


def gpu_count() -> str:
    return f"count({sel(schema.GPU_INFO)})"


def gpu_memory_used() -> str:
    return sel(schema.GPU_MEMORY_USED)


def gpu_memory_used_ratio() -> str:
    # cluster: node names and simulated UUIDs repeat across clusters.
    # group_left keeps the left side's labels (gpu, model, …): a plain on (…) would keep
    # only the matching labels, and the panel's legend lost the GPU number
    on = "on (cluster, node, uuid, mig_instance) group_left"
    return f"{sel(schema.GPU_MEMORY_USED)} / {on} {sel(schema.GPU_MEMORY_TOTAL)}"


def gpu_power() -> str:
    return sel(schema.GPU_POWER)


def gpu_fleet_power() -> str:
    return f"sum({sel(schema.GPU_POWER)})"


def gpu_temperature() -> str:
    return sel(schema.GPU_TEMPERATURE)


def gpu_throttled() -> str:
    """GPUs whose clocks are held down, per node and reason."""
    return f"sum by (node, reason) ({sel(schema.GPU_THROTTLED)})"


def gpu_xid_errors() -> str:
    return f"sum by (node, gpu) ({increase(schema.GPU_XID_ERRORS)})"


def gpu_xid_errors_in_range() -> str:
    return f"sum({increase(schema.GPU_XID_ERRORS, window='$__range')})"


def gpu_underused_last_hour() -> str:
    """GPUs averaging under 40 % utilization over the last hour (an instant query)."""
    return f"avg_over_time({sel(schema.GPU_UTILIZATION)}[1h]) < 0.4"


# --- Services --------------------------------------------------------------------------


def service_gpus(kind: str) -> str:
    """GPUs held (``allocated``) or kept busy (``busy``) by each service: GPU-hours/hour."""
    return f"sum by (service) ({rate(schema.SERVICE_GPU_SECONDS, eq('kind', kind))})"


def service_gpu_hours_in_range() -> str:
    window = "$__range"
    inner = f"increase({sel(schema.SERVICE_GPU_SECONDS)}[{window}])"
    return f"sum by (service, kind) ({inner}) / 3600"


def over_provisioned_gpu_hours() -> str:
    """Allocated minus busy GPU-hours by service over the dashboard's range, top 10."""

    def hours(kind: str) -> str:
        held = increase(schema.SERVICE_GPU_SECONDS, eq("kind", kind), window="$__range")
        return f"sum by (service) ({held})"

    return f"topk(10, ({hours('allocated')} - {hours('busy')}) / 3600)"


# --- findings (the reporter's, from the latest monthly report) ----------------------------

_FINDING_KEY = "kind, namespace, service"


def finding_savings_top() -> str:
    """The ten largest findings by monthly savings (USD), one row per (kind, namespace,
    service); ``max`` keeps one value should two reporters export the same finding."""
    return f"topk(10, max by ({_FINDING_KEY}) ({sel(schema.FINDING_SAVINGS)}))"


def finding_savings_by_kind() -> str:
    """Monthly savings identified per kind of finding (USD)."""
    per_finding = f"max by ({_FINDING_KEY}) ({sel(schema.FINDING_SAVINGS)})"
    return f"sum by (kind) ({per_finding})"


def findings_by_kind() -> str:
    """How many findings of each kind the latest report holds (0 for a kind with none)."""
    return f"max by (kind) ({sel(schema.FINDINGS)})"


# --- spend anomalies (the reporter's, refreshed hourly for the latest complete day) ------


def spend_anomaly_score() -> str:
    """Each service's robust z of its last complete day against its baseline
    (``docs/anomalies.md``); ``max`` keeps one value should two reporters export it."""
    return f"max by (namespace, service) ({sel(schema.SPEND_ANOMALY_SCORE)})"


def idle_gpus() -> str:
    return f"sum by (node, gpu_model) ({rate(schema.IDLE_GPU_SECONDS)})"


def idle_gpu_hours_in_range() -> str:
    return f"sum({increase(schema.IDLE_GPU_SECONDS, window='$__range')}) / 3600"


def service_power() -> str:
    return f"sum by (service) ({rate(schema.SERVICE_ENERGY)})"


def service_energy_kwh_in_range() -> str:
    return f"sum by (service) ({increase(schema.SERVICE_ENERGY, window='$__range')}) / 3.6e6"


def service_cost_per_hour() -> str:
    """Internal cost per hour by service: allocated GPU-hours priced with the rate card."""
    return f"sum by (service) ({rule_sel('service_cost_usd_per_hour')})"


def service_cost_per_million_tokens() -> str:
    """Cost per hour / (tokens per hour / 1e6), tokens being prompt + generated, over 1h
    like the cost rule."""
    tokens = " + ".join(
        f"sum by (service) ({rate(spec, window='1h')})"
        for spec in (schema.VLLM_PROMPT_TOKENS, schema.VLLM_GENERATION_TOKENS)
    )
    return f"{service_cost_per_hour()} / (({tokens}) * 3600 / 1e6)"


# --- vLLM serving ----------------------------------------------------------------------

VLLM_LATENCY_QUANTILES: tuple[float, ...] = (0.5, 0.95, 0.99)


def vllm_latency(spec: MetricSpec, q: float) -> str:
    return quantile(q, spec)


def vllm_tokens_per_second(spec: MetricSpec) -> str:
    return f"sum by (service) ({rate(spec)})"


def vllm_requests(spec: MetricSpec) -> str:
    return f"sum by (service) ({sel(spec)})"


def vllm_request_rate() -> str:
    return f"sum by (service, finished_reason) ({rate(schema.VLLM_REQUEST_SUCCESS)})"


def vllm_kv_cache() -> str:
    return f"max by (service, pod) ({sel(schema.VLLM_KV_CACHE_USAGE)})"


def vllm_preemptions() -> str:
    return f"sum by (service) ({increase(schema.VLLM_PREEMPTIONS)})"


def probe_latency(spec: MetricSpec) -> str:
    return f"max by (service) ({sel(spec)})"


def probe_failures() -> str:
    """Failed probes per service and reason; 0 (not "no data") while nothing failed."""
    return f"sum by (service, reason) ({increase(schema.PROBE_FAILURES)}) or on () vector(0)"


def probe_successes() -> str:
    return f"sum by (service) ({increase(schema.PROBE_SUCCESS)})"


# --- Tenants of shared endpoints -------------------------------------------------------

TENANT_FILTER = 'tenant=~"$tenant"'
"""The tenant variable's matcher: only on the tenant's own side of a share (a service's
total is every tenant's traffic, whatever the variable picks)."""

TENANT_TOKEN_SPECS: tuple[MetricSpec, ...] = (
    schema.TENANT_PROMPT_TOKENS,
    schema.TENANT_GENERATION_TOKENS,
)
"""The tokens a tenant's share of a service is counted in: prompt (cached ones included)
plus generation, unweighted."""

_SERVICE_KEY = "namespace, service"
_TENANT_KEY = "namespace, service, tenant"


def tenant_rate(spec: MetricSpec) -> str:
    """Per second of ``spec`` (a tenant counter) by service and tenant."""
    return f"sum by ({_TENANT_KEY}) ({rate(spec, TENANT_FILTER)})"


def _tenant_tokens(by: str, *extra: str, window: str) -> str:
    return " + ".join(
        f"sum by ({by}) ({rate(spec, *extra, window=window)})" for spec in TENANT_TOKEN_SPECS
    )


def tenant_token_share(window: str = "$__rate_interval") -> str:
    """Each tenant's share (0..1) of its service's prompt + generation tokens."""
    mine = _tenant_tokens(_TENANT_KEY, TENANT_FILTER, window=window)
    service = _tenant_tokens(_SERVICE_KEY, window=window)
    return f"({mine}) / on ({_SERVICE_KEY}) group_left () ({service})"


def tenant_cost_per_hour() -> str:
    """An estimate: the service's cost per hour (allocated GPU-hours priced with the rate
    card, the recording rule) times the tenant's share of its tokens over the same hour.
    The report splits by engine-weighted tokens; this splits by plain tokens."""
    cost = rule_sel("service_cost_usd_per_hour")
    return f"({tenant_token_share(window='1h')}) * on ({_SERVICE_KEY}) group_left () {cost}"


def untenanted_share() -> str:
    """Share (0..1) of each service's tokens that the gateway counted without a tenant."""
    untenanted = eq("tenant", schema.TENANT_UNTENANTED)
    part = _tenant_tokens(_SERVICE_KEY, untenanted, window="$__rate_interval")
    whole = _tenant_tokens(_SERVICE_KEY, window="$__rate_interval")
    return f"({part}) / ({whole})"


def tenant_gateway_up() -> str:
    return f"min by (node, endpoint) ({sel(schema.TENANT_GATEWAY_UP)})"


def tenant_overflow() -> str:
    """Tenants folded into ``__other__`` per service; 0 (not "no data") while none were."""
    return f"max by ({_SERVICE_KEY}) ({sel(schema.TENANT_OVERFLOW)}) or on () vector(0)"


def tenant_unmapped_series() -> str:
    return f"max by (node, endpoint) ({sel(schema.TENANT_UNMAPPED_SERIES)})"


# --- pgvector storage ------------------------------------------------------------------


def pg_table_bytes() -> str:
    parts = sel(schema.PG_TABLE_BYTES, ne("kind", "total"))
    return f"sum by (database, schema, table, kind) ({parts})"


def pg_largest_tables() -> str:
    return (
        "topk(10, sum by (database, schema, table) "
        f"({sel(schema.PG_TABLE_BYTES, eq('kind', 'total'))}))"
    )


def pgvector_index_bytes() -> str:
    return f"sum by (database, method) ({sel(schema.PGVECTOR_INDEX_BYTES)})"


def pg_database_bytes() -> str:
    return f"sum by (database) ({sel(schema.PG_DATABASE_BYTES)})"


def pg_growth_per_day() -> str:
    return f"sum by (database, schema, table) ({sel(schema.PG_GROWTH)})"


def pg_days_until_full() -> str:
    return f"min by (database) ({sel(schema.PG_DAYS_UNTIL_FULL)})"


def pg_dead_tuples() -> str:
    return f"sum by (database, schema, table) ({sel(schema.PG_DEAD_TUPLES)})"


def pg_skipped_relations() -> str:
    return f"sum by (database) ({sel(schema.PG_SKIPPED_RELATIONS)})"


# --- the agent itself ------------------------------------------------------------------


def collector_up() -> str:
    return f"min by (node, collector) ({sel(schema.COLLECTOR_UP)})"


def collector_duration() -> str:
    return f"max by (node, collector) ({sel(schema.COLLECTOR_DURATION)})"


def collector_seconds_since_success() -> str:
    return f"time() - max by (node, collector) ({sel(schema.COLLECTOR_LAST_SUCCESS)})"


def ledger_pending_rows() -> str:
    return f"sum by (node) ({sel(schema.LEDGER_PENDING_ROWS)})"


def ledger_flush_failures() -> str:
    return f"sum by (node) ({increase(schema.LEDGER_FLUSH_FAILURES)})"


def agent_versions() -> str:
    return f"count by (version) ({sel(schema.BUILD_INFO)})"


# --- for tests: every query, and their concrete forms ----------------------------------

CONCRETE_VALUES: Mapping[str, str] = {
    "cluster": ".*",
    "node": ".*",
    "namespace": ".*",
    "service": ".*",
    "tenant": ".*",
    "datasource": "prometheus",
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "5m",
    "__range_s": "300",
    "__range_ms": "300000",
}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def concrete(expr: str) -> str:
    """``expr`` with Grafana's template variables replaced by values Prometheus accepts:
    ``.*`` for the label variables (all values), ``5m`` for ``$__rate_interval``,
    ``$__interval`` (``1m``) and ``$__range``. An unknown variable is an error."""

    def value(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in CONCRETE_VALUES:
            raise KeyError(f"no concrete value for template variable ${name} in {expr!r}")
        return CONCRETE_VALUES[name]

    return _VARIABLE.sub(value, expr)


def all_queries() -> dict[str, list[str]]:
    """Every panel query (templated, as in the dashboard JSON) by dashboard uid."""
    from gpuledger.dashboards.output import all_dashboards, panel_exprs

    return {uid: panel_exprs(d) for uid, d in all_dashboards().items()}
