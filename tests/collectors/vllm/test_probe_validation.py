"""Probe validation: the engine's own counters against what a probe measured."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from gpuledger.collectors.textformat.parse import parse
from gpuledger.collectors.vllm.probe.client import probe_once
from gpuledger.collectors.vllm.probe.validation import endpoint_series, merge_series, validate
from gpuledger.collectors.vllm.types import (
    EndpointScrape,
    Histogram,
    ProbeResult,
    VllmEndpoint,
    VllmSeries,
    VllmTelemetry,
)
from tests.support.vllm_standin import TTFT_BUCKETS, VllmStandIn

MODEL = "stand-in/model"


def _wall() -> float:
    return 1_700_000_000.0


@pytest.fixture
def vllm() -> Iterator[VllmStandIn]:
    with VllmStandIn() as server:
        server.behaviour.first_token_delay_s = 0.3
        server.behaviour.per_token_delay_s = 0.005
        yield server


def _probe_between(server: VllmStandIn) -> tuple[ProbeResult, VllmSeries, VllmSeries]:
    ep = VllmEndpoint(url=server.url, service="svc")
    before = server.series()
    with httpx.Client(trust_env=False) as c:
        result = probe_once(c, ep, model=MODEL, prompt="a b c d", max_tokens=8, timeout_s=5)
    assert result.ok, result.detail
    return result, before, server.series()


def test_honest_engine_agrees(vllm: VllmStandIn) -> None:
    result, before, after = _probe_between(vllm)
    v = validate(result, before, after, wall=_wall)
    assert (v.tokens_counted, v.ttft_histogram_moved, v.ttft_agrees) == (True, True, True)
    assert v.agrees is True
    assert v.detail == ""
    assert v.model_name == MODEL
    assert v.checked_unix == _wall()


def test_engine_that_does_not_count_tokens(vllm: VllmStandIn) -> None:
    vllm.behaviour.lie_tokens = True
    result, before, after = _probe_between(vllm)
    v = validate(result, before, after, wall=_wall)
    assert v.tokens_counted is False
    assert v.agrees is False
    assert v.ttft_histogram_moved is True
    assert "probe used 4 / 8" in v.detail


def test_engine_whose_ttft_histogram_does_not_move(vllm: VllmStandIn) -> None:
    vllm.behaviour.count_ttft = False
    result, before, after = _probe_between(vllm)
    v = validate(result, before, after, wall=_wall)
    assert v.ttft_histogram_moved is False
    assert v.ttft_agrees is None
    assert v.agrees is False


def test_engine_reporting_another_ttft(vllm: VllmStandIn) -> None:
    vllm.behaviour.ttft_report_scale = 20  # records ~6 s for a 0.3 s first token
    result, before, after = _probe_between(vllm)
    v = validate(result, before, after, wall=_wall)
    assert v.tokens_counted is True
    assert v.ttft_histogram_moved is True
    assert v.ttft_agrees is False
    assert v.agrees is False
    assert "outside" in v.detail


def test_engine_restart_is_undecidable(vllm: VllmStandIn) -> None:
    # traffic before the window, so that a restart makes the counters go backwards
    _probe_between(vllm)
    _probe_between(vllm)
    before = vllm.series()
    vllm.restart()
    result, _, after = _probe_between(vllm)
    v = validate(result, before, after, wall=_wall)
    assert (v.tokens_counted, v.ttft_histogram_moved, v.ttft_agrees) == (None, None, None)
    assert v.agrees is None
    assert "restarted" in v.detail


def test_missing_sides_are_undecidable(vllm: VllmStandIn) -> None:
    result, before, after = _probe_between(vllm)
    assert validate(result, None, after, wall=_wall).agrees is None
    assert validate(result, before, None, wall=_wall).agrees is None
    bare_b = VllmSeries(model_name=MODEL, engine="0")
    bare_a = VllmSeries(model_name=MODEL, engine="0")
    v = validate(result, bare_b, bare_a, wall=_wall)
    assert v.agrees is None
    assert "token counters missing" in v.detail
    failed = ProbeResult(result.endpoint, MODEL, 0.0, ok=False, reason="timeout")
    assert validate(failed, before, after, wall=_wall).agrees is None


# -- bucket arithmetic ------------------------------------------------------------------


def _hist(observations: list[float]) -> Histogram:
    bounds = (*TTFT_BUCKETS, float("inf"))
    buckets = tuple((le, float(sum(1 for o in observations if o <= le))) for le in bounds)
    return Histogram(buckets=buckets, sum=sum(observations), count=float(len(observations)))


def _series(observations: list[float], prompt: float, gen: float) -> VllmSeries:
    return VllmSeries(
        model_name=MODEL,
        engine="0",
        prompt_tokens=prompt,
        generation_tokens=gen,
        ttft=_hist(observations),
    )


@pytest.mark.parametrize(
    ("window", "probe_ttft", "agrees"),
    [
        ([0.3], 0.3, True),  # same bucket (0.25, 0.5]
        ([0.3], 0.7, True),  # one bucket above: (0.5, 0.75]
        ([0.3], 0.8, True),  # 0.75 + 50 ms of absolute slack
        ([0.3], 0.85, False),  # two buckets above
        ([0.3], 0.15, True),  # one bucket below: (0.1, 0.25]
        ([0.3], 0.09, True),  # 0.1 - 50 ms
        ([0.3], 0.04, False),  # two buckets below
        ([0.6], 0.3, True),  # window in (0.5, 0.75]; 0.3 in the bucket below
        ([0.6], 0.19, False),
        ([0.005, 3.0], 1.2, True),  # anywhere between the lowest and highest bucket
        ([3000.0], 3000.0, True),  # the +Inf bucket
        ([0.0005], 0.0, True),  # the first bucket has no lower neighbour
        ([0.0005], 0.006, True),  # tiny buckets: 50 ms of absolute slack
        ([0.0005], 0.07, False),  # ... and no more
        ([3.0], 0.95, True),  # (2.5, 5.0]: lower neighbour starts at 1.0, minus 50 ms
        ([3.0], 0.9, False),
    ],
)
def test_ttft_window_with_one_bucket_of_slack(
    window: list[float], probe_ttft: float, agrees: bool
) -> None:
    older = [0.01, 9.0]  # observations before the window do not count
    before = _series(older, 100, 100)
    after = _series(older + window, 110, 120)
    ep = VllmEndpoint(url="http://x", service="")
    result = ProbeResult(
        ep, MODEL, 0.0, ok=True, ttft_s=probe_ttft, prompt_tokens=10, completion_tokens=20
    )
    v = validate(result, before, after, wall=_wall)
    assert v.tokens_counted is True
    assert v.ttft_histogram_moved is True
    assert v.ttft_agrees is agrees


def test_tokens_counted_needs_both_counters() -> None:
    ep = VllmEndpoint(url="http://x", service="")
    result = ProbeResult(
        ep, MODEL, 0.0, ok=True, ttft_s=0.3, prompt_tokens=10, completion_tokens=20
    )
    before = _series([], 100, 100)
    assert validate(result, before, _series([0.3], 110, 119), wall=_wall).tokens_counted is False
    assert validate(result, before, _series([0.3], 109, 200), wall=_wall).tokens_counted is False
    assert validate(result, before, _series([0.3], 500, 500), wall=_wall).tokens_counted is True


def test_merge_engines_and_pick_endpoint() -> None:
    a = _series([0.3], 10, 20)
    b = VllmSeries(
        model_name=MODEL, engine="1", prompt_tokens=5, generation_tokens=7, ttft=_hist([2.0])
    )
    merged = merge_series([a, b])
    assert merged is not None
    assert merged.prompt_tokens == 15
    assert merged.generation_tokens == 27
    assert merged.ttft is not None
    assert merged.ttft.count == 2
    assert merged.ttft.buckets[-1] == (float("inf"), 2.0)
    ep = VllmEndpoint(url="http://x:8000", service="s")
    other = VllmSeries(model_name="other", engine="0", prompt_tokens=1000)
    tel = VllmTelemetry(endpoints=(EndpointScrape(ep, up=True, series=(a, b, other)),))
    picked = endpoint_series(tel, VllmEndpoint(url="http://x:8000/", service="s"), MODEL)
    assert picked is not None
    assert picked.prompt_tokens == 15
    assert endpoint_series(tel, ep, "missing") is None
    down = VllmTelemetry(endpoints=(EndpointScrape(ep, up=False, error="boom"),))
    assert endpoint_series(down, ep, MODEL) is None
    assert endpoint_series(None, ep, MODEL) is None


def test_standin_metrics_text_moves_with_the_series(vllm: VllmStandIn) -> None:
    """What the stand-in serves on /metrics is the series validation reads (so the vLLM
    collector's tests can use the same stand-in)."""
    _probe_between(vllm)
    with httpx.Client(trust_env=False) as c:
        text = c.get(vllm.url + "/metrics").text
    fams = parse(text)
    series = vllm.series()
    labels = {"model_name": MODEL, "engine": "0"}

    def value(family: str, sample: str, **extra: str) -> float:
        want = {**labels, **extra}
        hits = [
            s.value for s in fams[family].samples if s.name == sample and dict(s.labels) == want
        ]
        assert len(hits) == 1, (family, sample, want)
        return hits[0]

    assert fams["vllm:prompt_tokens_total"].type == "counter"
    assert value("vllm:prompt_tokens_total", "vllm:prompt_tokens_total") == series.prompt_tokens
    assert (
        value("vllm:generation_tokens_total", "vllm:generation_tokens_total")
        == series.generation_tokens
        == 8
    )
    ttft = "vllm:time_to_first_token_seconds"
    assert fams[ttft].type == "histogram"
    assert value(ttft, f"{ttft}_count") == 1
    assert value(ttft, f"{ttft}_bucket", le="0.25") == 0
    assert value(ttft, f"{ttft}_bucket", le="0.5") == 1
    les = [s.labels["le"] for s in fams[ttft].samples if s.name.endswith("_bucket")]
    assert les == [repr(b) for b in TTFT_BUCKETS] + ["+Inf"]
    vllm.behaviour.requests_waiting = 12
    fams = parse(httpx.get(vllm.url + "/metrics", trust_env=False).text)
    assert value("vllm:num_requests_waiting", "vllm:num_requests_waiting") == 12
