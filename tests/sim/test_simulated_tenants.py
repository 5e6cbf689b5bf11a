"""The demo month's shared endpoint: its tenants and engine time agree with its tokens.

Every property is read back from the written ledger (the store's grouped reads and plain
SQL over its tables), not from the simulator's own numbers."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuledger.chargeback.ledger.store.sqlite import SqliteLedgerStore
from gpuledger.chargeback.report.model import Month
from gpuledger.sim.month import SimNodeSpec, simulate_month
from gpuledger.sim.nvml_fake import L40S
from gpuledger.sim.tenants import LEGACY_ENGINE_WINDOW, SHARED_SERVICE, TENANTS, UNTENANTED

FEB = Month.parse("2026-02")
FLEET = (SimNodeSpec("sim-b", 4, L40S.name, 1, outage=(3, 5)),)
"""The quickest node that serves the shared endpoint (two of its GPUs), down five hours."""
NS, SVC = SHARED_SERVICE


def _simulate(path: Path) -> sqlite3.Connection:
    with SqliteLedgerStore(path) as store:
        store.migrate()
        summary = simulate_month(store, FEB, seed=7, fleet=FLEET)
    assert summary.tenant_token_rows > 0
    assert summary.engine_time_rows > 0
    return sqlite3.connect(path)


@pytest.fixture(scope="module")
def ledger_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tenants") / "ledger.db"


@pytest.fixture(scope="module")
def ledger(ledger_path: Path) -> Iterator[sqlite3.Connection]:
    db = _simulate(ledger_path)
    yield db
    db.close()


def _rows(db: sqlite3.Connection, table: str, order: str) -> list[tuple[object, ...]]:
    columns = [r[1] for r in db.execute(f"PRAGMA table_info({table})") if r[1] != "updated_at"]
    return db.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}").fetchall()


def test_only_the_shared_service_has_tenants_and_every_tenant_appears(
    ledger: sqlite3.Connection,
) -> None:
    services = ledger.execute(
        "SELECT DISTINCT namespace, service FROM ledger_tenant_tokens"
    ).fetchall()
    assert services == [(NS, SVC)]
    assert ledger.execute(
        "SELECT DISTINCT namespace, service FROM ledger_engine_time"
    ).fetchall() == [(NS, SVC)]
    tenants = {r[0] for r in ledger.execute("SELECT DISTINCT tenant FROM ledger_tenant_tokens")}
    assert tenants == {t.name for t in TENANTS}
    assert UNTENANTED in tenants
    assert len(tenants - {UNTENANTED}) >= 4


def test_every_service_hour_has_its_tenants(ledger: sqlite3.Connection) -> None:
    missing = ledger.execute(
        """SELECT COUNT(*) FROM ledger_tokens k
           WHERE k.namespace = ? AND k.service = ? AND NOT EXISTS (
             SELECT 1 FROM ledger_tenant_tokens t WHERE t.hour_start = k.hour_start
             AND t.node = k.node AND t.namespace = k.namespace AND t.service = k.service
             AND t.model_name = k.model_name)""",
        (NS, SVC),
    ).fetchone()[0]
    assert missing == 0
    orphans = ledger.execute(
        """SELECT COUNT(*) FROM ledger_tenant_tokens t WHERE NOT EXISTS (
             SELECT 1 FROM ledger_tokens k WHERE t.hour_start = k.hour_start
             AND t.node = k.node AND t.namespace = k.namespace AND t.service = k.service
             AND t.model_name = k.model_name)"""
    ).fetchone()[0]
    assert orphans == 0


def _per_hour(db: sqlite3.Connection) -> list[tuple[float, ...]]:
    """Per (hour, node): engine prompt, generation, probe prompt, probe generation and
    the tenants' Σ prompt, Σ cached, Σ generation."""
    return db.execute(
        """SELECT k.prompt_tokens, k.generation_tokens, k.probe_prompt_tokens,
                  k.probe_generation_tokens, SUM(t.prompt_tokens),
                  SUM(t.cached_prompt_tokens), SUM(t.generation_tokens)
           FROM ledger_tokens k JOIN ledger_tenant_tokens t USING
             (hour_start, node, namespace, service, model_name)
           GROUP BY k.hour_start, k.node, k.namespace, k.service, k.model_name"""
    ).fetchall()


