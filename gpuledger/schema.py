"""The one normalized metric schema: every metric gpuledger exports, defined once.

Dashboards, alert rules, the exporter and ``docs/metrics.md`` all read this module;
nothing else may spell a ``gpuledger_*`` name. Upstream sources change their names and
units between versions (dcgm-exporter 4.x, vLLM 0.6 -> 0.11+); the collectors absorb
that, so what is defined here never changes with an upstream version.

Prometheus conventions: base units, ``_total`` for counters, ``_ratio`` for 0..1,
``_bytes``, ``_seconds``, ``_watts``, ``_joules``. Every series carries ``node``.
Run ``python -m gpuledger.schema`` to regenerate ``docs/metrics.md``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class Kind(StrEnum):
    GAUGE = "gauge"
    COUNTER = "counter"
    HISTOGRAM = "histogram"


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One exported metric. ``name`` is the family name (a counter's samples end in
    ``_total``, which is part of the name here, as Prometheus users query it)."""

    name: str
    kind: Kind
    unit: str
    help: str
    labels: tuple[str, ...]
    group: str

    @property
    def all_labels(self) -> tuple[str, ...]:
        """``cluster`` and ``node``, added to every series by the renderer (one fleet's
        Prometheus or ledger sees several clusters, whose node names may repeat), then
        the family's own labels."""
        return ("cluster", "node", *self.labels)


GPU_LABELS = ("gpu", "uuid", "model", "mig_instance", "mig_profile")
"""Labels of every per-device series. ``gpu`` is the physical index, ``uuid`` the physical
GPU's UUID; ``mig_instance``/``mig_profile`` are empty (absent) for a whole GPU and for a
MIG-enabled GPU's board-level series."""

VLLM_LABELS = ("service", "namespace", "pod", "model_name", "engine")
PG_TABLE_LABELS = ("database", "schema", "table")

_SPECS: list[MetricSpec] = []


def _m(
    group: str, name: str, kind: Kind, unit: str, labels: tuple[str, ...], help_: str
) -> MetricSpec:
    spec = MetricSpec(name=name, kind=kind, unit=unit, help=help_, labels=labels, group=group)
    _SPECS.append(spec)
    return spec


G, C, H = Kind.GAUGE, Kind.COUNTER, Kind.HISTOGRAM

