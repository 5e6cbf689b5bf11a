"""One fleet ledger, several clusters (issue 18, item 2): every row carries its cluster as
part of its key, so two agents of different clusters with the same node name (and even
the same GPU UUID and service) write rows that stay apart, reads group by cluster, and
migration 12 gives rows written before clusters existed the configured cluster on both
backends (the PostgreSQL rollups rebuilt with it, exact)."""

from __future__ import annotations

import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gpuledger.chargeback.attribution.claims import Claim, Owner
from gpuledger.chargeback.ledger.flusher import Ledger
from gpuledger.chargeback.ledger.model import TokenGroup, UsageGroup
from gpuledger.chargeback.ledger.spool import Spool
from gpuledger.chargeback.ledger.store import open_store
from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
from gpuledger.chargeback.ledger.store.sqlite import SqliteLedgerStore
from gpuledger.chargeback.ledger.store.sqlite_migrations import MIGRATIONS as SQLITE_V9
from gpuledger.chargeback.ledger.tables import (
    CoverageRow,
    EngineTimeRow,
    ProbeRecord,
    StorageSample,
    TenantTokenRow,
    TokenRow,
    UsageRow,
)
from gpuledger.cluster import check_cluster_name, sql_literal
from gpuledger.collectors.gpu.readings import GpuReading
from tests.support.migrations import ALL_VERSIONS
from tests.support.paths import FIXTURES

H = 1_772_323_200  # 2026-03-01T00:00:00Z
NODE = "gpu-node-01"  # both clusters have one
GPU = "GPU-0000"
CHAT = Owner("llm", "chat")


