"""A ledger and a spool written by the previous release (commit 9334fbc, before the ledger
tables were declared once) open, flush and report identically with the current code.

The fixtures and how they were made: tests/support/fixtures/ledger-prev/README.md.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import sqlite3
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gpuledger.chargeback.ledger.flusher import Ledger
from gpuledger.chargeback.ledger.spool import Spool
from gpuledger.chargeback.ledger.store.sqlite import SqliteLedgerStore
from gpuledger.chargeback.ledger.tables import TABLES, UPDATED_AT, USAGE
from gpuledger.chargeback.report.build import build_report
from gpuledger.chargeback.report.model import Month
from gpuledger.chargeback.report.ratecard import load_rate_card
from gpuledger.chargeback.report.writers.csv_json import coverage_csv, lines_csv, report_json
from tests.support.migrations import ALL_VERSIONS
from tests.support.paths import FIXTURES

PREV = FIXTURES / "ledger-prev"
MONTH = Month.parse("2026-02")
NOW = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)  # as the fixture's report was generated


def _copy(name: str, tmp: Path) -> Path:
    shutil.copy(PREV / name, tmp / name)
    return tmp / name


def _schema(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY 2"
        ).fetchall()


def _tables(path: Path) -> dict[str, list[list[object]]]:
    """Every ledger table's rows, all columns but updated_at, sorted (as the fixture)."""
    out: dict[str, list[list[object]]] = {}
    with sqlite3.connect(path) as conn:
        for table in TABLES:
            cols = [r[1] for r in conn.execute(f'PRAGMA table_info("{table.store}")')]
            if not cols:  # a table the previous release did not have
                continue
            keep = ", ".join(f'"{c}"' for c in cols if c != UPDATED_AT)
            rows = conn.execute(f'SELECT {keep} FROM "{table.store}"')
            out[table.store] = sorted([list(r) for r in rows], key=repr)
    return out


def _plain(rows: list[Any]) -> list[list[object]]:
    return sorted([[getattr(r, f.name) for f in fields(r)] for r in rows], key=repr)


PREV_VERSION = 4
"""The schema version the previous release wrote (its migrations 1-4)."""


def test_migrate_takes_the_previous_ledger_to_the_current_version(tmp_path: Path) -> None:
    """Migrations after the previous release's only add: every table, index and row the
    old ledger had is left exactly as it was, and a second migrate changes nothing."""
    path = _copy("ledger.db", tmp_path)
    before = _schema(path)
    rows_before = _tables(path)
    with sqlite3.connect(path) as conn:
        applied = conn.execute("SELECT version, applied_at FROM schema_migrations").fetchall()
    assert [v for v, _ in applied] == list(range(1, PREV_VERSION + 1))
    with SqliteLedgerStore(path) as store:
        store.migrate()
        assert store.applied_versions() == ALL_VERSIONS
        after = _schema(path)
        store.migrate()
        assert store.applied_versions() == ALL_VERSIONS
    # every table the old release had is still there, laid out as before but for the
    # columns added since, appended after its last one (migration 9: ledger_usage's
    # peak_memory_bytes; migration 12: every table's cluster, which joined the key)
    names = {name for _, name, _, _ in before}
    assert names <= {name for _, name, _, _ in after}
    stamp = '"updated_at" INTEGER NOT NULL'
    for kind, name, _, sql_before in before:
        if kind != "table" or name == "schema_migrations":
            continue
        sql_after = next(e[3] for e in after if e[1] == name)
        assert "\"cluster\" TEXT NOT NULL DEFAULT 'default'" in sql_after
        head = sql_before.split("PRIMARY KEY")[0].rstrip(" ,\n")
        flat = " ".join(sql_after.split())
        for line in head.split("\n")[1:]:
            for col in line.strip().rstrip(",").split(", "):
                assert " ".join(col.split()) in flat, (name, col)
        if name == USAGE.store:
            assert stamp + ', "peak_memory_bytes" REAL' in flat
    added = sorted(name for _, name, _, _ in after if name not in names)
    added_tables = [
        "ledger_cost_centers",
        "ledger_deliveries",
        "ledger_engine_time",
        "ledger_tenant_tokens",
    ]
    assert added == added_tables  # WITHOUT ROWID: their key is the table
    assert _schema(path) == after
    rows_after = _tables(path)
    declared = [t for t in added_tables if t != "ledger_deliveries"]  # a plain table
    assert [rows_after.pop(t) for t in declared] == [[], [], []]
    # every old row is kept, with NULL (not measured) as its peak and the default cluster
    rows_before[USAGE.store] = sorted(([*r, None] for r in rows_before[USAGE.store]), key=repr)
    rows_before = {t: sorted(([*r, "default"] for r in rows), key=repr)
                   for t, rows in rows_before.items()}  # fmt: skip
    assert rows_after == {k: v for k, v in rows_before.items() if k not in added_tables}
    with sqlite3.connect(path) as conn:
        again = conn.execute("SELECT version, applied_at FROM schema_migrations").fetchall()
    assert again[:PREV_VERSION] == applied


ISSUE_16_KEYS = (
    "token_api_flag", "token_api_flag_reason", "latency_flag", "latency_flag_reason",
    "rental_flag", "rental_flag_reason", "rental_coverage_ratio",
)  # fmt: skip


