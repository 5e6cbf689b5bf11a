"""The official ``openai`` SDK through ``gpuledger meter`` to a vLLM-format stand-in.

Streaming and not, chat and completions, with and without ``include_usage``: the client
gets byte-for-byte what it gets from the stand-in directly (raw bodies compared with
httpx, and the SDK's parsed objects), and the meter's counters equal the tokens the
stand-in says it served for each tenant.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.meter_harness import (
    MeterThread,
    meter_counters,
    tenant_labels,
    uncounted_labels,
    write_config,
)
from tests.support.openai_standin import OpenAIBehaviour, OpenAIStandIn

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
CASES = [  # (api, stream, include_usage)
    ("chat", False, False),
    ("chat", True, False),
    ("chat", True, True),
    ("completions", False, False),
    ("completions", True, False),
    ("completions", True, True),
]


@pytest.fixture
def upstream() -> Iterator[OpenAIStandIn]:
    with OpenAIStandIn(OpenAIBehaviour(model=MODEL, cached_tokens=3)) as up:
        yield up


@pytest.fixture
def meter(tmp_path: Path, upstream: OpenAIStandIn) -> Iterator[MeterThread]:
    cfg = write_config(tmp_path, upstream.url, tenant={"order": ["header"]})
    with MeterThread(cfg) as m:
        yield m


def _body(api: str, stream: bool, include_usage: bool, n: int) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "max_tokens": n, "stream": stream}
    if api == "chat":
        body["messages"] = [{"role": "user", "content": "one two three four five"}]
    else:
        body["prompt"] = "one two three"
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    return body


def _raw(base: str, api: str, body: dict[str, Any], tenant: str | None) -> tuple[int, str, bytes]:
    path = "/v1/chat/completions" if api == "chat" else "/v1/completions"
    headers = {"x-tenant": tenant} if tenant else {}
    with httpx.Client(timeout=10) as c, c.stream("POST", base + path, json=body,
                                                 headers=headers) as r:  # fmt: skip
        return r.status_code, r.headers["content-type"], b"".join(r.iter_raw())


@pytest.mark.parametrize(("api", "stream", "include_usage"), CASES)
def test_raw_bodies_are_byte_for_byte_the_upstreams(
    upstream: OpenAIStandIn, meter: MeterThread, api: str, stream: bool, include_usage: bool
) -> None:
    body = _body(api, stream, include_usage, n=5)
    direct = _raw(upstream.url, api, body, None)
    through = _raw(meter.url, api, body, "team-raw")
    assert through == direct
    assert direct[0] == 200
    assert direct[2]
    if stream:
        # the usage chunk is in the body exactly when the client asked for it
        assert (b'"choices":[],' in through[2]) is include_usage
        # ... and the meter asked the upstream for usage in every case
        metered = [s for s in upstream.served if s.tenant_header == "team-raw"]
        assert [s.include_usage for s in metered] == [True]


def _sdk_call(client: openai.OpenAI, api: str, stream: bool, include_usage: bool, n: int) -> Any:
    extra: dict[str, Any] = {}
    if include_usage:
        extra["stream_options"] = {"include_usage": True}
    if api == "chat":
        result: Any = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "say it in words please"}],
            max_tokens=n, stream=stream, **extra,
        )  # fmt: skip
    else:
        result = client.completions.create(
            model=MODEL, prompt="count to ten", max_tokens=n, stream=stream, **extra
        )
    if stream:
        return [chunk.model_dump() for chunk in result]
    return result.model_dump()


def test_the_sdk_sees_the_same_and_counters_match_what_was_served(
    upstream: OpenAIStandIn, meter: MeterThread
) -> None:
    direct = openai.OpenAI(base_url=upstream.url + "/v1", api_key="sk-direct", max_retries=0)
    tenants = ["team-a", "team-b", "team-c"]
    for i, (api, stream, include_usage) in enumerate(CASES * 2):
        tenant = tenants[i % len(tenants)]
        through = openai.OpenAI(base_url=meter.url + "/v1", api_key="sk-x", max_retries=0,
                                default_headers={"X-Tenant": tenant})  # fmt: skip
        n = 3 + i
        seen = _sdk_call(through, api, stream, include_usage, n)
        assert seen == _sdk_call(direct, api, stream, include_usage, n)
        if stream:
            usage_chunks = [c for c in seen if c.get("usage")]
            assert len(usage_chunks) == (1 if include_usage else 0)
    # expected: what the stand-in reports having served to each tenant, summed here
    expected: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for s in upstream.served:
        if s.tenant_header is None:
            continue  # a direct request
        row = expected[s.tenant_header]
        row[0] += 1
        row[1] += s.prompt_tokens
        row[2] += s.cached_tokens
        row[3] += s.completion_tokens
    assert set(expected) == set(tenants)
    counters = meter_counters(meter.url)
    names = (
        "gpuledger_meter_requests_total",
        "gpuledger_meter_prompt_tokens_total",
        "gpuledger_meter_cached_prompt_tokens_total",
        "gpuledger_meter_generation_tokens_total",
    )
    for tenant, values in expected.items():
        got = [counters[(name, tenant_labels(tenant, MODEL))] for name in names]
        assert got == values, tenant
    assert expected["team-a"][0] == 4  # 12 calls over 3 tenants
    for reason in ("no_usage", "upstream_error", "client_disconnect", "malformed"):
        assert counters[("gpuledger_meter_uncounted_requests_total",
                         uncounted_labels(reason))] == 0  # fmt: skip


def test_other_paths_pass_through_unchanged(upstream: OpenAIStandIn, meter: MeterThread) -> None:
    for path in ("/v1/models", "/health", "/nope"):
        d = httpx.get(upstream.url + path)
        t = httpx.get(meter.url + path)
        assert (t.status_code, t.content) == (d.status_code, d.content)
    direct = openai.OpenAI(base_url=upstream.url + "/v1", api_key="k", max_retries=0)
    through = openai.OpenAI(base_url=meter.url + "/v1", api_key="k", max_retries=0)
    assert [m.id for m in through.models.list()] == [m.id for m in direct.models.list()]
    counters = meter_counters(meter.url)
    assert not [k for k in counters if k[0] == "gpuledger_meter_requests_total"]
