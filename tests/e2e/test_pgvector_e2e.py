"""pgvector through the whole agent: sizes, growth and days until full on a real database."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.harness import AgentProcess
from tests.support.standins import wait_until

pytestmark = pytest.mark.e2e

PASSWORD = "pg-e2e-n0t-for-logs"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def find(text: str, name: str, **want: str) -> float | None:
    hits = [
        v for (n, labels), v in samples(text).items() if n == name and set(want.items()) <= labels
    ]
    assert len(hits) <= 1, hits
    return hits[0] if hits else None


def test_agent_reports_sizes_and_growth(tmp_path: Path, postgres_db_url: str) -> None:
    with psycopg.connect(postgres_db_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute("CREATE TABLE docs (id bigserial PRIMARY KEY, embedding vector(64))")
        conn.execute(
            "CREATE INDEX docs_hnsw ON docs USING hnsw (embedding vector_l2_ops) WITH (m = 8)"
        )
    password_file = tmp_path / "pg.pass"
    password_file.write_text(PASSWORD, encoding="utf-8")  # trust auth ignores it
    config: dict[str, Any] = {
        "nvml": {"enabled": False},
        "ledger": {"flush_interval_seconds": 0.5},
        "pgvector": {
            "enabled": True,
            "interval_seconds": 1.0,
            "growth_window_days": 1,
            "growth_min_samples": 3,
            "databases": [
                {
                    "name": "rag",
                    "dsn": postgres_db_url,
                    "password_file": str(password_file),
                    "capacity_bytes": 10**12,
                },
            ],
        },
    }

    def grow(rows: int) -> None:
        with psycopg.connect(postgres_db_url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO docs (embedding) SELECT array_fill(random()::real, ARRAY[64])::vector "
                "FROM generate_series(1, %s)",
                (rows,),
            )

    with AgentProcess(tmp_path, config) as agent:
        t = {"database": "rag", "schema": "public", "table": "docs"}
        wait_until(
            lambda: find(agent.metrics(), "gpuledger_pg_table_bytes", **t, kind="total"), timeout=30
        )
        for _ in range(4):  # the table grows between collections
            grow(2000)
            time.sleep(1.2)

        def with_days_until_full() -> str | None:
            current = agent.metrics()
            return (
                current if find(current, "gpuledger_pg_days_until_full", database="rag") else None
            )

        text = wait_until(with_days_until_full, timeout=30)
        growth = find(text, "gpuledger_pg_growth_bytes_per_day", **t)
        assert growth is not None
        assert growth > 0
        db_growth = find(
            text, "gpuledger_pg_growth_bytes_per_day", database="rag", schema="", table=""
        )
        assert db_growth is not None
        assert db_growth > 0
        left = find(text, "gpuledger_pg_days_until_full", database="rag")
        db_bytes = find(text, "gpuledger_pg_database_bytes", database="rag")
        assert left is not None
        assert db_bytes is not None
        assert left == pytest.approx((10**12 - db_bytes) / db_growth, rel=1e-6)
        assert find(text, "gpuledger_pgvector_column_dimensions", **t, column="embedding") == 64.0
        assert find(text, "gpuledger_pgvector_index_info", **t, index="docs_hnsw", m="8") == 1.0
        # the exported sizes are PostgreSQL's own, at the time of the collection: compare
        # once writes have stopped and a fresh collection has happened
        # (autovacuum may still add a visibility-map page after the writes: wait for a
        # collection that saw the table as it is now, up to a deadline)
        deadline = time.monotonic() + 20.0
        while True:
            time.sleep(2.5)
            text = agent.metrics()
            with psycopg.connect(postgres_db_url) as conn:
                (total,) = conn.execute("SELECT pg_total_relation_size('public.docs')").fetchone()  # type: ignore[misc]
                (index,) = conn.execute("SELECT pg_relation_size('public.docs_hnsw')").fetchone()  # type: ignore[misc]
            seen = find(text, "gpuledger_pg_table_bytes", **t, kind="total")
            if seen == float(total) or time.monotonic() > deadline:
                break
        assert find(text, "gpuledger_pg_table_bytes", **t, kind="total") == float(total)
        assert find(text, "gpuledger_pgvector_index_bytes", **t, index="docs_hnsw") == float(index)
        assert find(text, "gpuledger_collector_up", collector="pgvector") == 1.0
        assert PASSWORD not in text
    assert PASSWORD not in agent.log()
