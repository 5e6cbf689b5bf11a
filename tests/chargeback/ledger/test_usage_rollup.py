"""Issue 16: the usage rollup (migration 8) on PostgreSQL stays exactly the sum of the
usage rows under every way rows reach the ledger — batches, replays, lower replays, a GPU
model learned late, COPY-sized batches, an older release's one-statement-per-row writer,
concurrent writers, deletes, retention — and ``usage()`` read from it answers what the
rows say. Expected figures are computed here from the rows written (the maximum of each
key's totals, summed in Python), not read back through the store."""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gpuledger.chargeback.ledger.tables import USAGE, ProbeRecord, UsageRow
from tests.support.migrations import ALL_VERSIONS

psycopg = pytest.importorskip("psycopg")

from gpuledger.chargeback.ledger.store.postgres import PostgresLedgerStore  # noqa: E402
from gpuledger.chargeback.ledger.store.postgres_sql import (  # noqa: E402
    upsert_statement,
    values_source,
)

H0 = int(datetime(2026, 3, 31, 22, tzinfo=UTC).timestamp())  # two hours before April
MODELS = ("H100 80GB HBM3", "A100-SXM4-80GB", "")
SERVICES = (("ml", "chat"), ("ml", "embed"), ("search", "rerank"), ("", "__idle__"))


def _dt(t: int) -> datetime:
    return datetime.fromtimestamp(t, UTC)


@pytest.fixture
def store(postgres_db_url: str) -> Iterator[PostgresLedgerStore]:
    s = PostgresLedgerStore(postgres_db_url, max_size=8)
    s.migrate()
    try:
        yield s
    finally:
        s.close()


class Expected:
    """What the usage table must hold: per key the larger of each total seen, the last
    label (the stores' documented rules), applied in write order."""

    def __init__(self) -> None:
        self.rows: dict[tuple[int, str, str, str, str], UsageRow] = {}

    def write(self, rows: Sequence[UsageRow]) -> None:
        for r in rows:
            old = self.rows.get(r.key)
            if old is None:
                self.rows[r.key] = r
                continue
            self.rows[r.key] = UsageRow(
                *r.key, r.gpu_model, r.mig_profile,
                max(old.allocated_gpu_seconds, r.allocated_gpu_seconds),
                max(old.busy_gpu_seconds, r.busy_gpu_seconds),
                max(old.energy_joules, r.energy_joules),
            )  # fmt: skip

    def grouped(self, keys: Sequence[str], lo: int, hi: int) -> dict[tuple[str, ...], list[float]]:
        out: dict[tuple[str, ...], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
        for r in self.rows.values():
            if not lo <= r.hour_start < hi:
                continue
            values = {
                "hour": _dt(r.hour_start).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "namespace": r.namespace, "service": r.service, "gpu_model": r.gpu_model,
                "node": r.node, "gpu_uuid": r.gpu_uuid,
            }  # fmt: skip
            acc = out[tuple(values[k] for k in keys)]
            acc[0] += r.allocated_gpu_seconds
            acc[1] += r.busy_gpu_seconds
            acc[2] += r.energy_joules
        return dict(out)


def _read(
    store: PostgresLedgerStore, keys: Sequence[str], lo: int, hi: int, node: str | None = None
) -> dict[tuple[str, ...], list[float]]:
    return {
        tuple(getattr(g, k) or "" for k in keys): [
            g.allocated_gpu_seconds,
            g.busy_gpu_seconds,
            g.energy_joules,
        ]
        for g in store.usage(_dt(lo), _dt(hi), keys, node=node)
    }


def _assert_same(got: dict[tuple[str, ...], list[float]], want: dict[tuple[str, ...], list[float]]):
    assert sorted(got) == sorted(want)
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-12, abs=1e-6), k


def _rows(rng: random.Random, node: str, hour: int, scale: float) -> list[UsageRow]:
    out = []
    for g in range(4):
        model = MODELS[g % 2]
        for ns, svc in SERVICES:
            a = round(rng.uniform(0, 900) * scale, 3)
            out.append(
                UsageRow(hour, node, f"GPU-{node}-{g}", ns, svc, model, "", a, a / 2, a * 300)
            )
    return out


