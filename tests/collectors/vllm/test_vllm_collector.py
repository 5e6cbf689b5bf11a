"""The vLLM collector against real HTTP stand-ins serving upstream-shaped pages.

The fixtures in ``tests/support/fixtures/vllm/`` were printed by prometheus_client from each
generation's metric definitions (``tests/support/fixtures/vllm/generate.py``; sources in
``docs/upstream-vllm.md``), all describing the same traffic. Every expected value below is
worked out by hand from that traffic:

engine "0": running 3, waiting 1, KV cache 0.25, 1200 prompt / 350 generation tokens,
1 preemption, finished stop x4 + length x1;
TTFT observations 0.03 0.08 0.2 0.6 1.5 (sum 2.41); inter-token 0.02 0.02 0.04 0.06 0.12
0.3 (sum 0.56); e2e 0.9 2.2 4.0 7.5 12.0 (sum 26.6); queue 0 0 0 0.4 1.2 (sum 1.6).
engine "1" (the 0.11 page only): running 2, waiting 0, KV 0.5, 800 / 240 tokens,
0 preemptions, stop x3 + abort x1; TTFT 0.05 0.09 3.0 (sum 3.14); inter-token 0.03 0.05
0.05 0.2 (sum 0.33); e2e 1.1 3.3 5.5 (sum 9.9); queue 0.1 0.2 0.9 (sum 1.2).
A value on a boundary counts in that bucket (``le`` is "less or equal").
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from gpuledger.collectors.base import Collector, CollectorError
from gpuledger.collectors.textformat.parse import MetricFamily, parse
from gpuledger.collectors.vllm.scrape import (
    VllmCollector,
    normalize,
    scrape_page,
    select_families,
    select_lines,
)
from gpuledger.collectors.vllm.types import Histogram, VllmEndpoint, VllmSeries, VllmTelemetry
from tests.support import paths as support_paths
from tests.support.standins import Behaviour, StandIn

FIXTURES = support_paths.FIXTURES / "vllm"
V0_PAGE = (FIXTURES / "vllm-0.8-engine-v0.prom").read_bytes()
V010_PAGE = (FIXTURES / "vllm-0.10-engine-v1.prom").read_bytes()
V011_PAGE = (FIXTURES / "vllm-0.11-dp2.prom").read_bytes()
ROUTER_PAGE = (FIXTURES / "production-stack-router.prom").read_bytes()
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
INF = math.inf

# Upstream boundaries (docs/upstream-vllm.md): V0 engine, then what V1 appended.
V0_TTFT = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
           7.5, 10.0)  # fmt: skip
V1_TTFT = (*V0_TTFT, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
V0_ITL = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
V1_ITL = (*V0_ITL, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
V0_LAT = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0)
V1_LAT = (*V0_LAT, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)

# Cumulative counts per boundary, by hand (engine 0), over the V0 boundaries; every V1
# boundary beyond them holds the total (no observation exceeds the V0 maxima).
E0_TTFT = (0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 5, 5)
E0_ITL = (0, 2, 3, 4, 4, 5, 5, 6, 6, 6, 6, 6, 6)
E0_E2E = (0, 0, 0, 1, 1, 1, 2, 3, 4, 5, 5, 5, 5, 5, 5)
E0_QUEUE = (3, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5)
# prefill 0.02 0.07 0.15 0.5 1.2 and decode 0.8 2.0 3.4 6.5 10.5 (generate.py's TRAFFIC)
E0_PREFILL = (3, 4, 4, 4, 5)
E0_DECODE = (0, 0, 1, 1, 1, 2, 2, 3, 4, 5)


def _buckets(bounds: tuple[float, ...], counts: tuple[int, ...], total: int) -> tuple:
    padded = counts + (total,) * (len(bounds) - len(counts))
    return (*((b, float(c)) for b, c in zip(bounds, padded, strict=True)), (INF, float(total)))


def _endpoint(url: str, **kw: Any) -> VllmEndpoint:
    return VllmEndpoint(url=url.removesuffix("/metrics"), service="chat", namespace="llm", **kw)


@pytest.fixture
def collector() -> Iterator[VllmCollector]:
    holder: list[VllmEndpoint] = []
    c = VllmCollector(lambda: list(holder), timeout_s=1.0)
    c.endpoints = holder  # type: ignore[attr-defined]
    yield c
    c.close()


def _collect(c: VllmCollector, *urls: str, **kw: Any) -> VllmTelemetry:
    c.endpoints[:] = [_endpoint(u, **kw) for u in urls]  # type: ignore[attr-defined]
    return c.collect()


def _check_engine0(s: VllmSeries, *, ttft_b: tuple, itl_b: tuple, lat_b: tuple) -> None:
    assert (s.model_name, s.engine) == (MODEL, "0")
    assert s.requests_running == 3.0
    assert s.requests_waiting == 1.0
    assert s.kv_cache_usage_ratio == 0.25
    assert s.prompt_tokens == 1200.0
    assert s.generation_tokens == 350.0
    assert s.preemptions == 1.0
    assert s.request_success["stop"] == 4.0
    assert s.request_success["length"] == 1.0
    assert s.ttft is not None
    assert s.ttft.buckets == _buckets(ttft_b, E0_TTFT, 5)
    assert s.ttft.count == 5.0
    assert s.ttft.sum == pytest.approx(2.41)
    itl = s.inter_token_latency
    assert itl is not None
    assert itl.buckets == _buckets(itl_b, E0_ITL, 6)
    assert itl.count == 6.0
    assert itl.sum == pytest.approx(0.56)
    assert s.e2e_latency is not None
    assert s.e2e_latency.buckets == _buckets(lat_b, E0_E2E, 5)
    assert s.e2e_latency.count == 5.0
    assert s.e2e_latency.sum == pytest.approx(26.6)
    assert s.queue_time is not None
    assert s.queue_time.buckets == _buckets(lat_b, E0_QUEUE, 5)
    assert s.queue_time.count == 5.0
    assert s.queue_time.sum == pytest.approx(1.6)
    assert s.prefill_time is not None
    assert s.prefill_time.buckets == _buckets(lat_b, E0_PREFILL, 5)
    assert (s.prefill_time.count, s.prefill_time.sum) == (5.0, pytest.approx(1.94))
    assert s.decode_time is not None
    assert s.decode_time.buckets == _buckets(lat_b, E0_DECODE, 5)
    assert (s.decode_time.count, s.decode_time.sum) == (5.0, pytest.approx(23.2))


def test_collector_satisfies_the_protocol(collector: VllmCollector) -> None:
    assert isinstance(collector, Collector)
    assert collector.name == "vllm"


def test_no_endpoints_is_an_empty_reading(collector: VllmCollector) -> None:
    assert _collect(collector) == VllmTelemetry()


def test_v0_engine_page(collector: VllmCollector) -> None:
    with StandIn(Behaviour(body=V0_PAGE)) as s:
        t = _collect(collector, s.url)
    (scrape,) = t.endpoints
    assert scrape.up
    assert scrape.error is None
    assert scrape.version_hint == "v0"
    assert scrape.endpoint.service == "chat"
    (series,) = scrape.series
    _check_engine0(series, ttft_b=V0_TTFT, itl_b=V0_ITL, lat_b=V0_LAT)
    assert dict(series.request_success) == {"length": 1.0, "stop": 4.0}
    # V0 printed only a prefix-cache hit-rate gauge: the token counters are not measured
    assert (series.prefix_cache_queries, series.prefix_cache_hits) == (None, None)


def test_v1_dp2_page_keeps_engines_apart(collector: VllmCollector) -> None:
    with StandIn(Behaviour(body=V011_PAGE)) as s:
        t = _collect(collector, s.url)
    (scrape,) = t.endpoints
    assert scrape.up
    assert scrape.version_hint == "v1"
    e0, e1 = scrape.series
    _check_engine0(e0, ttft_b=V1_TTFT, itl_b=V1_ITL, lat_b=V1_LAT)
    # V1 creates every finished_reason at start, so "abort" is there at 0.
    assert dict(e0.request_success) == {"abort": 0.0, "length": 1.0, "stop": 4.0}
    assert (e1.model_name, e1.engine) == (MODEL, "1")
    assert (e1.requests_running, e1.requests_waiting, e1.kv_cache_usage_ratio) == (2.0, 0.0, 0.5)
    assert (e1.prompt_tokens, e1.generation_tokens, e1.preemptions) == (800.0, 240.0, 0.0)
    assert dict(e1.request_success) == {"abort": 1.0, "length": 0.0, "stop": 3.0}
    assert e1.ttft == Histogram(
        _buckets(V1_TTFT, (0, 0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 2, 3), 3), e1.ttft.sum, 3.0
    )
    assert e1.ttft.sum == pytest.approx(3.14)
    itl = e1.inter_token_latency
    assert itl is not None
    assert itl.buckets == _buckets(V1_ITL, (0, 0, 3, 3, 3, 3, 4), 4)
    assert (itl.count, itl.sum) == (4.0, pytest.approx(0.33))
    e2e = e1.e2e_latency
    assert e2e is not None
    assert e2e.buckets == _buckets(V1_LAT, (0, 0, 0, 0, 1, 1, 1, 2, 3), 3)
    assert (e2e.count, e2e.sum) == (3.0, pytest.approx(9.9))
    q = e1.queue_time
    assert q is not None
    assert q.buckets == _buckets(V1_LAT, (2, 2, 2, 3), 3)
    assert (q.count, q.sum) == (3.0, pytest.approx(1.2))
    # prefill 0.04 0.08 2.9, decode 1.0 3.1 2.5
    pf, dc = e1.prefill_time, e1.decode_time
    assert pf is not None
    assert dc is not None
    assert pf.buckets == _buckets(V1_LAT, (2, 2, 2, 2, 2, 2, 2, 3), 3)
    assert (pf.count, pf.sum) == (3.0, pytest.approx(3.02))
    assert dc.buckets == _buckets(V1_LAT, (0, 0, 0, 1, 1, 1, 2, 3), 3)
    assert (dc.count, dc.sum) == (3.0, pytest.approx(6.6))
    for engine in (e0, e1):  # 1000 tokens looked up, 420 found, per engine
        assert (engine.prefix_cache_queries, engine.prefix_cache_hits) == (1000.0, 420.0)


def test_v010_page_with_both_spellings(collector: VllmCollector) -> None:
    with StandIn(Behaviour(body=V010_PAGE)) as s:
        t = _collect(collector, s.url)
    (series,) = t.endpoints[0].series
    _check_engine0(series, ttft_b=V1_TTFT, itl_b=V1_ITL, lat_b=V1_LAT)
    # the deprecated gpu_prefix_cache_* and the new prefix_cache_* carry the same values:
    # read once, not added
    assert (series.prefix_cache_queries, series.prefix_cache_hits) == (1000.0, 420.0)


def _without_zero_reasons(s: VllmSeries) -> VllmSeries:
    kept = {k: v for k, v in s.request_success.items() if v}
    return dataclasses.replace(s, request_success=kept)


def _on_bounds(h: Histogram | None, bounds: tuple[float, ...]) -> Histogram | None:
    assert h is not None
    keep = {*bounds, INF}
    return Histogram(tuple(b for b in h.buckets if b[0] in keep), h.sum, h.count)


def test_generations_normalize_to_the_same_series() -> None:
    ep = _endpoint("http://127.0.0.1:1")
    (v0,) = normalize(parse(V0_PAGE), ep)
    (v010,) = normalize(parse(V010_PAGE), ep)
    v011 = normalize(parse(V011_PAGE), ep)[0]
    # Scalars, counters and histogram totals: identical across the three generations.
    hists = ("ttft", "inter_token_latency", "e2e_latency", "queue_time", "prefill_time",
             "decode_time")  # fmt: skip
    # the prefix-cache token counters exist from V1 on (checked per page above)
    blank = dict.fromkeys((*hists, "prefix_cache_queries", "prefix_cache_hits"))
    assert (
        _without_zero_reasons(dataclasses.replace(v0, **blank))
        == _without_zero_reasons(dataclasses.replace(v010, **blank))
        == _without_zero_reasons(dataclasses.replace(v011, **blank))
    )
    # Histograms keep each version's boundaries; on the boundaries they share, same counts.
    bounds_of = (V0_TTFT, V0_ITL, V0_LAT, V0_LAT, V0_LAT, V0_LAT)
    for name, bounds in zip(hists, bounds_of, strict=True):
        h0 = getattr(v0, name)
        assert (
            h0 == _on_bounds(getattr(v010, name), bounds) == _on_bounds(getattr(v011, name), bounds)
        )


def _merge(*pages: bytes) -> dict[str, MetricFamily]:
    """Two pages as one exporter would print them (one family per name)."""
    merged: dict[str, MetricFamily] = {}
    for page in pages:
        for name, fam in parse(page).items():
            if name in merged:
                merged[name].samples.extend(fam.samples)
            else:
                merged[name] = MetricFamily(fam.name, fam.type, fam.help, list(fam.samples))
    return merged


def test_router_series_are_not_counted_next_to_the_engines() -> None:
    ep = _endpoint("http://127.0.0.1:1")
    alone = normalize(parse(V011_PAGE), ep)
    with_router = normalize(_merge(V011_PAGE, ROUTER_PAGE), ep)
    assert with_router == alone
    assert [s.requests_running for s in with_router] == [3.0, 2.0]  # not 6.0 and 4.0
    assert [s.engine for s in with_router] == ["0", "1"]  # no "" group from the router


def test_router_only_page_is_down_and_says_why(collector: VllmCollector) -> None:
    with StandIn(Behaviour(body=ROUTER_PAGE)) as router, StandIn(Behaviour(body=V0_PAGE)) as v0:
        t = _collect(collector, router.url, v0.url)
    r, ok = t.endpoints
    assert not r.up
    assert r.series == ()
    assert r.version_hint == "router"
    assert r.error is not None
    assert "router" in r.error
    assert "server" in r.error
    assert ok.up
    assert len(ok.series) == 1


def test_new_spelling_wins_over_the_deprecated_one() -> None:
    ep = _endpoint("http://127.0.0.1:1")
    # Make the deprecated spellings disagree: the new names must be the ones read.
    page = V010_PAGE.replace(
        b'vllm:gpu_cache_usage_perc{engine="0",model_name="' + MODEL.encode() + b'"} 0.25',
        b'vllm:gpu_cache_usage_perc{engine="0",model_name="' + MODEL.encode() + b'"} 0.99',
    )
    assert page != V010_PAGE
    (s,) = normalize(parse(page), ep)
    assert s.kv_cache_usage_ratio == 0.25
    page = b"\n".join(
        line.rsplit(b" ", 1)[0] + b" 99.0"
        if line.startswith(b"vllm:time_per_output_token_seconds_")
        else line
        for line in V011_PAGE.split(b"\n")
    )
    assert page != V011_PAGE
    s0 = normalize(parse(V011_PAGE), ep)[0]
    assert normalize(parse(page), ep)[0].inter_token_latency == s0.inter_token_latency
    # ... and with only the old spelling, it is read.
    old_only = b"\n".join(
        line for line in V011_PAGE.split(b"\n") if b"inter_token_latency" not in line
    )
    assert normalize(parse(old_only), ep)[0].inter_token_latency == s0.inter_token_latency


CUSTOM = b"""\
# HELP vllm:e2e_request_latency_seconds Histogram of e2e request latency in seconds.
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{engine="0",le="+Inf",model_name="m"} 4.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="0.05",model_name="m"} 1.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="0.01",model_name="m"} 0.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="0.25",model_name="m"} 2.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="30.0",model_name="m"} 4.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="1.0",model_name="m"} 3.0
vllm:e2e_request_latency_seconds_count{engine="0",model_name="m"} 4.0
vllm:e2e_request_latency_seconds_sum{engine="0",model_name="m"} 12.5
# HELP vllm:e2e_request_latency_seconds_created Histogram of e2e request latency in seconds.
# TYPE vllm:e2e_request_latency_seconds_created gauge
vllm:e2e_request_latency_seconds_created{engine="0",model_name="m"} 1.7672256e+09
# HELP vllm:prompt_tokens_created Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_created gauge
vllm:prompt_tokens_created{engine="0",model_name="m"} 1.7672256e+09
"""


def test_custom_buckets_pass_through_sorted_with_inf_last() -> None:
    """--custom-histogram-buckets boundaries (and any order on the page) come back as
    printed, sorted by le; _created samples are not mistaken for counters."""
    (s,) = normalize(parse(CUSTOM), _endpoint("http://127.0.0.1:1"))
    assert s.e2e_latency == Histogram(
        ((0.01, 0.0), (0.05, 1.0), (0.25, 2.0), (1.0, 3.0), (30.0, 4.0), (INF, 4.0)), 12.5, 4.0
    )
    assert s.prompt_tokens is None
    assert s.ttft is None
    assert s.requests_running is None
    assert dict(s.request_success) == {}


def test_unknown_vllm_names_only_is_down() -> None:
    ep = _endpoint("http://127.0.0.1:1")
    page = b"# TYPE vllm:request_params_n histogram\nvllm:request_params_n_count 1\n"
    scrape = scrape_page(parse(page), ep)
    assert not scrape.up
    assert scrape.error
    assert "no vLLM engine series" in scrape.error
    scrape = scrape_page(parse(b"# TYPE up gauge\nup 1\n"), ep)
    assert not scrape.up
    assert scrape.error
    assert "not a vLLM server" in scrape.error
    scrape = scrape_page(parse(b""), ep)
    assert not scrape.up
    assert scrape.error
    assert "not a vLLM server" in scrape.error


def test_failing_endpoints_do_not_fail_the_others(collector: VllmCollector) -> None:
    with (
        StandIn(Behaviour(body=V011_PAGE)) as good,
        StandIn(Behaviour(status=500, body=b"boom")) as err,
        StandIn(Behaviour(body=V0_PAGE, delay_s=30)) as hang,
        StandIn(Behaviour(body=b"vllm:num_requests_running{model_name=} 1\n")) as garbage,
        StandIn(Behaviour(body=b"")) as empty,
    ):
        started = time.monotonic()
        t = _collect(collector, good.url, err.url, hang.url, garbage.url, empty.url)
        elapsed = time.monotonic() - started
    ok, e500, hung, bad, blank = t.endpoints
    assert ok.up
    assert len(ok.series) == 2
    assert not e500.up
    assert e500.error is not None
    assert "HTTP 500" in e500.error
    assert not hung.up
    assert hung.error is not None
    assert "timed out" in hung.error
    assert not bad.up
    assert bad.error is not None
    assert "unreadable page" in bad.error
    assert not blank.up
    assert blank.error is not None
    assert "not a vLLM server" in blank.error
    assert elapsed < 3.0  # in parallel: one timeout (1 s), not the sum


def test_every_endpoint_down_raises(collector: VllmCollector) -> None:
    with (
        StandIn(Behaviour(status=503)) as a,
        StandIn(Behaviour(body=ROUTER_PAGE)) as b,
        pytest.raises(CollectorError, match=r"every vLLM endpoint failed: HTTP 503"),
    ):
        _collect(collector, a.url, b.url)


def test_size_cap_applies_per_endpoint() -> None:
    big = V011_PAGE * 2
    with StandIn(Behaviour(body=big)) as s, StandIn(Behaviour(body=V0_PAGE)) as small:
        c = VllmCollector(
            lambda: [_endpoint(s.url), _endpoint(small.url)],
            timeout_s=2.0,
            max_bytes=len(V011_PAGE),
        )
        try:
            over, fine = c.collect().endpoints
        finally:
            c.close()
    assert not over.up
    assert over.error is not None
    assert "cap" in over.error
    assert fine.up


class _AuthServer:
    """Records the Authorization header of each request; answers 200 with a page, or 401."""

    def __init__(self, body: bytes, status: int = 200) -> None:
        self.seen: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                outer.seen.append(self.headers.get("Authorization"))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/metrics"

    def __enter__(self) -> _AuthServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_bearer_token_is_sent_and_never_shown(collector: VllmCollector) -> None:
    key = "sk-very-secret-0123456789"
    with _AuthServer(V0_PAGE) as ok, _AuthServer(b"unauthorized", status=401) as denied:
        t = _collect(collector, ok.url, denied.url, api_key=key)
        good, bad = t.endpoints
        assert ok.seen == [f"Bearer {key}"]
        assert denied.seen == [f"Bearer {key}"]
        _collect(collector, ok.url)  # no key configured: no header at all
        assert ok.seen[-1] is None
    assert good.up
    assert not bad.up
    assert bad.error is not None
    assert "HTTP 401" in bad.error
    assert key not in bad.error
    assert key not in repr(bad)
    assert key not in repr(t)
    with pytest.raises(CollectorError) as info, _AuthServer(b"", status=401) as only:
        _collect(collector, only.url, api_key=key)
    assert key not in str(info.value)


@pytest.mark.parametrize("page", [V0_PAGE, V010_PAGE, V011_PAGE, ROUTER_PAGE, CUSTOM])
def test_selected_lines_normalize_like_the_whole_page(page: bytes) -> None:
    ep = _endpoint("http://127.0.0.1:1")
    for select in (select_lines, select_families):
        selected = select(page)
        assert len(selected) < len(page)
        assert b"_created" not in selected
        assert normalize(parse(selected), ep) == normalize(parse(page), ep)


def test_family_selection_drops_a_deprecated_histogram_only_beside_the_new_one() -> None:
    """0.11 prints inter_token_latency_seconds and the deprecated
    time_per_output_token_seconds with the same values: only the new one is parsed; a
    page with only the old spelling keeps it."""
    assert b"# HELP vllm:time_per_output_token_seconds " in V011_PAGE
    both = select_families(V011_PAGE)
    assert b"vllm:time_per_output_token_seconds" not in both
    assert b"vllm:inter_token_latency_seconds_bucket" in both
    new = (b"vllm:inter_token", b"# HELP vllm:inter_token", b"# TYPE vllm:inter_token")
    old_only = b"\n".join(line for line in V011_PAGE.split(b"\n") if not line.startswith(new))
    assert b"vllm:time_per_output_token_seconds_bucket" in select_families(old_only)
    ep = _endpoint("http://127.0.0.1:1")
    want = normalize(parse(V011_PAGE), ep)[0].inter_token_latency
    assert normalize(parse(select_families(old_only)), ep)[0].inter_token_latency == want


def test_family_selection_without_help_lines_falls_back_to_lines() -> None:
    page = b"\n".join(line for line in V0_PAGE.split(b"\n") if not line.startswith(b"# HELP"))
    ep = _endpoint("http://127.0.0.1:1")
    assert select_families(page) == select_lines(page)
    assert normalize(parse(select_families(page)), ep) == normalize(parse(V0_PAGE), ep)


def test_page_with_only_unread_vllm_names_is_down(collector: VllmCollector) -> None:
    page = b"# TYPE vllm:request_params_n histogram\nvllm:request_params_n_count 1\n"
    with StandIn(Behaviour(body=page)) as s, StandIn(Behaviour(body=V0_PAGE)) as ok:
        t = _collect(collector, s.url, ok.url)
    assert not t.endpoints[0].up
    assert t.endpoints[0].error is not None
    assert "no vLLM engine series" in t.endpoints[0].error


def test_endpoints_keep_their_order_and_a_repeated_url_reads_the_same() -> None:
    """The slow first endpoint's page arrives last but is still reported first, and an
    endpoint listed twice (one URL: its parse cache is not shared by the two parallel
    scrapes) reads the same as once, cycle after cycle."""
    endpoints: list[VllmEndpoint] = []
    collector = VllmCollector(lambda: endpoints, timeout_s=5.0)
    try:
        with (
            StandIn(Behaviour(body=V011_PAGE, delay_s=0.5)) as slow,
            StandIn(Behaviour(body=V0_PAGE)) as fast,
        ):
            for i, s in enumerate((slow, fast, fast)):
                url = s.url.removesuffix("/metrics")
                endpoints.append(VllmEndpoint(url=url, service=f"svc{i}"))
            for _ in range(2):  # the second cycle with the parse caches of the first
                got = collector.collect().endpoints
                assert [e.endpoint.service for e in got] == ["svc0", "svc1", "svc2"]
                assert got[0].series == normalize(parse(V011_PAGE))
                assert got[1].series == got[2].series == normalize(parse(V0_PAGE))
    finally:
        collector.close()
