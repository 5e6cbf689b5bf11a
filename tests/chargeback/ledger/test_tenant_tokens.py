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
from gpuledger.collectors.counters import CounterTracker, page_key
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


def reading(
    *samples: CounterSample, up: bool = True, endpoint: str = "http://gw/metrics"
) -> GatewayReading:
    return GatewayReading((GatewayScrape(endpoint, up=up, samples=samples),))


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
    # two upstream series of one tenant (e.g. two API keys of team-a): each its own delta;
    # a2 is new on a page already read, so its whole 7 is new since that reading
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
    assert got == {"team-a": 300 + 7 + 100 + 10 + 1000 + 40, "team-b": 30}
    ledger.store.close()
    ledger.spool.close()

    # the agent restarts; the gateway served 60 more meanwhile: counted once, not twice;
    # a/g appeared meanwhile on the page the spool knows: its 9 are new, counted whole
    clock.t = float(H + 3600 + 30)  # and it is the next hour now
    ledger = new_ledger(tmp_path, ledger_store_url, clock)
    ledger.observe_tenant_tokens(reading(sample("a/p", "prompt", 100, "team-a"),
                                         sample("a/g", "generation", 9, "team-a")))  # fmt: skip
    assert ledger.flush_once()
    assert ledger.flush_once()  # a second flush of the same spool adds nothing
    assert ledger.store is not None
    hours = ledger.store.tenant_tokens(LO, HI, ["tenant", "hour"])
    assert [(g.tenant, g.hour, g.prompt_tokens, g.generation_tokens) for g in hours] == [
        ("team-a", "2026-01-01T00:00:00Z", 1457.0, 0.0),
        ("team-a", "2026-01-01T01:00:00Z", 60.0, 9.0),
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


def _prompt(ledger: Ledger) -> dict[str, float]:
    assert ledger.flush_once()
    assert ledger.store is not None
    return {g.tenant: g.prompt_tokens for g in ledger.store.tenant_tokens(LO, HI, ["tenant"])}


def _close(ledger: Ledger) -> None:
    assert ledger.store is not None
    ledger.store.close()
    ledger.spool.close()


def test_a_new_series_counts_whole_only_on_a_page_read_before(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    clock = Clock()
    ledger = new_ledger(tmp_path, url, clock)
    gw2 = "http://gw2/metrics"
    ledger.observe_tenant_tokens(reading(sample("a/p", "prompt", 100, "a")))  # baseline
    clock.t += 15
    ledger.observe_tenant_tokens(
        reading(sample("a/p", "prompt", 110, "a"), sample("b/p", "prompt", 20, "b"))
    )  # +10, b new: +20
    # a second endpoint's first page is a first sight, whatever the first one's state
    ledger.observe_tenant_tokens(reading(sample("c/p", "prompt", 500, "c"), endpoint=gw2))
    clock.t += 15
    ledger.observe_tenant_tokens(
        reading(sample("c/p", "prompt", 530, "c"), sample("d/p", "prompt", 4, "d"), endpoint=gw2)
    )
    # a down scrape reads no page: b2 on the next good one still counts whole
    ledger.observe_tenant_tokens(reading(up=False))
    ledger.observe_tenant_tokens(reading(sample("a/p", "prompt", 110, "a"),
                                         sample("b2/p", "prompt", 3, "b")))  # fmt: skip
    assert _prompt(ledger) == {"a": 10, "b": 23, "c": 30, "d": 4}
    _close(ledger)


def test_after_a_restart_only_pages_the_spool_knows_count_new_series_whole(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    # a spool written before page markers existed: a baseline for a/p, no marker
    old = Spool(tmp_path / "spool.db")
    old.write_tenant_tokens([], {"a/p": 100.0})
    old.close()
    clock = Clock()
    ledger = new_ledger(tmp_path, url, clock)
    ledger.observe_tenant_tokens(
        reading(
            sample("a/p", "prompt", 150, "a"),  # +50
            sample("n/p", "prompt", 70, "n"),
        )
    )  # baseline only
    clock.t += 15
    ledger.observe_tenant_tokens(
        reading(
            sample("a/p", "prompt", 150, "a"),
            sample("n/p", "prompt", 75, "n"),  # +5
            sample("m/p", "prompt", 8, "m"),
        )
    )  # new: +8
    assert _prompt(ledger) == {"a": 50, "n": 5, "m": 8}
    _close(ledger)
    # restarted: the marker came back from the spool, so a series new meanwhile counts
    clock.t += 600
    ledger = new_ledger(tmp_path, url, clock)
    ledger.observe_tenant_tokens(
        reading(
            sample("a/p", "prompt", 160, "a"),  # +10
            sample("k/p", "prompt", 6, "k"),
        )
    )  # +6
    assert _prompt(ledger) == {"a": 60, "n": 5, "m": 8, "k": 6}
    _close(ledger)


def _spooled(tmp: Path) -> tuple[dict[str, float], dict[str, float]]:
    spool = Spool(tmp / "spool.db")
    _, baselines, seen = spool.load_tenant_tokens(0)
    spool.close()
    return baselines, seen


def test_baselines_not_seen_for_a_day_are_pruned_from_memory_and_spool(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    clock = Clock()
    ledger = new_ledger(tmp_path, url, clock)
    ledger.observe_tenant_tokens(reading(sample("a/p", "prompt", 100, "a"),
                                         sample("gone/p", "prompt", 40, "g")))  # fmt: skip
    start = clock.t
    # gone/p disappears (its key deleted); a/p keeps being read, hourly
    for _ in range(24):
        clock.t += 3600
        ledger.observe_tenant_tokens(reading(sample("a/p", "prompt", 100, "a")))
    # exactly 24 h unseen: kept
    assert "gone/p" in _spooled(tmp_path)[0]
    clock.t += 601
    ledger.observe_tenant_tokens(reading(sample("a/p", "prompt", 101, "a")))  # +1
    baselines, seen = _spooled(tmp_path)
    assert "gone/p" not in baselines
    assert "gone/p" not in seen
    assert baselines["a/p"] == 101
    assert seen["a/p"] == clock.t
    # a series that comes back after its baseline was pruned is new on a known page
    ledger.observe_tenant_tokens(reading(sample("a/p", "prompt", 101, "a"),
                                         sample("gone/p", "prompt", 2, "g")))  # fmt: skip
    assert _prompt(ledger) == {"a": 1, "g": 2}
    assert clock.t - start > 24 * 3600
    _close(ledger)


def test_pruning_across_a_restart_uses_the_spooled_times(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    clock = Clock()
    ledger = new_ledger(tmp_path, url, clock)
    ledger.observe_tenant_tokens(reading(sample("a/p", "prompt", 100, "a"),
                                         sample("gone/p", "prompt", 40, "g")))  # fmt: skip
    clock.t += 3600
    ledger.observe_tenant_tokens(reading(sample("a/p", "prompt", 110, "a")))  # +10
    assert _prompt(ledger) == {"a": 10}
    _close(ledger)
    # the agent is down for 30 h: its downtime counts towards gone/p's age, and the first
    # reading after it still counts a/p's delta (seen before the pruning looks)
    clock.t += 30 * 3600
    ledger = new_ledger(tmp_path, url, clock)
    ledger.observe_tenant_tokens(reading(sample("a/p", "prompt", 150, "a")))  # +40
    assert _prompt(ledger) == {"a": 50}
    baselines, _ = _spooled(tmp_path)
    assert "gone/p" not in baselines
    assert baselines["a/p"] == 150
    _close(ledger)


def test_counter_tracker_pages_and_pruning() -> None:
    t = CounterTracker()
    assert not t.page("ep", now=0)
    assert t.advance("s", 10, now=0, known_page=False) == 0
    assert t.page("ep", now=10)
    assert t.advance("s", 12, now=10, known_page=True) == 2  # a known series: its delta
    assert t.advance("new", 5, now=10, known_page=True) == 5
    assert t.advance("nan", float("nan"), now=10, known_page=True) == 0
    assert t.baseline("nan") is None
    assert t.prune(now=20, max_age=15) == []
    assert t.last_seen("s") == 10
    assert sorted(t.prune(now=30, max_age=15)) == sorted(["s", "new", page_key("ep")])
    assert len(t) == 0
    assert not t.page("ep", now=30)  # the page was forgotten too: a first sight again
    # restored baselines without a time are counted as seen at the restore
    r = CounterTracker({"x": 1.0, "y": 2.0}, {"x": 5.0}, now=100.0)
    assert (r.last_seen("x"), r.last_seen("y")) == (5.0, 100.0)