def test_usage_rollup_equals_the_rows_through_every_kind_of_write(
    store: PostgresLedgerStore, postgres_db_url: str
) -> None:
    rng = random.Random(16)
    want = Expected()
    hours = [H0, H0 + 3600, H0 + 7200, H0 + 10800]  # March 22:00, 23:00; April 00:00, 01:00

    def write(rows: list[UsageRow]) -> None:
        store.upsert(rows, [])
        want.write(rows)

    for step in range(1, 4):  # running totals grow: each flush sends the hour's total
        for node in ("n1", "n2", "n3"):
            for hour in hours:
                write(_rows(random.Random(f"{node}{hour}"), node, hour, float(step)))
    # a replay of older, lower totals (a spool replaying after an outage): no change
    write(_rows(random.Random(f"n1{H0}"), "n1", H0, 1.0))
    # a GPU model learned late: n3's GPU-n3-0 rows move from "H100…" to "L40S"
    moved = [r for r in want.rows.values() if r.gpu_uuid == "GPU-n3-0" and r.hour_start == H0]
    write([UsageRow(*r.key, "L40S", "", r.allocated_gpu_seconds, 0.0, 0.0) for r in moved])
    # a COPY-sized batch (≥ 1,000 rows, the staging-table path) of a new node
    big = [r for h in hours for g in range(70) for r in _rows(rng, f"big{g}", h, 1.0)]
    assert len(big) >= 1000
    write(big)
    # an agent of the previous release: one INSERT … VALUES statement per row
    old_stmt = upsert_statement(USAGE, values_source(USAGE))
    legacy = _rows(rng, "legacy", H0 + 3600, 5.0)
    with psycopg.connect(postgres_db_url) as conn, conn.cursor() as cur:
        cur.executemany(old_stmt, [USAGE.values(r) for r in legacy])
    want.write(legacy)

    assert store.rollup_drift(_dt(H0), _dt(H0 + 4 * 3600)) == []
    lo, hi = H0, H0 + 4 * 3600
    for keys in (
        ["namespace", "service", "gpu_model"], ["service", "gpu_model"], ["service"],
        ["namespace", "service", "gpu_model", "hour"], ["hour"], [],
    ):  # fmt: skip
        _assert_same(_read(store, keys, lo, hi), want.grouped(keys, lo, hi))
    # a month alone (the rollup's partitions follow the source's), and one hour
    april = int(datetime(2026, 4, 1, tzinfo=UTC).timestamp())
    _assert_same(
        _read(store, ["service", "gpu_model"], april, hi),
        want.grouped(["service", "gpu_model"], april, hi),
    )
    _assert_same(
        _read(store, ["gpu_model"], H0, H0 + 3600), want.grouped(["gpu_model"], H0, H0 + 3600)
    )
    # the model that every row of a key left is gone from the answer, as from the rows
    assert ("L40S",) in _read(store, ["gpu_model"], H0, H0 + 3600)
    # reads by node or GPU still come from the rows and agree
    for keys, node in ((["node", "service"], None), (["service"], "n2"), (["gpu_uuid"], None)):
        _assert_same(_read(store, keys, lo, hi, node), _only(want, node).grouped(keys, lo, hi))


def _only(want: Expected, node: str | None) -> Expected:
    out = Expected()
    out.rows = {k: r for k, r in want.rows.items() if node is None or r.node == node}
    return out


def test_a_group_left_by_every_row_disappears(store: PostgresLedgerStore) -> None:
    """Every row of (ml, chat, "") learns its model: the rollup key for "" keeps a zero
    row count and must not be answered, as the rows no longer have it."""
    rows = [
        UsageRow(H0, "n1", f"GPU-{g}", "ml", "chat", "", "", 100.0, 50.0, 1.0) for g in range(3)
    ]
    store.upsert(rows, [])
    assert [g.gpu_model for g in store.usage(_dt(H0), _dt(H0 + 3600), ["gpu_model"])] == [""]
    store.upsert([UsageRow(*r.key, "H200", "", 100.0, 50.0, 1.0) for r in rows], [])
    got = store.usage(_dt(H0), _dt(H0 + 3600), ["gpu_model"])
    assert [(g.gpu_model, g.allocated_gpu_seconds) for g in got] == [("H200", 300.0)]
    assert store.rollup_drift(_dt(H0), _dt(H0 + 3600)) == []


