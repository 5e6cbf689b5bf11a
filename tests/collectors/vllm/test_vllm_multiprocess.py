"""vLLM served by several API-server processes: prometheus_client's multiprocess pages.

The pages in ``tests/support/fixtures/vllm/vllm-*-api-servers2-dp2.prom`` were printed by
``tests/support/fixtures/vllm/generate_multiprocess.py``: two real API-server processes
sharing a ``PROMETHEUS_MULTIPROC_DIR``, each with the metrics declared as the vLLM release
declares them, fed ``RECORDS`` in order, the page written by ``MultiProcessCollector``.
Every expectation below is worked out by hand from ``RECORDS``:

engine "0": scheduler stats to A (running 5, waiting 2, KV 0.40, prefix 600/300, external
50/10) then to B (3, 1, 0.25, 400/120, 30/0) -- B's are current; requests on A (700 prompt,
200 generated, 1 preemption, 300 cached, stop x3) and on B (500, 150, 0, 120, stop + length).
engine "1": scheduler stats to B (4, 3, 0.5, 300/120) then to A (2, 0, 0.5, 700/300);
requests on A (500, 140, 0, 300, stop x2) and B (300, 100, 0, 120, stop + abort).
Histogram observations as in generate.py's TRAFFIC, split between the two processes.
"""

from __future__ import annotations

import logging
import math

import pytest

from gpuledger.collectors.textformat.parse import parse
from gpuledger.collectors.vllm.scrape import (
    VllmCollector,
    normalize,
    scrape_page,
    select_families,
    select_lines,
)
from gpuledger.collectors.vllm.types import VllmEndpoint, VllmSeries
from tests.support import paths as support_paths
from tests.support.standins import Behaviour, StandIn

FIXTURES = support_paths.FIXTURES / "vllm"
# "-vllm-logger": the same records printed by vLLM's own PrometheusStatLogger of that
# release (generate_with_vllm.py), not by copies of its declarations
PAGES = {
    release: (FIXTURES / f"vllm-{release}-api-servers2-dp2.prom").read_bytes()
    for release in (
        "0.10.2",
        "0.11.0",
        "0.33.0",
        "0.10.2-vllm-logger",
        "0.11.0-vllm-logger",
        "0.33.0-vllm-logger",
    )
}
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
INF = math.inf
V1_TTFT = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
           7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
V1_LAT = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
          120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)  # fmt: skip
# cumulative counts by hand: engine 0 TTFT 0.03 0.08 0.2 0.6 1.5 (A: 0.03 0.2 1.5, B: 0.08
# 0.6), prefill 0.02 0.07 0.15 0.5 1.2; engine 1 decode 1.0 3.1 2.5
E0_TTFT = (0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5)
E0_PREFILL = (3, 4, 4, 4, 5)
E1_DECODE = (0, 0, 0, 1, 1, 1, 2, 3)
EP = VllmEndpoint(url="http://127.0.0.1:1", service="chat")


def _buckets(bounds: tuple[float, ...], counts: tuple[int, ...], total: int) -> tuple:
    padded = counts + (total,) * (len(bounds) - len(counts))
    return (*((b, float(c)) for b, c in zip(bounds, padded, strict=True)), (INF, float(total)))


def _series(release: str) -> tuple[VllmSeries, VllmSeries]:
    e0, e1 = normalize(parse(PAGES[release]), EP)
    return e0, e1