# --- GPU telemetry (NVML and dcgm-exporter, merged: one series per device) ---------------
GPU_INFO = _m(
    "gpu", "gpuledger_gpu_info", G, "", (*GPU_LABELS, "driver"),
    "Constant 1 per device; labels carry its identity and driver version.",
)  # fmt: skip
GPU_UTILIZATION = _m(
    "gpu", "gpuledger_gpu_utilization_ratio", G, "ratio", GPU_LABELS,
    "Share of time the GPU (or MIG instance) was busy, 0..1. Prefers DCGM's "
    "graphics-engine-active, else NVML's utilization.gpu.",
)  # fmt: skip
GPU_MEMORY_USED = _m(
    "gpu", "gpuledger_gpu_memory_used_bytes", G, "bytes", GPU_LABELS,
    "Framebuffer memory in use.",
)  # fmt: skip
GPU_MEMORY_TOTAL = _m(
    "gpu", "gpuledger_gpu_memory_total_bytes", G, "bytes", GPU_LABELS,
    "Framebuffer memory size.",
)  # fmt: skip
GPU_POWER = _m(
    "gpu", "gpuledger_gpu_power_watts", G, "watts", GPU_LABELS,
    "Board power draw (board-level: on a MIG-enabled GPU only the board series has it).",
)  # fmt: skip
GPU_ENERGY = _m(
    "gpu", "gpuledger_gpu_energy_joules_total", C, "joules", GPU_LABELS,
    "Energy consumed since the driver loaded (board-level).",
)  # fmt: skip
GPU_TEMPERATURE = _m(
    "gpu", "gpuledger_gpu_temperature_celsius", G, "celsius", GPU_LABELS,
    "GPU core temperature (board-level).",
)  # fmt: skip
GPU_SM_CLOCK = _m(
    "gpu", "gpuledger_gpu_sm_clock_hertz", G, "hertz", GPU_LABELS,
    "Current SM clock (board-level).",
)  # fmt: skip
GPU_XID_ERRORS = _m(
    "gpu", "gpuledger_gpu_xid_errors_total", C, "", GPU_LABELS,
    "XID error events seen by the agent's NVML event set since it started.",
)  # fmt: skip
GPU_LAST_XID = _m(
    "gpu", "gpuledger_gpu_last_xid", G, "", GPU_LABELS,
    "Code of the last XID error reported (0 when none); from dcgm-exporter or NVML.",
)  # fmt: skip
GPU_THROTTLED = _m(
    "gpu", "gpuledger_gpu_throttled", G, "", (*GPU_LABELS, "reason"),
    "1 while the clocks are held down for this reason, else 0 (board-level).",
)  # fmt: skip
GPU_ECC_ERRORS = _m(
    "gpu", "gpuledger_gpu_ecc_errors_total", C, "", (*GPU_LABELS, "type"),
    "Aggregate (lifetime) ECC memory errors, type corrected|uncorrected.",
)  # fmt: skip
GPU_REMAPPED_ROWS = _m(
    "gpu", "gpuledger_gpu_remapped_rows", G, "", (*GPU_LABELS, "kind"),
    "Memory rows remapped, kind correctable|uncorrectable.",
)  # fmt: skip
GPU_ROW_REMAP_PENDING = _m(
    "gpu", "gpuledger_gpu_row_remap_pending", G, "", GPU_LABELS,
    "1 when a row remap is pending (the GPU needs a reset).",
)  # fmt: skip
GPU_ROW_REMAP_FAILED = _m(
    "gpu", "gpuledger_gpu_row_remap_failed", G, "", GPU_LABELS,
    "1 when a row remap failed (the GPU should be replaced).",
)  # fmt: skip
GPU_LOST = _m(
    "gpu", "gpuledger_gpu_lost", G, "", GPU_LABELS,
    "1 when NVML reports the GPU as lost (fell off the bus); its other series stop.",
)  # fmt: skip

# --- Attribution ---------------------------------------------------------------------
GPU_ALLOCATION = _m(
    "attribution", "gpuledger_gpu_allocation_ratio", G, "ratio",
    ("uuid", "mig_instance", "namespace", "pod", "container", "service"),
    "Share of the physical GPU a workload holds (1 for a whole GPU, the compute-slice "
    "fraction for a MIG instance, a split for shared GPUs).",
)  # fmt: skip
SERVICE_GPU_SECONDS = _m(
    "attribution", "gpuledger_service_gpu_seconds_total", C, "seconds",
    ("service", "namespace", "gpu_model", "kind"),
    "GPU-seconds a service held (kind=allocated) and kept busy (kind=busy).",
)  # fmt: skip
IDLE_GPU_SECONDS = _m(
    "attribution", "gpuledger_idle_gpu_seconds_total", C, "seconds", ("gpu_model",),
    "GPU-seconds no workload held.",
)  # fmt: skip
SERVICE_ENERGY = _m(
    "attribution", "gpuledger_service_energy_joules_total", C, "joules",
    ("service", "namespace"),
    "Energy attributed to a service by its share of each GPU.",
)  # fmt: skip

