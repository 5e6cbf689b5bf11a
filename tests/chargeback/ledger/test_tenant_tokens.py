"""Per-tenant token facts in the ledger (issue 14): the store's running-total rules and
grouped reads on both backends, and the gateway-counter deltas through spool, flusher and
store -- resets, gaps and agent restarts -- against hand-computed totals."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from gpuledger.chargeback.ledger.flusher import Ledger
from gpuledger.chargeback.ledger.model import TenantTokenGroup
from gpuledger.chargeback.ledger.spool import Spool
from gpuledger.chargeback.ledger.store import open_store
from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
from gpuledger.chargeback.ledger.tables import TenantTokenRow
from gpuledger.collectors.counters import CounterTracker
from gpuledger.collectors.gateway.types import CounterSample, GatewayReading, GatewayScrape

H = 1_767_225_600  # 2026-01-01T00:00:00Z
LO, HI = datetime(2025, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)


def row(hour: int, tenant: str, req: float, p: float, c: float, g: float,
        service: str = "chat", node: str = "n1") -> TenantTokenRow:  # fmt: skip
    return TenantTokenRow(hour, node, "llm", service, "llama-70b", tenant, req, p, c, g)


def test_store_keeps_running_totals_and_groups_in_sql(
    ledger_store: AuditableLedgerStore,
) -> None:
    ledger_store.upsert_tenant_tokens([
        row(H, "team-a", 10, 1000, 200, 300),
        row(H, "team-b", 5, 400, 0, 900),
        row(H + 3600, "team-a", 2, 100, 50, 10),
        row(H, "__untenanted__", 1, 30, 0, 5, service="embed"),
    ])  # fmt: skip
    # a replay of an older, lower total and a repeat of the same one change nothing
    ledger_store.upsert_tenant_tokens([row(H, "team-a", 4, 500, 100, 100)])
    ledger_store.upsert_tenant_tokens([row(H, "team-b", 5, 400, 0, 900)])
    # a newer total of the same bucket replaces it (within a batch: the larger wins)
    ledger_store.upsert_tenant_tokens(
        [row(H, "team-b", 6, 450, 10, 950), row(H, "team-b", 5, 420, 0, 920)]
    )
    by_tenant = ledger_store.tenant_tokens(LO, HI, ["tenant"])
    assert by_tenant == [
        TenantTokenGroup(1, 30, 0, 5, tenant="__untenanted__"),
        TenantTokenGroup(12, 1100, 250, 310, tenant="team-a"),
        TenantTokenGroup(6, 450, 10, 950, tenant="team-b"),
    ]
    per_hour = ledger_store.tenant_tokens(LO, HI, ["service", "tenant", "hour"])
    assert [(g.service, g.tenant, g.hour, g.prompt_tokens) for g in per_hour] == [
        ("chat", "team-a", "2026-01-01T00:00:00Z", 1000),
        ("chat", "team-a", "2026-01-01T01:00:00Z", 100),
        ("chat", "team-b", "2026-01-01T00:00:00Z", 450),
        ("embed", "__untenanted__", "2026-01-01T00:00:00Z", 30),
    ]
    first_hour = ledger_store.tenant_tokens(
        datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 1, tzinfo=UTC), []
    )
    assert first_hour == [TenantTokenGroup(17, 1480, 210, 1255)]
    assert ledger_store.tenant_tokens(LO, HI, ["tenant"], node="elsewhere") == []
    with pytest.raises(ValueError, match="gpu_uuid"):
        ledger_store.tenant_tokens(LO, HI, ["gpu_uuid"])
    with pytest.raises(TypeError):
        ledger_store.tenant_tokens(LO, HI, "tenant")


def test_hostile_tenant_names_are_stored_as_given(ledger_store: AuditableLedgerStore) -> None:
    names = ['a"b', "line\nbreak", "=cmd|' /C calc'!A0", "ünï'cödé; DROP TABLE x;--"]
    ledger_store.upsert_tenant_tokens([row(H, n, 1, i + 1, 0, 0) for i, n in enumerate(names)])
    got = {g.tenant: g.prompt_tokens for g in ledger_store.tenant_tokens(LO, HI, ["tenant"])}
    assert got == {n: float(i + 1) for i, n in enumerate(names)}


# -- deltas from gateway counters through the Ledger ------------------------------------


class Clock:
    t = float(H + 60)


def sample(series: str, kind: str, value: float, tenant: str) -> CounterSample:
    return CounterSample(series, kind, value, "llm", "chat", "llama-70b", tenant)


def reading(*samples: CounterSample, up: bool = True) -> GatewayReading:
    return GatewayReading((GatewayScrape("http://gw/metrics", up=up, samples=samples),))


def new_ledger(tmp: Path, url: str, clock: Clock) -> Ledger:
    ledger = Ledger("n1", spool=Spool(tmp / "spool.db"), store=None, claims_for=lambda r: [],
                    wall=lambda: clock.t, mono=lambda: clock.t)  # fmt: skip
    ledger.start()
    ledger.store = open_store(url)
    return ledger


def test_deltas_resets_gaps_and_restarts_on_both_backends(
    tmp_path: Path, ledger_store_url: str
) -> None:
    clock = Clock()
    ledger = new_ledger(tmp_path, ledger_store_url, clock)
    # first sight: baselines only (what was counted before the agent looked is unplaceable)
    ledger.observe_tenant_tokens(reading(sample("a/p", "prompt", 1000, "team-a"),
                                         sample("b/p", "prompt", 50, "team-b")))  # fmt: skip
    clock.t += 15
    ledger.observe_tenant_tokens(reading(sample("a/p", "prompt", 1300, "team-a"),
                                         sample("b/p", "prompt", 80, "team-b")))  # fmt: skip
    # two upstream series of one tenant (e.g. two API keys of team-a): each its own delta
    ledger.observe_tenant_tokens(reading(sample("a/p", "prompt", 1300, "team-a"),
                                         sample("a2/p", "prompt", 7, "team-a")))  # fmt: skip
    clock.t += 15
    ledger.observe_tenant_tokens(reading(sample("a/p", "prompt", 1400, "team-a"),
                                         sample("a2/p", "prompt", 17, "team-a")))  # fmt: skip
    # the gateway goes down for a while: nothing is counted, nothing is lost
    clock.t += 15
    ledger.observe_tenant_tokens(reading(up=False))
    clock.t += 600
    ledger.observe_tenant_tokens(reading(sample("a/p", "prompt", 2400, "team-a")))  # +1000
    # the gateway restarts: its counter begins again at 0 -> the new value is the delta
    clock.t += 15
    ledger.observe_tenant_tokens(reading(sample("a/p", "prompt", 40, "team-a")))  # +40
    assert ledger.flush_once()
    assert ledger.store is not None
    got = {g.tenant: g.prompt_tokens for g in ledger.store.tenant_tokens(LO, HI, ["tenant"])}
    assert got == {"team-a": 300 + 100 + 10 + 1000 + 40, "team-b": 30}
    ledger.store.close()
    ledger.spool.close()

    # the agent restarts; the gateway served 60 more meanwhile: counted once, not twice
    clock.t = float(H + 3600 + 30)  # and it is the next hour now
    ledger = new_ledger(tmp_path, ledger_store_url, clock)
    ledger.observe_tenant_tokens(reading(sample("a/p", "prompt", 100, "team-a"),
                                         sample("a/g", "generation", 9, "team-a")))  # fmt: skip
    assert ledger.flush_once()
    assert ledger.flush_once()  # a second flush of the same spool adds nothing
    assert ledger.store is not None
    hours = ledger.store.tenant_tokens(LO, HI, ["tenant", "hour"])
    assert [(g.tenant, g.hour, g.prompt_tokens, g.generation_tokens) for g in hours] == [
        ("team-a", "2026-01-01T00:00:00Z", 1450.0, 0.0),
        ("team-a", "2026-01-01T01:00:00Z", 60.0, 0.0),
        ("team-b", "2026-01-01T00:00:00Z", 30.0, 0.0),
    ]
    ledger.store.close()
    ledger.spool.close()


def test_pending_rows_leave_the_spool_once_flushed(tmp_path: Path) -> None:
    clock = Clock()
    ledger = new_ledger(tmp_path, f"sqlite:///{tmp_path / 'ledger.db'}", clock)
    ledger.observe_tenant_tokens(reading(sample("a/r", "requests", 3, "t")))
    ledger.observe_tenant_tokens(reading(sample("a/r", "requests", 8, "t")))
    assert ledger.spool.pending_extra_count() == 1
    assert ledger.flush_once()
    assert ledger.spool.pending_extra_count() == 0
    assert ledger.store is not None
    assert ledger.store.tenant_tokens(LO, HI, []) == [TenantTokenGroup(5, 0, 0, 0)]
    ledger.store.close()
    ledger.spool.close()


def test_counter_tracker_refuses_non_finite_and_negative_values() -> None:
    t = CounterTracker()
    assert t.advance("s", 10) == 0
    assert t.advance("s", float("nan")) == 0
    assert t.advance("s", -5) == 0
    assert t.advance("s", 15) == 5  # the NaN and the negative never became the baseline
    assert t.advance("s", 3) == 3
    assert t.resets == 1
