"""The pgvector source: each configured PostgreSQL database's catalog, on its own (slow)
schedule; its sizes go to the ledger's spool, from which growth is computed."""

from __future__ import annotations

import time

from gpuledger.collectors.base import Schedule
from gpuledger.collectors.pgvector.config import PgvectorConfig
from gpuledger.collectors.pgvector.export import PGVECTOR, GrowthState, export_pgvector
from gpuledger.collectors.pgvector.growth import DAY, GrowthTracker
from gpuledger.collectors.pgvector.types import PgTelemetry
from gpuledger.collectors.source import BuildContext, Built, LedgerSink, Readings, Source


class PgvectorLive(GrowthState):
    """The growth state plus the tracker that keeps the samples (None without a ledger)."""

    def __init__(self, tracker: GrowthTracker | None) -> None:
        super().__init__()
        self.tracker = tracker


def _build(cfg: PgvectorConfig, ctx: BuildContext) -> Built[PgvectorLive]:
    if not cfg.enabled:
        return Built()
    from gpuledger.collectors.pgvector.catalog import PgvectorCollector

    tracker = None
    if ctx.storage_growth is not None:  # growth needs the ledger's spool for its samples
        tracker = ctx.storage_growth(cfg.growth_window_days * DAY, cfg.growth_min_samples)
    # a database that hangs is given up on by the collector itself; the runner's
    # timeout is the backstop: connect + a few statement timeouts
    worst = max(
        db.connect_timeout_s + 3 * db.statement_timeout_ms / 1000 + 5 for db in cfg.databases
    )
    schedule = Schedule(cfg.interval_seconds, worst, PgTelemetry)
    return Built(
        collectors=((PgvectorCollector(cfg.databases), schedule),), live=PgvectorLive(tracker)
    )


def record_sizes(_ledger: LedgerSink, snap: Readings, live: PgvectorLive | None) -> None:
    """Each collection's sizes into the ledger's samples, and the growth over them."""
    if live is None or live.tracker is None:
        return
    telemetry = snap.reading(PGVECTOR, PgTelemetry)
    if telemetry is not None:
        live.tracker.record(telemetry)
        live.latest = live.tracker.compute(time.time())


PGVECTOR_SOURCE: Source[PgvectorConfig, PgvectorLive] = Source(
    name=PGVECTOR,
    reading=PgTelemetry,
    config_key=PGVECTOR,
    config_model=PgvectorConfig,
    build=_build,
    export=export_pgvector,
    ledger=record_sizes,
)
