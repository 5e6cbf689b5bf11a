"""``chargeback-<YYYY-MM>-clusters.csv``: the report grouped by cluster (issue 18), one
row per cluster and a ``TOTAL`` row that the clusters add up to. Written whenever the CSV
is (a CSV companion); an unpriced figure is an empty cell, never 0."""

from __future__ import annotations

import csv
import io

from gpuledger.chargeback.report.model import Report
from gpuledger.chargeback.report.writers.csv_json import cell

CLUSTER_COLUMNS = (
    "month", "fleet", "cluster", "services", "allocated_gpu_hours", "busy_gpu_hours",
    "energy_kwh", "internal_cost_usd", "idle_share_usd", "total_cost_usd",
)  # fmt: skip


def clusters_csv(report: Report) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CLUSTER_COLUMNS)
    for c in report.clusters:
        w.writerow([cell(v) for v in (
            report.month, report.fleet, c.cluster, c.services, c.allocated_gpu_hours,
            c.busy_gpu_hours, c.energy_kwh, c.internal_cost_usd, c.idle_share_usd,
            c.total_cost_usd,
        )])  # fmt: skip
    t = report.totals
    w.writerow([cell(v) for v in (
        report.month, report.fleet, "TOTAL", None, t.allocated_gpu_hours, t.busy_gpu_hours,
        t.energy_kwh, t.internal_cost_usd, sum(c.idle_share_usd for c in report.clusters),
        t.total_cost_usd,
    )])  # fmt: skip
    return buf.getvalue()
