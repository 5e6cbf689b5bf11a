"""Writes a :class:`~gpuledger.chargeback.report.model.Report` to disk in every format.

Layout: ``<out>/<YYYY-MM>/chargeback-<YYYY-MM>.{csv,json,html}``, plus
``chargeback-<YYYY-MM>-focus.csv`` (FOCUS 1.2) and ``chargeback-<YYYY-MM>-coverage.csv``.
Each file is written to a temporary name and renamed into place, so the agent's
``/reports/`` never serves half a file and a failed run leaves the previous one intact.

CSV cells hold numbers with six decimals (traceable, not rounded to cents); a figure that
could not be priced is an empty cell, with the reason in the matching ``*_basis`` or
``unpriced_gpu_models`` column, never a zero.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Literal

from gpuledger.chargeback.report.model import Report, ServiceLine

Format = Literal["csv", "json", "focus", "html"]
FORMATS: tuple[Format, ...] = ("csv", "json", "focus", "html")

LINE_COLUMNS = (
    "month", "namespace", "service", "kind", "gpu_models",
    "allocated_gpu_hours", "busy_gpu_hours", "utilization_ratio", "energy_kwh",
    "capacity_cost_usd", "energy_cost_usd", "internal_cost_usd", "idle_share_usd",
    "total_cost_usd", "unpriced_gpu_models",
    "billable_prompt_tokens", "billable_generation_tokens",
    "probe_prompt_tokens", "probe_generation_tokens", "cost_per_1m_tokens_usd",
    "rental_hyperscaler_usd", "rental_hyperscaler_basis",
    "rental_specialist_usd", "rental_specialist_basis",
    "token_api_usd", "token_api_basis",
    "savings_vs_hyperscaler_usd", "savings_vs_specialist_usd", "savings_vs_token_api_usd",
    "p99_ttft_s", "p99_tpot_s", "p99_e2e_s",
    "probes", "probe_success_ratio", "verdicts_agree", "verdicts_disagree",
    "validation", "counterfactual_flagged", "idle_policy", "rate_card_version",
)  # fmt: skip
COVERAGE_COLUMNS = (
    "month", "node", "gpus", "observed_gpu_hours", "expected_gpu_hours", "coverage_ratio",
    "first_hour", "last_hour",
)  # fmt: skip


def file_name(month: str, fmt: Format) -> str:
    suffix = {"csv": ".csv", "json": ".json", "focus": "-focus.csv", "html": ".html"}[fmt]
    return f"chargeback-{month}{suffix}"


def cell(value: object) -> str:
    """A CSV cell: floats with six decimals, None empty, booleans ``true``/``false``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6f}"
    if isinstance(value, tuple | list):
        return ";".join(str(v) for v in value)
    return str(value)


def _line_row(report: Report, line: ServiceLine) -> list[object]:
    return [
        report.month, line.namespace, line.service, line.kind, line.gpu_models,
        line.allocated_gpu_hours, line.busy_gpu_hours, line.utilization_ratio, line.energy_kwh,
        line.capacity_cost_usd, line.energy_cost_usd, line.internal_cost_usd,
        line.idle_share_usd, line.total_cost_usd, line.unpriced_gpu_models,
        line.prompt_tokens, line.generation_tokens,
        line.probe_prompt_tokens, line.probe_generation_tokens, line.cost_per_1m_tokens_usd,
        line.rental_hyperscaler_usd, line.rental_hyperscaler_basis,
        line.rental_specialist_usd, line.rental_specialist_basis,
        line.token_api_usd, line.token_api_basis,
        line.savings_vs_hyperscaler_usd, line.savings_vs_specialist_usd,
        line.savings_vs_token_api_usd,
        line.p99_ttft_s, line.p99_tpot_s, line.p99_e2e_s,
        line.probes, line.probe_success_ratio, line.verdicts_agree, line.verdicts_disagree,
        line.validation, line.counterfactual_flagged, report.idle_policy, report.rate_card.version,
    ]  # fmt: skip


def _total_row(report: Report) -> list[object]:
    t = report.totals
    row: dict[str, object] = {
        "month": report.month,
        "service": "TOTAL",
        "kind": "total",
        "allocated_gpu_hours": t.allocated_gpu_hours,
        "busy_gpu_hours": t.busy_gpu_hours,
        "utilization_ratio": t.utilization_ratio,
        "energy_kwh": t.energy_kwh,
        "capacity_cost_usd": t.capacity_cost_usd,
        "energy_cost_usd": t.energy_cost_usd,
        "internal_cost_usd": t.internal_cost_usd,
        "total_cost_usd": t.total_cost_usd,
        "unpriced_gpu_models": tuple(report.unpriced_gpu_models),
        "billable_prompt_tokens": t.prompt_tokens,
        "billable_generation_tokens": t.generation_tokens,
        "rental_hyperscaler_usd": t.rental_hyperscaler_usd,
        "rental_hyperscaler_basis": "sum over the lines that have one",
        "rental_specialist_usd": t.rental_specialist_usd,
        "rental_specialist_basis": "sum over the lines that have one",
        "token_api_usd": t.token_api_usd,
        "token_api_basis": "sum over the lines that have one",
        "idle_policy": report.idle_policy,
        "rate_card_version": report.rate_card.version,
    }
    return [row.get(c) for c in LINE_COLUMNS]


def _csv(rows: Iterable[Sequence[object]], header: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow([cell(v) for v in row])
    return buf.getvalue()


def lines_csv(report: Report) -> str:
    """A row per (namespace, service), the idle and unattributed lines, then ``TOTAL``."""
    rows = [_line_row(report, line) for line in report.lines]
    rows.append(_total_row(report))
    return _csv(rows, LINE_COLUMNS)


def coverage_csv(report: Report) -> str:
    rows = [
        [report.month, c.node, c.gpus, c.observed_gpu_hours, c.expected_gpu_hours,
         c.coverage_ratio, c.first_hour, c.last_hour]
        for c in report.coverage
    ]  # fmt: skip
    return _csv(rows, COVERAGE_COLUMNS)


def report_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def write_atomic(path: Path, text: str) -> None:
    """``text`` to ``path`` through a temporary file in the same directory + rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the report from its readers
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _renderers() -> dict[Format, Callable[[Report], str]]:
    from gpuledger.chargeback.report.writers.focus import focus_csv
    from gpuledger.chargeback.report.writers.html import render_html

    return {"csv": lines_csv, "json": report_json, "focus": focus_csv, "html": render_html}


def write_report(
    report: Report,
    out_dir: Path,
    formats: Sequence[Format] = FORMATS,
    *,
    on_written: Callable[[Path], None] | None = None,
) -> list[Path]:
    """Every format of ``report`` under ``out_dir/<month>/``; returns the paths written."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown report format(s) {unknown}; use any of {', '.join(FORMATS)}")
    month_dir = out_dir / report.month
    renderers = _renderers()
    written: list[Path] = []
    for fmt in formats:
        path = month_dir / file_name(report.month, fmt)
        write_atomic(path, renderers[fmt](report))
        written.append(path)
        if on_written is not None:
            on_written(path)
        if fmt == "csv":
            cov = month_dir / f"chargeback-{report.month}-coverage.csv"
            write_atomic(cov, coverage_csv(report))
            written.append(cov)
    return written
