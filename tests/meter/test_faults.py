"""The meter fails open: an upstream that errs, hangs, cuts a stream or writes garbage
reaches the client as it is (or as a proxy's 504 for a hang), and the miss is counted
once, with its reason."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.meter_harness import (
    MeterThread,
    meter_counters,
    uncounted_labels,
    write_config,
)
from tests.support.openai_standin import OpenAIBehaviour, OpenAIStandIn

MODEL = "m-1"
REASONS = ("no_usage", "upstream_error", "client_disconnect", "malformed")


@pytest.fixture
def upstream() -> Iterator[OpenAIStandIn]:
    with OpenAIStandIn(OpenAIBehaviour(model=MODEL)) as up:
        yield up


@pytest.fixture
def meter(tmp_path: Path, upstream: OpenAIStandIn) -> Iterator[MeterThread]:
    cfg = write_config(tmp_path, upstream.url, timeouts={"response_seconds": 0.5})
    with MeterThread(cfg) as m:
        yield m


def _misses(meter: MeterThread) -> dict[str, float]:
    got = meter_counters(meter.url)
    counted = sum(v for (n, _), v in got.items() if n == "gpuledger_meter_requests_total")
    misses = {r: got[("gpuledger_meter_uncounted_requests_total", uncounted_labels(r))]
              for r in REASONS}  # fmt: skip
    return {**misses, "counted": counted}


def _expect(meter: MeterThread, **nonzero: float) -> None:
    assert _misses(meter) == {**dict.fromkeys((*REASONS, "counted"), 0.0), **nonzero}


def _post(base: str, body: dict[str, Any] | bytes) -> tuple[int, bytes, str | None]:
    """Status, the body bytes received, and the error that ended the read (if any)."""
    received: list[bytes] = []
    with httpx.Client(timeout=10) as c:
        content = body if isinstance(body, bytes) else None
        kwargs: dict[str, Any] = {"content": content} if content else {"json": body}
        with c.stream("POST", base + "/v1/completions", **kwargs) as r:
            try:
                for piece in r.iter_raw():
                    received.append(piece)
            except httpx.HTTPError as exc:
                return r.status_code, b"".join(received), type(exc).__name__
            return r.status_code, b"".join(received), None


def _stream(n: int = 8) -> dict[str, Any]:
    return {"model": MODEL, "prompt": "a b", "max_tokens": n, "stream": True}


def test_an_upstream_error_reaches_the_client_unchanged(
    upstream: OpenAIStandIn, meter: MeterThread
) -> None:
    upstream.behaviour.status = 500
    direct = _post(upstream.url, _stream())
    assert direct[0] == 500
    assert _post(meter.url, _stream()) == direct
    client = openai.OpenAI(base_url=meter.url + "/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.InternalServerError):
        client.completions.create(model=MODEL, prompt="x", max_tokens=2)
    _expect(meter, upstream_error=2)


def test_a_hanging_upstream_gets_the_client_a_504_after_the_timeout(
    upstream: OpenAIStandIn, meter: MeterThread
) -> None:
    upstream.behaviour.headers_delay_s = 5
    start = time.monotonic()
    status, body, _ = _post(meter.url, _stream())
    elapsed = time.monotonic() - start
    assert status == 504
    assert b"timed out" in body
    assert 0.5 <= elapsed < 3
    _expect(meter, upstream_error=1)


def test_an_unreachable_upstream_is_a_502(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"  # bound, never listening
        with MeterThread(write_config(tmp_path, dead)) as meter:
            assert _post(meter.url, _stream())[0] == 502
            _expect(meter, upstream_error=1)


@pytest.mark.parametrize("include_usage", [False, True])
def test_a_stream_cut_mid_way_is_cut_for_the_client_too(
    upstream: OpenAIStandIn, meter: MeterThread, include_usage: bool
) -> None:
    upstream.behaviour.cut_after_tokens = 3
    body = _stream()
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    direct = _post(upstream.url, body)
    through = _post(meter.url, body)
    assert direct[2] is not None  # the direct read ended in a protocol error
    assert through == direct  # same status, same bytes, same kind of ending
    assert through[1].count(b"data: ") == 3
    _expect(meter, upstream_error=1)


def test_a_stream_without_usage_flows_and_is_counted_as_no_usage(
    upstream: OpenAIStandIn, meter: MeterThread
) -> None:
    upstream.behaviour.omit_usage = True
    direct = _post(upstream.url, _stream())
    assert _post(meter.url, _stream()) == direct
    plain = {"model": MODEL, "prompt": "a", "max_tokens": 2}
    assert _post(meter.url, plain) == _post(upstream.url, plain)
    _expect(meter, no_usage=2)


def test_malformed_json_mid_stream_flows_and_is_counted_as_malformed(
    upstream: OpenAIStandIn, meter: MeterThread
) -> None:
    upstream.behaviour.malformed_after_tokens = 2
    direct = _post(upstream.url, _stream())
    assert _post(meter.url, _stream()) == direct
    assert b'{"id":"x","choices":[' in direct[1]
    _expect(meter, malformed=1)


def test_a_malformed_request_is_relayed_and_counted_as_malformed(
    upstream: OpenAIStandIn, meter: MeterThread
) -> None:
    direct = _post(upstream.url, b"{not json")
    assert direct[0] == 400
    assert _post(meter.url, b"{not json") == direct
    _expect(meter, malformed=1)


def test_a_client_that_goes_away_mid_stream_is_counted_once(
    upstream: OpenAIStandIn, meter: MeterThread
) -> None:
    upstream.behaviour.per_token_delay_s = 0.05
    with httpx.Client(timeout=10) as c, c.stream("POST", meter.url + "/v1/completions",
                                                 json=_stream(60)) as r:  # fmt: skip
        pieces = r.iter_raw()
        next(pieces)
        next(pieces)
    deadline = time.monotonic() + 5
    while _misses(meter)["client_disconnect"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    _expect(meter, client_disconnect=1)


def test_a_request_over_the_size_limit_is_refused_unread(
    upstream: OpenAIStandIn, tmp_path: Path
) -> None:
    with MeterThread(write_config(tmp_path, upstream.url, max_request_bytes=2048)) as meter:
        big = {"model": MODEL, "prompt": "x" * 4096, "max_tokens": 1}
        assert _post(meter.url, big)[0] == 413
    assert upstream.raw_requests == []
