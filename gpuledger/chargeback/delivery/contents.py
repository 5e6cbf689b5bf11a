"""What a recipient receives, read back from the report files on disk.

Delivery works from the files the reporter wrote (``chargeback-<month>.json`` for exact
names and figures, ``chargeback-<month>.csv`` and ``-focus.csv`` as attachments), never
from a report held in memory: a delivery resumed after a restart then sends exactly what
the first try would have sent, and finance's attachments are the bytes on disk.

A cost center's recipients get their own lines: the rows of the main CSV whose
(namespace, service) the :class:`CostCenterMap` assigns to them, as the writer wrote
them, then a ``TOTAL`` row of those lines (their subtotal). A cost that could not be
priced stays unpriced: the subtotal cell of a column is empty when one of its lines is.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from gpuledger.chargeback.costcenters.resolve import CostCenterMap
from gpuledger.chargeback.report.writers.cells import neutralize
from gpuledger.chargeback.report.writers.csv_json import LINE_COLUMNS
from gpuledger.chargeback.report.writers.files import file_name


class DeliveryError(Exception):
    """A delivery that cannot be made as configured (missing files, unreadable secret):
    one line, no secret in it."""


SUMMED = (
    "allocated_gpu_hours", "busy_gpu_hours", "energy_kwh", "capacity_cost_usd",
    "energy_cost_usd", "internal_cost_usd", "idle_share_usd", "total_cost_usd",
)  # fmt: skip
"""The CSV columns a subtotal adds up (the ones the main CSV's TOTAL row adds up)."""

COPIED = ("month", "idle_policy", "rate_card_version")


@dataclass(frozen=True, slots=True)
class Line:
    namespace: str
    service: str
    cost_center: str
    total_cost_usd: float | None  # None: not priced
    row: tuple[str, ...]  # its row of the CSV, as written


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    data: bytes
    content_type: str = "text/csv"


@dataclass(frozen=True, slots=True)
class ReportFiles:
    """One month's written report, as delivery reads it."""

    month: str
    fleet: str
    currency: str
    complete: bool
    total_cost_usd: float
    lines: tuple[Line, ...]
    header: tuple[str, ...]
    attachments: tuple[Attachment, ...]  # the main CSV, then FOCUS when written

    def cost_centers(self) -> dict[str, float | None]:
        """Subtotal per cost center, largest first; None when a line of it is unpriced."""
        out: dict[str, float | None] = {}
        for line in self.lines:
            have = out.get(line.cost_center, 0.0)
            out[line.cost_center] = (
                None if have is None or line.total_cost_usd is None else have + line.total_cost_usd
            )
        return dict(sorted(out.items(), key=lambda kv: (-(kv[1] or 0.0), kv[0])))

    def of(self, cost_center: str) -> tuple[Line, ...]:
        return tuple(line for line in self.lines if line.cost_center == cost_center)

    def subtotal(self, cost_center: str) -> float | None:
        return self.cost_centers().get(cost_center, 0.0)

    def cost_center_csv(self, cost_center: str) -> Attachment:
        """The header, ``cost_center``'s rows as written, and their ``TOTAL`` row."""
        lines = self.of(cost_center)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.header)
        for line in lines:
            w.writerow(line.row)
        w.writerow(_subtotal_row(self.header, [line.row for line in lines], cost_center))
        slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in cost_center)
        name = f"chargeback-{self.month}-cost-center-{slug}.csv"
        return Attachment(name, buf.getvalue().encode("utf-8"))


def _decimal(cell: str) -> Decimal | None:
    try:
        return Decimal(cell) if cell else None
    except InvalidOperation:
        return None


def _subtotal_row(
    header: Sequence[str], rows: Sequence[Sequence[str]], cost_center: str
) -> list[str]:
    row = dict.fromkeys(header, "")
    row["namespace"] = neutralize(cost_center)
    row["service"] = "TOTAL"
    row["kind"] = "total"
    for column in COPIED:
        row[column] = rows[0][header.index(column)] if rows else ""
    for column in SUMMED:
        at = header.index(column)
        cells = [_decimal(r[at]) for r in rows]
        known = [c for c in cells if c is not None]
        row[column] = f"{sum(known, Decimal(0)):.6f}" if len(known) == len(cells) else ""
    alloc, busy = _decimal(row["allocated_gpu_hours"]), _decimal(row["busy_gpu_hours"])
    if alloc and busy is not None:
        row["utilization_ratio"] = f"{busy / alloc:.6f}"
    return [row[c] for c in header]


def read_report(out_dir: Path, month: str, cost_centers: CostCenterMap) -> ReportFiles:
    """``month``'s report under ``out_dir``; DeliveryError when its JSON or CSV is missing
    or the two disagree (a half-written or hand-edited month is not sent)."""
    folder = out_dir / month
    json_path, csv_path = folder / file_name(month, "json"), folder / file_name(month, "csv")
    try:
        doc: dict[str, Any] = json.loads(json_path.read_text(encoding="utf-8"))
        csv_bytes = csv_path.read_bytes()
    except (OSError, ValueError) as exc:
        raise DeliveryError(
            f"report {month}: {type(exc).__name__} reading its files: {exc}"
        ) from None
    rows = list(csv.reader(io.StringIO(csv_bytes.decode("utf-8"), newline="")))
    try:
        lines = doc["lines"]
        total = float(doc["totals"]["total_cost_usd"])
        header = tuple(rows[0])
        ns_at, svc_at = header.index("namespace"), header.index("service")
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise DeliveryError(f"report {month}: not a report this version wrote ({exc})") from None
    if header != LINE_COLUMNS or len(rows) != len(lines) + 2:
        raise DeliveryError(f"report {month}: its CSV and JSON disagree (rows or columns)")
    out: list[Line] = []
    for d, row in zip(lines, rows[1:-1], strict=True):
        ns, svc = str(d["namespace"]), str(d["service"])
        if (row[ns_at], row[svc_at]) != (neutralize(ns), neutralize(svc)):
            raise DeliveryError(f"report {month}: its CSV and JSON disagree on a line")
        cost = d.get("total_cost_usd")
        out.append(
            Line(
                ns, svc, cost_centers.of(ns, svc), None if cost is None else float(cost), tuple(row)
            )
        )
    attachments = [Attachment(csv_path.name, csv_bytes)]
    focus = folder / file_name(month, "focus")
    if focus.is_file():
        attachments.append(Attachment(focus.name, focus.read_bytes()))
    return ReportFiles(
        month=month,
        fleet=str(doc.get("fleet", "")),
        currency=str(doc.get("currency", "USD")),
        complete=bool(doc.get("complete", True)),
        total_cost_usd=total,
        lines=tuple(out),
        header=header,
        attachments=tuple(attachments),
    )