def test_tenant_tokens_never_exceed_the_engines_billable_tokens(
    ledger: sqlite3.Connection,
) -> None:
    hours = _per_hour(ledger)
    assert len(hours) == FEB.hours - 5
    for prompt, generation, probe_p, probe_g, t_prompt, t_cached, t_generation in hours:
        assert probe_p > 0  # the probes stay in the probe columns
        assert probe_g > 0
        assert t_prompt <= prompt - probe_p
        assert t_generation <= generation - probe_g
        assert 0 <= t_cached <= t_prompt
        # the gateway missed a few percent (callers that bypass it), never most
        assert 0.9 * (prompt - probe_p) <= t_prompt
        assert 0.9 * (generation - probe_g) <= t_generation


def test_the_gateway_missed_about_three_percent(ledger: sqlite3.Connection) -> None:
    prompt, generation, probe_p, probe_g, t_prompt, t_generation = ledger.execute(
        """SELECT (SELECT SUM(prompt_tokens) FROM ledger_tokens WHERE service = ?),
                  (SELECT SUM(generation_tokens) FROM ledger_tokens WHERE service = ?),
                  (SELECT SUM(probe_prompt_tokens) FROM ledger_tokens WHERE service = ?),
                  (SELECT SUM(probe_generation_tokens) FROM ledger_tokens WHERE service = ?),
                  (SELECT SUM(prompt_tokens) FROM ledger_tenant_tokens),
                  (SELECT SUM(generation_tokens) FROM ledger_tenant_tokens)""",
        (SVC, SVC, SVC, SVC),
    ).fetchone()
    assert 1 - t_prompt / (prompt - probe_p) == pytest.approx(0.03, abs=0.01)
    assert 1 - t_generation / (generation - probe_g) == pytest.approx(0.03, abs=0.01)


def test_tenants_are_uneven(ledger: sqlite3.Connection) -> None:
    totals = {
        r[0]: r[1:]
        for r in ledger.execute(
            """SELECT tenant, SUM(requests), SUM(prompt_tokens), SUM(cached_prompt_tokens),
                      SUM(generation_tokens) FROM ledger_tenant_tokens GROUP BY tenant"""
        )
    }
    ratio = {t: p / g for t, (_, p, _, g) in totals.items()}
    cache = {t: c / p for t, (_, p, c, _) in totals.items()}
    assert max(ratio, key=ratio.__getitem__) == "team-search"
    assert min(ratio, key=ratio.__getitem__) == "team-assistant"
    assert ratio["team-search"] > 10
    assert ratio["team-assistant"] < 1
    assert max(cache, key=cache.__getitem__) == "team-search"
    prompt = {t: v[1] for t, v in totals.items()}
    generation = {t: v[3] for t, v in totals.items()}
    assert max(prompt, key=prompt.__getitem__) == "team-search"
    assert max(generation, key=generation.__getitem__) == "team-assistant"
    assert all(v[0] > 0 for v in totals.values())


def test_tenant_traffic_follows_the_day(ledger: sqlite3.Connection) -> None:
    # team-search peaks in the European/US afternoon, team-analytics' batch jobs at night:
    # each tenant's share of the service's requests moves with the hour of day
    share: dict[str, dict[int, float]] = {}
    for tenant, hod, fraction in ledger.execute(
        """SELECT t.tenant, (t.hour_start / 3600) % 24,
                  SUM(t.requests) * 1.0 / SUM(a.requests)
           FROM ledger_tenant_tokens t JOIN (
             SELECT hour_start, node, SUM(requests) AS requests FROM ledger_tenant_tokens
             GROUP BY hour_start, node) a USING (hour_start, node)
           GROUP BY t.tenant, (t.hour_start / 3600) % 24"""
    ):
        share.setdefault(tenant, {})[hod] = fraction
    search, analytics = share["team-search"], share["team-analytics"]
    assert max(search, key=search.__getitem__) in range(11, 18)
    assert max(analytics, key=analytics.__getitem__) in (*range(22, 24), *range(6))
    assert search[14] > 1.2 * search[2]
    assert analytics[2] > 2 * analytics[14]
    # and hour to hour it is noisy, not a fixed curve
    daily = ledger.execute(
        """SELECT COUNT(DISTINCT requests) FROM ledger_tenant_tokens
           WHERE tenant = 'team-search' AND (hour_start / 3600) % 24 = 14"""
    ).fetchone()[0]
    assert daily >= 27