def _check_common(e0: VllmSeries, e1: VllmSeries) -> None:
    assert (e0.model_name, e0.engine, e1.model_name, e1.engine) == (MODEL, "0", MODEL, "1")
    # mostrecent gauges: the last scheduler stats of each engine (B's for 0, A's for 1)
    assert (e0.requests_running, e0.requests_waiting) == (3.0, 1.0)
    assert (e1.requests_running, e1.requests_waiting) == (2.0, 0.0)
    # counters are summed over the processes
    assert (e0.prompt_tokens, e0.generation_tokens, e0.preemptions) == (1200.0, 350.0, 1.0)
    assert (e1.prompt_tokens, e1.generation_tokens, e1.preemptions) == (800.0, 240.0, 0.0)
    assert dict(e0.request_success) == {"stop": 4.0, "length": 1.0, "abort": 0.0}
    assert dict(e1.request_success) == {"stop": 3.0, "length": 0.0, "abort": 1.0}
    assert (e0.prefix_cache_queries, e0.prefix_cache_hits) == (1000.0, 420.0)
    assert (e1.prefix_cache_queries, e1.prefix_cache_hits) == (1000.0, 420.0)
    # histograms are summed over the processes too (_sum printed before the buckets)
    assert e0.ttft is not None
    assert e0.ttft.buckets == _buckets(V1_TTFT, E0_TTFT, 5)
    assert (e0.ttft.count, e0.ttft.sum) == (5.0, pytest.approx(2.41))
    assert e0.prefill_time is not None
    assert e0.prefill_time.buckets == _buckets(V1_LAT, E0_PREFILL, 5)
    assert (e0.prefill_time.count, e0.prefill_time.sum) == (5.0, pytest.approx(1.94))
    assert e1.decode_time is not None
    assert e1.decode_time.buckets == _buckets(V1_LAT, E1_DECODE, 3)
    assert (e1.decode_time.count, e1.decode_time.sum) == (3.0, pytest.approx(6.6))
    for s, n in ((e0, 6.0), (e1, 4.0)):
        assert s.inter_token_latency is not None
        assert s.inter_token_latency.count == n


@pytest.mark.parametrize("release", ["0.10.2", "0.10.2-vllm-logger"])
def test_0_10_kv_cache_from_the_mostrecent_spelling(release: str) -> None:
    """0.9.2-0.10.x: kv_cache_usage_perc has no multiprocess_mode ("all": one series per
    process, with ``pid``) while the deprecated gpu_cache_usage_perc is "mostrecent": the
    engine's current value is read from the latter."""
    e0, e1 = _series(release)
    _check_common(e0, e1)
    assert b'vllm:kv_cache_usage_perc{engine="0"' in PAGES[release]
    assert b'pid="' in PAGES[release]
    assert (e0.kv_cache_usage_ratio, e1.kv_cache_usage_ratio) == (0.25, 0.5)  # not A's 0.40


@pytest.mark.parametrize("release", ["0.11.0", "0.11.0-vllm-logger"])
def test_0_11_0_kv_cache_only_where_the_processes_agree(release: str) -> None:
    """0.11.0 prints only the per-process spelling by default: engine 0's processes hold
    0.40 (stale, A) and 0.25 (current, B) and the page cannot say which is current, so the
    value is not measured; engine 1's both hold 0.5, which is then the current value."""
    e0, e1 = _series(release)
    _check_common(e0, e1)
    assert e0.kv_cache_usage_ratio is None
    assert e1.kv_cache_usage_ratio == 0.5


@pytest.mark.parametrize("release", ["0.33.0", "0.33.0-vllm-logger"])
def test_0_33_mostrecent_kv_cache_and_cached_prompt_tokens(release: str) -> None:
    e0, e1 = _series(release)
    _check_common(e0, e1)
    assert (e0.kv_cache_usage_ratio, e1.kv_cache_usage_ratio) == (0.25, 0.5)
    assert (e0.prompt_tokens_cached, e1.prompt_tokens_cached) == (420.0, 420.0)
    assert (e0.external_prefix_cache_queries, e0.external_prefix_cache_hits) == (80.0, 10.0)
    assert (e1.external_prefix_cache_queries, e1.external_prefix_cache_hits) == (0.0, 0.0)
    for s in _series("0.11.0"):  # not printed before 0.11.1 / 0.16: not measured, not 0
        assert (s.prompt_tokens_cached, s.external_prefix_cache_hits) == (None, None)