def _dt(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _agent(cluster: str, spool: Path, url: str, clock: list[float]) -> Ledger:
    """A node agent's ledger for ``cluster``: one GPU held wholly by llm/chat."""
    store = open_store(url)
    return Ledger(
        NODE,
        spool=Spool(spool, cluster=cluster),
        store=store,
        claims_for=lambda reading: [Claim(CHAT, sm_utilization_ratio=0.5)],
        wall=lambda: clock[0],
        mono=lambda: clock[0],
        cluster=cluster,
    )


def _observe(ledger: Ledger, clock: list[float], at: float) -> None:
    clock[0] = at
    ledger.observe([GpuReading(uuid=GPU, index=0, model="H100", utilization_ratio=0.5)])


def test_two_clusters_with_the_same_node_name_write_rows_apart(
    ledger_store_url: str, tmp_path: Path
) -> None:
    """East's agent holds the GPU 100 s, west's 300 s, both in hour H on a node of the same
    name: the ledger keeps 100 s for east and 300 s for west (a shared key would have kept
    only the larger running total, 300 s, and lost east's 100 s)."""
    clocks = {"east": [0.0], "west": [0.0]}
    agents = {c: _agent(c, tmp_path / f"{c}.spool", ledger_store_url, clocks[c]) for c in clocks}
    try:
        for cluster, held in (("east", 100.0), ("west", 300.0)):
            agent = agents[cluster]
            for step in range(int(held) // 10 + 1):  # every 10 s; the first is a baseline
                _observe(agent, clocks[cluster], H + 60 + 10 * step)
            assert agent.flush_once()
        store = agents["east"].store
        assert store is not None
        got = store.usage(_dt(H), _dt(H + 3600), ["cluster", "node", "service"])
        assert sorted(got, key=lambda g: str(g.cluster)) == [
            UsageGroup(100.0, 50.0, 0.0, 100.0 / 3600, node=NODE, service="chat", cluster="east"),
            UsageGroup(300.0, 150.0, 0.0, 300.0 / 3600, node=NODE, service="chat", cluster="west"),
        ]
        # grouped by node alone, the two clusters' nodes of one name add up
        (by_node,) = store.usage(_dt(H), _dt(H + 3600), ["node"])
        assert (by_node.node, by_node.allocated_gpu_seconds) == (NODE, 400.0)
        # every hour of each cluster is whole: Σ allocated = Σ observed, per cluster
        assert store.invariant_violations(_dt(H), _dt(H + 3600)) == []  # type: ignore[attr-defined]
    finally:
        for agent in agents.values():
            agent.spool.close()
            if agent.store is not None:
                agent.store.close()


def test_every_table_keeps_two_clusters_apart(ledger_store: AuditableLedgerStore) -> None:
    """The same key but the cluster, in every table: two rows each, read apart."""
    for cluster, k in (("east", 1.0), ("west", 2.0)):
        ledger_store.upsert(
            [UsageRow(H, NODE, GPU, "llm", "chat", "H100", "", 10 * k, 5 * k, 7 * k,
                      cluster=cluster)],
            [CoverageRow(H, NODE, GPU, "H100", 10 * k, cluster=cluster)],
        )  # fmt: skip
        ledger_store.upsert_tokens([TokenRow(H, NODE, "llm", "chat", "m", 100 * k, 10 * k, 0, 0,
                                             cluster=cluster)])  # fmt: skip
        ledger_store.upsert_tenant_tokens(
            [TenantTokenRow(H, NODE, "llm", "chat", "m", "team-a", k, 50 * k, 0, 5 * k,
                            cluster=cluster)]
        )  # fmt: skip
        ledger_store.upsert_engine_time(
            [EngineTimeRow(H, NODE, "llm", "chat", "m", k, k, 1, 1, 0, 0, cluster=cluster)]
        )
        ledger_store.upsert_probes(
            [ProbeRecord(H + 10.0, NODE, "http://chat", "llm", "chat", "m", True,
                         ttft_s=0.1 * k, cluster=cluster)]
        )  # fmt: skip
        ledger_store.insert_storage_samples(
            [StorageSample(H + 5.0, NODE, "db", "public", "t", int(1000 * k), cluster=cluster)]
        )
    start, end = _dt(H), _dt(H + 3600)
    usage = ledger_store.usage(start, end, ["cluster"])
    assert sorted((g.cluster, g.allocated_gpu_seconds, g.energy_joules) for g in usage) == [
        ("east", 10.0, 7.0),
        ("west", 20.0, 14.0),
    ]
    assert sorted(ledger_store.tokens(start, end, ["cluster"]), key=repr) == [
        TokenGroup(100.0, 10.0, 0.0, 0.0, cluster="east"),
        TokenGroup(200.0, 20.0, 0.0, 0.0, cluster="west"),
    ]
    tenants = ledger_store.tenant_tokens(start, end, ["cluster", "tenant"])
    assert sorted((g.cluster, g.tenant, g.prompt_tokens) for g in tenants) == [
        ("east", "team-a", 50.0),
        ("west", "team-a", 100.0),
    ]
    engine = ledger_store.engine_time(start, end, ["cluster"])
    assert sorted((g.cluster, g.prefill_seconds) for g in engine) == [
        ("east", 1.0),
        ("west", 2.0),
    ]
    assert [(p.service, p.probes) for p in ledger_store.probes(start, end)] == [("chat", 2)]
    coverage = ledger_store.coverage(start, end)
    assert sum(c.observed_seconds for c in coverage) == 30.0


# -- migration 12 ----------------------------------------------------------------------------


def _v9_sqlite(path: Path) -> None:
    """A version-9 SQLite ledger (as the release before clusters left it) with rows."""
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY,"
                     " applied_at INTEGER NOT NULL)")  # fmt: skip
        for version, statements in SQLITE_V9:
            for statement in statements:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations VALUES (?, 0)", (version,))
        conn.executemany(
            "INSERT INTO ledger_usage VALUES (?, ?, ?, 'llm', ?, 'H100', '', ?, ?, 0, 1, NULL)",
            [(H, NODE, GPU, "chat", 3600.0, 1800.0), (H, NODE, GPU, "__idle__", 0.0, 0.0),
             (H + 3600, "gpu-node-02", "GPU-1", "chat", 1200.0, 600.0)],
        )  # fmt: skip
        conn.execute(
            "INSERT INTO ledger_coverage VALUES (?, ?, ?, 'H100', 3600, 1)", (H, NODE, GPU)
        )
        conn.execute(
            "INSERT INTO ledger_tokens VALUES (?, ?, 'llm', 'chat', 'm', 100, 10, 0, 0, 1)",
            (H, NODE),
        )


def test_sqlite_migration_12_gives_existing_rows_the_configured_cluster(tmp_path: Path) -> None:
    path = tmp_path / "v9.db"
    _v9_sqlite(path)
    with SqliteLedgerStore(path) as store:
        store.migrate(default_cluster="prod-eu")
        assert store.applied_versions() == ALL_VERSIONS
        store.migrate(default_cluster="other")  # applied once: changes nothing
        start, end = _dt(H), _dt(H + 7200)
        got = store.usage(start, end, ["cluster", "node"])
        assert sorted((g.cluster, g.node, g.allocated_gpu_seconds) for g in got) == [
            ("prod-eu", NODE, 3600.0),
            ("prod-eu", "gpu-node-02", 1200.0),
        ]
        # a second cluster's agent with the same node name, GPU and service: its own row
        store.upsert([UsageRow(H, NODE, GPU, "llm", "chat", "H100", "", 60.0, 30.0, 0.0,
                               cluster="us-west")], [])  # fmt: skip
        got = store.usage(start, end, ["cluster"])
        assert sorted((g.cluster, g.allocated_gpu_seconds) for g in got) == [
            ("prod-eu", 4800.0),
            ("us-west", 60.0),
        ]
        (tokens,) = store.tokens(start, end, ["cluster"])
        assert (tokens.cluster, tokens.prompt_tokens) == ("prod-eu", 100.0)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT DISTINCT cluster FROM ledger_coverage").fetchall() == [
            ("prod-eu",)
        ]
        # the index the table had is back on the rebuilt table
        assert conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'ledger_usage'"
            " AND name NOT LIKE 'sqlite_autoindex%'"
        ).fetchall() == [("ledger_usage_node_hour_idx",)]