def test_engine_time_is_consistent_with_the_tokens(ledger: sqlite3.Connection) -> None:
    rows = ledger.execute(
        """SELECT e.prefill_seconds, e.decode_seconds, e.prefill_requests, e.decode_requests,
                  e.prefix_cache_queries, e.prefix_cache_hits, k.prompt_tokens,
                  k.generation_tokens, k.probe_prompt_tokens,
                  (SELECT SUM(requests) FROM ledger_tenant_tokens t
                   WHERE t.hour_start = e.hour_start AND t.node = e.node
                   AND t.service = e.service),
                  (SELECT SUM(cached_prompt_tokens) FROM ledger_tenant_tokens t
                   WHERE t.hour_start = e.hour_start AND t.node = e.node
                   AND t.service = e.service)
           FROM ledger_engine_time e JOIN ledger_tokens k
             USING (hour_start, node, namespace, service, model_name)"""
    ).fetchall()
    assert rows
    for prefill, decode, p_req, d_req, queries, hits, prompt, gen, probe_p, t_req, t_hit in rows:
        assert queries == prompt
        assert t_hit <= hits <= queries
        assert prefill / (queries - hits) == pytest.approx(0.0002, rel=0.25)
        assert decode / gen == pytest.approx(0.03, rel=0.25)
        assert decode > 3600  # per-request intervals overlap under batching
        assert p_req == d_req
        assert t_req + probe_p / 12 <= p_req <= 1.1 * t_req + probe_p / 12


def test_an_older_engine_left_hours_without_engine_time(ledger: sqlite3.Connection) -> None:
    without = ledger.execute(
        """SELECT k.hour_start FROM ledger_tokens k WHERE k.service = ? AND NOT EXISTS (
             SELECT 1 FROM ledger_engine_time e WHERE e.hour_start = k.hour_start
             AND e.node = k.node AND e.service = k.service)
           GROUP BY k.hour_start ORDER BY k.hour_start""",
        (SVC,),
    ).fetchall()
    day, first, hours = LEGACY_ENGINE_WINDOW
    start = int(FEB.start.timestamp()) + ((day - 1) * 24 + first) * 3600
    assert [r[0] for r in without] == [start + 3600 * i for i in range(hours)]
    # the gateway went on counting its tenants meanwhile
    counted = ledger.execute(
        "SELECT COUNT(DISTINCT hour_start) FROM ledger_tenant_tokens WHERE hour_start >= ? "
        "AND hour_start < ?",
        (start, start + 3600 * hours),
    ).fetchone()[0]
    assert counted == hours


def test_the_store_reads_agree_with_the_tables(
    ledger: sqlite3.Connection, ledger_path: Path
) -> None:
    with SqliteLedgerStore(ledger_path) as store:
        (tenants,) = store.tenant_tokens(FEB.start, FEB.end, ["service"])
        (engine,) = store.engine_time(FEB.start, FEB.end, ["service"])
        by_tenant = {r.tenant: r for r in store.tenant_tokens(FEB.start, FEB.end, ["tenant"])}
    prompt, generation, hits, decode = ledger.execute(
        """SELECT SUM(prompt_tokens), SUM(generation_tokens),
                  (SELECT SUM(prefix_cache_hits) FROM ledger_engine_time),
                  (SELECT SUM(decode_seconds) FROM ledger_engine_time)
           FROM ledger_tenant_tokens"""
    ).fetchone()
    assert tenants.service == SVC
    assert tenants.prompt_tokens == prompt
    assert tenants.generation_tokens == generation
    assert engine.service == SVC
    assert engine.prefix_cache_hits == hits
    assert engine.decode_seconds == pytest.approx(decode)
    assert sum(r.prompt_tokens for r in by_tenant.values()) == prompt


def test_two_runs_write_identical_rows(ledger: sqlite3.Connection, tmp_path: Path) -> None:
    again = _simulate(tmp_path / "again.db")
    try:
        for table, order in (
            ("ledger_tenant_tokens", "hour_start, node, tenant"),
            ("ledger_engine_time", "hour_start, node"),
            ("ledger_tokens", "hour_start, node, service"),
        ):
            assert _rows(again, table, order) == _rows(ledger, table, order), table
    finally:
        again.close()
