"""The node-local spool: every bucket's running total, on disk, until the store has it.

Written every cycle (one SQLite transaction in WAL mode), so an agent killed with SIGKILL
loses at most the cycle in flight, and a central database that is down for an hour only
makes the spool's pending count grow. Each write stamps the row with a fresh sequence
number; the flusher sends rows whose sequence is newer than what the store confirmed and,
after the store committed them, records that sequence as flushed. A row rewritten while a
flush was under way keeps its newer sequence and is sent again next time -- as a running
total, so sending it twice is harmless.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from gpuledger.chargeback.model import CoverageRow, UsageRow

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool_usage (
    hour_start INTEGER NOT NULL, node TEXT NOT NULL, gpu_uuid TEXT NOT NULL,
    namespace TEXT NOT NULL, service TEXT NOT NULL,
    gpu_model TEXT NOT NULL, mig_profile TEXT NOT NULL,
    allocated_gpu_seconds REAL NOT NULL, busy_gpu_seconds REAL NOT NULL,
    energy_joules REAL NOT NULL,
    seq INTEGER NOT NULL, flushed_seq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hour_start, node, gpu_uuid, namespace, service)
);
CREATE TABLE IF NOT EXISTS spool_coverage (
    hour_start INTEGER NOT NULL, node TEXT NOT NULL, gpu_uuid TEXT NOT NULL,
    gpu_model TEXT NOT NULL, observed_seconds REAL NOT NULL,
    seq INTEGER NOT NULL, flushed_seq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hour_start, node, gpu_uuid)
);
CREATE TABLE IF NOT EXISTS spool_meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
INSERT OR IGNORE INTO spool_meta (k, v) VALUES ('seq', 0);
"""

# Fixed statements: no identifier or value is ever interpolated (values are parameters).
_USAGE_COLS = (
    "hour_start, node, gpu_uuid, namespace, service, gpu_model, mig_profile, "
    "allocated_gpu_seconds, busy_gpu_seconds, energy_joules"
)
_UPSERT_USAGE = (
    "INSERT INTO spool_usage (hour_start, node, gpu_uuid, namespace, service, gpu_model, "
    "mig_profile, allocated_gpu_seconds, busy_gpu_seconds, energy_joules, seq) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT (hour_start, node, gpu_uuid, namespace, service) DO UPDATE SET "
    "gpu_model=excluded.gpu_model, mig_profile=excluded.mig_profile, "
    "allocated_gpu_seconds=excluded.allocated_gpu_seconds, "
    "busy_gpu_seconds=excluded.busy_gpu_seconds, "
    "energy_joules=excluded.energy_joules, seq=excluded.seq"
)
_UPSERT_COVERAGE = (
    "INSERT INTO spool_coverage (hour_start, node, gpu_uuid, gpu_model, observed_seconds, seq) "
    "VALUES (?,?,?,?,?,?) ON CONFLICT (hour_start, node, gpu_uuid) DO UPDATE SET "
    "gpu_model=excluded.gpu_model, observed_seconds=excluded.observed_seconds, seq=excluded.seq"
)
_PENDING_USAGE = (
    "SELECT hour_start, node, gpu_uuid, namespace, service, gpu_model, mig_profile, "
    "allocated_gpu_seconds, busy_gpu_seconds, energy_joules "
    "FROM spool_usage WHERE seq > flushed_seq LIMIT ?"
)
_PENDING_COVERAGE = (
    "SELECT hour_start, node, gpu_uuid, gpu_model, observed_seconds "
    "FROM spool_coverage WHERE seq > flushed_seq LIMIT ?"
)
_LOAD_USAGE = (
    "SELECT hour_start, node, gpu_uuid, namespace, service, gpu_model, mig_profile, "
    "allocated_gpu_seconds, busy_gpu_seconds, energy_joules "
    "FROM spool_usage WHERE hour_start >= ?"
)
_LOAD_COVERAGE = (
    "SELECT hour_start, node, gpu_uuid, gpu_model, observed_seconds "
    "FROM spool_coverage WHERE hour_start >= ?"
)
_NEXT_SEQ = "UPDATE spool_meta SET v = v + 1 WHERE k = 'seq' RETURNING v"


