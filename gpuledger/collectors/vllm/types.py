"""Normalized vLLM readings: the same values whichever vLLM version served them.

vLLM renamed metrics between 0.6 and 0.11+ (``gpu_cache_usage_perc`` →
``kv_cache_usage_perc``, ``gpu_prefix_cache_*`` → ``prefix_cache_*``,
``time_per_output_token_seconds`` → ``inter_token_latency_seconds``), exposes counters
with ``_total`` and ``_created``, labels engines in data-parallel deployments, and the
production-stack router re-exports engine series with a ``server`` label. The vLLM
collector absorbs all of that; these types are what it hands the agent (and what the
probes compare against). Histograms keep the upstream bucket boundaries exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class VllmEndpoint:
    """One vLLM server to scrape and probe. ``api_key`` never appears in repr or logs."""

    url: str  # base URL, e.g. http://10.0.0.5:8000 (metrics at /metrics, API at /v1/...)
    service: str
    namespace: str = ""
    pod: str = ""
    api_key: str | None = field(default=None, repr=False, compare=False)
    metrics_path: str = "/metrics"

    @property
    def metrics_url(self) -> str:
        return self.url.rstrip("/") + self.metrics_path

    @property
    def name(self) -> str:
        """A stable label for the endpoint (no credentials: URLs here carry none)."""
        return self.url.rstrip("/")


@dataclass(frozen=True, slots=True)
class Histogram:
    """Cumulative buckets as exposed: ``((le, cumulative count), ...)`` ending at +Inf."""

    buckets: tuple[tuple[float, float], ...]
    sum: float
    count: float


@dataclass(frozen=True, slots=True)
class VllmSeries:
    """One (model_name, engine) of one endpoint, normalized."""

    model_name: str
    engine: str  # "0" when the version has no engine label
    requests_running: float | None = None
    requests_waiting: float | None = None
    kv_cache_usage_ratio: float | None = None
    prompt_tokens: float | None = None  # counters, cumulative since the engine started
    generation_tokens: float | None = None
    preemptions: float | None = None
    prefix_cache_queries: float | None = None  # prompt tokens looked up in the prefix cache
    prefix_cache_hits: float | None = None  # ... and found there (V1 engines only)
    # V1 with a KV connector (LMCache, ...): prompt tokens looked up / found outside vLLM
    external_prefix_cache_queries: float | None = None
    external_prefix_cache_hits: float | None = None
    prompt_tokens_cached: float | None = None  # V1 0.16+: local + external cached tokens
    request_success: Mapping[str, float] = field(
        default_factory=lambda: MappingProxyType({})
    )  # finished_reason -> count
    ttft: Histogram | None = None
    inter_token_latency: Histogram | None = None
    e2e_latency: Histogram | None = None
    queue_time: Histogram | None = None
    prefill_time: Histogram | None = None  # per request: scheduled → first token
    decode_time: Histogram | None = None  # per request: first token → last token


@dataclass(frozen=True, slots=True)
class EndpointScrape:
    endpoint: VllmEndpoint
    up: bool
    error: str | None = None
    series: tuple[VllmSeries, ...] = ()
    version_hint: str = ""  # "v0" (<= 0.10 names) or "v1" (>= 0.11 names), for diagnostics


@dataclass(frozen=True, slots=True)
class VllmTelemetry:
    endpoints: tuple[EndpointScrape, ...] = ()


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One synthetic request. On failure, ``reason`` is one of connect, timeout,
    http_status, bad_stream, model_mismatch; timings are None."""

    endpoint: VllmEndpoint
    model_name: str
    started_unix: float
    ok: bool
    reason: str | None = None
    ttft_s: float | None = None
    tpot_s: float | None = None
    e2e_s: float | None = None
    output_tokens_per_s: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ProbeVerdict:
    """Does what the engine reports agree with what the probe measured?"""

    endpoint: VllmEndpoint
    model_name: str
    checked_unix: float
    tokens_counted: bool | None  # engine token counters moved by >= the probe's tokens
    ttft_histogram_moved: bool | None  # the engine's TTFT histogram count moved
    ttft_agrees: bool | None  # probe TTFT within the engine's distribution over the window
    detail: str = ""

    @property
    def agrees(self) -> bool | None:
        checks = [self.tokens_counted, self.ttft_histogram_moved, self.ttft_agrees]
        if any(c is False for c in checks):
            return False
        if all(c is None for c in checks):
            return None
        return True
