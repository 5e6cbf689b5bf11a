"""vLLM through the whole agent: scrape, normalize, probe, validate, ledger.

The agent runs as a subprocess against the vLLM stand-in (a real streaming server on
127.0.0.1 whose /metrics counters and TTFT histogram move with the requests it serves).
Expectations come from the stand-in's configuration and its own request count.
"""

from __future__ import annotations

import json
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gpuledger.chargeback.ledger.store import open_store
from tests.support.harness import AgentProcess, http_get
from tests.support.standins import wait_until
from tests.support.vllm_standin import VllmBehaviour, VllmStandIn

pytestmark = pytest.mark.e2e

FIRST_TOKEN_DELAY = 0.2
MAX_TOKENS = 8
LO, HI = datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def one(got: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **want: str) -> float:
    hits = [v for (n, labels), v in got.items() if n == name and set(want.items()) <= labels]
    assert len(hits) == 1, (name, want, hits)
    return hits[0]


def config(vllm_url: str, api_key_file: Path) -> dict[str, Any]:
    return {
        "nvml": {"enabled": False},
        "collection": {"interval_seconds": 0.5},
        "ledger": {"flush_interval_seconds": 0.5},
        "vllm": {
            "enabled": True,
            "endpoints": [
                {
                    "url": vllm_url,
                    "service": "chat",
                    "namespace": "llm",
                    "api_key_file": str(api_key_file),
                },
            ],
        },
        "probes": {"interval_seconds": 1.0, "max_tokens": MAX_TOKENS, "timeout_seconds": 10},
    }


def test_agent_scrapes_probes_validates_and_bills_tokens(tmp_path: Path) -> None:
    key = "sk-e2e-do-not-leak"
    key_file = tmp_path / "vllm.key"
    key_file.write_text(key + "\n", encoding="utf-8")
    behaviour = VllmBehaviour(
        served_model="meta-llama/Llama-3.1-8B-Instruct",
        first_token_delay_s=FIRST_TOKEN_DELAY,
        per_token_delay_s=0.01,
        require_api_key=key,
    )
    with (
        VllmStandIn(behaviour) as vllm,
        AgentProcess(tmp_path, config(vllm.url, key_file)) as agent,
    ):

        def validated() -> bool:
            text = agent.metrics()
            return 'check="ttft_agrees"' in text and "gpuledger_probe_ttft_seconds{" in text

        wait_until(validated, timeout=40)
        got = samples(agent.metrics())
        model = "meta-llama/Llama-3.1-8B-Instruct"
        lab = {"service": "chat", "namespace": "llm", "model_name": model}
        assert one(got, "gpuledger_vllm_endpoint_up", service="chat") == 1.0
        # the engine's own counters include every probe the agent sent
        assert one(got, "gpuledger_vllm_prompt_tokens_total", **lab) > 0
        ttft = one(got, "gpuledger_probe_ttft_seconds", **lab)
        assert FIRST_TOKEN_DELAY <= ttft < FIRST_TOKEN_DELAY + 0.3
        assert one(got, "gpuledger_probe_success_total", **lab) >= 1
        for check in ("tokens_counted", "ttft_histogram_moved", "ttft_agrees"):
            assert one(got, "gpuledger_probe_validation", **lab, check=check) == 1.0
        assert key not in agent.metrics()
        _, api = http_get(agent.url + "/api/v1/collectors")
        assert key not in api.decode()
        assert json.loads(api)["collectors"]["vllm"]["up"] is True
        time.sleep(1.5)
        agent.stop(signal.SIGTERM)
        served = vllm.completions_served()

    assert key not in agent.log()
    store = open_store(f"sqlite:///{tmp_path / 'state' / 'ledger.db'}")
    try:
        (tokens,) = store.tokens(LO, HI, ["service", "model_name"])
        (probes,) = store.probes(LO, HI)
    finally:
        store.close()
    # every completion the stand-in served was a probe of MAX_TOKENS tokens; the engine
    # counted them and so did the probe columns, so billable (engine - probe) is ~0
    assert tokens.probe_generation_tokens == probes.successes * MAX_TOKENS
    assert probes.successes >= 1
    assert probes.successes <= served
    assert tokens.generation_tokens >= tokens.probe_generation_tokens - MAX_TOKENS
    assert tokens.generation_tokens <= served * MAX_TOKENS
    assert probes.agree >= 1
    assert probes.disagree == 0
