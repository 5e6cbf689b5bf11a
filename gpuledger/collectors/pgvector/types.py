"""What the PostgreSQL/pgvector collector hands the agent: sizes, vectors, indexes.

Sizes are PostgreSQL's own size functions' values (bytes), never estimates of ours.
A relation the collector could not size without waiting on a lock (an ACCESS EXCLUSIVE
lock held or queued on it) is listed in ``skipped_locked`` instead of being reported with
made-up or stale numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class VectorColumn:
    name: str
    type: str  # vector | halfvec | sparsevec
    dimensions: int  # atttypmod; -1 when the column was declared without dimensions


@dataclass(frozen=True, slots=True)
class VectorIndex:
    name: str
    method: str  # hnsw | ivfflat
    bytes: int
    options: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    columns: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TableStats:
    schema: str
    table: str
    heap_bytes: int
    toast_bytes: int
    index_bytes: int
    total_bytes: int
    rows_estimate: float  # pg_class.reltuples (-1 before the first ANALYZE on PG 14+)
    dead_tuples: int | None
    vector_columns: tuple[VectorColumn, ...] = ()
    vector_indexes: tuple[VectorIndex, ...] = ()


@dataclass(frozen=True, slots=True)
class IndexBuild:
    """A CREATE INDEX / REINDEX in progress (pg_stat_progress_create_index)."""

    schema: str
    table: str
    index: str
    phase: str
    blocks_done: int
    blocks_total: int
    tuples_done: int
    tuples_total: int


@dataclass(frozen=True, slots=True)
class DatabaseStats:
    """One configured database. ``name`` is the configured label, not the DSN."""

    name: str
    up: bool
    error: str | None = None
    database_bytes: int | None = None
    capacity_bytes: int | None = None
    pgvector_installed: bool = False
    tables: tuple[TableStats, ...] = ()
    skipped_locked: tuple[str, ...] = ()  # "schema.table" of relations skipped for locks
    index_builds: tuple[IndexBuild, ...] = ()
    collected_unix: float = 0.0


@dataclass(frozen=True, slots=True)
class PgTelemetry:
    databases: tuple[DatabaseStats, ...] = ()
