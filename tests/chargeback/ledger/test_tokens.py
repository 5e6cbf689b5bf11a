"""Token counts per (hour, service, model): counter deltas, resets, restarts, probes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from gpuledger.chargeback.ledger.flusher import Ledger
from gpuledger.chargeback.ledger.model import TokenGroup
from gpuledger.chargeback.ledger.spool import Spool
from gpuledger.chargeback.ledger.store import open_store
from gpuledger.chargeback.ledger.tokens import counter_delta
from gpuledger.collectors.vllm.types import (
    EndpointScrape,
    ProbeResult,
    ProbeVerdict,
    VllmEndpoint,
    VllmSeries,
    VllmTelemetry,
)

H = 1_767_225_600  # 2026-01-01T00:00:00Z
EP = VllmEndpoint(url="http://10.0.0.5:8000", service="chat", namespace="llm", pod="chat-0")
LO, HI = datetime(2025, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)


def telemetry(*engines: tuple[str, float, float], up: bool = True) -> VllmTelemetry:
    series = tuple(
        VllmSeries(model_name="llama-70b", engine=e, prompt_tokens=p, generation_tokens=g)
        for e, p, g in engines
    )
    return VllmTelemetry((EndpointScrape(EP, up=up, series=series),))


class Clock:
    t = float(H + 60)


def new_ledger(tmp: Path, clock: Clock) -> Ledger:
    ledger = Ledger("n1", spool=Spool(tmp / "spool.db"), store=None, claims_for=lambda r: [],
                    wall=lambda: clock.t, mono=lambda: clock.t)  # fmt: skip
    ledger.start()  # no store yet: no background flusher; the tests flush by hand
    ledger.store = open_store(f"sqlite:///{tmp / 'ledger.db'}")
    return ledger


def totals(ledger: Ledger, *group: str) -> list[TokenGroup]:
    assert ledger.flush_once()
    assert ledger.store is not None
    return ledger.store.tokens(LO, HI, list(group))


def test_counter_delta_rules() -> None:
    assert counter_delta(None, 500.0) == 0.0  # first sight: baseline only
    assert counter_delta(500.0, 800.0) == 300.0
    assert counter_delta(800.0, 40.0) == 40.0  # engine restarted: counts from 0 again


def test_deltas_engines_and_hours(tmp_path: Path) -> None:
    clock = Clock()
    ledger = new_ledger(tmp_path, clock)
    ledger.observe_vllm(telemetry(("0", 1000, 100), ("1", 50, 5)))  # baselines
    clock.t += 15
    ledger.observe_vllm(telemetry(("0", 1300, 160), ("1", 80, 9)))
    clock.t = H + 3600 + 30  # next hour
    ledger.observe_vllm(telemetry(("0", 1400, 170), ("1", 90, 10)))
    rows = totals(ledger, "hour", "service", "model_name")
    assert [(r.hour, r.prompt_tokens, r.generation_tokens) for r in rows] == [
        ("2026-01-01T00:00:00Z", 330.0, 64.0),
        ("2026-01-01T01:00:00Z", 110.0, 11.0),
    ]


def test_engine_restart_and_missed_scrape(tmp_path: Path) -> None:
    clock = Clock()
    ledger = new_ledger(tmp_path, clock)
    ledger.observe_vllm(telemetry(("0", 1000, 100)))
    ledger.observe_vllm(telemetry(("0", 0, 0), up=False))  # endpoint down: nothing counted
    ledger.observe_vllm(telemetry(("0", 1200, 130)))  # caught up by the next delta
    ledger.observe_vllm(telemetry(("0", 25, 4)))  # engine restarted
    (row,) = totals(ledger, "service")
    assert (row.prompt_tokens, row.generation_tokens) == (225.0, 34.0)
    assert ledger.tokens.resets == 1


def test_agent_restart_keeps_baselines_no_double_count(tmp_path: Path) -> None:
    clock = Clock()
    first = new_ledger(tmp_path, clock)
    first.observe_vllm(telemetry(("0", 1000, 100)))
    first.observe_vllm(telemetry(("0", 1100, 110)))
    first.spool.close()  # killed: nothing flushed
    second = new_ledger(tmp_path, clock)
    second.observe_vllm(telemetry(("0", 1500, 150)))  # served while the agent was away
    (row,) = totals(second, "service")
    assert (row.prompt_tokens, row.generation_tokens) == (500.0, 50.0)


def test_probe_tokens_kept_apart_and_verdict_attached(tmp_path: Path) -> None:
    clock = Clock()
    ledger = new_ledger(tmp_path, clock)
    ledger.observe_vllm(telemetry(("0", 1000, 100)))
    probe = ProbeResult(EP, "llama-70b", started_unix=clock.t, ok=True, ttft_s=0.1,
                        prompt_tokens=9, completion_tokens=16)  # fmt: skip
    ledger.record_probe(probe)
    ledger.observe_vllm(telemetry(("0", 1009, 116)))
    ledger.record_verdict(
        ProbeVerdict(
            EP,
            "llama-70b",
            clock.t + 20,
            tokens_counted=True,
            ttft_histogram_moved=True,
            ttft_agrees=False,
        )
    )
    (row,) = totals(ledger, "service", "model_name")
    assert row == TokenGroup(service="chat", model_name="llama-70b", prompt_tokens=9.0,
                             generation_tokens=16.0, probe_prompt_tokens=9.0,
                             probe_generation_tokens=16.0)  # fmt: skip
    assert ledger.store is not None
    (summary,) = ledger.store.probes(LO, HI)
    assert (summary.probes, summary.successes, summary.disagree) == (1.0, 1.0, 1.0)


def test_pending_rows_include_tokens_and_probes(tmp_path: Path) -> None:
    clock = Clock()
    ledger = new_ledger(tmp_path, clock)
    ledger.observe_vllm(telemetry(("0", 1, 1)))
    ledger.observe_vllm(telemetry(("0", 2, 2)))
    ledger.record_probe(ProbeResult(EP, "llama-70b", clock.t, ok=False, reason="timeout"))
    assert ledger.spool.pending_extra_count() == 2
    assert ledger.flush_once()
    assert ledger.status().pending_rows == 0


@pytest.mark.parametrize("up", [True, False])
def test_series_without_counters_are_skipped(tmp_path: Path, up: bool) -> None:
    ledger = new_ledger(tmp_path, Clock())
    empty = VllmTelemetry((EndpointScrape(EP, up=up, series=(VllmSeries("m", "0"),)),))
    ledger.observe_vllm(empty)
    ledger.observe_vllm(empty)
    assert totals(ledger, "service") == []
