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
- a page served by several API-server processes is prometheus_client's multiprocess
  page: counters and histograms summed over the processes, gauges per their
  ``multiprocess_mode``; a gauge in the "all" mode is printed once per process with a
  ``pid`` label, and which process holds the engine's current value the page does not say
  (each engine sends its scheduler stats to one front-end per step). Such a gauge is read
  where every process prints the same value; otherwise the older "mostrecent" spelling is
  read if the page has it (``gpu_cache_usage_perc`` in 0.9.2-0.10.x), else it is not
  measured (``None``). Per release: ``docs/upstream-vllm.md``, "Multiprocess pages";
- ``vllm:lora_requests_info`` is not read: its value is a timestamp (``set_to_current_time``),
  summed over the processes on a multiprocess page;
- every other ``vllm:*`` name is ignored.

The collector hands the parser only the families it reads (:mod:`.select`); the upstream
spellings are in :mod:`.spellings`. Once an endpoint's page has been read this way, a page
that differs from it only in its values is read through the page's layout (:mod:`.layout`),
with the same answer and without the parser.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import MappingProxyType

from gpuledger.collectors.base import CollectorError
from gpuledger.collectors.http import redact_url
from gpuledger.collectors.keepalive import KeepAliveClient
from gpuledger.collectors.textformat.parse import (
    DEFAULT_MAX_SAMPLES,
    ExpositionError,
    MetricFamily,
    ParseCache,
    parse,
)
from gpuledger.collectors.vllm.layout import LayoutState
from gpuledger.collectors.vllm.select import select_families, select_lines
from gpuledger.collectors.vllm.spellings import (
    BUCKET,
    DISPATCH,
    GAUGE_FIELDS,
    SCALAR,
    SCALARS,
    SUM,
    Target,
)
from gpuledger.collectors.vllm.types import (
    EndpointScrape,
    Histogram,
    VllmEndpoint,
    VllmSeries,
    VllmTelemetry,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "VllmCollector",
    "normalize",
    "scrape_page",
    "select_families",
    "select_lines",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 16 * 1024 * 1024
_PREFIX = "vllm:"
_ROUTER_LABEL = "server"
_PID_LABEL = "pid"
_REASON_LABEL = "finished_reason"
_DEFAULT_ENGINE = "0"
_NO_RANK = 1 << 30


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
    # gauges printed once per API-server process (multiprocess "all" mode): field ->
    # rank -> pid -> value; usable only where every process prints the same value
    per_pid: dict[str, dict[int, dict[str, float]]] = field(default_factory=dict)
    success: dict[str, float] = field(default_factory=dict)
    hists: dict[str, dict[int, _HistAcc]] = field(default_factory=dict)

    def scalar_values(self, model: str, engine: str, out: list[Disagreement]) -> dict[str, float]:
        """The scalars read; a per-process gauge left unmeasured because its processes
        disagree (and no older spelling has it) is appended to ``out``."""
        chosen = dict(self.scalars)
        split: dict[str, Disagreement] = {}
        for fld, by_rank in self.per_pid.items():
            for rank, by_pid in sorted(by_rank.items()):
                distinct = set(by_pid.values())
                # Which process holds the engine's current value the page does not say
                # (docs/upstream-vllm.md, "Multiprocess pages"): agreeing values are it,
                # disagreeing ones are not measured -- an older spelling may still be.
                if len(distinct) == 1 and rank < chosen.get(fld, (_NO_RANK, 0.0))[0]:
                    chosen[fld] = (rank, distinct.pop())
                elif len(distinct) > 1 and fld not in split:
                    name = SCALARS[fld][rank]
                    split[fld] = Disagreement(name, fld, model, engine, len(by_pid), len(distinct))
        out += [d for fld, d in split.items() if fld not in chosen]
        return {f: v for f, (_, v) in chosen.items()}

    def series(self, model_name: str, engine: str, out: list[Disagreement]) -> VllmSeries:
        values: dict[str, object] = dict(self.scalar_values(model_name, engine, out))
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
class Disagreement:
    """A gauge printed once per API-server process whose processes print different
    values, so that it is left unmeasured for this series (see the module docstring)."""

    metric: str  # the upstream name, e.g. vllm:kv_cache_usage_perc
    field: str  # the VllmSeries field left None
    model_name: str
    engine: str
    processes: int
    values: int  # distinct values among them


@dataclass(frozen=True, slots=True)
class _Normalized:
    series: tuple[VllmSeries, ...]
    version_hint: str
    router_samples: int
    vllm_samples: int
    disagreements: tuple[Disagreement, ...] = ()


def _normalize(families: Mapping[str, MetricFamily]) -> _Normalized:
    groups: dict[tuple[str, str], _Acc] = {}
    # histogram accumulators by ((model_name, engine), (field, rank)), then grouped: one
    # dict lookup per run of bucket lines instead of three per line
    hists: dict[tuple[tuple[str, str], tuple[str, int]], _HistAcc] = {}
    dispatch = DISPATCH
    infos_get = _LABEL_INFO.get
    router = 0
    seen_vllm = 0
    newer = False
    h = _HistAcc()
    last_hist: tuple[str, int] | None = None
    last_key: tuple[str, str] | None = None
    last_name: str | None = None
    target: Target | None = None
    for fam_name, family in families.items():
        if not fam_name.startswith(_PREFIX):
            continue
        samples = family.samples
        seen_vllm += len(samples)
        for sample in samples:
            labels = sample.labels
            info = infos_get(id(labels))
            if info is None or info[0] is not labels:
                info = _label_info(labels)
            _, is_router, key, le, pid, reason = info
            if is_router:
                router += 1
                continue
            name = sample.name
            if name is not last_name:  # one family's lines share the parser's name object
                target = dispatch.get(name)
                last_name = name
            if target is None:
                continue
            value = sample.value
            if value != value:  # NaN: nothing measured
                continue
            if target.v1:
                newer = True
            kind = target.kind
            if kind >= BUCKET:
                # a histogram's lines come in a run: reuse the accumulator of the last line
                if target.hist is not last_hist or key != last_key:
                    hk = (key, (target.field, target.rank))
                    found = hists.get(hk)
                    if found is None:
                        found = hists[hk] = _HistAcc()
                    h = found
                    last_hist, last_key = target.hist, key
                if kind == BUCKET:
                    if le is not None:
                        h.buckets[le] = value
                elif kind == SUM:
                    h.sum = value
                else:
                    h.count = value
                continue
            acc = groups.get(key)
            if acc is None:
                acc = groups[key] = _Acc()
            if kind == SCALAR:
                if pid is not None and target.field in GAUGE_FIELDS:
                    by_rank = acc.per_pid.setdefault(target.field, {})
                    by_rank.setdefault(target.rank, {})[pid] = value
                    continue
                held = acc.scalars.get(target.field)
                if held is None or target.rank < held[0]:
                    acc.scalars[target.field] = (target.rank, value)
            else:
                acc.success[reason] = acc.success.get(reason, 0.0) + value
    for (key, (fld, rank)), h in hists.items():
        acc = groups.get(key)
        if acc is None:
            acc = groups[key] = _Acc()
        acc.hists.setdefault(fld, {})[rank] = h
    split: list[Disagreement] = []
    series = tuple(
        acc.series(model, engine, split) for (model, engine), acc in sorted(groups.items())
    )
    hint = "v1" if newer else ("v0" if series else "")
    return _Normalized(series, hint, router, seen_vllm, tuple(split))


def _series_and_hint(families: Mapping[str, MetricFamily]) -> tuple[tuple[VllmSeries, ...], str]:
    """What a page layout records of normalization (:mod:`.layout`)."""
    result = _normalize(families)
    return result.series, result.version_hint


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
    return _scrape_page(families, endpoint, vllm_page)[0]


def _scrape_page(
    families: Mapping[str, MetricFamily], endpoint: VllmEndpoint, vllm_page: bool | None
) -> tuple[EndpointScrape, tuple[Disagreement, ...]]:
    """:func:`scrape_page`, with the per-process gauges it left unmeasured."""
    result = _normalize(families)
    if result.series:
        scrape = EndpointScrape(
            endpoint=endpoint, up=True, series=result.series, version_hint=result.version_hint
        )
        return scrape, result.disagreements
    where = redact_url(endpoint.metrics_url)
    if result.router_samples:
        error = (
            f"{where} serves only production-stack router series (label 'server'): "
            "a router is not an engine; scrape the vLLM engines behind it"
        )
        return EndpointScrape(endpoint=endpoint, up=False, error=error, version_hint="router"), ()
    had_vllm = bool(result.vllm_samples) if vllm_page is None else vllm_page
    if had_vllm:
        error = f"no vLLM engine series that gpuledger reads in the page from {where}"
    else:
        error = f"no vllm:* series in the page from {where}: not a vLLM server"
    return EndpointScrape(endpoint=endpoint, up=False, error=error), ()


def _parse_le(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        le = float(text)
    except ValueError:
        return None
    if math.isnan(le):
        return None
    if len(_LE_CACHE) < _LE_CACHE_MAX:  # boundaries repeat on every page and every cycle
        _LE_CACHE[text] = le
    return le


# le text -> boundary; bounded, since a page's label values are not ours to trust
_LE_CACHE: dict[str, float] = {}
_LE_CACHE_MAX = 4096

# What normalization reads of a label set: (the label set, has a router's "server"
# label, (model_name, engine), bucket boundary or None, pid or None, finished_reason).
_Info = tuple[Mapping[str, str], bool, tuple[str, str], float | None, str | None, str]
# id(label set) -> its _Info. The parser hands out the same label-set objects scrape after
# scrape (textformat.parse.ParseCache), so each is read here once, not on every cycle.
# An entry holds its label set, so the id cannot be reused while the entry exists, and
# a hit is checked by identity. Shared by the scraping threads (single dict operations
# only); emptied when full.
_LABEL_INFO: dict[int, _Info] = {}
_LABEL_INFO_MAX = 16384


def _label_info(labels: Mapping[str, str]) -> _Info:
    le_text = labels.get("le")
    le = None if le_text is None else _LE_CACHE.get(le_text)
    if le is None:
        le = _parse_le(le_text)
    info: _Info = (
        labels,
        _ROUTER_LABEL in labels,
        (labels.get("model_name", ""), labels.get("engine") or _DEFAULT_ENGINE),
        le,
        labels.get(_PID_LABEL),
        labels.get(_REASON_LABEL, ""),
    )
    if len(_LABEL_INFO) >= _LABEL_INFO_MAX:
        _LABEL_INFO.clear()
    _LABEL_INFO[id(labels)] = info
    return info


@dataclass(slots=True)
class _Kept:
    """What the collector keeps of one endpoint between cycles."""

    cache: ParseCache = field(default_factory=ParseCache)
    layout: LayoutState = field(default_factory=LayoutState)


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
        # Kept-alive connections over http.client (a sixth of httpx's CPU per page); no
        # redirects (a /metrics that redirects is misconfigured, and following one could
        # carry the bearer token to another host); no proxies from the environment.
        self._client = KeepAliveClient(max_idle=max_workers)
        # per metrics URL: what is kept between cycles -- the parse's name and label-set
        # caches and the page's layout (a page's label sets do not change when its values
        # do); the URLs of this cycle's endpoints only
        self._kept: dict[str, _Kept] = {}
        # (metrics URL, upstream gauge) left unmeasured as its processes disagree
        self._split: set[tuple[str, str]] = set()

    def collect(self) -> VllmTelemetry:
        endpoints = tuple(self._endpoints())
        if not endpoints:
            return VllmTelemetry()
        states: list[_Kept | None] = []
        kept: dict[str, _Kept] = {}
        for endpoint in endpoints:
            url = endpoint.metrics_url
            if url in kept:  # the same URL twice: read in parallel, so nothing shared
                states.append(None)
                continue
            state = kept[url] = self._kept.get(url) or _Kept()
            states.append(state)
        self._kept = kept
        if len(endpoints) == 1:  # no hop through the pool
            results = [self._scrape(endpoints[0], states[0])]
        else:
            results = list(self._pool.map(self._scrape, endpoints, states))
        self._log_disagreements(results)
        scrapes = tuple(scrape for scrape, _ in results)
        if not any(s.up for s in scrapes):
            first = scrapes[0].error or "failed"
            more = f" (and {len(scrapes) - 1} more)" if len(scrapes) > 1 else ""
            raise CollectorError(f"every vLLM endpoint failed: {first}{more}")
        return VllmTelemetry(endpoints=scrapes)

    def scrape(self, endpoint: VllmEndpoint, cache: ParseCache | None = None) -> EndpointScrape:
        """Fetch, parse and normalize one endpoint; failures become ``up=False``.
        ``cache``: the endpoint's parse cache, used by one scrape at a time."""
        return self._scrape(endpoint, None, cache)[0]

    def _scrape(
        self, endpoint: VllmEndpoint, kept: _Kept | None, cache: ParseCache | None = None
    ) -> tuple[EndpointScrape, tuple[Disagreement, ...]]:
        """``kept``: what this collector keeps of the endpoint between cycles, used by
        one scrape at a time (its parse cache wins over ``cache``)."""
        url = endpoint.metrics_url
        headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else None
        try:
            body = self._client.fetch(
                url,
                timeout_s=self.timeout_s,
                max_bytes=self.max_bytes,
                headers=headers,
            )
        except CollectorError as exc:
            return EndpointScrape(endpoint=endpoint, up=False, error=str(exc)), ()
        selected = select_families(body)
        if kept is not None and len(selected) <= self.max_bytes:
            known = kept.layout.read(selected)
            if known is not None:  # the page of the last cycles, other values: read them
                series, hint = known
                return EndpointScrape(endpoint, up=True, series=series, version_hint=hint), ()
        try:
            families = parse(
                selected,
                max_bytes=self.max_bytes,
                max_samples=self.max_samples,
                cache=kept.cache if kept is not None else cache,
            )
        except ExpositionError as exc:
            error = f"unreadable page from {redact_url(url)}: {exc}"
            return EndpointScrape(endpoint=endpoint, up=False, error=error), ()
        scrape, split = _scrape_page(families, endpoint, b"vllm:" in body)
        if kept is not None and scrape.up and not split:
            kept.layout.missed(
                selected, scrape.series, _series_and_hint, max_samples=self.max_samples
            )
        return scrape, split

    def _log_disagreements(
        self, results: Sequence[tuple[EndpointScrape, tuple[Disagreement, ...]]]
    ) -> None:
        """One warning when a per-process gauge of an endpoint goes unmeasured because
        its API-server processes disagree, one line when it is measured again -- not one
        per cycle. An endpoint that is down this cycle keeps its state; one no longer
        scraped is forgotten."""
        now: dict[tuple[str, str], list[Disagreement]] = {}
        up: set[str] = set()
        listed: set[str] = set()
        for scrape, split in results:
            url = scrape.endpoint.metrics_url
            listed.add(url)
            if scrape.up:
                up.add(url)
            for d in split:
                now.setdefault((url, d.metric), []).append(d)
        for (url, metric), found in now.items():
            if (url, metric) not in self._split:
                where = ", ".join(
                    f"model {d.model_name!r} engine {d.engine}: {d.processes} processes "
                    f"print {d.values} different values"
                    for d in found
                )
                log.warning(
                    "vLLM endpoint %s: the API-server processes disagree on %s (%s); "
                    "%s is left unmeasured while they do",
                    redact_url(url), metric, where, found[0].field,
                )  # fmt: skip
        for url, metric in self._split - now.keys():
            if url in up:
                log.info("vLLM endpoint %s: %s is measured again", redact_url(url), metric)
        self._split = {k for k in self._split if k[0] in listed and k[0] not in up} | set(now)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()
