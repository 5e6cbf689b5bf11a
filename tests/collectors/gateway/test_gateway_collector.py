"""The gateway collector against real HTTP stand-ins serving pages printed from each
gateway's metric definitions (``tests/support/fixtures/gateways/generate.py``; sources in
``docs/upstream-gateways.md``). Every expected value is worked out by hand from the
traffic those pages describe:

LiteLLM (team_alias / api_key_alias / model: input, output, requests), page 1 → page 2:
search/search-prod/llama-70b 12000, 3000, 40 → 15000, 3600, 52;
search/search-batch/llama-70b 5000, 800, 10 → unchanged;
None/None/llama-70b 300, 100, 2 → 450, 130, 3;  ads/ads-key/mistral-7b 700, 1500, 5 →
900, 2100, 7;  'evil"team\\n=cmd|calc'/None/llama-70b 10, 20, 1 → unchanged;
restarted: search/search-prod only, 400, 90, 2.
Envoy AI Gateway (user_id / model: per request input, cached_input, output), page 1 →
page 2: alice (1000,600,200) (3000,0,50) + (500,500,10); bob (100,0,900) +
(200,100,700); no user (40,0,8); restarted: bob (60,0,30).
gpuledger meter (requests, prompt, cached, generation): search 10, 5000, 1000, 700 →
12, 5600, 1100, 800; __untenanted__ 1, 20, 0, 4 → unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from pydantic import ValidationError

from gpuledger.collectors.base import Collector, CollectorError
from gpuledger.collectors.gateway.config import GatewayConfig
from gpuledger.collectors.gateway.export import export_gateway
from gpuledger.collectors.gateway.scrape import GatewayCollector
from gpuledger.collectors.gateway.types import GatewayReading
from gpuledger.collectors.textformat.parse import parse
from gpuledger.collectors.textformat.render import FamiliesBuilder
from tests.support import paths as support_paths
from tests.support.standins import Behaviour, StandIn

PAGES = support_paths.FIXTURES / "gateways"
LLAMA, MISTRAL = ("llm-prod", "chat-llama-70b"), ("llm-prod", "mistral")
MODELS = {"llama-70b": "llm-prod/chat-llama-70b", "mistral-7b": "llm-prod/mistral"}
HOSTILE = 'evil"team\n=cmd|calc'


def page(name: str) -> bytes:
    return (PAGES / name).read_bytes()


@pytest.fixture
def standin() -> Iterator[StandIn]:
    with StandIn(Behaviour()) as s:
        yield s


def collector(url: str, **endpoint: Any) -> GatewayCollector:
    cfg = GatewayConfig.model_validate(
        {"enabled": True, "timeout_seconds": 2.0,
         "max_tenants_per_service": endpoint.pop("cap", 100),
         "endpoints": [{"url": url, **endpoint}]}
    )  # fmt: skip
    return GatewayCollector(cfg)


def serve_and_collect(c: GatewayCollector, s: StandIn, name: str) -> GatewayReading:
    s.behaviour = Behaviour(body=page(name))
    return c.collect()


def totals(reading: GatewayReading) -> dict[tuple[str, str, str, str], tuple[float, ...]]:
    return {
        (t.namespace, t.service, t.model_name, t.tenant): (
            t.requests,
            t.prompt_tokens,
            t.cached_prompt_tokens,
            t.generation_tokens,
        )
        for t in reading.totals
    }


def test_collector_satisfies_the_protocol(standin: StandIn) -> None:
    c = collector(standin.url, preset="litellm", models=MODELS)
    assert isinstance(c, Collector)
    c.close()


def test_litellm_preset_counts_deltas_per_tenant_and_survives_a_restart(
    standin: StandIn,
) -> None:
    c = collector(standin.url, preset="litellm", models=MODELS)
    first = serve_and_collect(c, standin, "litellm-1.prom")
    # first sight only sets the baselines; the ledger gets the raw values to do the same
    assert set(totals(first).values()) == {(0.0, 0.0, 0.0, 0.0)}
    prompts = {(s.tenant, s.model_name): s.value for s in first.scrapes[0].samples
               if s.kind == "prompt"}  # fmt: skip
    assert prompts == {
        ("search/search-prod", "llama-70b"): 12000, ("search/search-batch", "llama-70b"): 5000,
        ("__untenanted__", "llama-70b"): 300, ("ads/ads-key", "mistral-7b"): 700,
        (HOSTILE, "llama-70b"): 10,
    }  # fmt: skip
    second = totals(serve_and_collect(c, standin, "litellm-2.prom"))
    assert second[(*LLAMA, "llama-70b", "search/search-prod")] == (12, 3000, 0, 600)
    assert second[(*LLAMA, "llama-70b", "search/search-batch")] == (0, 0, 0, 0)
    assert second[(*LLAMA, "llama-70b", "__untenanted__")] == (1, 150, 0, 30)
    assert second[(*MISTRAL, "mistral-7b", "ads/ads-key")] == (2, 200, 0, 600)
    assert second[(*LLAMA, "llama-70b", HOSTILE)] == (0, 0, 0, 0)
    # LiteLLM restarts: its counters begin again; the new values are the deltas
    third = serve_and_collect(c, standin, "litellm-restarted.prom")
    assert totals(third)[(*LLAMA, "llama-70b", "search/search-prod")] == (14, 3400, 0, 690)
    assert third.resets == 3  # requests, input and output of the one series
    c.close()


def test_litellm_older_counter_names_are_read(standin: StandIn) -> None:
    c = collector(standin.url, preset="litellm", models=MODELS)
    reading = serve_and_collect(c, standin, "litellm-old-names.prom")
    got = {(s.kind, s.tenant): s.value for s in reading.scrapes[0].samples
           if s.tenant == "search/search-prod"}  # fmt: skip
    assert got == {("requests", "search/search-prod"): 40, ("prompt", "search/search-prod"): 12000,
                   ("generation", "search/search-prod"): 3000}  # fmt: skip
    c.close()


def test_envoy_ai_gateway_preset_reads_the_token_histogram_sums(standin: StandIn) -> None:
    c = collector(standin.url, preset="envoy-ai-gateway", service="chat-llama-70b",
                  namespace="llm-prod")  # fmt: skip
    first = serve_and_collect(c, standin, "envoy-ai-gateway-1.prom")
    raw = {(s.tenant, s.kind): s.value for s in first.scrapes[0].samples}
    assert raw[("alice", "prompt")] == 4000
    assert raw[("alice", "cached_prompt")] == 600
    assert raw[("alice", "generation")] == 250
    assert raw[("alice", "requests")] == 2
    assert raw[("__untenanted__", "prompt")] == 40
    got = totals(serve_and_collect(c, standin, "envoy-ai-gateway-2.prom"))
    assert got[(*LLAMA, "llama-70b", "alice")] == (1, 500, 500, 10)
    assert got[(*LLAMA, "llama-70b", "bob")] == (1, 200, 100, 700)
    assert got[(*LLAMA, "llama-70b", "__untenanted__")] == (0, 0, 0, 0)
    got = totals(serve_and_collect(c, standin, "envoy-ai-gateway-restarted.prom"))
    assert got[(*LLAMA, "llama-70b", "bob")] == (2, 260, 100, 730)
    c.close()


def test_meter_preset_takes_service_and_namespace_from_the_page(standin: StandIn) -> None:
    c = collector(standin.url, preset="gpuledger-meter")
    serve_and_collect(c, standin, "meter-1.prom")
    got = totals(serve_and_collect(c, standin, "meter-2.prom"))
    assert got == {
        (*LLAMA, "llama-70b", "search"): (2, 600, 100, 100),
        (*LLAMA, "llama-70b", "__untenanted__"): (0, 0, 0, 0),
    }
    c.close()


def test_a_gateway_down_fails_the_run_and_loses_nothing_when_back(standin: StandIn) -> None:
    c = collector(standin.url, preset="litellm", models=MODELS)
    serve_and_collect(c, standin, "litellm-1.prom")
    standin.behaviour = Behaviour(status=500, body=b"oops")
    with pytest.raises(CollectorError, match="HTTP 500"):
        c.collect()
    standin.behaviour = Behaviour(body=b"this is { not exposition")
    with pytest.raises(CollectorError, match="bad exposition"):
        c.collect()
    got = totals(serve_and_collect(c, standin, "litellm-2.prom"))  # all traffic of the gap
    assert got[(*LLAMA, "llama-70b", "search/search-prod")] == (12, 3000, 0, 600)
    c.close()


def test_one_endpoint_down_does_not_fail_the_others(
    standin: StandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gpuledger.collectors.gateway.scrape")
    with StandIn(Behaviour(status=503)) as down:
        cfg = GatewayConfig.model_validate({"enabled": True, "timeout_seconds": 2.0, "endpoints": [
            {"url": standin.url, "preset": "litellm", "models": MODELS},
            {"url": down.url, "preset": "gpuledger-meter"},
        ]})  # fmt: skip
        c = GatewayCollector(cfg)
        standin.behaviour = Behaviour(body=page("litellm-1.prom"))
        reading = c.collect()
        c.collect()  # still down: no second line
        down.behaviour = Behaviour(body=page("meter-1.prom"))
        c.collect()
        c.close()
    assert [s.up for s in reading.scrapes] == [True, False]
    assert "HTTP 503" in (reading.scrapes[1].error or "")
    assert [r.getMessage() for r in caplog.records] == [
        f"gateway endpoint down: HTTP 503 from {down.url}",
        f"gateway endpoint recovered: {down.url}",
    ]


def test_the_tenant_cap_folds_the_rest_into_other(standin: StandIn) -> None:
    c = collector(standin.url, preset="litellm", models=MODELS, cap=2)
    serve_and_collect(c, standin, "litellm-1.prom")
    reading = serve_and_collect(c, standin, "litellm-2.prom")
    tenants = {k[3] for k in totals(reading) if k[:2] == LLAMA}
    # first seen: search-prod, search-batch; __untenanted__ never counts against the cap
    assert tenants == {"search/search-prod", "search/search-batch", "__untenanted__",
                       "__other__"}  # fmt: skip
    assert reading.overflow_tenants == (("llm-prod", "chat-llama-70b", 1),)
    assert {s.tenant for s in reading.scrapes[0].samples if s.model_name == "mistral-7b"} == {
        "ads/ads-key"  # another service: its own cap
    }
    c.close()


def test_unmapped_series_are_counted_not_billed(standin: StandIn) -> None:
    c = collector(standin.url, preset="litellm", models={"llama-70b": "llm-prod/chat-llama-70b"})
    reading = serve_and_collect(c, standin, "litellm-1.prom")
    assert reading.scrapes[0].unmapped_series == 3  # mistral-7b: requests, input, output
    assert {s.model_name for s in reading.scrapes[0].samples} == {"llama-70b"}
    c.close()


def test_export_escapes_hostile_tenant_names(standin: StandIn) -> None:
    c = collector(standin.url, preset="litellm", models=MODELS)
    reading = serve_and_collect(c, standin, "litellm-1.prom")
    c.close()

    class Snap:
        memo: ClassVar[dict[str, object]] = {}

        def reading(self, name: str, kind: type) -> object:
            return reading if kind is GatewayReading else None

    builder = FamiliesBuilder("node-1")
    export_gateway(builder, Snap())
    text = builder.build().render().decode()
    assert 'tenant="evil\\"team\\n=cmd|calc"' in text
    back = parse(text)
    tenants = {s.labels["tenant"] for s in back["gpuledger_tenant_prompt_tokens_total"].samples}
    assert HOSTILE in tenants
    up = back["gpuledger_tenant_gateway_up"].samples
    assert [(s.labels["endpoint"], s.value) for s in up] == [(standin.url, 1.0)]


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        ({"url": "http://gw/metrics", "preset": "litellm"}, "map series to a service"),
        ({"url": "http://gw/metrics", "service": "s"}, "set a preset"),
        ({"url": "http://u:p@gw/metrics", "preset": "litellm", "service": "s"}, "credentials"),
        ({"url": "http://gw/metrics", "preset": "litellm", "models": {"m": "a/b/c"}},
         "namespace/service"),
        ({"url": "http://gw/metrics", "metrics": {"prompt": "bad name!"}, "service": "s",
          "tenant_labels": ["team"], "model_label": "model"}, "not a Prometheus sample name"),
        ({"url": "http://gw/metrics", "preset": "nginx", "service": "s"}, "preset"),
    ],
)  # fmt: skip
def test_bad_endpoint_config_is_refused_with_a_reason(
    endpoint: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        GatewayConfig.model_validate({"enabled": True, "endpoints": [endpoint]})


def test_explicit_metrics_without_a_preset(standin: StandIn) -> None:
    c = collector(
        standin.url, service="chat", namespace="ns", tenant_labels=["team", "team_alias"],
        tenant_join=":", empty_values=["None"], model_label="requested_model",
        metrics={"prompt": ["litellm_input_tokens_metric_total"]},
    )  # fmt: skip
    reading = serve_and_collect(c, standin, "litellm-1.prom")
    got = sorted((s.tenant, s.value) for s in reading.scrapes[0].samples)
    assert got == [  # two series (two keys) of team search stay apart: deltas per series
        ("__untenanted__", 300), ("team-1f3a:search", 5000), ("team-1f3a:search", 12000),
        ("team-6666:" + HOSTILE, 10), ("team-9c2e:ads", 700),
    ]  # fmt: skip
    assert {(s.namespace, s.service) for s in reading.scrapes[0].samples} == {("ns", "chat")}
    c.close()


def test_a_series_new_on_a_page_read_before_counts_whole(standin: StandIn) -> None:
    """A key that first appears between two scrapes: its whole value is new since the
    last one (on the first scrape of a page, a new series stays a baseline)."""
    c = collector(standin.url, preset="litellm", models=MODELS)
    serve_and_collect(c, standin, "litellm-1.prom")
    lines = page("litellm-2.prom").decode().splitlines(keepends=True)
    first = 'litellm_input_tokens_metric_total{api_key_alias="ads-key"'
    ads = next(i for i, line in enumerate(lines) if line.startswith(first))
    new_key = lines[ads].replace("ads-key", "ads-new").replace("46929bb5", "0000aaaa")
    new_key = new_key.rsplit(" ", 1)[0] + " 250.0\n"
    standin.behaviour = Behaviour(
        body="".join([*lines[: ads + 1], new_key, *lines[ads + 1 :]]).encode()
    )
    second = totals(c.collect())
    assert second[(*MISTRAL, "mistral-7b", "ads/ads-new")] == (0, 250, 0, 0)
    assert second[(*MISTRAL, "mistral-7b", "ads/ads-key")] == (2, 200, 0, 600)  # unchanged
    c.close()
