"""What one gateway collection returns: per upstream counter series, its current value
and the (namespace, service, model, tenant) it belongs to, plus the collector's own
running totals since the agent started (what ``/metrics`` exports)."""

from __future__ import annotations

from dataclasses import dataclass

UNTENANTED = "__untenanted__"
"""Traffic the gateway counted without a tenant (every tenant label empty or absent)."""
OTHER = "__other__"
"""Tenants beyond a service's ``max_tenants_per_service``, folded together."""

KINDS = ("requests", "prompt", "cached_prompt", "generation")
"""What a gateway counts per tenant; a preset maps each to an upstream counter."""

TenantKey = tuple[str, str, str, str]  # namespace, service, model_name, tenant


@dataclass(frozen=True, slots=True)
class CounterSample:
    """One upstream counter series' current value, mapped to a gpuledger bucket.

    ``series`` identifies the upstream series (endpoint, metric and every label) so that
    deltas are taken per upstream series -- a reset of one is never hidden by the others
    summed into the same tenant."""

    series: str
    kind: str  # one of KINDS
    value: float
    namespace: str
    service: str
    model_name: str
    tenant: str


@dataclass(frozen=True, slots=True)
class GatewayScrape:
    endpoint: str  # the endpoint's name (its URL, credentials redacted)
    up: bool
    error: str | None = None
    samples: tuple[CounterSample, ...] = ()
    unmapped_series: int = 0  # series whose model/service no mapping knew: not counted


@dataclass(frozen=True, slots=True)
class TenantTotals:
    """Counted since the agent started, per bucket, from the upstream deltas."""

    namespace: str
    service: str
    model_name: str
    tenant: str
    requests: float
    prompt_tokens: float
    cached_prompt_tokens: float
    generation_tokens: float


@dataclass(frozen=True, slots=True)
class GatewayReading:
    scrapes: tuple[GatewayScrape, ...]
    totals: tuple[TenantTotals, ...] = ()
    overflow_tenants: tuple[tuple[str, str, int], ...] = ()
    """(namespace, service, distinct upstream tenants folded into ``__other__``)."""
    resets: int = 0  # upstream counter resets seen since the agent started
