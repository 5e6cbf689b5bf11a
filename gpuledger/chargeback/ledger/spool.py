"""The node-local spool: every bucket's running total, on disk, until the store has it.

Written every cycle (one SQLite transaction in WAL mode), so an agent killed with SIGKILL
loses at most the cycle in flight, and a central database that is down for an hour only
makes the spool's pending count grow. Each write stamps the row with a fresh sequence
number; the flusher sends rows whose sequence is newer than what the store confirmed and,
after the store committed them, records that sequence as flushed. A row rewritten while a
flush was under way keeps its newer sequence and is sent again next time -- as a running
total, so sending it twice is harmless.
"""

# Every statement below is fixed text built from constant column lists; values always
# travel as parameters, so S608 (string-built SQL) does not apply:
# ruff: noqa: S608

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from gpuledger.chargeback.ledger.model import (
    CoverageRow,
    ProbeRecord,
    StorageSample,
    TokenRow,
    UsageRow,
)
from gpuledger.chargeback.ledger.tokens import Baseline

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
CREATE TABLE IF NOT EXISTS spool_tokens (
    hour_start INTEGER NOT NULL, node TEXT NOT NULL, namespace TEXT NOT NULL,
    service TEXT NOT NULL, model_name TEXT NOT NULL,
    prompt_tokens REAL NOT NULL, generation_tokens REAL NOT NULL,
    probe_prompt_tokens REAL NOT NULL, probe_generation_tokens REAL NOT NULL,
    seq INTEGER NOT NULL, flushed_seq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hour_start, node, namespace, service, model_name)
);
CREATE TABLE IF NOT EXISTS spool_token_baselines (
    series TEXT PRIMARY KEY, prompt REAL NOT NULL, generation REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS spool_probes (
    node TEXT NOT NULL, endpoint TEXT NOT NULL, started_unix REAL NOT NULL,
    namespace TEXT NOT NULL, service TEXT NOT NULL, model_name TEXT NOT NULL,
    ok INTEGER NOT NULL, reason TEXT, ttft_s REAL, tpot_s REAL, e2e_s REAL,
    output_tokens_per_s REAL, prompt_tokens INTEGER, completion_tokens INTEGER,
    tokens_counted INTEGER, ttft_histogram_moved INTEGER, ttft_agrees INTEGER,
    seq INTEGER NOT NULL, flushed_seq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (node, endpoint, started_unix)
);
CREATE TABLE IF NOT EXISTS spool_storage_samples (
    node TEXT NOT NULL, database TEXT NOT NULL, schema TEXT NOT NULL, tbl TEXT NOT NULL,
    ts_unix REAL NOT NULL, bytes INTEGER NOT NULL,
    seq INTEGER NOT NULL, flushed_seq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (node, database, schema, tbl, ts_unix)
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
_TOKENS_SELECT_LIST = (
    "hour_start, node, namespace, service, model_name, prompt_tokens, generation_tokens, "
    "probe_prompt_tokens, probe_generation_tokens"
)
_UPSERT_TOKENS = (
    "INSERT INTO spool_tokens (hour_start, node, namespace, service, model_name, "
    "prompt_tokens, generation_tokens, probe_prompt_tokens, probe_generation_tokens, seq) "
    "VALUES (?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT (hour_start, node, namespace, service, model_name) DO UPDATE SET "
    "prompt_tokens=excluded.prompt_tokens, generation_tokens=excluded.generation_tokens, "
    "probe_prompt_tokens=excluded.probe_prompt_tokens, "
    "probe_generation_tokens=excluded.probe_generation_tokens, seq=excluded.seq"
)
_UPSERT_BASELINE = (
    "INSERT INTO spool_token_baselines (series, prompt, generation) VALUES (?,?,?) "
    "ON CONFLICT (series) DO UPDATE SET prompt=excluded.prompt, generation=excluded.generation"
)
_PROBE_COLS = (
    "started_unix, node, endpoint, namespace, service, model_name, ok, reason, ttft_s, "
    "tpot_s, e2e_s, output_tokens_per_s, prompt_tokens, completion_tokens, tokens_counted, "
    "ttft_histogram_moved, ttft_agrees"
)
_UPSERT_PROBE = (
    "INSERT INTO spool_probes (started_unix, node, endpoint, namespace, service, model_name, "
    "ok, reason, ttft_s, tpot_s, e2e_s, output_tokens_per_s, prompt_tokens, completion_tokens, "
    "tokens_counted, ttft_histogram_moved, ttft_agrees, seq) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT (node, endpoint, started_unix) DO UPDATE SET "
    "ok=excluded.ok, reason=excluded.reason, ttft_s=excluded.ttft_s, tpot_s=excluded.tpot_s, "
    "e2e_s=excluded.e2e_s, output_tokens_per_s=excluded.output_tokens_per_s, "
    "prompt_tokens=excluded.prompt_tokens, completion_tokens=excluded.completion_tokens, "
    "tokens_counted=excluded.tokens_counted, "
    "ttft_histogram_moved=excluded.ttft_histogram_moved, ttft_agrees=excluded.ttft_agrees, "
    "seq=excluded.seq"
)
_PENDING_TOKENS = (
    "SELECT " + _TOKENS_SELECT_LIST + " FROM spool_tokens WHERE seq > flushed_seq LIMIT ?"
)
_PENDING_PROBES = "SELECT " + _PROBE_COLS + " FROM spool_probes WHERE seq > flushed_seq LIMIT ?"
_LOAD_TOKENS = "SELECT " + _TOKENS_SELECT_LIST + " FROM spool_tokens WHERE hour_start >= ?"

_NEXT_SEQ = "UPDATE spool_meta SET v = v + 1 WHERE k = 'seq' RETURNING v"
_CURRENT_SEQ = "SELECT v FROM spool_meta WHERE k = 'seq'"


class Spool:
    def __init__(self, path: Path | str) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.closed = False
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: safe against process death
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under the lock: committed whole or rolled back whole."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def write(self, usage: Sequence[UsageRow], coverage: Sequence[CoverageRow]) -> None:
        if not usage and not coverage:
            return
        with self._transaction() as db:
            (seq,) = db.execute(_NEXT_SEQ).fetchone()
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

    def pending(self, limit: int = 50_000) -> tuple[list[UsageRow], list[CoverageRow], int]:
        """Rows the store has not confirmed, and the sequence they were read at."""
        with self._lock:
            (seq,) = self._db.execute(_CURRENT_SEQ).fetchone()
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
        with self._transaction() as db:
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

    # --- tokens and probes ---------------------------------------------------------------
    def write_tokens(self, rows: Sequence[TokenRow], baselines: dict[str, Baseline]) -> None:
        """Token running totals and the counter baselines they were computed from, in one
        transaction, so a restart never re-counts (or skips) a delta."""
        if not rows and not baselines:
            return
        with self._transaction() as db:
            (seq,) = db.execute(_NEXT_SEQ).fetchone()
            db.executemany(
                _UPSERT_TOKENS,
                [(*r.key, r.prompt_tokens, r.generation_tokens, r.probe_prompt_tokens,
                  r.probe_generation_tokens, seq) for r in rows],
            )  # fmt: skip
            db.executemany(
                _UPSERT_BASELINE,
                [(k, b.prompt, b.generation) for k, b in baselines.items()],
            )

    def write_probe(self, record: ProbeRecord) -> None:
        with self._transaction() as db:
            (seq,) = db.execute(_NEXT_SEQ).fetchone()
            db.execute(_UPSERT_PROBE, (*_probe_tuple(record), seq))

    def pending_tokens(self, limit: int = 50_000) -> list[TokenRow]:
        with self._lock:
            return [TokenRow(*r) for r in self._db.execute(_PENDING_TOKENS, (limit,))]

    def pending_probes(self, limit: int = 50_000) -> list[ProbeRecord]:
        with self._lock:
            rows = list(self._db.execute(_PENDING_PROBES, (limit,)))
        return [_probe_record(r) for r in rows]

    def mark_tokens_flushed(self, rows: Sequence[TokenRow], seq: int) -> None:
        with self._lock:
            self._db.executemany(
                "UPDATE spool_tokens SET flushed_seq = seq WHERE seq <= ? AND hour_start = ? "
                "AND node = ? AND namespace = ? AND service = ? AND model_name = ?",
                [(seq, *r.key) for r in rows],
            )

    def mark_probes_flushed(self, rows: Sequence[ProbeRecord], seq: int) -> None:
        with self._lock:
            self._db.executemany(
                "UPDATE spool_probes SET flushed_seq = seq WHERE seq <= ? AND node = ? "
                "AND endpoint = ? AND started_unix = ?",
                [(seq, *r.key) for r in rows],
            )

    # --- storage samples -----------------------------------------------------------------
    def write_storage_samples(self, rows: Sequence[StorageSample]) -> None:
        if not rows:
            return
        with self._transaction() as db:
            (seq,) = db.execute(_NEXT_SEQ).fetchone()
            db.executemany(
                "INSERT INTO spool_storage_samples (node, database, schema, tbl, ts_unix, "
                "bytes, seq) VALUES (?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                [(r.node, r.database, r.schema, r.table, r.ts_unix, r.bytes, seq) for r in rows],
            )

    def storage_sums(
        self, node: str, *, since: float, origin: float
    ) -> list[tuple[str, str, str, int, float, float, float, float]]:
        """Per (database, schema, table) since ``since``: n, Σx, Σy, Σx², Σxy with
        x = ts − origin (seconds) and y = bytes -- what a least-squares slope needs."""
        with self._lock:
            rows = self._db.execute(
                "SELECT database, schema, tbl, count(*), total(ts_unix - ?), total(bytes), "
                "total((ts_unix - ?) * (ts_unix - ?)), total((ts_unix - ?) * bytes) "
                "FROM spool_storage_samples WHERE node = ? AND ts_unix >= ? "
                "GROUP BY database, schema, tbl",
                (origin, origin, origin, origin, node, since),
            ).fetchall()
        return [
            (str(d), str(s), str(t), int(n), float(sx), float(sy), float(sxx), float(sxy))
            for d, s, t, n, sx, sy, sxx, sxy in rows
        ]

    def pending_storage_samples(self, limit: int = 50_000) -> list[StorageSample]:
        with self._lock:
            rows = self._db.execute(
                "SELECT ts_unix, node, database, schema, tbl, bytes FROM spool_storage_samples "
                "WHERE seq > flushed_seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [StorageSample(float(t), n, d, s, tb, int(b)) for t, n, d, s, tb, b in rows]

    def mark_storage_flushed(self, rows: Sequence[StorageSample], seq: int) -> None:
        with self._lock:
            self._db.executemany(
                "UPDATE spool_storage_samples SET flushed_seq = seq WHERE seq <= ? AND node = ? "
                "AND database = ? AND schema = ? AND tbl = ? AND ts_unix = ?",
                [(seq, *r.key) for r in rows],
            )

    def prune_storage_samples(self, before_unix: float) -> None:
        """Flushed samples older than the growth window are no longer needed here."""
        with self._lock:
            self._db.execute(
                "DELETE FROM spool_storage_samples WHERE ts_unix < ? AND seq <= flushed_seq",
                (before_unix,),
            )

    def current_seq(self) -> int:
        with self._lock:
            (seq,) = self._db.execute(_CURRENT_SEQ).fetchone()
        return int(seq)

    def load_tokens(self, since_hour: int) -> tuple[list[TokenRow], dict[str, Baseline]]:
        with self._lock:
            rows = [TokenRow(*r) for r in self._db.execute(_LOAD_TOKENS, (since_hour,))]
            baselines = {
                k: Baseline(p, g)
                for k, p, g in self._db.execute(
                    "SELECT series, prompt, generation FROM spool_token_baselines"
                )
            }
        return rows, baselines

    def pending_extra_count(self) -> int:
        with self._lock:
            (t,) = self._db.execute(
                "SELECT count(*) FROM spool_tokens WHERE seq > flushed_seq"
            ).fetchone()
            (p,) = self._db.execute(
                "SELECT count(*) FROM spool_probes WHERE seq > flushed_seq"
            ).fetchone()
            (g,) = self._db.execute(
                "SELECT count(*) FROM spool_storage_samples WHERE seq > flushed_seq"
            ).fetchone()
        return int(t) + int(p) + int(g)

    def prune_extra(self, before_hour: int) -> None:
        with self._lock:
            self._db.execute(
                "DELETE FROM spool_tokens WHERE hour_start < ? AND seq <= flushed_seq",
                (before_hour,),
            )
            self._db.execute(
                "DELETE FROM spool_probes WHERE started_unix < ? AND seq <= flushed_seq",
                (before_hour,),
            )

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self._db.close()


def _probe_tuple(r: ProbeRecord) -> tuple[object, ...]:
    return (
        r.started_unix, r.node, r.endpoint, r.namespace, r.service, r.model_name, r.ok,
        r.reason, r.ttft_s, r.tpot_s, r.e2e_s, r.output_tokens_per_s, r.prompt_tokens,
        r.completion_tokens, r.tokens_counted, r.ttft_histogram_moved, r.ttft_agrees,
    )  # fmt: skip


def _as_bool(v: object) -> bool | None:
    return None if v is None else bool(v)


def _probe_record(row: Sequence[object]) -> ProbeRecord:
    (started, node, endpoint, ns, svc, model, ok, reason, ttft, tpot, e2e, tps, pt, ct,
     tc, hm, ta) = row  # fmt: skip
    return ProbeRecord(
        started_unix=float(started),  # type: ignore[arg-type]
        node=str(node), endpoint=str(endpoint), namespace=str(ns), service=str(svc),
        model_name=str(model), ok=bool(ok), reason=None if reason is None else str(reason),
        ttft_s=ttft, tpot_s=tpot, e2e_s=e2e, output_tokens_per_s=tps,  # type: ignore[arg-type]
        prompt_tokens=pt, completion_tokens=ct,  # type: ignore[arg-type]
        tokens_counted=_as_bool(tc), ttft_histogram_moved=_as_bool(hm), ttft_agrees=_as_bool(ta),
    )  # fmt: skip
