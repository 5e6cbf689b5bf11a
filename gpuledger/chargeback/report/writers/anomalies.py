"""The report's spend anomalies ("What changed") as ``chargeback-YYYY-MM-anomalies.csv``.

One row per anomaly, in the report's order (by day, largest change first). The drivers
are one cell of JSON (kind, name, the part's day and baseline dollars and its change),
so a script reads every figure back exactly, and one cell of text for a person. Service,
namespace, GPU model and tenant names come from the cluster and are neutralized like
every other CSV cell.
"""

from __future__ import annotations

import csv
import io
import json

from gpuledger.chargeback.anomalies.model import SpendAnomaly
from gpuledger.chargeback.report.model import Report
from gpuledger.chargeback.report.writers.csv_json import cell

ANOMALY_COLUMNS = (
    "month", "day", "namespace", "service", "direction", "cost_usd", "baseline_usd",
    "change_usd", "robust_z", "mad_usd", "baseline_days", "drivers", "drivers_json",
    "rate_card_version",
)  # fmt: skip
"""``robust_z``: (cost − baseline median) / (1.4826 × MAD, floored); ``drivers``: text,
``;``-separated; ``drivers_json``: a list of objects (``kind``, ``name``, ``day_usd``,
``baseline_usd``, ``change_usd``)."""


def drivers_json(a: SpendAnomaly) -> str:
    parts = [
        {"kind": d.kind, "name": d.name, "day_usd": d.day_usd,
         "baseline_usd": d.baseline_usd, "change_usd": d.change_usd}
        for d in a.drivers
    ]  # fmt: skip
    return json.dumps(parts, ensure_ascii=False)


def _row(report: Report, a: SpendAnomaly) -> list[object]:
    return [
        report.month, a.day, a.namespace, a.service, a.direction, float(a.cost_usd),
        float(a.baseline_usd), float(a.change_usd), float(a.score), float(a.mad_usd),
        a.baseline_days, a.drivers_text, drivers_json(a), report.rate_card.version,
    ]  # fmt: skip


def anomalies_csv(report: Report) -> str:
    """A row per anomaly; only the header when there is none (or none were computed), so
    a rerun never leaves an earlier run's rows behind."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(ANOMALY_COLUMNS)
    for a in report.anomalies:
        w.writerow([cell(v) for v in _row(report, a)])
    return buf.getvalue()
