"""The ``alerts:`` section of the agent config: thresholds and durations of every rule.

Defaults are those of issue 7. Durations are Prometheus durations (``10m``, ``6h``,
``1h30m``). Latency thresholds may be set per service (``service_overrides``); a service
without an override gets the defaults.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

Duration = Annotated[str, StringConstraints(pattern=r"^([0-9]+(ms|s|m|h|d|w|y))+$")]
"""A Prometheus duration such as ``5m`` or ``1h30m``."""

Severity = Literal["critical", "warning", "info"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServiceThresholds(_Section):
    """Per-service latency thresholds (seconds); unset ones fall back to the defaults."""

    ttft_p99_seconds: float | None = Field(None, gt=0)
    itl_p99_seconds: float | None = Field(None, gt=0)
    e2e_p99_seconds: float | None = Field(None, gt=0)


class AlertsConfig(_Section):
    """Thresholds and ``for:`` durations of the generated Prometheus rules."""

    # Serving latency (p99 over a 5 m rate window, per service and namespace).
    ttft_p99_seconds: float = Field(0.100, gt=0)
    ttft_for: Duration = "10m"
    itl_p99_seconds: float = Field(0.100, gt=0)
    itl_for: Duration = "10m"
    e2e_p99_seconds: float = Field(30.0, gt=0)
    e2e_for: Duration = "10m"
    service_overrides: dict[str, ServiceThresholds] = Field(default_factory=dict)

    # Capacity and cost.
    gpu_underutilized_ratio: float = Field(0.40, gt=0, le=1)  # 1 h average, allocated GPU
    gpu_underutilized_for: Duration = "15m"
    gpu_unallocated_for: Duration = "6h"

    # vLLM engine saturation.
    kv_cache_usage_ratio: float = Field(0.95, gt=0, le=1)
    kv_cache_for: Duration = "5m"
    requests_waiting: float = Field(10.0, ge=0)
    requests_waiting_for: Duration = "5m"

    # Synthetic probes: failures / (failures + successes) over the window.
    probe_failure_ratio: float = Field(0.10, gt=0, le=1)
    probe_failure_window: Duration = "15m"
    probe_failure_for: Duration = "5m"

    # Tenants of shared endpoints (the gateway source): share of a service's prompt +
    # generation tokens counted without a tenant, over the window.
    untenanted_traffic_ratio: float = Field(0.20, gt=0, lt=1)
    untenanted_traffic_window: Duration = "30m"
    untenanted_traffic_for: Duration = "30m"
    tenant_gateway_down_for: Duration = "10m"
    tenant_overflow_for: Duration = "15m"

    # GPU health.
    xid_window: Duration = "10m"
    thermal_throttling_for: Duration = "5m"

    # pgvector storage.
    pg_days_until_full: float = Field(14.0, gt=0)
    pg_days_until_full_for: Duration = "30m"

    # The agent itself.
    collector_down_for: Duration = "10m"
    agent_job_regex: str = Field("gpuledger.*", min_length=1)  # Prometheus job(s) of the agent
    agent_down_for: Duration = "5m"
    agent_absent_for: Duration = "15m"
    ledger_flush_window: Duration = "15m"
    ledger_flush_for: Duration = "10m"

    # Findings of the monthly report (the reporter's gpuledger_finding_savings_usd): a
    # zombie finding stays present a whole month, so a day lets a re-run with the holder
    # gone replace the report before anyone is told.
    zombie_findings_for: Duration = "24h"
    # The monthly report's delivery: a pass that gave up (every try failed) within this
    # window fires; the reporter passes hourly, so 2h covers one missed pass.
    report_delivery_window: Duration = "2h"

    # Spend anomalies (the reporter's gpuledger_spend_anomaly_score, refreshed hourly for
    # the latest complete day; docs/anomalies.md): |robust z| at or above the score and a
    # change of at least the dollars, as report.anomalies judges a day by default. The
    # score holds for a day, so a short for: only rides out a refresh that moved it.
    spend_anomaly_score: float = Field(3.5, gt=0)
    spend_anomaly_min_delta_usd: float = Field(50.0, ge=0)
    spend_anomaly_for: Duration = "15m"

    # Budgets (the reporter's hourly refresh, docs/budgets.md): a forecast moves with
    # each refresh, so it must stay over for three of them (one costly day does not warn);
    # month to date only grows within a month, so its alert needs no wait beyond a scrape.
    budget_forecast_for: Duration = "3h"
    budget_exceeded_for: Duration = "5m"

    # Rule files.
    runbook_base_url: str = Field("docs/runbooks.md", min_length=1)  # anchor appended
    recording_interval: Duration = "1m"
    alerting_interval: Duration | None = None  # None: Prometheus' global interval
    extra_labels: dict[str, str] = Field(default_factory=dict)  # added to every alert
    # USD per allocated GPU-hour keyed by the exact gpu_model label. Empty (the default):
    # the rate card's internal capacity rates (report.rate_card, else the shipped card),
    # so dashboards and the monthly report price a GPU-hour alike.
    gpu_hourly_rates_usd: dict[str, float] = Field(default_factory=dict)

    @field_validator("gpu_hourly_rates_usd")
    @classmethod
    def _positive_rates(cls, v: dict[str, float]) -> dict[str, float]:
        bad = sorted(model for model, rate in v.items() if rate < 0 or not model)
        if bad:
            raise ValueError(f"rates must be >= 0 with a non-empty model name: {bad}")
        return v

    @field_validator("extra_labels")
    @classmethod
    def _label_names(cls, v: dict[str, str]) -> dict[str, str]:
        bad = sorted(
            k
            for k in v
            if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", k)
            or k.startswith("__")
            or k in ("severity", "alertname")
        )
        if bad:
            raise ValueError(f"not usable as alert label names: {bad}")
        return v

    def ttft_threshold(self, service: str | None = None) -> float:
        o = self.service_overrides.get(service or "")
        return o.ttft_p99_seconds if o and o.ttft_p99_seconds else self.ttft_p99_seconds

    def itl_threshold(self, service: str | None = None) -> float:
        o = self.service_overrides.get(service or "")
        return o.itl_p99_seconds if o and o.itl_p99_seconds else self.itl_p99_seconds

    def e2e_threshold(self, service: str | None = None) -> float:
        o = self.service_overrides.get(service or "")
        return o.e2e_p99_seconds if o and o.e2e_p99_seconds else self.e2e_p99_seconds