def test_concurrent_writers_keep_the_rollup_exact(store: PostgresLedgerStore) -> None:
    """Eight writers (different nodes, the same services and models: they share every
    rollup key) flush growing totals at once, many rounds: no deadlock, no lost update."""
    want = Expected()
    lock = threading.Lock()
    errors: list[BaseException] = []

    def agent(node: str) -> None:
        try:
            for step in range(1, 13):
                for hour in (H0, H0 + 3600):
                    rows = _rows(random.Random(f"{node}{hour}"), node, hour, float(step))
                    store.upsert(rows, [])
                    with lock:
                        want.write(rows)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=agent, args=(f"node-{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert [str(e) for e in errors] == []
    assert store.rollup_drift(_dt(H0), _dt(H0 + 7200)) == []
    keys = ["namespace", "service", "gpu_model", "hour"]
    _assert_same(_read(store, keys, H0, H0 + 7200), want.grouped(keys, H0, H0 + 7200))


def test_deletes_and_retention_take_the_rollup_along(
    store: PostgresLedgerStore, postgres_db_url: str, tmp_path: Path
) -> None:
    want = Expected()
    for node in ("n1", "n2"):
        for hour in (H0, H0 + 7200):  # March and April
            rows = _rows(random.Random(f"{node}{hour}"), node, hour, 1.0)
            store.upsert(rows, [])
            want.write(rows)
    with psycopg.connect(postgres_db_url) as conn:  # an operator removing a node's hour
        conn.execute(
            "DELETE FROM ledger_usage WHERE node = 'n2' AND hour_start = to_timestamp(%s)", (H0,)
        )
    want.rows = {k: r for k, r in want.rows.items() if not (r.node == "n2" and r.hour_start == H0)}
    keys = ["service", "gpu_model", "hour"]
    _assert_same(_read(store, keys, H0, H0 + 10800), want.grouped(keys, H0, H0 + 10800))
    assert store.rollup_drift(_dt(H0), _dt(H0 + 10800)) == []

    retired = store.retire_before(
        datetime(2026, 4, 1, tzinfo=UTC), archive_dir=tmp_path, now=datetime(2026, 6, 2, tzinfo=UTC)
    )
    assert ("ledger_usage", "2026-03") in {(r.table, r.month) for r in retired}
    assert all(r.table != "ledger_usage_rollup" for r in retired)  # derived: not archived
    with psycopg.connect(postgres_db_url) as conn:
        parts = {
            r[0]
            for r in conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'ledger_usage_rollup'"
            )
        }
    assert "ledger_usage_rollup_p2026_03" not in parts
    assert "ledger_usage_rollup_p2026_04" in parts
    assert _read(store, keys, H0, H0 + 7200) == {}
    _assert_same(_read(store, keys, H0, H0 + 10800), want.grouped(keys, H0 + 7200, H0 + 10800))


def test_migration_8_builds_the_rollup_of_an_existing_ledger(postgres_db_url: str) -> None:
    """A version-7 ledger with rows (written through migration 7's schema, no rollup):
    migration 8 sums them into the rollup, and later writes keep it exact."""
    from tests.support.postgres import migrate_to, write_usage_before_v9

    rows = [r for node in ("a", "b") for h in (H0, H0 + 3600, H0 + 7200)
            for r in _rows(random.Random(f"{node}{h}"), node, h, 2.0)]  # fmt: skip
    want = Expected()
    want.write(rows)
    with psycopg.connect(postgres_db_url) as conn, conn.transaction():
        migrate_to(conn, 7)
        for month in ("2026-03-01", "2026-04-01"):
            conn.execute(
                "SELECT gpuledger_month_partition('ledger_usage', %s::timestamptz)", (month,)
            )
        write_usage_before_v9(conn, rows)  # as the version-7 release wrote them
    store = PostgresLedgerStore(postgres_db_url)
    try:
        store.migrate()
        assert store.applied_versions() == ALL_VERSIONS
        keys = ["namespace", "service", "gpu_model", "hour"]
        _assert_same(_read(store, keys, H0, H0 + 10800), want.grouped(keys, H0, H0 + 10800))
        more = _rows(random.Random(9), "a", H0, 3.0)
        store.upsert(more, [])
        want.write(more)
        _assert_same(_read(store, keys, H0, H0 + 10800), want.grouped(keys, H0, H0 + 10800))
        assert store.rollup_drift(_dt(H0), _dt(H0 + 10800)) == []
    finally:
        store.close()