def test_postgres_migration_12_keeps_every_row_and_rebuilds_the_rollups(
    postgres_db_url: str,
) -> None:
    """A version-9 PostgreSQL ledger with rows in two months (written as that release did,
    rollups kept by migration 8's triggers): migration 12 with ``default_cluster`` names
    every row's cluster, the rollups carry it and are exact, a month read by cluster is
    answered from them, and a second cluster's same-named node writes rows of its own."""
    psycopg = pytest.importorskip("psycopg")
    from gpuledger.chargeback.ledger.store.postgres import PostgresLedgerStore
    from tests.support.postgres import migrate_to, write_usage_before_v9

    march, april = H, H + 31 * 86400
    rows = [
        UsageRow(march, NODE, GPU, "llm", "chat", "H100", "", 3000.0, 1500.0, 9.0),
        UsageRow(march, NODE, GPU, "", "__idle__", "H100", "", 600.0, 0.0, 1.0),
        UsageRow(april, NODE, GPU, "llm", "chat", "H100", "", 1800.0, 900.0, 4.0),
    ]
    with psycopg.connect(postgres_db_url) as conn, conn.transaction():
        migrate_to(conn, 9)
        for month in (march, april):
            conn.execute(
                "SELECT gpuledger_month_partition('ledger_usage', to_timestamp(%s))", (month,)
            )
        write_usage_before_v9(conn, rows)
        conn.execute(
            "INSERT INTO probe_results (node, endpoint, started_unix, namespace, service,"
            " model_name, ok) VALUES (%s, 'http://chat', %s, 'llm', 'chat', 'm', true)",
            (NODE, float(march + 5)),
        )
    store = PostgresLedgerStore(postgres_db_url)
    try:
        store.migrate(default_cluster="prod-eu")
        assert store.applied_versions() == ALL_VERSIONS
        with psycopg.connect(postgres_db_url) as conn:
            for table in ("ledger_usage", "ledger_usage_rollup", "ledger_usage_month_rollup",
                          "probe_results", "probe_verdict_rollup"):  # fmt: skip
                clusters = conn.execute(f"SELECT DISTINCT cluster FROM {table}").fetchall()
                assert clusters == [("prod-eu",)], table
        whole = (_dt(march), _dt(april + 30 * 86400))
        assert store.rollup_drift(*whole) == []
        store.upsert(
            [UsageRow(march, NODE, GPU, "llm", "chat", "H100", "", 120.0, 60.0, 1.0,
                      cluster="us-west")],
            [],
        )  # fmt: skip
        assert store.rollup_drift(*whole) == []
        month = (_dt(march), _dt(april))
        got = store.usage(*month, ["cluster", "service"])
        assert sorted((g.cluster, g.service, g.allocated_gpu_seconds) for g in got) == [
            ("prod-eu", "__idle__", 600.0),
            ("prod-eu", "chat", 3000.0),
            ("us-west", "chat", 120.0),
        ]
        (april_usage,) = store.usage(_dt(april), _dt(april + 3600), ["cluster"])
        assert (april_usage.cluster, april_usage.allocated_gpu_seconds) == ("prod-eu", 1800.0)
        verdicts = store.probes(*month)
        assert [(v.service, v.probes) for v in verdicts] == [("chat", 1)]
    finally:
        store.close()


# -- the spool -------------------------------------------------------------------------------


def test_an_old_spool_opens_with_its_rows_in_the_agents_cluster(tmp_path: Path) -> None:
    """A spool the previous release wrote (no cluster): opened by an agent of cluster
    ``prod-eu``, every pending row is that cluster's, none lost, and the file is rekeyed
    once (a second open changes nothing)."""
    path = tmp_path / "spool.db"
    shutil.copy(FIXTURES / "ledger-prev" / "spool.db", path)
    tables = ("spool_usage", "spool_coverage", "spool_tokens", "spool_probes")
    with sqlite3.connect(path) as conn:
        before = {
            t: conn.execute(f"SELECT count(*) FROM {t} WHERE seq > flushed_seq").fetchone()[0]
            for t in tables
        }
        every = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
    for _ in range(2):
        spool = Spool(path, cluster="prod-eu")
        usage, coverage, _seq = spool.pending()
        tokens, probes = spool.pending_tokens(), spool.pending_probes()
        spool.close()
        got = {"spool_usage": usage, "spool_coverage": coverage, "spool_tokens": tokens,
               "spool_probes": probes}  # fmt: skip
        assert {t: len(r) for t, r in got.items()} == before
        assert {r.cluster for rows in got.values() for r in rows} == {"prod-eu"}
        with sqlite3.connect(path) as conn:
            for t in tables:
                assert conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] == every[t]
                assert conn.execute(f"SELECT DISTINCT cluster FROM {t}").fetchall() == [
                    ("prod-eu",)
                ]