# --- vLLM (normalized across vLLM versions) --------------------------------------------
VLLM_REQUESTS_RUNNING = _m(
    "vllm", "gpuledger_vllm_requests_running", G, "", VLLM_LABELS,
    "Requests being decoded by the engine.",
)  # fmt: skip
VLLM_REQUESTS_WAITING = _m(
    "vllm", "gpuledger_vllm_requests_waiting", G, "", VLLM_LABELS,
    "Requests queued, waiting for the engine.",
)  # fmt: skip
VLLM_KV_CACHE_USAGE = _m(
    "vllm", "gpuledger_vllm_kv_cache_usage_ratio", G, "ratio", VLLM_LABELS,
    "KV-cache blocks in use, 0..1 (vLLM gpu_cache_usage_perc / kv_cache_usage_perc).",
)  # fmt: skip
VLLM_PROMPT_TOKENS = _m(
    "vllm", "gpuledger_vllm_prompt_tokens_total", C, "", VLLM_LABELS,
    "Prefill (prompt) tokens processed.",
)  # fmt: skip
VLLM_GENERATION_TOKENS = _m(
    "vllm", "gpuledger_vllm_generation_tokens_total", C, "", VLLM_LABELS,
    "Generation (output) tokens produced.",
)  # fmt: skip
VLLM_REQUEST_SUCCESS = _m(
    "vllm", "gpuledger_vllm_request_success_total", C, "", (*VLLM_LABELS, "finished_reason"),
    "Requests finished, by reason (stop, length, abort).",
)  # fmt: skip
VLLM_PREEMPTIONS = _m(
    "vllm", "gpuledger_vllm_preemptions_total", C, "", VLLM_LABELS,
    "Requests preempted by the scheduler (KV cache exhausted).",
)  # fmt: skip
VLLM_PREFIX_CACHE_QUERIES = _m(
    "vllm", "gpuledger_vllm_prefix_cache_queries_total", C, "", VLLM_LABELS,
    "Prompt tokens looked up in the prefix cache (V1 engines; V0 printed only a hit-rate gauge).",
)  # fmt: skip
VLLM_PREFIX_CACHE_HITS = _m(
    "vllm", "gpuledger_vllm_prefix_cache_hits_total", C, "", VLLM_LABELS,
    "Prompt tokens found in the prefix cache (cached tokens skip most prefill work).",
)  # fmt: skip
VLLM_EXTERNAL_PREFIX_CACHE_QUERIES = _m(
    "vllm", "gpuledger_vllm_external_prefix_cache_queries_total", C, "", VLLM_LABELS,
    "Prompt tokens looked up in an external KV cache through a KV connector (vLLM >= 0.11.1).",
)  # fmt: skip
VLLM_EXTERNAL_PREFIX_CACHE_HITS = _m(
    "vllm", "gpuledger_vllm_external_prefix_cache_hits_total", C, "", VLLM_LABELS,
    "Prompt tokens found in an external KV cache through a KV connector (vLLM >= 0.11.1).",
)  # fmt: skip
VLLM_PROMPT_TOKENS_CACHED = _m(
    "vllm", "gpuledger_vllm_prompt_tokens_cached_total", C, "", VLLM_LABELS,
    "Prompt tokens not computed because cached, local plus external (vLLM >= 0.16).",
)  # fmt: skip
VLLM_TTFT = _m(
    "vllm", "gpuledger_vllm_time_to_first_token_seconds", H, "seconds", VLLM_LABELS,
    "Time to first token (upstream bucket boundaries kept).",
)  # fmt: skip
VLLM_ITL = _m(
    "vllm", "gpuledger_vllm_inter_token_latency_seconds", H, "seconds", VLLM_LABELS,
    "Time between output tokens (vLLM time_per_output_token_seconds before 0.11).",
)  # fmt: skip
VLLM_E2E = _m(
    "vllm", "gpuledger_vllm_e2e_request_latency_seconds", H, "seconds", VLLM_LABELS,
    "End-to-end request latency.",
)  # fmt: skip
VLLM_QUEUE_TIME = _m(
    "vllm", "gpuledger_vllm_request_queue_time_seconds", H, "seconds", VLLM_LABELS,
    "Time requests spent waiting in the queue.",
)  # fmt: skip
VLLM_PREFILL_TIME = _m(
    "vllm", "gpuledger_vllm_request_prefill_time_seconds", H, "seconds", VLLM_LABELS,
    "Time each request spent in prefill (vllm:request_prefill_time_seconds; upstream buckets).",
)  # fmt: skip
VLLM_DECODE_TIME = _m(
    "vllm", "gpuledger_vllm_request_decode_time_seconds", H, "seconds", VLLM_LABELS,
    "Time each request spent in decode (vllm:request_decode_time_seconds; upstream buckets).",
)  # fmt: skip

VLLM_ENDPOINT_UP = _m(
    "vllm", "gpuledger_vllm_endpoint_up", G, "", ("service", "namespace", "pod", "endpoint"),
    "1 if the endpoint's /metrics was scraped and parsed in the last cycle, else 0.",
)  # fmt: skip

