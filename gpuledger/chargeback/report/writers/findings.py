"""The report's findings as ``chargeback-YYYY-MM-findings.csv`` and as the terminal table
``gpuledger findings`` prints, with the evidence formatting the HTML page shares.

A finding carries its figures as data (``evidence``); here they become one cell (a JSON
object, so a spreadsheet or a script reads every named figure back exactly) and, on a
terminal or the page, ``name value`` pairs. Names and sentences come from the cluster
(namespaces, services) and are neutralized like every other CSV cell.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence

from gpuledger.chargeback.findings.model import Finding
from gpuledger.chargeback.report.model import Report, hour_utc
from gpuledger.chargeback.report.writers.csv_json import cell

FINDING_COLUMNS = (
    "month", "rank", "kind", "namespace", "service", "gpu_model", "title", "recommendation",
    "current_gpus", "recommended_gpus", "monthly_savings_usd", "hours_of_evidence",
    "assumption", "evidence", "gpus", "peak_hours_utc", "rate_card_version",
)  # fmt: skip
"""``chargeback-YYYY-MM-findings.csv``: one row per finding, largest saving first
(``rank`` 1). ``evidence`` is a JSON object of the named figures; ``gpus`` and
``peak_hours_utc`` are ``;``-separated."""


def figure(value: float | str) -> str:
    """An evidence figure for a person: numbers to three decimals at most, text as is."""
    if isinstance(value, str):
        return value
    if float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:,.3f}".rstrip("0").rstrip(".")


def evidence_pairs(f: Finding) -> list[tuple[str, str]]:
    """The named figures, in the order the engine gave them, formatted."""
    return [(name, figure(value)) for name, value in f.evidence.items()]


def gpus_text(value: float) -> str:
    """A GPU count (or GPU-equivalents): whole numbers without decimals."""
    return figure(value)


def _row(report: Report, rank: int, f: Finding) -> list[object]:
    return [
        report.month, rank, f.kind, f.namespace, f.service, f.gpu_model, f.title,
        f.recommendation, float(f.current_gpus), float(f.recommended_gpus),
        float(f.monthly_savings_usd), f.hours_of_evidence, f.assumption,
        json.dumps(dict(f.evidence), ensure_ascii=False), f.gpus,
        tuple(hour_utc(h) for h in f.peak_hours), report.rate_card.version,
    ]  # fmt: skip


def findings_csv(report: Report) -> str:
    """A row per finding in the report's (ranked) order; only the header when there is
    none, so a rerun never leaves an earlier run's findings behind."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(FINDING_COLUMNS)
    for rank, f in enumerate(report.findings, start=1):
        w.writerow([cell(v) for v in _row(report, rank, f)])
    return buf.getvalue()


# -- the terminal table --------------------------------------------------------------------

NOT_COMPUTED = "findings were not computed: no findings engine is wired into this run"
NONE_FOUND = "no findings above the thresholds"
_HEADER = ("#", "kind", "service", "GPU model", "GPUs now → recommended", "saves $/month",
           "finding")  # fmt: skip
_RIGHT = {0, 5}  # columns aligned right: the rank and the savings


def money_text(v: float) -> str:
    return f"${v:,.2f}"


def _service(f: Finding) -> str:
    if not f.service:
        return "(fleet)"
    return f"{f.namespace}/{f.service}" if f.namespace else f.service


def findings_table(findings: Sequence[Finding], *, computed: bool = True) -> str:
    """``findings`` as fixed-width text: the columns fitted to their widest cell, the
    savings right-aligned, and a total line; the empty state says why it is empty."""
    if not computed:
        return NOT_COMPUTED + "\n"
    if not findings:
        return NONE_FOUND + "\n"
    rows = [
        (
            str(rank), f.kind, _service(f), f.gpu_model,
            f"{gpus_text(f.current_gpus)} → {gpus_text(f.recommended_gpus)}",
            money_text(f.monthly_savings_usd), f.title,
        )
        for rank, f in enumerate(findings, start=1)
    ]  # fmt: skip
    widths = [max(len(r[i]) for r in [_HEADER, *rows]) for i in range(len(_HEADER))]

    def line(cells: Sequence[str]) -> str:
        out = [
            c.rjust(widths[i]) if i in _RIGHT else c.ljust(widths[i]) for i, c in enumerate(cells)
        ]
        return "  ".join(out).rstrip()

    total = sum(f.monthly_savings_usd for f in findings)
    label = f"{len(findings)} finding{'s' if len(findings) != 1 else ''}: savings identified"
    before = sum(widths[:5]) + 2 * 5  # the savings column starts here
    total_line = label.ljust(before - 2) + "  " + money_text(total).rjust(widths[5])
    rule = ["-" * w for w in widths]
    text = [line(_HEADER), line(rule), *(line(r) for r in rows), line(rule), total_line]
    return "\n".join(text) + "\n"
