"""The pgvector families: per database its size, capacity and skipped relations; per
table its bytes by kind, rows, dead tuples, vector columns and indexes; index builds in
progress; growth per day and days until full (from the growth the ledger's samples give)."""

from __future__ import annotations

from collections.abc import Mapping

from gpuledger import schema
from gpuledger.collectors.pgvector.growth import Growth, GrowthKey, days_until_full
from gpuledger.collectors.pgvector.types import IndexBuild, PgTelemetry
from gpuledger.collectors.source import Readings
from gpuledger.collectors.textformat.render import FamiliesBuilder

PGVECTOR = "pgvector"


class GrowthState:
    """The growth the last pgvector update computed (empty without a ledger to keep the
    samples): written by the ledger hook, read by every render."""

    def __init__(self, latest: Mapping[GrowthKey, Growth] | None = None) -> None:
        self.latest: Mapping[GrowthKey, Growth] = latest or {}


def _build_progress(b: IndexBuild) -> float | None:
    if b.blocks_total > 0:
        return min(1.0, b.blocks_done / b.blocks_total)
    if b.tuples_total > 0:
        return min(1.0, b.tuples_done / b.tuples_total)
    return None


def add_pgvector(
    f: FamiliesBuilder, telemetry: PgTelemetry, growth: Mapping[GrowthKey, Growth]
) -> None:
    for db in telemetry.databases:
        f.add(schema.PG_DATABASE_UP, (db.name,), 1.0 if db.up else 0.0)
        if not db.up:
            continue
        if db.database_bytes is not None:
            f.add(schema.PG_DATABASE_BYTES, (db.name,), float(db.database_bytes))
        if db.capacity_bytes is not None:
            f.add(schema.PG_CAPACITY, (db.name,), float(db.capacity_bytes))
        f.add(schema.PG_SKIPPED_RELATIONS, (db.name,), float(len(db.skipped_locked)))
        for t in db.tables:
            labels = (db.name, t.schema, t.table)
            for kind, value in (
                ("heap", t.heap_bytes),
                ("toast", t.toast_bytes),
                ("index", t.index_bytes),
                ("total", t.total_bytes),
            ):
                f.add(schema.PG_TABLE_BYTES, (*labels, kind), float(value))
            f.add(schema.PG_TABLE_ROWS, labels, t.rows_estimate)
            if t.dead_tuples is not None:
                f.add(schema.PG_DEAD_TUPLES, labels, float(t.dead_tuples))
            for col in t.vector_columns:
                f.add(schema.PGVECTOR_DIMENSIONS, (*labels, col.name, col.type), col.dimensions)
            for idx in t.vector_indexes:
                f.add(schema.PGVECTOR_INDEX_BYTES, (*labels, idx.name, idx.method), idx.bytes)
                opts = idx.options
                f.add(
                    schema.PGVECTOR_INDEX_INFO,
                    (*labels, idx.name, idx.method, opts.get("m", ""),
                     opts.get("ef_construction", ""), opts.get("lists", "")),
                    1.0,
                )  # fmt: skip
            grown = growth.get((db.name, t.schema, t.table))
            if grown is not None:
                f.add(schema.PG_GROWTH, labels, grown.bytes_per_day)
        for b in db.index_builds:
            progress = _build_progress(b)
            if progress is not None:
                build_labels = (db.name, b.schema, b.table, b.index, b.phase)
                f.add(schema.PG_INDEX_BUILD_PROGRESS, build_labels, progress)
        whole = growth.get((db.name, "", ""))
        if whole is not None:
            f.add(schema.PG_GROWTH, (db.name, "", ""), whole.bytes_per_day)
            left = days_until_full(db.capacity_bytes, db.database_bytes, whole.bytes_per_day)
            if left is not None:
                f.add(schema.PG_DAYS_UNTIL_FULL, (db.name,), left)


def export_pgvector(f: FamiliesBuilder, snap: Readings, growth: GrowthState | None) -> None:
    telemetry = snap.reading(PGVECTOR, PgTelemetry)
    if telemetry is not None:
        add_pgvector(f, telemetry, growth.latest if growth is not None else {})