def test_report_of_the_previous_ledger_is_unchanged(tmp_path: Path) -> None:
    with SqliteLedgerStore(_copy("ledger.db", tmp_path)) as store:
        store.migrate()
        report = build_report(store, load_rate_card(), MONTH, now=NOW, store_label="ledger.db")
    got, want = json.loads(report_json(report)), json.loads((PREV / "report.json").read_text())
    got.pop("generated_at")
    want.pop("generated_at")
    # report schema 2 (issue 14) only adds keys: services' tenants (none in this ledger)
    # and the headroom policy; every figure the previous release wrote is unchanged
    # report schema 3 (issue 16) adds a flag per figure and the coverage of each service's
    # hours, and counterfactual_flagged now follows those flags (compared below)
    # report schema 4 (issue 17) adds the findings, none here: no findings engine ran
    # report schema 5 (issue 18) adds each line's cost center and the subtotals (a report
    # built without a cost-center map, like this one, has every line __unassigned__, none
    # listed) and the spend anomalies (none: build_report alone)
    assert (got.pop("schema_version"), want.pop("schema_version")) == (5, 1)
    assert got.pop("cost_centers") == []
    assert got.pop("headroom_policy") == "spread"
    assert (got.pop("findings"), got.pop("findings_computed")) == ([], False)
    assert (got.pop("anomalies"), got.pop("anomalies_computed")) == ([], False)
    # ... and the budgets and forecasts (none: no budgets configured)
    assert (got.pop("budgets"), got.pop("budgets_configured")) == ([], False)
    assert got.pop("forecasts") == []
    # issue 17 added the gpu_classes section (memory, relative throughput) to the default
    # card: same version and prices, so only the card's digest moved -- to the shipped one
    got_card, want_card = got.pop("rate_card"), want.pop("rate_card")
    assert got_card["digest"] == load_rate_card().digest != want_card["digest"]
    assert {**got_card, "digest": ""} == {**want_card, "digest": ""}
    # issue 18 adds the clusters: one here, the cluster migration 12 gave the old rows,
    # and every model line names it; the cluster's total is the report's
    (cluster,) = got.pop("clusters")
    assert (cluster["cluster"], cluster["total_cost_usd"]) == (
        "default", got["totals"]["total_cost_usd"])  # fmt: skip
    flagged: dict[str, bool] = {}
    for line in got["lines"]:
        assert {m.pop("cluster") for m in line["models"]} == {"default"}
        assert line.pop("tenants") == []
        assert line.pop("cost_center") == "__unassigned__"
        for key in ISSUE_16_KEYS:
            line.pop(key)
        flagged[line["service"]] = line.pop("counterfactual_flagged")
    for line in want["lines"]:
        line.pop("counterfactual_flagged")
    old_flag_notes = [n for n in want["notes"] if n.startswith("Counterfactuals of ")]
    new_flag_notes = [n for n in got["notes"] if n.startswith(("Token-API ", "GPU-rental "))]
    assert len(old_flag_notes) == 1
    assert new_flag_notes
    want["notes"].remove(old_flag_notes[0])
    for note in new_flag_notes:
        got["notes"].remove(note)
    assert got == want
    assert flagged == {line.service: line.counterfactual_flagged for line in report.lines}
    # the CSV keeps the previous release's columns in their places and appends the new ones
    old = list(csv.reader(io.StringIO((PREV / "report.csv").read_text())))
    new = list(csv.reader(io.StringIO(lines_csv(report))))
    flag_col = old[0].index("counterfactual_flagged")
    assert new[0][: len(old[0])] == old[0]
    for o, n in zip(old[1:], new[1:], strict=True):
        assert n[:flag_col] + n[flag_col + 1 : len(o)] == o[:flag_col] + o[flag_col + 1 :]
    assert coverage_csv(report) == (PREV / "report-coverage.csv").read_text()


def test_previous_spool_flushes_identically(tmp_path: Path) -> None:
    expected = json.loads((PREV / "spool-flushed.json").read_text())
    spool = Spool(_copy("spool.db", tmp_path))
    usage, coverage, _ = spool.pending()
    pending = {
        "usage": _plain(usage),
        "coverage": _plain(coverage),
        "tokens": _plain(spool.pending_tokens()),
        "probes": _plain(spool.pending_probes()),
        "storage": _plain(spool.pending_storage_samples()),
    }
    # every old spool row comes back in the spool's cluster (the agent's: "default" here),
    # and its usage rows with their peak not measured (None)
    for rows in pending.values():
        assert [row.pop() for row in rows] == ["default"] * len(rows)
    assert [row.pop() for row in pending["usage"]] == [None] * len(usage)
    assert json.loads(json.dumps(pending)) == expected["pending"]
    assert spool.pending_count() + spool.pending_extra_count() == sum(map(len, pending.values()))
    _, baselines = spool.load_tokens(0)
    assert baselines  # the counter baselines survive: a restart does not re-count

    store = SqliteLedgerStore(tmp_path / "fresh.db")
    ledger = Ledger("gpu-node-03", spool=spool, store=store, claims_for=lambda r: [])
    try:
        assert ledger.flush_once()
    finally:
        store.close()
        spool.close()
    tables = _tables(tmp_path / "fresh.db")
    assert tables.pop("ledger_tenant_tokens") == []  # added since; the old spool has none
    assert tables.pop("ledger_engine_time") == []
    assert tables.pop("ledger_cost_centers") == []
    for rows in tables.values():  # flushed in the spool's cluster
        assert [row.pop() for row in rows] == ["default"] * len(rows)
    assert [row.pop() for row in tables[USAGE.store]] == [None] * len(tables[USAGE.store])
    assert json.loads(json.dumps(tables)) == expected["tables"]
