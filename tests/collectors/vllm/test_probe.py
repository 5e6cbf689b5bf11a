"""Synthetic probes against a real vLLM stand-in on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from gpuledger.collectors.vllm.probe.client import DEFAULT_PROMPT, endpoint_from_url, probe_once
from gpuledger.collectors.vllm.probe.runner import ProbeRunner, run_series
from gpuledger.collectors.vllm.probe.statistics import percentile, summarize
from gpuledger.collectors.vllm.types import (
    EndpointScrape,
    ProbeResult,
    ProbeVerdict,
    VllmEndpoint,
    VllmSeries,
    VllmTelemetry,
)
from tests.support.standins import wait_until
from tests.support.vllm_standin import CHAT_TEMPLATE_TOKENS, VllmStandIn

MODEL = "stand-in/model"


@pytest.fixture
def vllm() -> Iterator[VllmStandIn]:
    with VllmStandIn() as server:
        yield server


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False) as c:
        yield c


def _ep(server: VllmStandIn, api_key: str | None = None) -> VllmEndpoint:
    return VllmEndpoint(url=server.url, service="chat", namespace="ml", api_key=api_key)


def _probe(
    client: httpx.Client, server: VllmStandIn, *, timeout_s: float = 5.0, **kw: object
) -> ProbeResult:
    args: dict[str, object] = {"model": MODEL, "max_tokens": 16, "timeout_s": timeout_s}
    args.update(kw)
    return probe_once(client, _ep(server), **args)  # type: ignore[arg-type]


# -- timings ------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_timings_follow_the_injected_delays(
    vllm: VllmStandIn, client: httpx.Client, api: str
) -> None:
    vllm.behaviour.first_token_delay_s = 0.3
    vllm.behaviour.per_token_delay_s = 0.02
    r = _probe(client, vllm, api=api)
    assert r.ok, r.detail
    assert r.reason is None
    assert r.model_name == MODEL
    assert r.ttft_s is not None
    assert 0.3 <= r.ttft_s < 0.4
    assert r.tpot_s is not None
    # TPOT = (e2e - TTFT) / 15: a first token that arrives a hair late shortens it, so
    # the lower bound allows 2 % (seen: 0.019996 on a loaded 2-core machine)
    assert 0.0196 <= r.tpot_s < 0.035
    assert r.e2e_s is not None
    assert 0.3 + 15 * 0.02 <= r.e2e_s < 0.3 + 15 * 0.02 + 0.2
    assert r.completion_tokens == 16
    words = len(DEFAULT_PROMPT.split())
    assert r.prompt_tokens == words + (CHAT_TEMPLATE_TOKENS if api == "chat" else 0)
    assert r.output_tokens_per_s == pytest.approx(1 / r.tpot_s)
    path = "/v1/chat/completions" if api == "chat" else "/v1/completions"
    assert vllm.requests[f"POST {path}"] == 1
    body = vllm.bodies[-1]
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 16
    assert body["model"] == MODEL
    assert ("messages" in body) == (api == "chat")


def test_chat_role_only_delta_is_not_the_first_token(
    vllm: VllmStandIn, client: httpx.Client
) -> None:
    vllm.behaviour.early_role_chunk = True  # role delta at once, content after 0.3 s
    vllm.behaviour.first_token_delay_s = 0.3
    r = _probe(client, vllm, api="chat")
    assert r.ok, r.detail
    assert r.ttft_s is not None
    assert r.ttft_s >= 0.3


def test_model_none_asks_v1_models(vllm: VllmStandIn, client: httpx.Client) -> None:
    r = _probe(client, vllm, model=None)
    assert r.ok
    assert r.model_name == MODEL
    assert vllm.requests["GET /v1/models"] == 1
    assert vllm.bodies[-1]["model"] == MODEL


def test_one_token_has_no_tpot(vllm: VllmStandIn, client: httpx.Client) -> None:
    r = _probe(client, vllm, max_tokens=1)
    assert r.ok
    assert r.completion_tokens == 1
    assert r.tpot_s is None
    assert r.output_tokens_per_s is None
    assert r.ttft_s is not None
    assert r.e2e_s is not None


# -- failure reasons ------------------------------------------------------------------


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def test_connect_refused(client: httpx.Client) -> None:
    ep = VllmEndpoint(url=f"http://127.0.0.1:{_closed_port()}", service="x")
    r = probe_once(client, ep, model=MODEL, prompt="hi", max_tokens=4, timeout_s=2)
    assert not r.ok
    assert r.reason == "connect"
    assert r.ttft_s is None
    assert r.e2e_s is None
    # model=None: the /v1/models lookup fails the same way
    r = probe_once(client, ep, model=None, prompt="hi", max_tokens=4, timeout_s=2)
    assert r.reason == "connect"
    assert r.model_name == ""


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("headers_delay_s", 5.0),  # slow first byte: no status line at all
        ("first_token_delay_s", 5.0),  # headers at once, no first token
        ("per_token_delay_s", 0.3),  # every read is quick, the whole is too slow
    ],
)
def test_timeout_is_one_deadline(
    vllm: VllmStandIn, client: httpx.Client, setting: str, value: float
) -> None:
    setattr(vllm.behaviour, setting, value)
    t0 = time.monotonic()
    r = _probe(client, vllm, timeout_s=1.0)
    elapsed = time.monotonic() - t0
    assert r.reason == "timeout", r
    assert not r.ok
    assert elapsed < 1.6


def test_http_500(vllm: VllmStandIn, client: httpx.Client) -> None:
    vllm.behaviour.status = 500
    r = _probe(client, vllm)
    assert r.reason == "http_status"
    assert "HTTP 500" in r.detail


def test_unknown_model_is_http_status(vllm: VllmStandIn, client: httpx.Client) -> None:
    r = _probe(client, vllm, model="not-served")  # vLLM answers 404
    assert r.reason == "http_status"
    assert "404" in r.detail


def test_wrong_model_in_stream(vllm: VllmStandIn, client: httpx.Client) -> None:
    vllm.behaviour.stream_model = "someone/else"
    r = _probe(client, vllm)
    assert r.reason == "model_mismatch"
    assert "someone/else" in r.detail
    assert r.ttft_s is None


@pytest.mark.parametrize(
    ("setting", "value", "needle"),
    [
        ("cut_after_tokens", 3, "broke off"),
        ("omit_usage", True, "usage"),
        ("omit_done", True, "[DONE]"),
        ("malformed_after_tokens", 2, "unparsable"),
        ("error_event_after_tokens", 2, "error event"),
    ],
)
def test_bad_stream(
    vllm: VllmStandIn, client: httpx.Client, setting: str, value: object, needle: str
) -> None:
    setattr(vllm.behaviour, setting, value)
    r = _probe(client, vllm)
    assert r.reason == "bad_stream", r
    assert not r.ok
    assert needle in r.detail
    assert r.ttft_s is None
    assert r.completion_tokens is None


def test_cancel_ends_a_probe_at_once(vllm: VllmStandIn, client: httpx.Client) -> None:
    vllm.behaviour.first_token_delay_s = 10
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    t0 = time.monotonic()
    r = _probe(client, vllm, timeout_s=30, cancel=cancel)
    assert not r.ok
    assert time.monotonic() - t0 < 1.0


# -- credentials ----------------------------------------------------------------------


def test_api_key_is_sent_and_never_reported(vllm: VllmStandIn, client: httpx.Client) -> None:
    key = "sk-very-secret-1234"
    vllm.behaviour.require_api_key = key
    ok = probe_once(client, _ep(vllm, key), model=None, prompt="hi", max_tokens=4, timeout_s=5)
    assert ok.ok, ok.detail
    assert vllm.auth_headers[-1] == f"Bearer {key}"
    bad = probe_once(
        client, _ep(vllm, "wrong-key-5678"), model=MODEL, prompt="hi", max_tokens=4, timeout_s=5
    )
    assert bad.reason == "http_status"
    assert "401" in bad.detail
    vllm.behaviour.stream_model = key  # even a server echoing it back
    echoed = probe_once(client, _ep(vllm, key), model=MODEL, prompt="hi", max_tokens=4, timeout_s=5)
    assert echoed.reason == "model_mismatch"
    for r in (ok, bad, echoed):
        assert key not in repr(r)
        assert key not in r.detail
        assert "wrong-key-5678" not in repr(r)


# -- the scheduled runner ------------------------------------------------------------


def _telemetry(ep: VllmEndpoint, series: VllmSeries) -> VllmTelemetry:
    return VllmTelemetry(endpoints=(EndpointScrape(endpoint=ep, up=True, series=(series,)),))


def test_runner_one_probe_in_flight_per_endpoint(vllm: VllmStandIn) -> None:
    vllm.behaviour.first_token_delay_s = 0.6
    ep = _ep(vllm)
    results: list[ProbeResult] = []
    runner = ProbeRunner(
        lambda: [ep],
        lambda: None,
        model=MODEL,
        on_result=results.append,
        validation_timeout_s=0.2,
        poll_s=0.02,
    )
    try:
        first = runner.tick()
        assert len(first) == 1
        wait_until(lambda: vllm.completions_served() == 1, timeout=2)
        assert runner.tick() == []  # the first is still streaming
        assert runner.skipped[(ep.name, MODEL, "in_flight")] == 1
        assert runner.status().endpoints[0].in_flight
        assert vllm.completions_served() == 1
        first[0].join(5)
        assert not first[0].is_alive()
        assert [r.ok for r in results] == [True]
        again = runner.tick()
        assert len(again) == 1
        again[0].join(5)
        st = runner.status().endpoints[0]
        assert st.successes == 2
        assert not st.in_flight
        assert st.skipped == {"in_flight": 1, "queue_full": 0}
        assert runner.successes[(ep.name, MODEL)] == 2
        assert st.last_success is not None
        assert st.last_success.ok
    finally:
        runner.stop()


def test_runner_skips_a_saturated_engine(vllm: VllmStandIn) -> None:
    vllm.behaviour.requests_waiting = 20
    ep = _ep(vllm)
    runner = ProbeRunner(
        lambda: [ep],
        lambda: _telemetry(ep, vllm.series()),
        model=MODEL,
        queue_threshold=8,
        validation_timeout_s=0.2,
        poll_s=0.02,
    )
    try:
        assert runner.tick() == []
        assert runner.tick() == []
        assert runner.skipped[(ep.name, MODEL, "queue_full")] == 2
        assert vllm.completions_served() == 0
        vllm.behaviour.requests_waiting = 8  # at the threshold: not above it
        workers = runner.tick()
        assert len(workers) == 1
        workers[0].join(5)
        assert not workers[0].is_alive()
        assert vllm.completions_served() == 1
    finally:
        runner.stop()


def test_runner_counts_failures_by_reason(vllm: VllmStandIn) -> None:
    vllm.behaviour.status = 500
    ep = _ep(vllm)
    runner = ProbeRunner(lambda: [ep], lambda: None, model=MODEL)
    try:
        for w in runner.tick():
            w.join(5)
        st = runner.status().endpoints[0]
        assert st.failures["http_status"] == 1
        assert st.successes == 0
        assert runner.failures[(ep.name, MODEL, "http_status")] == 1
        assert st.last_result is not None
        assert st.last_result.reason == "http_status"
        assert st.last_success is None
        assert st.last_verdict is None
    finally:
        runner.stop()


def test_runner_schedule_validates_and_stops_quickly(vllm: VllmStandIn) -> None:
    """start(): probes on the interval; each success gets a verdict from the engine's
    next scrapes (a scraper thread stands in for the vLLM collector)."""
    ep = _ep(vllm)
    current: list[VllmTelemetry] = [_telemetry(ep, vllm.series())]
    stop_scraping = threading.Event()

    def scrape() -> None:
        while not stop_scraping.wait(0.05):
            current[0] = _telemetry(ep, vllm.series())

    scraper = threading.Thread(target=scrape, daemon=True)
    scraper.start()
    verdicts: list[ProbeVerdict] = []
    results: list[ProbeResult] = []
    runner = ProbeRunner(
        lambda: [ep],
        lambda: current[0],
        model=MODEL,
        interval_s=0.3,
        timeout_s=5,
        on_result=results.append,
        on_verdict=verdicts.append,
        poll_s=0.02,
        validation_timeout_s=3,
    )
    try:
        runner.start()
        wait_until(lambda: len(verdicts) >= 2, timeout=10)
        assert all(r.ok for r in results)
        v = verdicts[0]
        assert v.tokens_counted is True
        assert v.ttft_histogram_moved is True
        assert v.ttft_agrees is True, v.detail
        assert v.agrees is True
        assert runner.status().endpoints[0].last_verdict is not None
        # now a probe that hangs: stop() must not wait for it
        vllm.behaviour.first_token_delay_s = 30
        wait_until(lambda: runner.status().endpoints[0].in_flight, timeout=3)
    finally:
        t0 = time.monotonic()
        runner.stop()
        stop_scraping.set()
        assert time.monotonic() - t0 < 1.5
    assert not runner.status().running


def test_runner_verdict_when_no_scrape_follows(vllm: VllmStandIn) -> None:
    ep = _ep(vllm)
    frozen = _telemetry(ep, vllm.series())
    verdicts: list[ProbeVerdict] = []
    runner = ProbeRunner(
        lambda: [ep],
        lambda: frozen,  # the collector never scrapes again
        model=MODEL,
        on_verdict=verdicts.append,
        validation_timeout_s=0.3,
        poll_s=0.02,
    )
    try:
        for w in runner.tick():
            w.join(5)
        assert len(verdicts) == 1
        assert verdicts[0].agrees is None
        assert "no engine scrape" in verdicts[0].detail
    finally:
        runner.stop()


# -- one-off series -----------------------------------------------------------------


def test_run_series_and_summary(vllm: VllmStandIn) -> None:
    vllm.behaviour.first_token_delay_s = 0.05
    vllm.behaviour.per_token_delay_s = 0.005
    seen: list[ProbeResult] = []
    results = run_series(_ep(vllm), n=5, model=None, max_tokens=8, on_result=seen.append)
    assert len(results) == 5 == len(seen)
    assert vllm.requests["GET /v1/models"] == 1  # looked up once, then reused
    s = summarize(results)
    assert s.successes == 5
    assert not s.all_failed
    assert s.failures == {}
    assert s.ttft.p50 is not None
    assert 0.05 <= s.ttft.p50 < 0.15
    assert s.ttft.p50 <= s.ttft.p90 <= s.ttft.p99  # type: ignore[operator]


def test_summary_of_failures() -> None:
    ep = VllmEndpoint(url="http://x", service="")
    rs = [
        ProbeResult(ep, "m", 0.0, ok=False, reason="timeout", detail="slow"),
        ProbeResult(ep, "m", 0.0, ok=False, reason="timeout", detail="slower"),
        ProbeResult(ep, "m", 0.0, ok=False, reason="connect", detail="refused"),
    ]
    s = summarize(rs)
    assert s.all_failed
    assert s.failures == {"timeout": 2, "connect": 1}
    assert s.failure_examples["timeout"] == "slow"
    assert s.ttft.p50 is None
    assert s.ttft.count == 0


def test_percentile_interpolates() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile(list(map(float, range(101))), 90) == pytest.approx(90.0)


def test_endpoint_from_url() -> None:
    assert endpoint_from_url("http://h:8000/v1/").url == "http://h:8000"
    assert endpoint_from_url("https://h").url == "https://h"
    with pytest.raises(ValueError, match="http"):
        endpoint_from_url("ftp://h")
    with pytest.raises(ValueError, match="http"):
        endpoint_from_url("h:8000")