# --- Tenants of shared endpoints (gateway counters) -------------------------------------
TENANT_LABELS = ("service", "namespace", "model_name", "tenant")
TENANT_UNTENANTED = "__untenanted__"
"""The ``tenant`` value of traffic a gateway (or the meter) counted without a tenant."""
TENANT_OTHER = "__other__"
"""The ``tenant`` value of the tenants folded by the per-service cap."""
TENANT_REQUESTS = _m(
    "tenant", "gpuledger_tenant_requests_total", C, "", TENANT_LABELS,
    "Requests a gateway counted for the tenant (since the agent started; gateway counter "
    "resets absorbed). tenant __untenanted__: traffic without one; __other__: over the cap.",
)  # fmt: skip
TENANT_PROMPT_TOKENS = _m(
    "tenant", "gpuledger_tenant_prompt_tokens_total", C, "", TENANT_LABELS,
    "Prompt (input) tokens a gateway counted for the tenant, cached ones included.",
)  # fmt: skip
TENANT_CACHED_PROMPT_TOKENS = _m(
    "tenant", "gpuledger_tenant_cached_prompt_tokens_total", C, "", TENANT_LABELS,
    "Prompt tokens served from the engine's prefix cache (where the gateway reports them).",
)  # fmt: skip
TENANT_GENERATION_TOKENS = _m(
    "tenant", "gpuledger_tenant_generation_tokens_total", C, "", TENANT_LABELS,
    "Generation (output) tokens a gateway counted for the tenant.",
)  # fmt: skip
TENANT_OVERFLOW = _m(
    "tenant", "gpuledger_tenant_overflow_tenants", G, "", ("service", "namespace"),
    "Distinct upstream tenants folded into __other__ by gateways.max_tenants_per_service.",
)  # fmt: skip
TENANT_GATEWAY_UP = _m(
    "tenant", "gpuledger_tenant_gateway_up", G, "", ("endpoint",),
    "1 if the gateway's page was read and parsed in the last cycle, else 0.",
)  # fmt: skip
TENANT_UNMAPPED_SERIES = _m(
    "tenant", "gpuledger_tenant_unmapped_series", G, "", ("endpoint",),
    "Gateway counter series no mapping (models, service_label, service) placed: not counted.",
)  # fmt: skip

# --- Synthetic probes ----------------------------------------------------------------
PROBE_LABELS = ("service", "namespace", "endpoint", "model_name")
PROBE_TTFT = _m(
    "probe", "gpuledger_probe_ttft_seconds", G, "seconds", PROBE_LABELS,
    "Time to first token of the last successful probe.",
)  # fmt: skip
PROBE_TPOT = _m(
    "probe", "gpuledger_probe_tpot_seconds", G, "seconds", PROBE_LABELS,
    "Time per output token of the last successful probe.",
)  # fmt: skip
PROBE_E2E = _m(
    "probe", "gpuledger_probe_e2e_seconds", G, "seconds", PROBE_LABELS,
    "End-to-end latency of the last successful probe.",
)  # fmt: skip
PROBE_TOKENS_PER_SECOND = _m(
    "probe", "gpuledger_probe_output_tokens_per_second", G, "", PROBE_LABELS,
    "Output tokens per second of the last successful probe.",
)  # fmt: skip
PROBE_SUCCESS = _m(
    "probe", "gpuledger_probe_success_total", C, "", PROBE_LABELS,
    "Probes that completed.",
)  # fmt: skip
PROBE_FAILURES = _m(
    "probe", "gpuledger_probe_failures_total", C, "", (*PROBE_LABELS, "reason"),
    "Probes that failed, by reason (connect, timeout, http_status, bad_stream, "
    "model_mismatch).",
)  # fmt: skip

PROBE_SKIPPED = _m(
    "probe", "gpuledger_probe_skipped_total", C, "", (*PROBE_LABELS, "reason"),
    "Probes not sent, by reason (queue_full: the engine's waiting queue was over the "
    "threshold; in_flight: the previous probe had not finished).",
)  # fmt: skip
PROBE_VALIDATION = _m(
    "probe", "gpuledger_probe_validation", G, "", (*PROBE_LABELS, "check"),
    "1 when the engine's own metrics agree with the last probe, 0 when not, per check "
    "(tokens_counted, ttft_histogram_moved, ttft_agrees); absent when undecidable.",
)  # fmt: skip

