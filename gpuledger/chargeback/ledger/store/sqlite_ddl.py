"""The SQLite store's statements, derived from the one declaration of each ledger table
(``ledger/tables.py``): the newest CREATE TABLE and indexes, and each table's upsert. Kept
apart from the store's connection and reads, as ``postgres_sql.py`` is for PostgreSQL."""

# SQL text here is built only from declared, q()-quoted names:

from __future__ import annotations

from typing import Any

from gpuledger.chargeback.ledger.sqlite_sql import cols, column_def, insert, q
from gpuledger.chargeback.ledger.tables import (
    COST_CENTERS,
    COVERAGE,
    ENGINE_TIME,
    PROBES,
    STORAGE,
    TENANT_TOKENS,
    TOKENS,
    UPDATED_AT,
    USAGE,
    Index,
    Role,
    Table,
)


def create_statements(table: Table[Any]) -> list[str]:
    """The newest version's CREATE TABLE (and indexes) of ``table`` in the SQLite store."""
    defs = [column_def(c, c.store, with_default=True) for c in table.created()]
    if table.stamped:
        defs.append(f"{q(UPDATED_AT)} INTEGER NOT NULL")
    defs += [column_def(c, c.store, with_default=True) for c in table.added()]
    defs.append(f"PRIMARY KEY ({cols([c.store for c in table.primary_key['sqlite']])})")
    out = [f"CREATE TABLE {q(table.store)} ({', '.join(defs)}) WITHOUT ROWID"]
    out += [_create_index(table, i) for i in table.indexes if "sqlite" in i.backends]
    return out


def _create_index(table: Table[Any], index: Index) -> str:
    names = [table.by_attr[a].store for a in index.columns]
    return f"CREATE INDEX {q(index.name)} ON {q(table.store)} ({cols(names)})"


def upsert_statement(table: Table[Any]) -> str:
    """Insert ``table``'s columns (+ ``updated_at``); on a key conflict totals keep the
    larger value, peaks too (a NULL never wins: SQLite's two-argument ``max()`` would
    return it), labels (and ``updated_at``) the incoming one, verdicts the incoming one
    unless NULL. Insert-only tables ignore a conflicting row."""
    columns = (*table.names(), *((UPDATED_AT,) if table.stamped else ()))
    if table.insert_only:
        return insert(table.store, columns, (), ())
    t = q(table.store)
    sets = [f"{q(c)} = max({t}.{q(c)}, excluded.{q(c)})" for c in table.names(Role.TOTAL)]
    sets += [
        f"{q(c)} = max(coalesce({t}.{q(c)}, excluded.{q(c)}), coalesce(excluded.{q(c)}, "
        f"{t}.{q(c)}))"
        for c in table.names(Role.PEAK)
    ]
    sets += [f"{q(c)} = excluded.{q(c)}" for c in (*table.names(Role.LABEL), UPDATED_AT)]
    sets += [f"{q(c)} = coalesce(excluded.{q(c)}, {t}.{q(c)})" for c in table.names(Role.VERDICT)]
    return insert(table.store, columns, table.names(Role.KEY), sets)


UPSERT_USAGE = upsert_statement(USAGE)
UPSERT_COVERAGE = upsert_statement(COVERAGE)
UPSERT_TOKENS = upsert_statement(TOKENS)
UPSERT_PROBES = upsert_statement(PROBES)
INSERT_STORAGE = upsert_statement(STORAGE)
UPSERT_TENANT_TOKENS = upsert_statement(TENANT_TOKENS)
UPSERT_ENGINE_TIME = upsert_statement(ENGINE_TIME)
UPSERT_COST_CENTERS = upsert_statement(COST_CENTERS)
