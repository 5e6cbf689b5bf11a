"""The gateway source through the real agent: configured under ``gateways:``, scheduled,
exported on ``/metrics``, fed to the ledger; a gateway that goes down sets
``gpuledger_collector_up{collector="gateway"}`` to 0 and costs no tokens once it is back.

Expected values by hand from the LiteLLM pages (see test_gateway_collector.py): page 1 →
page 2 adds search/search-prod 12 requests, 3000 input, 600 output tokens; the
untenanted traffic 1, 150, 30; ads/ads-key (mistral-7b) 2, 200, 600.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from gpuledger.agent.config import AgentConfig
from gpuledger.agent.main import Agent
from tests.support import paths as support_paths
from tests.support.standins import Behaviour, StandIn

PAGES = support_paths.FIXTURES / "gateways"
LO, HI = datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_gateway_source_end_to_end(tmp_path: Path) -> None:
    with StandIn(Behaviour(body=(PAGES / "litellm-1.prom").read_bytes())) as gw:
        cfg = AgentConfig(
            state_dir=tmp_path, nvml={"enabled": False},
            gateways={"enabled": True, "timeout_seconds": 2.0, "endpoints": [
                {"url": gw.url, "preset": "litellm",
                 "models": {"llama-70b": "llm-prod/chat-llama-70b",
                            "mistral-7b": "llm-prod/mistral"}},
            ]},
        )  # fmt: skip
        agent = Agent(cfg)
        try:
            (runner,) = [r for r in agent.runtime.runners if r.name == "gateway"]
            assert runner.run_once().up
            gw.behaviour = Behaviour(status=500)
            state = runner.run_once()
            assert not state.up
            down = _samples(agent.runtime.store.rendered.body.decode())
            gw.behaviour = Behaviour(body=(PAGES / "litellm-2.prom").read_bytes())
            assert runner.run_once().up
            up = _samples(agent.runtime.store.rendered.body.decode())
            assert agent.ledger is not None
            assert agent.ledger.flush_once()
            assert agent.ledger.store is not None
            stored = agent.ledger.store.tenant_tokens(LO, HI, ["service", "tenant"])
        finally:
            agent.stop()
    node = cfg.node_name
    own = {("cluster", cfg.cluster), ("node", node)}
    collector_up = ("gpuledger_collector_up", frozenset({*own, ("collector", "gateway")}))
    assert down[collector_up] == 0.0
    assert up[collector_up] == 1.0
    labels = frozenset({*own, ("service", "chat-llama-70b"), ("namespace", "llm-prod"),
                        ("model_name", "llama-70b"), ("tenant", "search/search-prod")})  # fmt: skip
    assert up[("gpuledger_tenant_prompt_tokens_total", labels)] == 3000
    assert up[("gpuledger_tenant_generation_tokens_total", labels)] == 600
    assert up[("gpuledger_tenant_requests_total", labels)] == 12
    assert {
        (g.service, g.tenant): (g.requests, g.prompt_tokens, g.generation_tokens)
        for g in stored
        if g.requests or g.prompt_tokens
    } == {
        ("chat-llama-70b", "search/search-prod"): (12, 3000, 600),
        ("chat-llama-70b", "__untenanted__"): (1, 150, 30),
        ("mistral", "ads/ads-key"): (2, 200, 600),
    }