# --- PostgreSQL / pgvector storage ---------------------------------------------------
PG_TABLE_BYTES = _m(
    "pgvector", "gpuledger_pg_table_bytes", G, "bytes", (*PG_TABLE_LABELS, "kind"),
    "Table size by kind: heap, toast, index, total.",
)  # fmt: skip
PG_TABLE_ROWS = _m(
    "pgvector", "gpuledger_pg_table_rows_estimate", G, "", PG_TABLE_LABELS,
    "Planner's row estimate (pg_class.reltuples).",
)  # fmt: skip
PG_DEAD_TUPLES = _m(
    "pgvector", "gpuledger_pg_dead_tuples", G, "", PG_TABLE_LABELS,
    "Dead tuples waiting for vacuum.",
)  # fmt: skip
PGVECTOR_DIMENSIONS = _m(
    "pgvector", "gpuledger_pgvector_column_dimensions", G, "",
    (*PG_TABLE_LABELS, "column", "type"),
    "Declared dimensions of a vector/halfvec/sparsevec column (-1 when undeclared).",
)  # fmt: skip
PGVECTOR_INDEX_BYTES = _m(
    "pgvector", "gpuledger_pgvector_index_bytes", G, "bytes",
    (*PG_TABLE_LABELS, "index", "method"),
    "Size of a pgvector index, method hnsw|ivfflat.",
)  # fmt: skip
PG_DATABASE_BYTES = _m(
    "pgvector", "gpuledger_pg_database_bytes", G, "bytes", ("database",),
    "Database size (pg_database_size).",
)  # fmt: skip
PGVECTOR_INDEX_INFO = _m(
    "pgvector", "gpuledger_pgvector_index_info", G, "",
    (*PG_TABLE_LABELS, "index", "method", "m", "ef_construction", "lists"),
    "Constant 1 per pgvector index; labels carry its build options (empty when default).",
)  # fmt: skip
PG_INDEX_BUILD_PROGRESS = _m(
    "pgvector", "gpuledger_pg_index_build_progress_ratio", G, "ratio",
    (*PG_TABLE_LABELS, "index", "phase"),
    "Progress of a CREATE INDEX in flight (blocks done / total, else tuples), 0..1.",
)  # fmt: skip
PG_SKIPPED_RELATIONS = _m(
    "pgvector", "gpuledger_pg_skipped_relations", G, "", ("database",),
    "Relations not sized in the last collection because an ACCESS EXCLUSIVE lock was held "
    "or queued on them (sizing would have waited behind it).",
)  # fmt: skip
PG_DATABASE_UP = _m(
    "pgvector", "gpuledger_pg_database_up", G, "", ("database",),
    "1 if the database answered the last collection within its timeouts, else 0.",
)  # fmt: skip
PG_CAPACITY = _m(
    "pgvector", "gpuledger_pg_capacity_bytes", G, "bytes", ("database",),
    "The configured capacity the database is allowed to grow to.",
)  # fmt: skip
PG_GROWTH = _m(
    "pgvector", "gpuledger_pg_growth_bytes_per_day", G, "bytes", ("database", "schema", "table"),
    "Least-squares growth over the configured window (table empty: whole database).",
)  # fmt: skip
PG_DAYS_UNTIL_FULL = _m(
    "pgvector", "gpuledger_pg_days_until_full", G, "days", ("database",),
    "Free capacity / growth rate, when a capacity is configured and growth > 0.",
)  # fmt: skip

