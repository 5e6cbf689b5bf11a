"""``gpuledger budgets check`` and ``gpuledger budgets show``: the budget rows validated
(every bad row named, exit 2) and each budget against the ledger now. Registered on the
app by ``cli.py``; the rules are ``chargeback/budgets/`` (``docs/budgets.md``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gpuledger.cli_report import (
    ConfigOption,
    LedgerOption,
    RateCardOption,
    rate_card_or_exit,
    store_or_exit,
)
from gpuledger.cli_support import EXIT_CONFIG, err, load_or_exit

if TYPE_CHECKING:
    from gpuledger.agent.config import AgentConfig
    from gpuledger.chargeback.budgets.config import Budget

budgets_app = typer.Typer(
    name="budgets",
    help="Monthly budgets per cost center, namespace or service (docs/budgets.md).",
    no_args_is_help=True,
)

FileOption = Annotated[
    Path | None,
    typer.Option("--file", "-f", help="A budgets YAML to check instead of the config's rows."),
]


def _problems_exit(problems: list[tuple[str, str]]) -> None:
    err.print(f"[bold red]{len(problems)} budget problem(s)[/]:")
    for row, message in problems:
        err.print(f"  [bold]{escape(row)}[/]: {escape(message)}", highlight=False)
    raise typer.Exit(EXIT_CONFIG)


def _rows_or_exit(cfg: AgentConfig, file: Path | None) -> tuple[Budget, ...]:
    from gpuledger.chargeback.budgets.config import BudgetError, load_file

    try:
        return load_file(file) if file is not None else cfg.report.budget_rows()
    except BudgetError as exc:
        _problems_exit(exc.problems)
    raise AssertionError("unreachable")  # pragma: no cover


def _money(v: float | None) -> str:
    return "—" if v is None else f"${v:,.2f}"


@budgets_app.command("check")
def check(config: ConfigOption = None, file: FileOption = None) -> None:
    """Validate the budgets (the config's rows and file, or --file): every bad row named,
    exit 2. Cost centers are checked against the config's static rules and tenants."""
    from gpuledger.chargeback.budgets.config import unknown_cost_centers
    from gpuledger.chargeback.costcenters.resolve import CostCenterMap

    cfg = load_or_exit(config)
    rows = _rows_or_exit(cfg, file)
    unknown = unknown_cost_centers(rows, CostCenterMap(cfg.report.cost_centers).names())
    if unknown:
        _problems_exit(unknown)
    table = Table(title=f"{len(rows)} budget(s)")
    for col in ("scope", "name", "monthly", "row"):
        table.add_column(col, justify="right" if col == "monthly" else "left")
    for b in rows:
        table.add_row(b.scope, escape(b.name), _money(b.monthly_usd), escape(b.row))
    Console().print(table)


@budgets_app.command("show")
def show(
    config: ConfigOption = None, ledger: LedgerOption = None, rate_card: RateCardOption = None
) -> None:
    """Each budget against the ledger now: month to date, the end-of-month forecast,
    next month's, % used and status (what the reporter exports every hour)."""
    from datetime import UTC, datetime

    from gpuledger.chargeback.budgets.status import budget_report
    from gpuledger.chargeback.ledger.model import StoreError
    from gpuledger.chargeback.report.cost_centers import cost_center_map
    from gpuledger.chargeback.report.model import Month

    overrides: dict[str, object] = {}
    if rate_card is not None:
        overrides["report.rate_card"] = rate_card
    if ledger is not None:
        overrides["ledger.url"] = ledger
        overrides["ledger.url_file"] = None
    cfg = load_or_exit(config, overrides)
    rows = _rows_or_exit(cfg, None)
    card = rate_card_or_exit(cfg)
    store, where = store_or_exit(cfg)
    try:
        now = datetime.now(UTC)
        month = Month.of(now)
        centers = cost_center_map(store, cfg.report.cost_centers, month.start, month.end)
        got = budget_report(
            store, card, rows, centers, now,
            policy=cfg.report.idle_policy, history_days=cfg.report.forecast_history_days,
        )  # fmt: skip
    except StoreError as exc:
        err.print(f"[bold red]cannot read the ledger[/] {where}: {escape(str(exc))}")
        raise typer.Exit(3) from None
    finally:
        store.close()
    table = Table(title=f"budgets {got.month}, as of {got.as_of} ({where})")
    for col in ("scope", "name", "budget", "month to date", "used", "forecast", "next month",
                "status"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("scope", "name", "status") else "right")
    for line in got.lines:
        table.add_row(
            line.scope, escape(line.name), _money(line.budget_usd),
            _money(line.month_to_date_usd), f"{line.used_ratio:.0%}",
            _money(line.forecast_usd), _money(line.next_month_forecast_usd), line.status,
        )  # fmt: skip
    Console().print(table)
    for warning in got.warnings:
        err.print(f"[yellow]warning[/]: {escape(warning)}", highlight=False)