def test_a_ledger_resumes_only_its_own_clusters_buckets(tmp_path: Path) -> None:
    """An agent whose config's cluster changed: the buckets spooled under the old name
    are not resumed under the new one (that would count them twice, once per name); they
    stay pending with their own cluster."""
    spool = Spool(tmp_path / "s.db", cluster="west")
    spool.write([UsageRow(H, NODE, GPU, "llm", "chat", "H100", "", 50.0, 25.0, 0.0,
                          cluster="east")], [])  # fmt: skip
    ledger = Ledger(NODE, spool=spool, store=None, claims_for=lambda r: [], cluster="west",
                    wall=lambda: float(H + 100))  # fmt: skip
    ledger.start()
    try:
        assert ledger.accumulator.drain_dirty() == ([], [])
        assert ledger.accumulator.lifetime().service_seconds == {}
        (pending,), _, _ = spool.pending()
        assert pending.cluster == "east"
    finally:
        ledger.stop()
        spool.close()


# -- the name --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    ["", "-east", "east-", "a" * 64, "east west", "east'; DROP TABLE ledger_usage; --",
     "ëast", "east/1", "east\n"],
)  # fmt: skip
def test_a_hostile_or_malformed_cluster_name_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="cluster name"):
        check_cluster_name(bad)
    with pytest.raises(ValueError, match="cluster name"):
        sql_literal(bad)


def test_good_cluster_names_pass_and_quote() -> None:
    for good in ("default", "prod-eu-1", "a", "k8s.prod_2", "A" * 63):
        assert check_cluster_name(good) == good
    assert sql_literal("prod-eu") == "'prod-eu'"


def test_the_invariant_is_checked_per_cluster(ledger_store: AuditableLedgerStore) -> None:
    """East's node lost 100 s (allocated < observed), west's node of the same name counted
    100 s twice: summed per node name they balance (300 = 300), per cluster both are
    reported."""
    from gpuledger.chargeback.ledger.model import InvariantViolation

    for cluster, alloc, observed in (("east", 100.0, 200.0), ("west", 200.0, 100.0)):
        ledger_store.upsert(
            [UsageRow(H, NODE, GPU, "llm", "chat", "H100", "", alloc, 0.0, 0.0,
                      cluster=cluster)],
            [CoverageRow(H, NODE, GPU, "H100", observed, cluster=cluster)],
        )  # fmt: skip
    got = ledger_store.invariant_violations(_dt(H), _dt(H + 3600))
    hour = "2026-03-01T00:00:00Z"
    assert got == [
        InvariantViolation(hour, NODE, 100.0, 200.0, cluster="east"),
        InvariantViolation(hour, NODE, 200.0, 100.0, cluster="west"),
    ]


def test_sqlite_migration_12_keeps_a_column_another_migration_added(tmp_path: Path) -> None:
    """Migrations 10 and 11 were written beside 12: one that appends a column to a table
    before 12 runs must find it, and its values, after the rebuild."""
    path = tmp_path / "v9.db"
    _v9_sqlite(path)
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE ledger_usage ADD COLUMN cost_center TEXT NOT NULL DEFAULT ''")
        conn.execute("UPDATE ledger_usage SET cost_center = 'ml-platform' WHERE service = 'chat'")
        conn.execute("CREATE INDEX ledger_usage_cc_idx ON ledger_usage (cost_center)")
    with SqliteLedgerStore(path) as store:
        store.migrate(default_cluster="prod-eu")
    with sqlite3.connect(path) as conn:
        names = [r[1] for r in conn.execute("PRAGMA table_info(ledger_usage)")]
        assert names[-2:] == ["cost_center", "cluster"]
        assert sorted(conn.execute(
            "SELECT service, cost_center, cluster FROM ledger_usage").fetchall()) == [
            ("__idle__", "", "prod-eu"), ("chat", "ml-platform", "prod-eu"),
            ("chat", "ml-platform", "prod-eu"),
        ]  # fmt: skip
        indexes = {r[1] for r in conn.execute("PRAGMA index_list(ledger_usage)")}
        assert {"ledger_usage_cc_idx", "ledger_usage_node_hour_idx"} <= indexes