# --- The metering proxy (gpuledger meter; its own /metrics) ---------------------------
METER_LABELS = ("service", "namespace", "model_name", "tenant")
"""``tenant``: the caller the meter identified; ``__untenanted__`` for traffic without
one, ``__other__`` for tenants beyond the per-service cap."""
METER_REQUESTS = _m(
    "meter", "gpuledger_meter_requests_total", C, "", METER_LABELS,
    "Requests the meter counted (the upstream reported their usage).",
)  # fmt: skip
METER_PROMPT_TOKENS = _m(
    "meter", "gpuledger_meter_prompt_tokens_total", C, "", METER_LABELS,
    "Prompt tokens of counted requests, from the upstream's usage.prompt_tokens "
    "(cached ones included).",
)  # fmt: skip
METER_CACHED_PROMPT_TOKENS = _m(
    "meter", "gpuledger_meter_cached_prompt_tokens_total", C, "", METER_LABELS,
    "Prompt tokens served from the prefix cache (usage.prompt_tokens_details."
    "cached_tokens; 0 when the upstream does not report it).",
)  # fmt: skip
METER_GENERATION_TOKENS = _m(
    "meter", "gpuledger_meter_generation_tokens_total", C, "", METER_LABELS,
    "Generated tokens of counted requests, from the upstream's usage.completion_tokens.",
)  # fmt: skip
METER_UNCOUNTED = _m(
    "meter", "gpuledger_meter_uncounted_requests_total", C, "",
    ("service", "namespace", "reason"),
    "Completion requests relayed but not counted, by reason: no_usage, upstream_error, "
    "client_disconnect, malformed.",
)  # fmt: skip