def test_reads_take_the_rollup_that_can_answer_them() -> None:
    """By service/model/hour: the hourly rollup; by node or GPU over whole months: the
    month rollup; by node or GPU over part of a month, or per hour by GPU: the rows."""
    from gpuledger.chargeback.ledger.store.postgres_rollup import usage_rollup

    mar, apr = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)
    mid = datetime(2026, 3, 15, tzinfo=UTC)

    def pick(keys: list[str], node: str | None, a: datetime, b: datetime) -> str | None:
        r = usage_rollup(keys, node, a, b)
        return None if r is None else r.store

    assert pick(["namespace", "service", "gpu_model"], None, mid, apr) == "ledger_usage_rollup"
    assert pick(["service", "hour"], None, mar, apr) == "ledger_usage_rollup"
    assert pick([], None, mid, apr) == "ledger_usage_rollup"
    assert pick(["service"], "n1", mar, apr) == "ledger_usage_month_rollup"
    assert pick(["namespace", "service", "node", "gpu_uuid"], None, mar, apr) == (
        "ledger_usage_month_rollup"
    )
    assert pick(["node", "gpu_uuid"], None, mid, apr) is None
    assert pick(["gpu_uuid", "hour"], None, mar, apr) is None
    assert pick(["service"], "n1", mid, apr) is None


def test_usage_reads_come_from_the_rollups(
    store: PostgresLedgerStore, postgres_db_url: str
) -> None:
    """What usage() answers is what each rollup holds (a changed rollup row shows), and
    by GPU over whole months equals the rows' sums."""
    want = Expected()
    for node in ("n1", "n2"):
        for hour in (H0, H0 + 7200):
            rows = _rows(random.Random(f"{node}{hour}"), node, hour, 1.0)
            store.upsert(rows, [])
            want.write(rows)
    mar = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp())
    may = int(datetime(2026, 5, 1, tzinfo=UTC).timestamp())
    for keys, node in ((["namespace", "service", "node", "gpu_uuid"], None), (["service"], "n1")):
        _assert_same(_read(store, keys, mar, may, node), _only(want, node).grouped(keys, mar, may))
    before = _read(store, ["service"], mar, may, "n1")
    with psycopg.connect(postgres_db_url) as conn:
        month_rows = conn.execute(
            "UPDATE ledger_usage_month_rollup SET allocated_gpu_seconds = allocated_gpu_seconds"
            " + 1000 WHERE node = 'n1' AND service = 'chat'"
        ).rowcount
        hour_rows = conn.execute(
            "UPDATE ledger_usage_rollup SET allocated_gpu_seconds = allocated_gpu_seconds + 7"
            " WHERE service = 'embed' AND hour_start = to_timestamp(%s)",
            (H0,),
        ).rowcount
    assert (month_rows, hour_rows) == (8, 2)  # 4 GPUs x 2 months; 2 GPU models
    after = _read(store, ["service"], mar, may, "n1")
    assert after[("chat",)][0] == pytest.approx(before[("chat",)][0] + 1000 * month_rows)
    assert after[("embed",)] == before[("embed",)]
    embed = _read(store, ["service"], H0, H0 + 3600)[("embed",)][0]
    assert embed == pytest.approx(
        want.grouped(["service"], H0, H0 + 3600)[("embed",)][0] + 7 * hour_rows
    )
    drifted = store.rollup_drift(_dt(H0), _dt(H0 + 3600))
    assert {(d["rollup"], d["service"]) for d in drifted} == {
        ("ledger_usage_rollup", "embed"),
        ("ledger_usage_month_rollup", "chat"),
    }


