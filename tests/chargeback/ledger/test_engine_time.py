"""The engine's cost weights in the ledger (issue 14): per (hour, service, model) the
prefill/decode seconds and requests and prefix-cache tokens from vLLM's histograms -- the
store's running-total rules and grouped reads on both backends, and the deltas through
spool, flusher and store (engine restarts that drop a histogram's sum or count, gaps,
agent restarts, old V0 engines without the families) against totals computed by hand."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from gpuledger.chargeback.ledger.flusher import Ledger
from gpuledger.chargeback.ledger.model import EngineTimeGroup
from gpuledger.chargeback.ledger.spool import Spool
from gpuledger.chargeback.ledger.store import open_store
from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
from gpuledger.chargeback.ledger.tables import EngineTimeRow
from gpuledger.collectors.counters import joint_deltas
from gpuledger.collectors.vllm.types import (
    EndpointScrape,
    Histogram,
    VllmEndpoint,
    VllmSeries,
    VllmTelemetry,
)

H = 1_767_225_600  # 2026-01-01T00:00:00Z
LO, HI = datetime(2025, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)


def row(hour: int, service: str, pf: float, dc: float, pr: float, dr: float, q: float,
        h: float, model: str = "llama-70b", node: str = "n1") -> EngineTimeRow:  # fmt: skip
    return EngineTimeRow(hour, node, "llm", service, model, pf, dc, pr, dr, q, h)


def test_store_keeps_running_totals_and_groups_in_sql(
    ledger_store: AuditableLedgerStore,
) -> None:
    ledger_store.upsert_engine_time([
        row(H, "chat", 10.5, 200, 4, 4, 1000, 400),
        row(H + 3600, "chat", 2, 30, 1, 1, 50, 0),
        row(H, "chat", 1, 9, 2, 2, 10, 5, model="llama-8b"),
        row(H, "embed", 3, 0.25, 7, 7, 0, 0, model="bge"),
        row(H, "chat", 4, 40, 2, 2, 100, 60, node="n2"),
    ])  # fmt: skip
    # a replay of an older, lower total and a repeat of the same one change nothing
    ledger_store.upsert_engine_time([row(H, "chat", 5, 100, 2, 2, 500, 100)])
    ledger_store.upsert_engine_time([row(H, "chat", 10.5, 200, 4, 4, 1000, 400)])
    # a newer total of the same bucket replaces it (within a batch: the larger wins)
    ledger_store.upsert_engine_time(
        [row(H, "chat", 11, 210, 5, 5, 1100, 450), row(H, "chat", 10.75, 205, 5, 5, 1050, 420)]
    )
    by_service = ledger_store.engine_time(LO, HI, ["namespace", "service"])
    assert by_service == [
        # chat: 11 + 2 + 1 + 4 prefill s, 210 + 30 + 9 + 40 decode s, ...
        EngineTimeGroup(18, 289, 10, 10, 1260, 515, namespace="llm", service="chat"),
        EngineTimeGroup(3, 0.25, 7, 7, 0, 0, namespace="llm", service="embed"),
    ]
    per_hour = ledger_store.engine_time(LO, HI, ["service", "model_name", "hour"], node="n1")
    assert [(g.service, g.model_name, g.hour, g.prefill_seconds, g.decode_seconds)
            for g in per_hour] == [
        ("chat", "llama-70b", "2026-01-01T00:00:00Z", 11, 210),
        ("chat", "llama-70b", "2026-01-01T01:00:00Z", 2, 30),
        ("chat", "llama-8b", "2026-01-01T00:00:00Z", 1, 9),
        ("embed", "bge", "2026-01-01T00:00:00Z", 3, 0.25),
    ]  # fmt: skip
    first_hour = ledger_store.engine_time(
        datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 1, tzinfo=UTC), ["node"]
    )
    assert first_hour == [
        EngineTimeGroup(15, 219.25, 14, 14, 1110, 455, node="n1"),
        EngineTimeGroup(4, 40, 2, 2, 100, 60, node="n2"),
    ]
    assert ledger_store.engine_time(LO, HI, ["service"], node="elsewhere") == []
    with pytest.raises(ValueError, match="tenant"):
        ledger_store.engine_time(LO, HI, ["tenant"])
    with pytest.raises(TypeError):
        ledger_store.engine_time(LO, HI, "service")


# -- deltas from vLLM's histograms through the Ledger ------------------------------------


class Clock:
    t = float(H + 60)


A = VllmEndpoint("http://10.0.0.5:8000", "chat", "llm")
OLD = VllmEndpoint("http://10.0.0.6:8000", "old-chat", "llm")  # an old V0: no such families


def hist(s: float, n: float) -> Histogram:
    return Histogram(((float("inf"), n),), s, n)


def series(engine: str, prefill: tuple[float, float], decode: tuple[float, float],
           cache: tuple[float, float] | None) -> VllmSeries:  # fmt: skip
    return VllmSeries(
        "llama-70b", engine, prompt_tokens=1.0, generation_tokens=1.0,
        prefill_time=hist(*prefill), decode_time=hist(*decode),
        prefix_cache_queries=None if cache is None else cache[0],
        prefix_cache_hits=None if cache is None else cache[1],
    )  # fmt: skip


def telemetry(*a_series: VllmSeries, up: bool = True) -> VllmTelemetry:
    v0 = VllmSeries("llama-70b", "0", prompt_tokens=500.0, generation_tokens=900.0)
    return VllmTelemetry((
        EndpointScrape(A, up=up, series=a_series),
        EndpointScrape(OLD, up=True, series=(v0,)),
    ))  # fmt: skip


def new_ledger(tmp: Path, url: str, clock: Clock) -> Ledger:
    ledger = Ledger("n1", spool=Spool(tmp / "spool.db"), store=None, claims_for=lambda r: [],
                    wall=lambda: clock.t, mono=lambda: clock.t)  # fmt: skip
    ledger.start()
    ledger.store = open_store(url)
    return ledger


def test_deltas_restarts_gaps_and_agent_restarts_on_both_backends(
    tmp_path: Path, ledger_store_url: str
) -> None:
    clock = Clock()
    ledger = new_ledger(tmp_path, ledger_store_url, clock)
    # first sight of both engines of the data-parallel endpoint: baselines only
    ledger.observe_vllm(telemetry(series("0", (10, 4), (100, 4), (1000, 400)),
                                  series("1", (5, 2), (50, 2), (500, 100))))  # fmt: skip
    clock.t += 15
    ledger.observe_vllm(telemetry(series("0", (12.5, 6), (130, 6), (1300, 520)),
                                  series("1", (6, 3), (58, 3), (600, 150))))  # fmt: skip
    # the endpoint is down for a while, then engine 1 is gone: the next delta covers it
    clock.t += 15
    ledger.observe_vllm(telemetry(up=False))
    clock.t += 600
    ledger.observe_vllm(telemetry(series("0", (20, 10), (200, 10), (2000, 900))))
    # engine 0 restarts and serves 3 long prompts before the next look: its prefill count
    # dropped (10 -> 3) while the sum rose (20 -> 25). Sum and count reset together, so
    # the delta is the whole new (25 s, 3), not 25 - 20 = 5 s.
    clock.t += 15
    ledger.observe_vllm(telemetry(series("0", (25, 3), (4, 3), (100, 10))))
    assert ledger.engine_time.resets == 3
    assert ledger.flush_once()
    assert ledger.store is not None
    got = ledger.store.engine_time(LO, HI, ["service"])
    # prefill s: (2.5 + 1) + 7.5 + 25; decode s: (30 + 8) + 70 + 4;
    # requests: (2 + 1) + 4 + 3 each; cache queries: (300 + 100) + 700 + 100;
    # hits: (120 + 50) + 380 + 10. The old V0 endpoint adds no row at all.
    assert got == [EngineTimeGroup(36, 112, 10, 10, 1200, 560, service="chat")]
    ledger.store.close()
    ledger.spool.close()

    # the agent restarts in the next hour; both engines moved meanwhile: counted once
    clock.t = float(H + 3600 + 30)
    ledger = new_ledger(tmp_path, ledger_store_url, clock)
    ledger.observe_vllm(telemetry(series("0", (27, 4), (10, 5), (150, 30)),
                                  series("1", (7, 4), (60, 4), (640, 170))))  # fmt: skip
    assert ledger.flush_once()
    assert ledger.flush_once()  # a second flush of the same spool adds nothing
    assert ledger.store is not None
    hours = ledger.store.engine_time(LO, HI, ["hour"])
    assert hours == [
        EngineTimeGroup(36, 112, 10, 10, 1200, 560, hour="2026-01-01T00:00:00Z"),
        # engine 0: +2 s/+1, +6 s/+2, +50/+20; engine 1: +1 s/+1, +2 s/+1, +40/+20
        EngineTimeGroup(3, 8, 2, 3, 90, 40, hour="2026-01-01T01:00:00Z"),
    ]
    ledger.store.close()
    ledger.spool.close()


def test_missing_and_non_finite_groups_add_nothing_and_never_become_baselines(
    tmp_path: Path,
) -> None:
    clock = Clock()
    ledger = new_ledger(tmp_path, f"sqlite:///{tmp_path / 'ledger.db'}", clock)
    nan = float("nan")
    ledger.observe_vllm(telemetry(series("0", (1, 1), (2, 1), None)))  # no cache counters
    ledger.observe_vllm(telemetry(series("0", (nan, 2), (3, 2), None)))  # prefill skipped
    ledger.observe_vllm(telemetry(series("0", (4, 3), (-1, 3), (10, 5))))  # decode skipped
    ledger.observe_vllm(telemetry(series("0", (6, 4), (7, 4), (30, 15))))
    assert ledger.engine_time.resets == 0
    assert ledger.spool.pending_extra_count() == 1  # one bucket, rewritten in place
    assert ledger.flush_once()
    assert ledger.spool.pending_extra_count() == 0
    assert ledger.store is not None
    # prefill: 1 -> 4 -> 6 (the NaN never replaced the baseline 1): +5 s, +3 requests;
    # decode: 2 -> 3 -> 7 (the -1 was skipped): +5 s, +3; cache: first seen at 10/5: +20/+10
    assert ledger.store.engine_time(LO, HI, []) == [EngineTimeGroup(5, 5, 3, 3, 20, 10)]
    ledger.store.close()
    ledger.spool.close()


def test_joint_deltas_reset_the_whole_group() -> None:
    assert joint_deltas(None, (5.0, 2.0)) == (0.0, 0.0)
    assert joint_deltas((5.0, 2.0), (7.5, 3.0)) == (2.5, 1.0)
    assert joint_deltas((5.0, 2.0), (5.0, 2.0)) == (0.0, 0.0)
    assert joint_deltas((5.0, 2.0), (9.0, 1.0)) == (9.0, 1.0)  # count dropped: restart
    assert joint_deltas((5.0, 2.0), (1.0, 4.0)) == (1.0, 4.0)  # sum dropped: restart
    with pytest.raises(ValueError, match="zip"):
        joint_deltas((1.0,), (1.0, 2.0))