# --- The agent itself ----------------------------------------------------------------
COLLECTOR_UP = _m(
    "agent", "gpuledger_collector_up", G, "", ("collector",),
    "1 if the collector's last run succeeded within its timeout, else 0.",
)  # fmt: skip
COLLECTOR_DURATION = _m(
    "agent", "gpuledger_collector_duration_seconds", G, "seconds", ("collector",),
    "Wall time of the collector's last run (its timeout when it hung).",
)  # fmt: skip
COLLECTOR_LAST_SUCCESS = _m(
    "agent", "gpuledger_collector_last_success_timestamp_seconds", G, "seconds",
    ("collector",),
    "Unix time of the collector's last successful run.",
)  # fmt: skip
LEDGER_PENDING_ROWS = _m(
    "agent", "gpuledger_ledger_pending_rows", G, "", (),
    "Ledger buckets in the local spool not yet confirmed by the store.",
)  # fmt: skip
LEDGER_FLUSH_FAILURES = _m(
    "agent", "gpuledger_ledger_flush_failures_total", C, "", (),
    "Failed attempts to flush the spool to the ledger store.",
)  # fmt: skip
REPORT_RUNS = _m(
    "agent", "gpuledger_report_runs_total", C, "", (),
    "Monthly chargeback runs of the reporter role (scheduled, catch-up).",
)  # fmt: skip
REPORT_FAILURES = _m(
    "agent", "gpuledger_report_failures_total", C, "", (),
    "Reporter runs that wrote no report (no ledger data, store down, bad rate card).",
)  # fmt: skip
REPORT_LAST_SUCCESS = _m(
    "agent", "gpuledger_report_last_success_timestamp_seconds", G, "seconds", (),
    "Unix time the reporter last wrote a monthly report.",
)  # fmt: skip
# the monthly report's delivery (issue 18, docs/delivery.md)
REPORT_DELIVERIES = _m(
    "agent", "gpuledger_report_deliveries_total", C, "", ("channel", "outcome"),
    "Tries to deliver the monthly report, per channel (email, webhook) and outcome: sent "
    "(the server accepted one message), error (one try failed), failed (every try of a pass "
    "failed; the next pass tries again). Present for every configured channel.",
)  # fmt: skip
REPORT_DELIVERY_LAST_SUCCESS = _m(
    "agent", "gpuledger_report_delivery_last_success_timestamp_seconds", G, "seconds",
    ("channel",),
    "Unix time a message of the monthly report was last accepted on this channel by this "
    "process. Absent until one is.",
)  # fmt: skip
# A currency is no base unit Prometheus or OTLP (UCUM) translate: the name says USD, the
# unit stays empty so that neither translation appends one
FINDING_SAVINGS = _m(
    "agent", "gpuledger_finding_savings_usd", G, "", ("kind", "namespace", "service"),
    "Monthly savings (USD) of the findings of the latest monthly report, by kind and "
    "service (summed over a service's findings of one kind; idle capacity has no "
    "service). Absent until a report with computed findings is written.",
)  # fmt: skip
FINDINGS = _m(
    "agent", "gpuledger_findings", G, "", ("kind",),
    "Findings of the latest monthly report per kind; every kind is present, 0 when it has "
    "none. Absent until a report with computed findings is written.",
)  # fmt: skip
# Budgets (chargeback/budgets, refreshed hourly by the reporter role; docs/budgets.md).
# ``name`` is the cost center, the namespace, or namespace/service; ``namespace`` and
# ``service`` are set where the scope has them (empty, so absent, otherwise).
BUDGET_LABELS = ("scope", "name", "namespace", "service")
BUDGET = _m(
    "agent", "gpuledger_budget_usd", G, "", BUDGET_LABELS,
    "Monthly budget (USD) of a cost center, namespace or service, as configured "
    "(report.budgets, report.budgets_file). Absent until the first budget refresh.",
)  # fmt: skip
BUDGET_MONTH_TO_DATE = _m(
    "agent", "gpuledger_budget_month_to_date_usd", G, "", BUDGET_LABELS,
    "Cost (USD) of the budget's scope this month so far, priced as the monthly report "
    "prices it (complete hours), refreshed hourly from the ledger.",
)  # fmt: skip
BUDGET_FORECAST = _m(
    "agent", "gpuledger_budget_forecast_usd", G, "", BUDGET_LABELS,
    "Forecast cost (USD) of the budget's scope at the end of this month: month to date "
    "plus a linear trend with weekday levels over the rest (docs/budgets.md). Absent "
    "while the scope has no complete day of history.",
)  # fmt: skip
BUDGET_REFRESH_LAST_SUCCESS = _m(
    "agent", "gpuledger_budget_refresh_last_success_timestamp_seconds", G, "seconds", (),
    "Unix time of the reporter's last successful budget refresh (hourly).",
)  # fmt: skip
BUDGET_REFRESH_DURATION = _m(
    "agent", "gpuledger_budget_refresh_duration_seconds", G, "seconds", (),
    "Wall time of the last budget refresh (one grouped ledger read, pricing, forecasts).",
)  # fmt: skip
BUDGET_REFRESH_FAILURES = _m(
    "agent", "gpuledger_budget_refresh_failures_total", C, "", (),
    "Budget refreshes that failed (ledger unreachable, rate card or budgets file bad); "
    "the figures of the last good refresh stay exported.",
)  # fmt: skip
# Spend anomalies (chargeback/anomalies, docs/anomalies.md): the reporter scores the latest
# complete UTC day of every service against its trailing baseline, every hour
SPEND_ANOMALY_SCORE = _m(
    "agent", "gpuledger_spend_anomaly_score", G, "", ("namespace", "service"),
    "Robust z of the service's cost on the latest complete UTC day against the median of "
    "its trailing days: (cost - median) / (1.4826 x MAD, floored). Positive: above the "
    "baseline, negative: a drop. Absent for a service with too few days of baseline.",
)  # fmt: skip
SPEND_DAILY_COST = _m(
    "agent", "gpuledger_spend_daily_cost_usd", G, "", ("namespace", "service"),
    "The service's cost (USD, priced as the monthly report prices it) on the latest "
    "complete UTC day, the day gpuledger_spend_anomaly_score judges.",
)  # fmt: skip
SPEND_DAILY_BASELINE = _m(
    "agent", "gpuledger_spend_daily_baseline_usd", G, "", ("namespace", "service"),
    "The service's baseline daily cost (USD): the median of its trailing days "
    "(report.anomalies.window_days) before the day judged.",
)  # fmt: skip
SPEND_SCORED_DAY = _m(
    "agent", "gpuledger_spend_scored_day_timestamp_seconds", G, "seconds", (),
    "Unix time of the start (00:00 UTC) of the day the spend-anomaly families describe; "
    "absent until the reporter's first refresh succeeds.",
)  # fmt: skip
BUILD_INFO = _m(
    "agent", "gpuledger_build_info", G, "", ("version",),
    "Constant 1; the agent's version.",
)  # fmt: skip

SPECS: tuple[MetricSpec, ...] = tuple(_SPECS)
BY_NAME: dict[str, MetricSpec] = {s.name: s for s in SPECS}


def series_names(spec: MetricSpec) -> tuple[str, ...]:
    """Names a PromQL query may use for this metric (histograms expose three)."""
    if spec.kind is Kind.HISTOGRAM:
        return (f"{spec.name}_bucket", f"{spec.name}_sum", f"{spec.name}_count")
    return (spec.name,)