def _probe(rng: random.Random, t: float, node: str, svc: str) -> ProbeRecord:
    return ProbeRecord(
        t, node, f"http://{svc}:8000", "ml", svc, rng.choice(["llama", "mistral"]),
        rng.random() < 0.9, None, 0.1, 0.01, 0.5, 40.0, 10, 5,
    )  # fmt: skip


def _verdicts_by_hand(records: dict[tuple[str, str, float], ProbeRecord], lo: int, hi: int):
    """The report's verdict definitions, applied to the records in Python."""
    out: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for r in records.values():
        if not lo <= r.started_unix < hi:
            continue
        v = (r.tokens_counted, r.ttft_histogram_moved, r.ttft_agrees)
        dis = any(x is False for x in v)
        acc = out[(r.namespace, r.service, r.model_name)]
        acc[0] += 1
        acc[1] += int(r.ok)
        acc[2] += int(dis)
        acc[3] += int(not dis and any(x is True for x in v))
    return dict(out)


def test_probe_verdicts_come_from_their_rollup_and_stay_exact(
    store: PostgresLedgerStore, postgres_db_url: str
) -> None:
    """Probe records written, their verdicts arriving later (a second upsert of the same
    key), a model relabelled, some deleted (retention's DELETE): the hourly verdict rollup
    answers the report's verdict read exactly as the records do."""
    rng = random.Random(7)
    records: dict[tuple[str, str, float], ProbeRecord] = {}
    for i in range(400):
        r = _probe(rng, H0 + i * 37.5, f"n{i % 3}", rng.choice(["chat", "embed"]))
        records[r.key] = r
    store.upsert_probes(list(records.values()))
    later = []
    for r in rng.sample(list(records.values()), 250):
        verdict = rng.choice([(True, True, True), (True, False, None), (None, None, False)])
        later.append(replace(r, tokens_counted=verdict[0], ttft_histogram_moved=verdict[1],
                             ttft_agrees=verdict[2], model_name="llama"))  # fmt: skip
    store.upsert_probes(later)
    for r in later:  # the store's rule: a NULL verdict never clears one already there
        old = records[r.key]
        records[r.key] = replace(r, **{
            f: getattr(old, f) if getattr(r, f) is None else getattr(r, f)
            for f in ("tokens_counted", "ttft_histogram_moved", "ttft_agrees")
        })  # fmt: skip
    cut = H0 + 2 * 3600
    with psycopg.connect(postgres_db_url) as conn:
        conn.execute("DELETE FROM probe_results WHERE started_unix < %s AND node = 'n1'", (cut,))
    records = {k: r for k, r in records.items() if not (r.started_unix < cut and r.node == "n1")}

    lo, hi = H0, H0 + 5 * 3600
    want = _verdicts_by_hand(records, lo, hi)
    got = {(g.namespace, g.service, g.model_name): [g.probes, g.successes, g.disagree, g.agree]
           for g in store.probes(_dt(lo), _dt(hi))}  # fmt: skip
    assert got == want
    assert sum(v[2] for v in want.values()) > 0
    assert sum(v[3] for v in want.values()) > 0
    assert store.rollup_drift(_dt(lo), _dt(hi)) == []
    # the rollup is what answered: a changed rollup row shows in a whole-hour read, not
    # in one by node or over part of an hour (those read the records)
    with psycopg.connect(postgres_db_url) as conn:
        conn.execute("UPDATE probe_verdict_rollup SET successes = successes + 100")
    bumped = store.probes(_dt(lo), _dt(hi))
    assert sum(g.successes for g in bumped) > sum(v[1] for v in want.values())
    partial = store.probes(_dt(lo), _dt(hi - 1))
    assert sum(g.successes for g in partial) <= sum(v[1] for v in want.values())