def _gauge_page(*lines: str) -> bytes:
    head = "# HELP {0} h\n# TYPE {0} gauge\n"
    out = []
    for name in dict.fromkeys(line.split("{")[0] for line in lines):
        out.append(head.format(name))
        out += [line + "\n" for line in lines if line.startswith(name + "{")]
    return "".join(out).encode()


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (['vllm:kv_cache_usage_perc{engine="0",model_name="m",pid="11"} 0.3',
          'vllm:kv_cache_usage_perc{engine="0",model_name="m",pid="12"} 0.3'], 0.3),
        (['vllm:kv_cache_usage_perc{engine="0",model_name="m",pid="11"} 0.3',
          'vllm:kv_cache_usage_perc{engine="0",model_name="m",pid="12"} 0.0'], None),
        (['vllm:kv_cache_usage_perc{engine="0",model_name="m",pid="11"} 0.3',
          'vllm:kv_cache_usage_perc{engine="0",model_name="m",pid="12"} 0.1',
          'vllm:gpu_cache_usage_perc{engine="0",model_name="m"} 0.7'], 0.7),
        (['vllm:kv_cache_usage_perc{engine="0",model_name="m",pid="11"} 0.3',
          'vllm:kv_cache_usage_perc{engine="0",model_name="m",pid="12"} 0.3',
          'vllm:gpu_cache_usage_perc{engine="0",model_name="m"} 0.3'], 0.3),
        (['vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.2',
          'vllm:gpu_cache_usage_perc{engine="0",model_name="m"} 0.7'], 0.2),
    ],
)  # fmt: skip
def test_per_process_gauge_rule(lines: list[str], expected: float | None) -> None:
    (s,) = normalize(parse(_gauge_page(*lines)), EP)
    assert s.kv_cache_usage_ratio == expected


def test_per_process_running_gauge_is_not_summed() -> None:
    page = _gauge_page(
        'vllm:num_requests_running{engine="0",model_name="m",pid="11"} 4',
        'vllm:num_requests_running{engine="0",model_name="m",pid="12"} 4',
    )
    (s,) = normalize(parse(page), EP)
    assert s.requests_running == 4.0  # 8 would be a sum over processes


@pytest.mark.parametrize("release", ["0.33.0", "0.33.0-vllm-logger"])
def test_lora_requests_info_is_not_read(release: str) -> None:
    """On a multiprocess page lora_requests_info ("sum" of set_to_current_time) is the sum
    of the processes' timestamps: nothing is read from it, and it changes nothing."""
    page = PAGES[release]
    fams = parse(page)
    (sample,) = fams["vllm:lora_requests_info"].samples
    assert sample.value > 2 * 1.7e9  # two Unix timestamps of 2023 or later, added
    assert sample.labels["running_lora_adapters"] == "sql-lora"
    without = b"\n".join(line for line in page.split(b"\n") if b"lora_requests_info" not in line)
    assert normalize(fams, EP) == normalize(parse(without), EP)
    assert b"lora" not in select_families(page)


V0_PAGE = (FIXTURES / "vllm-0.8.5-engine-v0-multiprocess.prom").read_bytes()


def test_v0_engine_multiprocess_page() -> None:
    """The V0 server's page is a multiprocess page too, with one writer (the engine
    process): "sum" gauges are its values; lora_requests_info ("livemostrecent") is one
    timestamp, not read. By hand from V0_RECORDS: last scheduler stats 3 / 1 / 0.25."""
    (s,) = normalize(parse(V0_PAGE), EP)
    assert (s.model_name, s.engine) == (MODEL, "0")
    assert (s.requests_running, s.requests_waiting, s.kv_cache_usage_ratio) == (3.0, 1.0, 0.25)
    assert (s.prompt_tokens, s.generation_tokens, s.preemptions) == (1200.0, 350.0, 1.0)
    assert dict(s.request_success) == {"stop": 4.0, "length": 1.0}
    assert s.ttft is not None
    assert s.ttft.buckets == _buckets(V1_TTFT, E0_TTFT, 5)
    assert s.prefill_time is not None
    assert s.prefill_time.buckets == _buckets(V1_LAT, E0_PREFILL, 5)
    assert (s.prefix_cache_queries, s.prefix_cache_hits, s.prompt_tokens_cached) == (None,) * 3
    (lora,) = parse(V0_PAGE)["vllm:lora_requests_info"].samples
    assert 1.7e9 < lora.value < 2.2e9  # one timestamp
    assert scrape_page(parse(select_families(V0_PAGE)), EP).version_hint == "v0"