class Spool:
    def __init__(self, path: Path | str) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: safe against process death
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    def write(self, usage: Sequence[UsageRow], coverage: Sequence[CoverageRow]) -> None:
        if not usage and not coverage:
            return
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                (seq,) = db.execute(
                    "UPDATE spool_meta SET v = v + 1 WHERE k = 'seq' RETURNING v"
                ).fetchone()
                db.executemany(
                    _UPSERT_USAGE,
                    [
                        (u.hour_start, u.node, u.gpu_uuid, u.namespace, u.service, u.gpu_model,
                         u.mig_profile, u.allocated_gpu_seconds, u.busy_gpu_seconds,
                         u.energy_joules, seq)
                        for u in usage
                    ],
                )  # fmt: skip
                db.executemany(
                    _UPSERT_COVERAGE,
                    [
                        (c.hour_start, c.node, c.gpu_uuid, c.gpu_model, c.observed_seconds, seq)
                        for c in coverage
                    ],
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def pending(self, limit: int = 50_000) -> tuple[list[UsageRow], list[CoverageRow], int]:
        """Rows the store has not confirmed, and the sequence they were read at."""
        with self._lock:
            (seq,) = self._db.execute("SELECT v FROM spool_meta WHERE k = 'seq'").fetchone()
            usage = [
                UsageRow(*row)
                for row in self._db.execute(
                    _PENDING_USAGE,
                    (limit,),
                )
            ]
            coverage = [
                CoverageRow(*row)
                for row in self._db.execute(
                    _PENDING_COVERAGE,
                    (limit,),
                )
            ]
        return usage, coverage, int(seq)

    def mark_flushed(
        self, usage: Sequence[UsageRow], coverage: Sequence[CoverageRow], seq: int
    ) -> None:
        """Record that the store holds these rows as of sequence ``seq``: rows rewritten
        after ``seq`` stay pending."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    "UPDATE spool_usage SET flushed_seq = seq WHERE seq <= ? AND hour_start = ? "
                    "AND node = ? AND gpu_uuid = ? AND namespace = ? AND service = ?",
                    [(seq, *u.key) for u in usage],
                )
                db.executemany(
                    "UPDATE spool_coverage SET flushed_seq = seq WHERE seq <= ? AND hour_start = ? "
                    "AND node = ? AND gpu_uuid = ?",
                    [(seq, *c.key) for c in coverage],
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def pending_count(self) -> int:
        with self._lock:
            (u,) = self._db.execute(
                "SELECT count(*) FROM spool_usage WHERE seq > flushed_seq"
            ).fetchone()
            (c,) = self._db.execute(
                "SELECT count(*) FROM spool_coverage WHERE seq > flushed_seq"
            ).fetchone()
        return int(u) + int(c)

    def load(self, since_hour: int) -> tuple[list[UsageRow], list[CoverageRow]]:
        """Every row from ``since_hour`` on: the running totals a restart resumes from."""
        with self._lock:
            usage = [UsageRow(*r) for r in self._db.execute(_LOAD_USAGE, (since_hour,))]
            coverage = [
                CoverageRow(*r)
                for r in self._db.execute(
                    _LOAD_COVERAGE,
                    (since_hour,),
                )
            ]
        return usage, coverage

    def prune(self, before_hour: int) -> int:
        """Delete flushed rows of hours before ``before_hour``; unflushed rows are kept."""
        with self._lock:
            a = self._db.execute(
                "DELETE FROM spool_usage WHERE hour_start < ? AND seq <= flushed_seq",
                (before_hour,),
            ).rowcount
            b = self._db.execute(
                "DELETE FROM spool_coverage WHERE hour_start < ? AND seq <= flushed_seq",
                (before_hour,),
            ).rowcount
        return int(a) + int(b)

    def close(self) -> None:
        with self._lock:
            self._db.close()
