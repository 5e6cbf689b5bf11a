"""What a person running a monthly report sees in the terminal: how many steps the progress
bar counts and the summary printed once the files are written. ``gpuledger report`` and
``gpuledger demo`` both use it, so a month reads the same whichever command made it."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from gpuledger.chargeback.report.build import BUILD_STEPS
from gpuledger.chargeback.report.config import ReportConfig
from gpuledger.chargeback.report.model import Report


def progress_steps(cfg: ReportConfig) -> int:
    """The progress calls one :func:`~gpuledger.chargeback.report.monthly.run_report`
    makes: the build's steps, one per earlier month of the trend, one per format written,
    and one to spare, so a full bar means done."""
    return BUILD_STEPS + cfg.trend_months - 1 + len(cfg.formats) + 1


def print_summary(result: Report) -> None:
    """The month's headline figures on stderr (stdout carries only the paths written)."""
    t = result.totals
    out = Console(stderr=True, soft_wrap=True)  # notes and paths stay whole lines
    out.print(
        f"[bold]{result.fleet} {result.month}[/]: {len(result.lines)} lines, "
        f"rate card {result.rate_card.version} ({result.rate_card.digest}), "
        f"idle policy {result.idle_policy}"
    )
    table = Table(show_header=True)
    for col in ("GPU-hours", "busy", "internal cost", "hyperscaler", "specialist", "token API"):
        table.add_column(col, justify="right")
    table.add_row(
        f"{t.allocated_gpu_hours:,.1f}",
        f"{t.busy_gpu_hours:,.1f}",
        f"${t.total_cost_usd:,.2f}",
        f"${t.rental_hyperscaler_usd:,.2f}",
        f"${t.rental_specialist_usd:,.2f}",
        f"${t.token_api_usd:,.2f}",
    )
    out.print(table)
    for note in result.notes:
        out.print(f"  - {note}")
