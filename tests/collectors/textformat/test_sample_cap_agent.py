"""The sample cap through the real agent: a page over a source's ``max_samples`` sets that
source's ``gpuledger_collector_up`` to 0 with the reason, and the other sources go on.

The dcgm page is the recorded dcgm-exporter 3.3 page of an 8x H100 node (21 families,
168 samples: 189 against the cap, counted with ``grep -c`` of its sample and TYPE lines);
the gateway page is the recorded LiteLLM page of tests/collectors/gateway/.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gpuledger.agent.config import AgentConfig
from gpuledger.agent.main import Agent
from gpuledger.collectors.base import CollectorError
from gpuledger.collectors.vllm.scrape import VllmCollector
from gpuledger.collectors.vllm.types import VllmEndpoint
from tests.support import paths as support_paths
from tests.support.standins import Behaviour, StandIn

DCGM_PAGE = support_paths.FIXTURES / "dcgm" / "exporter-3.3-h100x8.prom"
GATEWAY_PAGE = support_paths.FIXTURES / "gateways" / "litellm-1.prom"


def _collector_up(text: str) -> dict[str, float]:
    return {
        s.labels["collector"]: s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "gpuledger_collector_up"
    }


def _count_against_the_cap(page: bytes) -> int:
    lines = page.decode().splitlines()
    samples = [ln for ln in lines if ln.strip() and not ln.startswith("#")]
    families = [ln for ln in lines if ln.startswith("# TYPE ")]
    return len(samples) + len(families)


def test_a_page_over_the_cap_downs_its_source_and_the_others_go_on(tmp_path: Path) -> None:
    page = DCGM_PAGE.read_bytes()
    assert _count_against_the_cap(page) == 189
    with (
        StandIn(Behaviour(body=page)) as dcgm,
        StandIn(Behaviour(body=GATEWAY_PAGE.read_bytes())) as gw,
    ):
        cfg = AgentConfig(
            state_dir=tmp_path, nvml={"enabled": False},
            dcgm={"enabled": True, "url": dcgm.url, "timeout_seconds": 2.0, "max_samples": 188},
            gateways={"enabled": True, "timeout_seconds": 2.0, "endpoints": [
                {"url": gw.url, "preset": "litellm",
                 "models": {"llama-70b": "llm-prod/chat-llama-70b"}},
            ]},
        )  # fmt: skip
        agent = Agent(cfg)
        try:
            runners = {r.name: r for r in agent.runtime.runners}
            dcgm_state = runners["dcgm"].run_once()
            gateway_state = runners["gateway"].run_once()
            rendered = agent.runtime.store.rendered.body.decode()
        finally:
            agent.stop()
    assert not dcgm_state.up
    assert dcgm_state.last_error is not None
    assert "more than 188 samples and families, over the sample cap" in dcgm_state.last_error
    assert gateway_state.up
    assert _collector_up(rendered) == {"dcgm": 0.0, "gateway": 1.0}


def test_the_same_page_at_the_cap_is_read(tmp_path: Path) -> None:
    with StandIn(Behaviour(body=DCGM_PAGE.read_bytes())) as dcgm:
        cfg = AgentConfig(
            state_dir=tmp_path,
            nvml={"enabled": False},
            dcgm={"enabled": True, "url": dcgm.url, "timeout_seconds": 2.0, "max_samples": 189},
        )
        agent = Agent(cfg)
        try:
            (runner,) = [r for r in agent.runtime.runners if r.name == "dcgm"]
            state = runner.run_once()
        finally:
            agent.stop()
    assert state.up, state.last_error


def test_a_vllm_page_over_the_cap_is_refused_with_the_cap_named() -> None:
    # The recorded vLLM 0.11 page (two data-parallel engines); the cap counts what the
    # collector parses (select_lines keeps vLLM's own series).
    page = (support_paths.FIXTURES / "vllm" / "vllm-0.11-dp2.prom").read_bytes()
    with StandIn(Behaviour(body=page)) as server:
        endpoint = VllmEndpoint(url=server.url.removesuffix("/metrics"), service="chat")
        capped = VllmCollector(lambda: (endpoint,), timeout_s=2.0, max_samples=10)
        default = VllmCollector(lambda: (endpoint,), timeout_s=2.0)
        try:
            with pytest.raises(CollectorError, match="over the sample cap"):
                capped.collect()
            (scrape,) = default.collect().endpoints
        finally:
            capped.close()
            default.close()
    assert scrape.up, scrape.error
