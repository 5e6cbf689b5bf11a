"""The ledger stores: one suite, run against SQLite (a temp file) and a real PostgreSQL.

Every expected figure below is computed by hand from the fixture rows in ``_dataset``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import TypeVar

import pytest

from gpuledger.chargeback.attribution.claims import IDLE
from gpuledger.chargeback.ledger.model import (
    ProbeVerdictGroup,
    StoreError,
    TokenGroup,
    UsageGroup,
)
from gpuledger.chargeback.ledger.store import open_store
from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
from gpuledger.chargeback.ledger.tables import CoverageRow, ProbeRecord, TokenRow, UsageRow
from gpuledger.redact import redact_dsn, safe_url, scrub
from tests.support.migrations import ALL_VERSIONS
from tests.support.postgres import EmbeddedPostgres

R = TypeVar("R")

T0 = datetime(2025, 3, 1, tzinfo=UTC)
H0 = int(T0.timestamp())
H1, H2, H3 = H0 + 3600, H0 + 7200, H0 + 10800


def _dt(hour: int) -> datetime:
    return datetime.fromtimestamp(hour, UTC)


def _u(
    hour: int,
    node: str,
    gpu: str,
    ns: str,
    svc: str,
    alloc: float,
    busy: float,
    joules: float,
    *,
    model: str = "",
    mig: str = "",
) -> UsageRow:
    model = model or {"g1": "H100", "g2": "A100", "g3": "H100"}.get(gpu, "H100")
    return UsageRow(hour, node, gpu, ns, svc, model, mig, alloc, busy, joules)


def _c(hour: int, node: str, gpu: str, observed: float = 3600.0) -> CoverageRow:
    return CoverageRow(hour, node, gpu, {"g2": "A100"}.get(gpu, "H100"), observed)


def _dataset() -> tuple[list[UsageRow], list[CoverageRow]]:
    """n1 holds g1 (H100) and g2 (A100), n2 holds g3 (H100). Hours H0, H1, H2."""
    usage = [
        # H0
        _u(H0, "n1", "g1", "team-a", "chat", 2400, 1800, 1.0e6),
        _u(H0, "n1", "g1", "", IDLE, 1200, 0, 2.0e5),
        _u(H0, "n1", "g2", "team-b", "embed", 3600, 900, 5.0e5),
        _u(H0, "n2", "g3", "team-a", "chat", 3600, 3000, 1.2e6),
        # H1
        _u(H1, "n1", "g1", "team-a", "chat", 3600, 2000, 1.1e6),
        _u(H1, "n1", "g2", "team-b", "embed", 1800, 600, 3.0e5),
        _u(H1, "n1", "g2", "", IDLE, 1800, 0, 1.0e5),
        _u(H1, "n2", "g3", "team-b", "embed", 3600, 100, 4.0e5),
        # H2 (outside [H0, H2))
        _u(H2, "n1", "g1", "team-a", "chat", 3600, 3600, 9.0e5),
    ]
    coverage = [
        _c(h, n, g) for h in (H0, H1) for n, g in (("n1", "g1"), ("n1", "g2"), ("n2", "g3"))
    ]
    coverage.append(_c(H2, "n1", "g1"))
    return usage, coverage


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def loaded(ledger_store: AuditableLedgerStore) -> AuditableLedgerStore:
    usage, coverage = _dataset()
    ledger_store.upsert(usage, coverage)
    return ledger_store


def _by(rows: Sequence[R], *keys: str) -> dict[tuple[object, ...], R]:
    return {tuple(getattr(r, k) for k in keys): r for r in rows}


def _totals(row: UsageGroup) -> tuple[float, float, float]:
    return (row.allocated_gpu_seconds, row.busy_gpu_seconds, row.energy_joules)


# -- schema -------------------------------------------------------------------------------


def test_migrations_are_idempotent_and_recorded(ledger_store: AuditableLedgerStore) -> None:
    ledger_store.migrate()  # the fixture already ran it once
    ledger_store.migrate()
    assert ledger_store.applied_versions() == ALL_VERSIONS
    ledger_store.upsert([_u(H0, "n1", "g1", "a", "b", 1, 1, 1)], [])
    assert ledger_store.usage(_dt(H0), _dt(H1), ["service"])[0].allocated_gpu_seconds == 1.0


def test_concurrent_migrations_from_two_agents(ledger_store_url: str) -> None:
    stores = [open_store(ledger_store_url) for _ in range(2)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(s: AuditableLedgerStore) -> None:
        barrier.wait()
        try:
            s.migrate()
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        assert errors == []
        assert stores[0].applied_versions() == ALL_VERSIONS
    finally:
        for s in stores:
            s.close()


# -- upsert semantics ---------------------------------------------------------------------


def test_replay_of_older_totals_never_lowers(loaded: AuditableLedgerStore) -> None:
    before = loaded.usage(_dt(H0), _dt(H3), ["hour", "node", "gpu_uuid", "service"])
    older = [_u(H0, "n1", "g1", "team-a", "chat", 1000, 500, 1.0)]
    loaded.upsert(older, [_c(H0, "n1", "g1", 100.0)])
    loaded.upsert(*_dataset())  # a full replay of the same totals adds nothing
    assert loaded.usage(_dt(H0), _dt(H3), ["hour", "node", "gpu_uuid", "service"]) == before
    cov = _by(loaded.coverage(_dt(H0), _dt(H1)), "node", "gpu_uuid")
    assert cov[("n1", "g1")].observed_seconds == 3600.0


def test_larger_totals_update_per_column_and_labels_follow(loaded: AuditableLedgerStore) -> None:
    # allocated grows, busy is an older (smaller) value, energy grows; the model label changes.
    loaded.upsert(
        [_u(H0, "n1", "g1", "team-a", "chat", 3000, 1700, 1.5e6, model="H100-SXM", mig="3g.40gb")],
        [_c(H0, "n1", "g1", 3600.0)],
    )
    rows = _by(
        loaded.usage(_dt(H0), _dt(H1), ["node", "gpu_uuid", "service", "gpu_model"]),
        "gpu_uuid",
        "service",
        "gpu_model",
    )
    assert _totals(rows[("g1", "chat", "H100-SXM")]) == (3000.0, 1800.0, 1.5e6)
    assert ("g1", "chat", "H100") not in rows


def test_duplicate_keys_in_one_batch_keep_the_larger_totals(
    ledger_store: AuditableLedgerStore,
) -> None:
    ledger_store.upsert(
        [
            _u(H0, "n1", "g1", "ns", "svc", 100, 90, 5.0),
            _u(H0, "n1", "g1", "ns", "svc", 80, 95, 7.0),
        ],
        [_c(H0, "n1", "g1", 50.0), _c(H0, "n1", "g1", 40.0)],
    )
    (row,) = ledger_store.usage(_dt(H0), _dt(H1), ["service"])
    assert _totals(row) == (100.0, 95.0, 7.0)
    assert ledger_store.coverage(_dt(H0), _dt(H1))[0].observed_seconds == 50.0


def test_large_batch_takes_the_bulk_path(ledger_store: AuditableLedgerStore) -> None:
    # 1,500 rows crosses the PostgreSQL COPY threshold (1,000); then replay them lower.
    rows = [
        _u(H0 + 3600 * (i // 100), "n1", f"g{i % 100}", "ns", "svc", 10, 5, 2) for i in range(1500)
    ]
    cov = [_c(r.hour_start, r.node, r.gpu_uuid, 10.0) for r in rows]
    ledger_store.upsert(rows, cov)
    ledger_store.upsert(
        [_u(r.hour_start, r.node, r.gpu_uuid, "ns", "svc", 1, 1, 1) for r in rows], cov
    )
    (total,) = ledger_store.usage(_dt(H0), _dt(H0 + 15 * 3600), [])
    assert _totals(total) == (15000.0, 7500.0, 3000.0)
    assert ledger_store.invariant_violations(_dt(H0), _dt(H0 + 15 * 3600)) == []


# -- usage queries ------------------------------------------------------------------------


def test_usage_by_service(loaded: AuditableLedgerStore) -> None:
    rows = loaded.usage(_dt(H0), _dt(H2), ["service"])
    assert [r.service for r in rows] == [IDLE, "chat", "embed"]  # byte order
    got = _by(rows, "service")
    assert _totals(got[("chat",)]) == (9600.0, 6800.0, 3.3e6)
    assert _totals(got[("embed",)]) == (9000.0, 1600.0, 1.2e6)
    assert _totals(got[(IDLE,)]) == (3000.0, 0.0, 3.0e5)
    assert got[("chat",)].allocated_gpu_hours == pytest.approx(9600 / 3600)
    assert set(rows[0].as_json(["service"])) == {
        "service",
        "allocated_gpu_seconds",
        "busy_gpu_seconds",
        "energy_joules",
        "allocated_gpu_hours",
    }
    # keys not grouped by are not filled in
    assert (rows[0].node, rows[0].gpu_uuid, rows[0].gpu_model, rows[0].namespace) == (None,) * 4
    assert rows[0].hour is None


def test_usage_by_namespace_service_model(loaded: AuditableLedgerStore) -> None:
    got = _by(
        loaded.usage(_dt(H0), _dt(H2), ["namespace", "service", "gpu_model"]),
        "namespace",
        "service",
        "gpu_model",
    )
    assert {k: _totals(v) for k, v in got.items()} == {
        ("", IDLE, "H100"): (1200.0, 0.0, 2.0e5),
        ("", IDLE, "A100"): (1800.0, 0.0, 1.0e5),
        ("team-a", "chat", "H100"): (9600.0, 6800.0, 3.3e6),
        ("team-b", "embed", "A100"): (5400.0, 1500.0, 8.0e5),
        ("team-b", "embed", "H100"): (3600.0, 100.0, 4.0e5),
    }


def test_usage_by_hour_is_iso_utc(loaded: AuditableLedgerStore) -> None:
    rows = loaded.usage(_dt(H0), _dt(H2), ["hour"])
    assert [(r.hour, *_totals(r)) for r in rows] == [
        ("2025-03-01T00:00:00Z", 10800.0, 5700.0, 2.9e6),
        ("2025-03-01T01:00:00Z", 10800.0, 2700.0, 1.9e6),
    ]


def test_usage_by_node_and_node_filter(loaded: AuditableLedgerStore) -> None:
    got = _by(loaded.usage(_dt(H0), _dt(H2), ["node"]), "node")
    assert _totals(got[("n1",)]) == (14400.0, 5300.0, 3.2e6)
    assert _totals(got[("n2",)]) == (7200.0, 3100.0, 1.6e6)
    only_n2 = _by(loaded.usage(_dt(H0), _dt(H2), ["service"], node="n2"), "service")
    assert {k: _totals(v) for k, v in only_n2.items()} == {
        ("chat",): (3600.0, 3000.0, 1.2e6),
        ("embed",): (3600.0, 100.0, 4.0e5),
    }


def test_usage_without_grouping_and_empty_range(loaded: AuditableLedgerStore) -> None:
    (row,) = loaded.usage(_dt(H0), _dt(H2), [])
    assert _totals(row) == (21600.0, 8400.0, 4.8e6)
    assert loaded.usage(_dt(H3), _dt(H3 + 3600), []) == []
    assert loaded.usage(_dt(H3), _dt(H3 + 3600), ["service"]) == []


def test_half_open_range_boundaries(loaded: AuditableLedgerStore) -> None:
    def chat(start: datetime, end: datetime) -> object:
        rows = _by(loaded.usage(start, end, ["service"]), "service")
        return rows[("chat",)].allocated_gpu_seconds if ("chat",) in rows else None

    assert chat(_dt(H0), _dt(H3)) == 13200.0  # H0 + H1 + H2
    assert chat(_dt(H0), _dt(H2)) == 9600.0  # end is exclusive
    assert chat(_dt(H1), _dt(H2)) == 3600.0  # start is inclusive
    assert chat(_dt(H0) + timedelta(seconds=1), _dt(H2)) == 3600.0  # H0 starts before start
    assert chat(_dt(H0), _dt(H0) + timedelta(microseconds=1)) == 6000.0  # H0 < end
    # other time zones name the same instants
    cet = datetime(2025, 3, 1, 3, 0, tzinfo=timezone(timedelta(hours=1)))
    assert chat(cet, _dt(H3)) == 3600.0  # 02:00 UTC == 03:00+01:00 → only H2


def test_unknown_group_key_is_named(loaded: AuditableLedgerStore) -> None:
    with pytest.raises(ValueError, match="'pod'"):
        loaded.usage(_dt(H0), _dt(H2), ["service", "pod"])
    with pytest.raises(ValueError, match="'service; DROP TABLE x'"):
        loaded.usage(_dt(H0), _dt(H2), ["service; DROP TABLE x"])


def test_coverage_sums_observed_seconds(loaded: AuditableLedgerStore) -> None:
    rows = loaded.coverage(_dt(H0), _dt(H3))
    assert [(r.node, r.gpu_uuid, r.gpu_model, r.observed_seconds) for r in rows] == [
        ("n1", "g1", "H100", 10800.0),
        ("n1", "g2", "A100", 7200.0),
        ("n2", "g3", "H100", 7200.0),
    ]
    assert [r.gpu_uuid for r in loaded.coverage(_dt(H0), _dt(H3), node="n2")] == ["g3"]


# -- the invariant ------------------------------------------------------------------------


def test_invariant_holds_on_consistent_data(loaded: AuditableLedgerStore) -> None:
    assert loaded.invariant_violations(_dt(H0), _dt(H3)) == []
    # a drift far below the tolerance is not a violation
    loaded.upsert([_u(H1, "n2", "g3", "team-b", "embed", 3600 + 1e-7, 100, 4.0e5)], [])
    assert loaded.invariant_violations(_dt(H0), _dt(H3)) == []


def test_invariant_finds_planted_violations(loaded: AuditableLedgerStore) -> None:
    # n2 at H1: a second GPU observed for the whole hour, but no one (not even idle) holds it.
    loaded.upsert([], [_c(H1, "n2", "g4")])
    # n1 at H0: the chat bucket grows past the hour's capacity.
    loaded.upsert([_u(H0, "n1", "g1", "team-a", "chat", 2500, 1800, 1.0e6)], [])
    got = loaded.invariant_violations(_dt(H0), _dt(H3))
    assert [(v.hour, v.node, v.allocated_gpu_seconds, v.observed_seconds) for v in got] == [
        ("2025-03-01T00:00:00Z", "n1", 7300.0, 7200.0),
        ("2025-03-01T01:00:00Z", "n2", 3600.0, 7200.0),
    ]
    assert [v.node for v in loaded.invariant_violations(_dt(H0), _dt(H3), node="n2")] == ["n2"]
    assert loaded.invariant_violations(_dt(H2), _dt(H3)) == []


# -- hostile strings ----------------------------------------------------------------------

HOSTILE = [
    ("'; DROP TABLE ledger_usage; --", 'o\'brien "svc"'),
    ("名前空間", "サービス-🚀"),
    ("back\\slash", "%s %(x)s {} ?"),
    ("", "tab\tnew\nline"),
]


def test_hostile_strings_round_trip(ledger_store: AuditableLedgerStore) -> None:
    rows = [
        _u(H0, "n'1", f'g"{i}', ns, svc, 100.0 * (i + 1), 1, 1)
        for i, (ns, svc) in enumerate(HOSTILE)
    ]
    ledger_store.upsert(rows, [])
    ledger_store.upsert(rows, [])
    got = _by(
        ledger_store.usage(_dt(H0), _dt(H1), ["namespace", "service"]), "namespace", "service"
    )
    assert {k: v.allocated_gpu_seconds for k, v in got.items()} == {
        pair: 100.0 * (i + 1) for i, pair in enumerate(HOSTILE)
    }
    assert [r.node for r in ledger_store.usage(_dt(H0), _dt(H1), ["node"], node="n'1")] == ["n'1"]


# -- failures -----------------------------------------------------------------------------

PASSWORD = "s3cr3t-Pa55"


def test_closed_store_raises_store_error(ledger_store: AuditableLedgerStore) -> None:
    ledger_store.close()
    with pytest.raises(StoreError, match="closed"):
        ledger_store.upsert([_u(H0, "n1", "g1", "a", "b", 1, 1, 1)], [])
    with pytest.raises(StoreError):
        ledger_store.usage(_dt(H0), _dt(H1), ["service"])
    ledger_store.close()  # twice is fine


def test_unopenable_sqlite_raises_store_error(tmp_path: object) -> None:
    with pytest.raises(StoreError, match="cannot open"):
        open_store("sqlite:////nonexistent-dir/for/ledger.db")


def test_unreachable_postgres_message_has_no_password(
    tmp_path: object, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("psycopg")
    from gpuledger.chargeback.ledger.store.postgres import PostgresLedgerStore

    url = f"postgresql://ledger:{PASSWORD}@/ledger?host=/nonexistent-socket-dir&connect_timeout=1"
    caplog.set_level(logging.DEBUG)
    s = PostgresLedgerStore(url, pool_timeout_s=1.5, connect_timeout_s=1)
    try:
        with pytest.raises(StoreError) as info:
            s.migrate()
    finally:
        s.close()
    assert "unreachable" in str(info.value) or "failed" in str(info.value)
    assert PASSWORD not in str(info.value)
    assert "ledger:***@" in str(info.value)
    assert PASSWORD not in caplog.text


def test_postgres_outage_then_recovery(
    postgres_server: EmbeddedPostgres, postgres_db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from gpuledger.chargeback.ledger.store.postgres import PostgresLedgerStore

    url = postgres_db_url.replace("postgres:@", f"postgres:{PASSWORD}@")  # trust auth ignores it
    caplog.set_level(logging.DEBUG)
    s = PostgresLedgerStore(url, pool_timeout_s=3, connect_timeout_s=1)
    try:
        s.migrate()
        s.upsert([_u(H0, "n1", "g1", "ns", "svc", 100, 10, 1)], [_c(H0, "n1", "g1", 100)])
        postgres_server.stop()
        try:
            with pytest.raises(StoreError) as info:
                s.upsert([_u(H0, "n1", "g1", "ns", "svc", 200, 20, 2)], [])
            assert PASSWORD not in str(info.value)
            assert "postgres:***@" in str(info.value)
        finally:
            postgres_server.start()
        s.upsert([_u(H0, "n1", "g1", "ns", "svc", 300, 30, 3)], [_c(H0, "n1", "g1", 300)])
        (row,) = s.usage(_dt(H0), _dt(H1), ["service"])
        assert _totals(row) == (300.0, 30.0, 3.0)
    finally:
        s.close()
    assert PASSWORD not in caplog.text


# -- factory and redaction ----------------------------------------------------------------


def test_open_store_schemes(tmp_path: object) -> None:
    with pytest.raises(ValueError, match="'mysql'") as info:
        open_store(f"mysql://root:{PASSWORD}@db/ledger")
    assert PASSWORD not in str(info.value)
    with pytest.raises(ValueError, match="scheme"):
        open_store("ledger.db")
    mem = open_store("sqlite:///:memory:")
    mem.migrate()
    mem.upsert([_u(H0, "n1", "g1", "a", "b", 5, 4, 3)], [])
    assert _totals(mem.usage(_dt(H0), _dt(H1), [])[0]) == (5.0, 4.0, 3.0)
    mem.close()


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("postgresql://u:pw@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgres://u:p%40ss@h/db?sslmode=require", "postgres://u:***@h/db?sslmode=require"),
        (
            "postgresql://u@h/db?password=pw&sslmode=require",
            "postgresql://u@h/db?password=***&sslmode=require",
        ),
        ("host=h user=u password='a b\\'c' dbname=x", "host=h user=u password=*** dbname=x"),
        ("host=h password=pw", "host=h password=***"),
        ("postgresql://h/db", "postgresql://h/db"),
    ],
)
def test_redact_dsn(dsn: str, expected: str) -> None:
    assert redact_dsn(dsn) == expected
    assert "pw" not in safe_url(dsn).replace("password", "")


def test_scrub_removes_the_password_anywhere() -> None:
    dsn = f"postgresql://u:{PASSWORD}@h/db"
    assert scrub(f"server said: bad password {PASSWORD} for {dsn}", dsn) == (
        "server said: bad password *** for postgresql://u:***@h/db"
    )


# -- tokens and probes (migration 2) -------------------------------------------------------

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


def tok(
    hour: int, svc: str, model: str, p: float, g: float, pp: float = 0, pg: float = 0
) -> TokenRow:
    return TokenRow(hour, "n1", "llm", svc, model, p, g, pp, pg)


def test_token_totals_upsert_and_group(ledger_store: AuditableLedgerStore) -> None:
    ledger_store.upsert_tokens([tok(T0, "chat", "llama-70b", 1000, 500, 16, 16)])
    ledger_store.upsert_tokens([tok(T0, "chat", "llama-70b", 900, 400)])  # older replay: ignored
    ledger_store.upsert_tokens(
        [
            tok(T0, "chat", "llama-70b", 1200, 600, 32, 32),
            tok(T0 + 3600, "chat", "llama-70b", 50, 5),
            tok(T0, "rag", "llama-8b", 10, 1),
        ]
    )
    lo, hi = datetime.fromtimestamp(T0, UTC), datetime.fromtimestamp(T0 + 7200, UTC)
    rows = ledger_store.tokens(lo, hi, ["service", "model_name"])
    assert rows == [
        TokenGroup(service="chat", model_name="llama-70b", prompt_tokens=1250.0,
                   generation_tokens=605.0, probe_prompt_tokens=32.0,
                   probe_generation_tokens=32.0),
        TokenGroup(service="rag", model_name="llama-8b", prompt_tokens=10.0,
                   generation_tokens=1.0, probe_prompt_tokens=0.0, probe_generation_tokens=0.0),
    ]  # fmt: skip
    hourly = ledger_store.tokens(lo, hi, ["hour"])
    assert [(r.hour, r.prompt_tokens) for r in hourly] == [
        ("2026-01-01T00:00:00Z", 1210.0),
        ("2026-01-01T01:00:00Z", 50.0),
    ]
    with pytest.raises(ValueError, match="gpu_uuid"):
        ledger_store.tokens(lo, hi, ["gpu_uuid"])


def test_probe_records_keep_verdicts_and_summarize(ledger_store: AuditableLedgerStore) -> None:
    base = {"node": "n1", "endpoint": "http://10.0.0.5:8000", "namespace": "llm",
            "service": "chat", "model_name": "llama-70b"}  # fmt: skip
    ok1 = ProbeRecord(started_unix=T0 + 10.5, ok=True, ttft_s=0.12, prompt_tokens=8,
                      completion_tokens=16, **base)  # fmt: skip
    ok2 = ProbeRecord(started_unix=T0 + 70.5, ok=True, ttft_s=0.11, **base)
    bad = ProbeRecord(started_unix=T0 + 130.5, ok=False, reason="timeout", **base)
    ledger_store.upsert_probes([ok1, ok2, bad])
    # verdicts arrive later; a replay of the bare record must not clear them
    ledger_store.upsert_probes(
        [
            ProbeRecord(started_unix=T0 + 10.5, ok=True, ttft_s=0.12, tokens_counted=True,
                        ttft_histogram_moved=True, ttft_agrees=True, **base),
            ProbeRecord(started_unix=T0 + 70.5, ok=True, ttft_s=0.11, tokens_counted=False,
                        ttft_histogram_moved=True, **base),
        ]
    )  # fmt: skip
    ledger_store.upsert_probes([ok1])
    lo, hi = datetime.fromtimestamp(T0, UTC), datetime.fromtimestamp(T0 + 3600, UTC)
    (summary,) = ledger_store.probes(lo, hi)
    assert summary == ProbeVerdictGroup(namespace="llm", service="chat", model_name="llama-70b",
                                        probes=3, successes=2, disagree=1, agree=1)  # fmt: skip


def test_storage_samples_are_insert_only(
    ledger_store: AuditableLedgerStore, ledger_store_url: str
) -> None:
    from gpuledger.chargeback.ledger.store.common import sqlite_path
    from gpuledger.chargeback.ledger.tables import StorageSample

    a = StorageSample(T0 + 0.5, "n1", "rag", "public", 'we"ird Table', 1_000_000)
    b = StorageSample(T0 + 300.5, "n1", "rag", "public", 'we"ird Table', 1_250_000)
    ledger_store.insert_storage_samples([a, b])
    ledger_store.insert_storage_samples([a])  # a replay is ignored, not an error
    ledger_store.insert_storage_samples([StorageSample(T0 + 0.5, "n1", "rag", "public",
                                                'we"ird Table', 7)])  # fmt: skip
    query = 'SELECT "ts", "table_name", "bytes" FROM "storage_samples" ORDER BY "ts"'
    if ledger_store_url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(sqlite_path(ledger_store_url)) as conn:
            rows = conn.execute(query).fetchall()
    else:
        import psycopg

        with psycopg.connect(ledger_store_url) as conn:
            rows = conn.execute(query).fetchall()
    assert [tuple(r) for r in rows] == [
        (T0 + 0.5, 'we"ird Table', 1_000_000),
        (T0 + 300.5, 'we"ird Table', 1_250_000),
    ]


def test_sqlite_migration_4_keeps_probe_records(tmp_path: Path) -> None:
    """A v3 ledger with probe records: the v4 rebuild (time-first key) keeps every row
    and every column, and replays still land on the same key."""
    import sqlite3

    from gpuledger.chargeback.ledger.store import sqlite as store_sqlite

    path = tmp_path / "v3.db"
    v3 = store_sqlite.SqliteLedgerStore(path)
    full = store_sqlite.migrations
    try:
        store_sqlite.migrations = lambda default_cluster: full(default_cluster)[:3]
        v3.migrate()
        assert v3.applied_versions() == [1, 2, 3]
        records = [
            ProbeRecord(1_767_225_600.0 + i, "n1", f"ep{i % 2}", "llm", "chat", "m", i % 3 != 0,
                        None if i % 3 else "timeout", 0.05 + i / 1000, 0.01, 0.3, 80.0, 12, 16,
                        True, None, i % 2 == 0)
            for i in range(9)
        ]  # fmt: skip
        v3.close()
        with sqlite3.connect(path) as conn:  # as the version-3 release wrote them
            conn.executemany(
                "INSERT INTO probe_results VALUES (" + ", ".join("?" * 18) + ")",
                [(r.node, r.endpoint, r.started_unix, r.namespace, r.service, r.model_name,
                  r.ok, r.reason, r.ttft_s, r.tpot_s, r.e2e_s, r.output_tokens_per_s,
                  r.prompt_tokens, r.completion_tokens, r.tokens_counted,
                  r.ttft_histogram_moved, r.ttft_agrees, 1) for r in records],
            )  # fmt: skip
    finally:
        store_sqlite.migrations = full
    with sqlite3.connect(path) as conn:
        before = sorted(conn.execute("SELECT * FROM probe_results").fetchall())
    ledger_store = store_sqlite.SqliteLedgerStore(path)
    ledger_store.migrate()
    assert ledger_store.applied_versions() == ALL_VERSIONS
    # a replay without verdicts keeps the stored ones (ON CONFLICT on the same key columns)
    ledger_store.upsert_probes([replace(records[0], tokens_counted=None, ttft_agrees=None)])
    ledger_store.close()
    with sqlite3.connect(path) as conn:
        after = sorted(conn.execute("SELECT * FROM probe_results").fetchall())
        (pk,) = conn.execute(
            "SELECT group_concat(name) FROM pragma_index_info("
            "(SELECT name FROM pragma_index_list('probe_results') WHERE origin = 'pk'))"
        ).fetchone()
    assert len(after) == len(before) == 9
    # all but updated_at; migration 12 appended the cluster (the store's default)
    assert [r[:-2] for r in after] == [r[:-1] for r in before]
    assert {r[-1] for r in after} == {"default"}
    assert pk == "started_unix,cluster,node,endpoint"