def all_series_names() -> frozenset[str]:
    return frozenset(n for s in SPECS for n in series_names(s))


_GROUP_TITLES = {
    "gpu": "GPU telemetry",
    "attribution": "Attribution",
    "vllm": "vLLM serving",
    "tenant": "Tenants of shared endpoints",
    "probe": "Synthetic probes",
    "pgvector": "PostgreSQL / pgvector storage",
    "agent": "The agent itself",
    "meter": "The metering proxy (`gpuledger meter`)",
}

_PRECEDENCE = """\
## Where each GPU value comes from

Both NVML (in-process, `nvidia-ml-py`) and dcgm-exporter (its `/metrics` page) can report
the same quantity for the same device. gpuledger exports **one series per device**; the
device is identified by the physical GPU UUID plus, for a MIG instance, its GPU-instance id
(`GPU_I_ID` in dcgm-exporter, `nvmlDeviceGetGpuInstanceId` in NVML).

| quantity | preferred source | fallback | why |
|---|---|---|---|
| utilization | DCGM `DCGM_FI_PROF_GR_ENGINE_ACTIVE` (≥ 4.9: `DCGM_FI_PROF_GR_ENGINE_UTIL_RATIO`) | DCGM `DCGM_FI_DEV_GPU_UTIL`, then NVML `utilization.gpu` | engine-active is a true time fraction, exists per MIG instance; `GPU_UTIL` is "any kernel running" and is not supported on MIG |
| memory, power, energy, temperature, SM clock, throttle reasons, ECC, remapped rows | NVML | DCGM | NVML is read in-process at the agent's own cycle; DCGM's values may be up to its collection interval old |
| XID errors (count) | NVML event set | — | dcgm-exporter only reports the *last* XID code, not a count |
| last XID code | DCGM `DCGM_FI_DEV_XID_ERRORS` | NVML event data | |
| pod / namespace / container / vgpu | DCGM (kubelet pod-resources) | — | used for attribution |

A value one source does not support (NVML `NOT_SUPPORTED`, a field missing from the
exporter's CSV) is absent, never exported as 0. When a source is down
(`gpuledger_collector_up{collector=...} == 0`), the other source's values are exported
alone. dcgm-exporter's upstream unit changes (MHz→Hz, mJ→J, %→ratio, MiB→bytes) are
converted on the way in; the exported units above never change.
"""


def render_markdown() -> str:
    lines = [
        "# Metric reference",
        "",
        "<!-- Generated by `python -m gpuledger.schema` from gpuledger/schema.py. "
        "Do not edit by hand. -->",
        "",
        "Every series also carries the labels `cluster` (the agent's `cluster:` config, "
        "`default` unless set) and `node`. Empty label values (e.g. "
        "`mig_instance` on a whole GPU) are absent in the exposition.",
        "",
    ]
    untitled = sorted({s.group for s in SPECS} - set(_GROUP_TITLES))
    if untitled:  # a family in no section would be missing from the reference silently
        raise ValueError(f"metric group(s) {untitled} have no title in _GROUP_TITLES")
    for group, title in _GROUP_TITLES.items():
        lines += [
            f"## {title}",
            "",
            "| metric | type | unit | labels | meaning |",
            "|---|---|---|---|---|",
        ]
        for s in SPECS:
            if s.group != group:
                continue
            labels = ", ".join(f"`{label}`" for label in s.all_labels)
            lines.append(f"| `{s.name}` | {s.kind.value} | {s.unit or '—'} | {labels} | {s.help} |")
        lines.append("")
    lines.append(_PRECEDENCE)
    return "\n".join(lines)


def _iter_duplicate_names() -> Iterator[str]:
    seen: set[str] = set()
    for s in SPECS:
        if s.name in seen:
            yield s.name
        seen.add(s.name)


def main(argv: list[str]) -> int:
    dupes = list(_iter_duplicate_names())
    if dupes:
        print(f"duplicate metric names: {dupes}", file=sys.stderr)
        return 1
    text = render_markdown()
    out = (
        Path(argv[1])
        if len(argv) > 1
        else Path(__file__).resolve().parent.parent / "docs" / "metrics.md"
    )
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
