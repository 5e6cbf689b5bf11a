"""The engine's prefill/decode seconds and prefix-cache tokens through the real agent into
the ledger (issue 14): the vLLM stand-in exports V1's ``request_{prefill,decode}_time_seconds``
histograms and ``prefix_cache_*`` counters, traffic comes from the official ``openai``
SDK, and the ledger's ``engine_time`` must equal what the stand-in itself observed."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gpuledger.chargeback.ledger.model import EngineTimeGroup
from gpuledger.chargeback.ledger.store import open_store
from tests.support.harness import AgentProcess
from tests.support.standins import wait_until
from tests.support.vllm_standin import VllmBehaviour, VllmStandIn

pytestmark = pytest.mark.e2e

openai = pytest.importorskip("openai")

LO, HI = datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
REQUESTS = 5


def config(vllm_url: str) -> dict[str, Any]:
    return {
        "nvml": {"enabled": False},
        "collection": {"interval_seconds": 0.5},
        "ledger": {"flush_interval_seconds": 0.5},
        "vllm": {
            "enabled": True,
            "endpoints": [{"url": vllm_url, "service": "chat", "namespace": "llm"}],
        },
        "probes": {"enabled": False},  # every request is the test's own: totals are exact
    }


def test_agent_records_the_engines_prefill_and_decode_time(tmp_path: Path) -> None:
    behaviour = VllmBehaviour(served_model=MODEL, first_token_delay_s=0.05,
                              per_token_delay_s=0.01, engine_time=True,
                              prefix_hit_tokens=4)  # fmt: skip
    with VllmStandIn(behaviour) as vllm, AgentProcess(tmp_path, config(vllm.url)) as agent:
        # the agent's first look sets the baselines (all zero: nothing was served yet)
        wait_until(lambda: "gpuledger_vllm_request_prefill_time_seconds_count{" in agent.metrics(),
                   timeout=30)  # fmt: skip
        client = openai.OpenAI(base_url=vllm.url + "/v1", api_key="unused", max_retries=0)
        for i in range(REQUESTS):
            stream = client.completions.create(
                model=MODEL, prompt="one two three " * (i + 1), max_tokens=3 + i, stream=True
            )
            assert len([c for c in stream if c.choices]) == 3 + i
        expected = vllm.engine_totals()

        def seen() -> bool:
            counts = [
                s.value
                for fam in text_string_to_metric_families(agent.metrics())
                for s in fam.samples
                if s.name == "gpuledger_vllm_request_decode_time_seconds_count"
                and s.labels.get("service") == "chat"
            ]
            return counts == [REQUESTS]

        wait_until(seen, timeout=30)
        time.sleep(1.5)  # a few flush intervals
        agent.stop(signal.SIGTERM)

    store = open_store(f"sqlite:///{tmp_path / 'state' / 'ledger.db'}")
    try:
        groups = store.engine_time(LO, HI, ["namespace", "service", "model_name"])
    finally:
        store.close()
    prefill_s, decode_s, prefill_n, decode_n, queries, hits = expected
    # the stand-in's own figures: a completion's prompt of k words is k tokens (no chat
    # template), up to 4 of them cached, one prefill and one decode observation per request
    assert (prefill_n, decode_n) == (REQUESTS, REQUESTS)
    assert queries == sum(3 * (i + 1) for i in range(REQUESTS))
    assert hits == sum(min(4, 3 * (i + 1)) for i in range(REQUESTS))  # 3 + 4 + 4 + 4 + 4
    assert prefill_s >= REQUESTS * 0.05
    assert groups == [
        EngineTimeGroup(
            pytest.approx(prefill_s, rel=1e-12), pytest.approx(decode_s, rel=1e-12),
            prefill_n, decode_n, queries, hits,
            namespace="llm", service="chat", model_name=MODEL,
        )
    ]  # fmt: skip
