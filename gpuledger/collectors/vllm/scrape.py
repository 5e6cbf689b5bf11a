"""vLLM servers as a source: every engine's ``/metrics`` page turned into :class:`VllmTelemetry`.

vLLM has renamed its metrics between generations (see ``docs/upstream-vllm.md`` for the
sources): the V0 engine (vLLM <= 0.10) exposes ``gpu_cache_usage_perc`` and
``time_per_output_token_seconds`` with a ``model_name`` label only; the V1 engine adds an
``engine`` label (one per data-parallel engine), ``_created`` series next to every counter
and histogram, and -- after a deprecation window in which both spellings are printed with
the same values -- the names ``kv_cache_usage_perc``, ``prefix_cache_*`` and
``inter_token_latency_seconds``. This module is the one place that knows those spellings:
whichever generation serves the page, :func:`normalize` hands back the same
:class:`VllmSeries` fields.

Rules:

- counters are read from their ``_total`` samples; ``_created`` samples are ignored;
- where a page prints an old and a new spelling of one quantity (0.9-0.11), the new one is
  read and the old one ignored, so nothing is counted twice; a histogram is taken whole
  from one spelling, never mixed bucket by bucket;
- both KV-cache gauges are a 0..1 fraction upstream ("1 means 100 percent usage"), so the
  value passes through unchanged as a ratio;
- histograms keep the upstream bucket boundaries exactly (they differ by version and can be
  overridden by the operator), sorted by ``le`` with ``+Inf`` last;
- series are grouped by ``(model_name, engine)``, ``engine`` being ``"0"`` where the page has
  no such label (the V0 engine);
- samples with a ``server`` label are what vllm-project/production-stack's router re-exports
  under engine names (``vllm:num_requests_running{server=...}``); they are never read, so a
  router's view of an engine is not counted next to the engine's own. A page that holds
  nothing but router series is reported as down: a router is not an engine, and the engines
  behind it should be scraped directly;
- every other ``vllm:*`` name is ignored.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import MappingProxyType

import httpx

from gpuledger.collectors.base import CollectorError
from gpuledger.collectors.http import fetch, redact_url
from gpuledger.collectors.textformat.parse import (
    DEFAULT_MAX_SAMPLES,
    ExpositionError,
    MetricFamily,
    parse,
)
from gpuledger.collectors.vllm.types import (
    EndpointScrape,
    Histogram,
    VllmEndpoint,
    VllmSeries,
    VllmTelemetry,
)

__all__ = ["DEFAULT_MAX_BYTES", "VllmCollector", "normalize", "scrape_page", "select_lines"]

DEFAULT_MAX_BYTES = 16 * 1024 * 1024
_PREFIX = "vllm:"
_ROUTER_LABEL = "server"
_DEFAULT_ENGINE = "0"

# Scalar quantities: VllmSeries field -> upstream sample names, newest spelling first.
_SCALARS: Mapping[str, tuple[str, ...]] = {
    "requests_running": ("vllm:num_requests_running",),
    "requests_waiting": ("vllm:num_requests_waiting",),
    "kv_cache_usage_ratio": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    "prompt_tokens": ("vllm:prompt_tokens_total",),
    "generation_tokens": ("vllm:generation_tokens_total",),
    "preemptions": ("vllm:num_preemptions_total",),
    # V1 only (V0 printed a hit-rate gauge, not counters): tokens looked up / found
    "prefix_cache_queries": (
        "vllm:prefix_cache_queries_total",
        "vllm:gpu_prefix_cache_queries_total",
    ),
    "prefix_cache_hits": ("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"),
}
_SUCCESS = "vllm:request_success_total"
_REASON_LABEL = "finished_reason"
# Histograms: VllmSeries field -> upstream base names, newest spelling first.
_HISTOGRAMS: Mapping[str, tuple[str, ...]] = {
    "ttft": ("vllm:time_to_first_token_seconds",),
    "inter_token_latency": (
        "vllm:inter_token_latency_seconds",
        "vllm:time_per_output_token_seconds",
    ),
    "e2e_latency": ("vllm:e2e_request_latency_seconds",),
    "queue_time": ("vllm:request_queue_time_seconds",),
    # where a request's GPU time went: the cost weights of prompt vs generated tokens
    "prefill_time": ("vllm:request_prefill_time_seconds",),
    "decode_time": ("vllm:request_decode_time_seconds",),
}
# Names only the newer generation prints (for EndpointScrape.version_hint).
_V1_NAMES = frozenset({"vllm:kv_cache_usage_perc", "vllm:inter_token_latency_seconds_count"})

_SCALAR, _SUCCESS_KIND, _BUCKET, _SUM, _COUNT = range(5)


@dataclass(frozen=True, slots=True)
class _Target:
    kind: int
    field: str
    rank: int  # 0 = newest spelling


def _dispatch() -> Mapping[str, _Target]:
    table: dict[str, _Target] = {}
    for fld, names in _SCALARS.items():
        for rank, name in enumerate(names):
            table[name] = _Target(_SCALAR, fld, rank)
    table[_SUCCESS] = _Target(_SUCCESS_KIND, "request_success", 0)
    for fld, names in _HISTOGRAMS.items():
        for rank, name in enumerate(names):
            table[name + "_bucket"] = _Target(_BUCKET, fld, rank)
            table[name + "_sum"] = _Target(_SUM, fld, rank)
            table[name + "_count"] = _Target(_COUNT, fld, rank)
    return MappingProxyType(table)


_DISPATCH = _dispatch()


def _line_prefixes() -> tuple[bytes, ...]:
    prefixes: list[bytes] = []
    for name in _DISPATCH:
        prefixes += [f"{name}{{".encode(), f"{name} ".encode()]
    families = {n for names in (*_SCALARS.values(), *_HISTOGRAMS.values()) for n in names}
    for name in sorted({*families, _SUCCESS}):
        prefixes += [f"# HELP {name} ".encode(), f"# TYPE {name} ".encode()]
    return tuple(prefixes)


_LINE_PREFIXES = _line_prefixes()


def select_lines(body: bytes) -> bytes:
    """Only the lines of a page that :func:`normalize` reads (its samples, with their
    ``# HELP`` / ``# TYPE`` lines), in page order.

    A vLLM page is mostly series gpuledger does not export (token-count and phase-time
    histograms, ``_created`` gauges, process metrics): picking the wanted lines out with
    a C-level prefix test before the exposition parser sees the page cuts the parse to a
    third (``bench/bench_vllm.py``). The selected lines are still parsed strictly; lines
    elsewhere on the page are not validated. Upstream prints every line from column 0;
    an indented line would not be selected.
    """
    return b"\n".join([line for line in body.split(b"\n") if line.startswith(_LINE_PREFIXES)])


@dataclass(slots=True)
class _HistAcc:
    buckets: dict[float, float] = field(default_factory=dict)
    sum: float | None = None
    count: float | None = None

    def build(self) -> Histogram | None:
        if self.count is None or self.sum is None or not self.buckets:
            return None  # a histogram without its count or sum is not one we can use
        buckets = self.buckets
        if math.inf not in buckets:
            buckets = {**buckets, math.inf: self.count}
        return Histogram(buckets=tuple(sorted(buckets.items())), sum=self.sum, count=self.count)


@dataclass(slots=True)
class _Acc:
    """Everything the page says about one (model_name, engine)."""

    scalars: dict[str, tuple[int, float]] = field(default_factory=dict)
    success: dict[str, float] = field(default_factory=dict)
    hists: dict[str, dict[int, _HistAcc]] = field(default_factory=dict)

    def hist(self, fld: str, rank: int) -> _HistAcc:
        by_rank = self.hists.get(fld)
        if by_rank is None:
            by_rank = self.hists[fld] = {}
        acc = by_rank.get(rank)
        if acc is None:
            acc = by_rank[rank] = _HistAcc()
        return acc

    def series(self, model_name: str, engine: str) -> VllmSeries:
        values: dict[str, object] = {f: v for f, (_, v) in self.scalars.items()}
        for fld, by_rank in self.hists.items():
            for rank in sorted(by_rank):  # the newest spelling that is complete wins
                built = by_rank[rank].build()
                if built is not None:
                    values[fld] = built
                    break
        return VllmSeries(
            model_name=model_name,
            engine=engine,
            request_success=MappingProxyType(dict(sorted(self.success.items()))),
            **values,  # type: ignore[arg-type]
        )


@dataclass(frozen=True, slots=True)
class _Normalized:
    series: tuple[VllmSeries, ...]
    version_hint: str
    router_samples: int
    vllm_samples: int


def _normalize(families: Mapping[str, MetricFamily]) -> _Normalized:
    groups: dict[tuple[str, str], _Acc] = {}
    dispatch = _DISPATCH
    router = 0
    seen_vllm = 0
    newer = False
    for fam_name, family in families.items():
        if not fam_name.startswith(_PREFIX):
            continue
        for sample in family.samples:
            seen_vllm += 1
            target = dispatch.get(sample.name)
            labels = sample.labels
            if _ROUTER_LABEL in labels:
                router += 1
                continue
            if target is None:
                continue
            value = sample.value
            if math.isnan(value):
                continue
            if not newer and sample.name in _V1_NAMES:
                newer = True
            key = (labels.get("model_name", ""), labels.get("engine") or _DEFAULT_ENGINE)
            acc = groups.get(key)
            if acc is None:
                acc = groups[key] = _Acc()
            kind = target.kind
            if kind == _SCALAR:
                held = acc.scalars.get(target.field)
                if held is None or target.rank < held[0]:
                    acc.scalars[target.field] = (target.rank, value)
            elif kind == _SUCCESS_KIND:
                reason = labels.get(_REASON_LABEL, "")
                acc.success[reason] = acc.success.get(reason, 0.0) + value
            elif kind == _BUCKET:
                le = _parse_le(labels.get("le"))
                if le is not None:
                    acc.hist(target.field, target.rank).buckets[le] = value
            elif kind == _SUM:
                acc.hist(target.field, target.rank).sum = value
            else:
                acc.hist(target.field, target.rank).count = value
    series = tuple(acc.series(model, engine) for (model, engine), acc in sorted(groups.items()))
    hint = "v1" if newer else ("v0" if series else "")
    return _Normalized(series, hint, router, seen_vllm)


def normalize(
    families: Mapping[str, MetricFamily], endpoint: VllmEndpoint | None = None
) -> tuple[VllmSeries, ...]:
    """The engine series of one parsed page, one :class:`VllmSeries` per (model_name,
    engine), sorted. Pure: no I/O. ``endpoint`` is accepted for symmetry with the
    collector; the series themselves carry no endpoint metadata."""
    del endpoint
    return _normalize(families).series


def scrape_page(
    families: Mapping[str, MetricFamily],
    endpoint: VllmEndpoint,
    *,
    vllm_page: bool | None = None,
) -> EndpointScrape:
    """Parsed page -> :class:`EndpointScrape`, with the "not an engine page" cases as
    ``up=False`` (separate from the collector so a saved page can be replayed).
    ``vllm_page`` says whether the raw page had any ``vllm:`` series at all (for a page
    that went through :func:`select_lines`); by default it is read from ``families``."""
    result = _normalize(families)
    if result.series:
        return EndpointScrape(
            endpoint=endpoint, up=True, series=result.series, version_hint=result.version_hint
        )
    where = redact_url(endpoint.metrics_url)
    if result.router_samples:
        error = (
            f"{where} serves only production-stack router series (label 'server'): "
            "a router is not an engine; scrape the vLLM engines behind it"
        )
        return EndpointScrape(endpoint=endpoint, up=False, error=error, version_hint="router")
    had_vllm = bool(result.vllm_samples) if vllm_page is None else vllm_page
    if had_vllm:
        error = f"no vLLM engine series that gpuledger reads in the page from {where}"
    else:
        error = f"no vllm:* series in the page from {where}: not a vLLM server"
    return EndpointScrape(endpoint=endpoint, up=False, error=error)


def _parse_le(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        le = float(text)
    except ValueError:
        return None
    return None if math.isnan(le) else le


class VllmCollector:
    """Scrapes every vLLM endpoint that ``endpoints()`` names, in parallel.

    Each endpoint gets its own ``timeout_s`` and ``max_bytes``; one that fails (refused,
    hung, HTTP error, unreadable or non-vLLM page) comes back as ``up=False`` with a short
    reason while the others are reported normally. :meth:`collect` raises
    :class:`CollectorError` only when there are endpoints and every one of them failed.
    An endpoint's API key is sent as ``Authorization: Bearer ...`` and never appears in an
    error message.
    """

    def __init__(
        self,
        endpoints: Callable[[], Sequence[VllmEndpoint]],
        *,
        timeout_s: float = 5.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_samples: int = DEFAULT_MAX_SAMPLES,
        max_workers: int = 8,
        name: str = "vllm",
    ) -> None:
        if timeout_s <= 0 or max_bytes <= 0 or max_workers <= 0:
            raise ValueError("timeout_s, max_bytes and max_workers must be positive")
        self.name = name
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.max_samples = max_samples
        self._endpoints = endpoints
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=name)
        # No redirects (a /metrics that redirects is misconfigured, and following one could
        # carry the bearer token to another host); no proxies from the environment.
        self._client = httpx.Client(
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_connections=max_workers, max_keepalive_connections=max_workers),
        )

    def collect(self) -> VllmTelemetry:
        endpoints = tuple(self._endpoints())
        if not endpoints:
            return VllmTelemetry()
        if len(endpoints) == 1:
            scrapes: tuple[EndpointScrape, ...] = (self.scrape(endpoints[0]),)
        else:
            scrapes = tuple(self._pool.map(self.scrape, endpoints))
        if not any(s.up for s in scrapes):
            first = scrapes[0].error or "failed"
            more = f" (and {len(scrapes) - 1} more)" if len(scrapes) > 1 else ""
            raise CollectorError(f"every vLLM endpoint failed: {first}{more}")
        return VllmTelemetry(endpoints=scrapes)

    def scrape(self, endpoint: VllmEndpoint) -> EndpointScrape:
        """Fetch, parse and normalize one endpoint; failures become ``up=False``."""
        url = endpoint.metrics_url
        headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else None
        try:
            body = fetch(
                self._client,
                url,
                timeout_s=self.timeout_s,
                max_bytes=self.max_bytes,
                headers=headers,
            )
        except CollectorError as exc:
            return EndpointScrape(endpoint=endpoint, up=False, error=str(exc))
        try:
            families = parse(
                select_lines(body), max_bytes=self.max_bytes, max_samples=self.max_samples
            )
        except ExpositionError as exc:
            error = f"unreadable page from {redact_url(url)}: {exc}"
            return EndpointScrape(endpoint=endpoint, up=False, error=error)
        return scrape_page(families, endpoint, vllm_page=b"vllm:" in body)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()