@pytest.mark.parametrize("release", sorted(PAGES))
def test_selection_keeps_what_normalize_reads(release: str) -> None:
    page = PAGES[release]
    whole = normalize(parse(page), EP)
    assert normalize(parse(select_families(page)), EP) == whole
    assert normalize(parse(select_lines(page)), EP) == whole


@pytest.mark.parametrize("release", sorted(PAGES))
def test_collector_over_http(release: str) -> None:
    endpoints: list[VllmEndpoint] = []
    collector = VllmCollector(lambda: endpoints, timeout_s=2.0)
    try:
        with StandIn(Behaviour(body=PAGES[release])) as s:
            endpoints.append(VllmEndpoint(url=s.url.removesuffix("/metrics"), service="chat"))
            (scrape,) = collector.collect().endpoints
    finally:
        collector.close()
    assert scrape.up
    assert scrape.version_hint == "v1"
    assert scrape.series == normalize(parse(PAGES[release]), EP)
    assert scrape == scrape_page(parse(PAGES[release]), scrape.endpoint)


def test_disagreeing_processes_are_logged_once_and_the_recovery_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """0.11.0's page: engine 0's two API-server processes print 0.4 and 0.25 for
    kv_cache_usage_perc, so the value is not measured -- one warning saying so while it
    lasts, one line when the processes agree again, and a warning again when they part."""
    split = PAGES["0.11.0"]
    stale = (
        b'vllm:kv_cache_usage_perc{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct",'
        b'pid="17824"} 0.25'
    )
    assert split.count(stale) == 1
    agreeing = split.replace(stale, stale.replace(b"} 0.25", b"} 0.4"))
    endpoints: list[VllmEndpoint] = []
    collector = VllmCollector(lambda: endpoints, timeout_s=2.0)
    caplog.set_level(logging.INFO, logger="gpuledger.collectors.vllm.scrape")

    def lines() -> list[tuple[int, str]]:
        got = [(r.levelno, r.getMessage()) for r in caplog.records]
        caplog.clear()
        return got

    try:
        with StandIn(Behaviour(body=split)) as s:
            endpoints.append(VllmEndpoint(url=s.url.removesuffix("/metrics"), service="chat"))
            first = [collector.collect() for _ in range(3)]
            assert all(t.endpoints[0].series[0].kv_cache_usage_ratio is None for t in first)
            assert lines() == [
                (
                    logging.WARNING,
                    f"vLLM endpoint {s.url}: the API-server processes disagree on "
                    "vllm:kv_cache_usage_perc (model 'meta-llama/Llama-3.1-8B-Instruct' "
                    "engine 0: 2 processes print 2 different values); kv_cache_usage_ratio "
                    "is left unmeasured while they do",
                )
            ]
            s.behaviour = Behaviour(body=agreeing)
            again = [collector.collect() for _ in range(2)]
            assert all(t.endpoints[0].series[0].kv_cache_usage_ratio == 0.4 for t in again)
            assert lines() == [
                (logging.INFO, f"vLLM endpoint {s.url}: vllm:kv_cache_usage_perc is measured again")
            ]
            s.behaviour = Behaviour(body=split)
            collector.collect()
            collector.collect()
            assert [level for level, _ in lines()] == [logging.WARNING]
    finally:
        collector.close()
