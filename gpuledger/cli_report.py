"""``gpuledger report``, ``gpuledger findings`` and ``gpuledger retention``: the month's
report from the ledger, its findings on the terminal, and old months archived and
dropped. Registered on the app by ``cli.py``."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from gpuledger.agent.config import ConfigError
from gpuledger.cli_support import (
    EXIT_CONFIG,
    EXIT_NO_DATA,
    EXIT_STORE,
    err,
    load_or_exit,
    previous_month,
    require_report_packages,
)

if TYPE_CHECKING:
    from gpuledger.agent.config import AgentConfig
    from gpuledger.chargeback.findings.model import Finding
    from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
    from gpuledger.chargeback.report.model import Month
    from gpuledger.chargeback.report.ratecard import RateCard


# Options the report commands share (one declaration each).
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Agent config: its ledger and report: sections."),
]
LedgerOption = Annotated[
    str | None,
    typer.Option("--ledger", help="Ledger URL (sqlite:///… or postgresql://…), overrides."),
]
RateCardOption = Annotated[
    Path | None, typer.Option("--rate-card", help="Rate card YAML, overrides report.rate_card.")
]


def _rate_card_or_exit(cfg: AgentConfig) -> RateCard:
    """The configured rate card, or exit 2 naming each bad row."""
    from gpuledger.chargeback.report.ratecard import RateCardError, load_rate_card

    try:
        return load_rate_card(cfg.report.rate_card)
    except RateCardError as exc:
        err.print(f"[bold red]invalid rate card[/] {exc.source}:")
        for row, message in exc.problems:
            err.print(f"  [bold]{row}[/]: {message}")
        raise typer.Exit(EXIT_CONFIG) from None


def _store_or_exit(cfg: AgentConfig) -> tuple[AuditableLedgerStore, str]:
    """The configured ledger, opened (and where it is, without a password), or exit 2
    (bad configuration) or 3 (no ledger there, or it cannot be opened)."""
    from gpuledger.chargeback.ledger.model import StoreError
    from gpuledger.chargeback.ledger.store import open_store
    from gpuledger.redact import safe_url

    try:
        url = cfg.ledger_url()
    except ConfigError as exc:
        for key, message in exc.problems:
            err.print(f"[bold red]invalid configuration[/] [bold]{key}[/]: {escape(message)}")
        raise typer.Exit(EXIT_CONFIG) from None
    where = safe_url(url)
    if url.startswith("sqlite:///") and ":memory:" not in url:
        from gpuledger.chargeback.ledger.store.common import sqlite_path

        if not Path(sqlite_path(url)).is_file():
            err.print(f"[bold red]no ledger at[/] {where} (set --ledger or ledger.url)")
            raise typer.Exit(EXIT_STORE)
    try:
        return open_store(url), where
    except (ValueError, StoreError) as exc:
        err.print(f"[bold red]cannot open the ledger[/] {where}: {exc}")
        raise typer.Exit(EXIT_STORE) from None


rate_card_or_exit = _rate_card_or_exit  # for the other report commands (cli_budgets.py)
store_or_exit = _store_or_exit


def _month_or_exit(month: str | None) -> Month:
    from gpuledger.chargeback.report.model import Month

    try:
        return Month.parse(month or previous_month())
    except ValueError as exc:
        err.print(f"[bold red]--month[/]: {exc}")
        raise typer.Exit(EXIT_CONFIG) from None


class ReportBy(StrEnum):
    service = "service"
    tenant = "tenant"
    cost_center = "cost-center"
    cluster = "cluster"


def report(
    month: Annotated[
        str | None, typer.Option("--month", help="YYYY-MM (UTC). Default: last month.")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Directory to write to.")] = None,
    config: ConfigOption = None,
    ledger: LedgerOption = None,
    rate_card: RateCardOption = None,
    idle_policy: Annotated[
        str | None,
        typer.Option("--idle-policy", help="separate | share-weighted | share-even."),
    ] = None,
    formats: Annotated[
        str | None, typer.Option("--format", help="Comma-separated: csv,json,focus,html.")
    ] = None,
    by: Annotated[
        ReportBy,
        typer.Option(
            "--by",
            help="The summary printed: the fleet's totals (service), the tenants of shared "
            "services, costliest first (tenant), the subtotal of each cost center "
            "(cost-center), or each cluster's subtotal (cluster). The files written are "
            "the same.",
        ),
    ] = ReportBy.service,
) -> None:
    """Write the monthly GPU chargeback (CSV, JSON, FOCUS 1.2, HTML) from the ledger."""
    from rich.progress import Progress

    from gpuledger.chargeback.ledger.model import StoreError
    from gpuledger.chargeback.report.build import NoLedgerData
    from gpuledger.chargeback.report.console import print_summary, progress_steps
    from gpuledger.chargeback.report.monthly import findings_provider, run_report

    overrides: dict[str, object] = {}
    if rate_card is not None:
        overrides["report.rate_card"] = rate_card
    if idle_policy is not None:
        overrides["report.idle_policy"] = idle_policy
    if formats is not None:
        overrides["report.formats"] = tuple(f.strip() for f in formats.split(",") if f.strip())
    if ledger is not None:
        overrides["ledger.url"] = ledger
        overrides["ledger.url_file"] = None
    cfg = load_or_exit(config, overrides)
    require_report_packages(cfg)
    target = _month_or_exit(month)
    card = _rate_card_or_exit(cfg)
    out_dir = out or cfg.reports_dir()
    steps = progress_steps(cfg.report)
    store, where = _store_or_exit(cfg)
    try:
        with Progress(console=err, transient=True) as bar:
            task = bar.add_task(f"chargeback {target.label}", total=steps)

            def progress(what: str) -> None:
                bar.update(task, advance=1, description=f"{target.label}: {what}")

            result, paths = run_report(
                store,
                cfg.report,
                target,
                out_dir,
                card=card,
                store_label=where,
                progress=progress,
                findings=findings_provider(cfg.report),
            )
    except NoLedgerData as exc:
        err.print(f"[bold yellow]nothing to report[/]: {exc}")
        raise typer.Exit(EXIT_NO_DATA) from None
    except StoreError as exc:
        err.print(f"[bold red]ledger store failed[/]: {exc}")
        raise typer.Exit(EXIT_STORE) from None
    finally:
        store.close()
    print_summary(result, by=by.value)
    for path in paths:
        typer.echo(str(path))


class FindingsFormat(StrEnum):
    table = "table"
    json = "json"


def _findings_for(
    store: AuditableLedgerStore, month: Month, card: RateCard, cfg: AgentConfig
) -> tuple[Finding, ...] | None:
    """``month``'s findings, ranked, from the findings engine every report run uses
    (``monthly.findings_provider``); None when no engine is wired (not computed)."""
    from gpuledger.chargeback.report.monthly import findings_provider, rank_findings

    provider = findings_provider(cfg.report)
    if provider is None:
        return None
    return rank_findings(tuple(provider(store, month, card)))


def findings(
    month: Annotated[
        str | None, typer.Option("--month", help="YYYY-MM (UTC). Default: last month.")
    ] = None,
    service: Annotated[
        str | None, typer.Option("--service", help="Only this service's findings.")
    ] = None,
    namespace: Annotated[
        str | None, typer.Option("--namespace", help="Only this namespace's findings.")
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind",
            help="Only one kind: over_provisioned, smaller_gpu_class, mig_fit, "
            "idle_capacity, zombie.",
        ),
    ] = None,
    fmt: Annotated[
        FindingsFormat, typer.Option("--format", help="table (default) or json.")
    ] = FindingsFormat.table,
    config: ConfigOption = None,
    ledger: LedgerOption = None,
    rate_card: RateCardOption = None,
) -> None:
    """Print a month's findings -- what to change and what it would save -- largest first."""
    import json

    from gpuledger.chargeback.findings.model import FINDING_KINDS
    from gpuledger.chargeback.ledger.model import StoreError
    from gpuledger.chargeback.report.model import finding_dict
    from gpuledger.chargeback.report.writers.findings import findings_table

    if kind is not None and kind not in FINDING_KINDS:
        err.print(
            f"[bold red]--kind[/]: {escape(repr(kind))} is not one of {', '.join(FINDING_KINDS)}"
        )
        raise typer.Exit(EXIT_CONFIG)
    overrides: dict[str, object] = {}
    if rate_card is not None:
        overrides["report.rate_card"] = rate_card
    if ledger is not None:
        overrides["ledger.url"] = ledger
        overrides["ledger.url_file"] = None
    cfg = load_or_exit(config, overrides)
    target = _month_or_exit(month)
    card = _rate_card_or_exit(cfg)
    store, _where = _store_or_exit(cfg)
    try:
        found = _findings_for(store, target, card, cfg)
    except StoreError as exc:
        err.print(f"[bold red]ledger store failed[/]: {exc}")
        raise typer.Exit(EXIT_STORE) from None
    finally:
        store.close()
    shown = tuple(
        f
        for f in found or ()
        if (kind is None or f.kind == kind)
        and (service is None or f.service == service)
        and (namespace is None or f.namespace == namespace)
    )
    if fmt is FindingsFormat.json:
        doc = {
            "month": target.label,
            "computed": found is not None,
            "savings_identified_usd": sum(f.monthly_savings_usd for f in shown),
            "findings": [finding_dict(f) for f in shown],
        }
        typer.echo(json.dumps(doc, indent=2, ensure_ascii=False))
        return
    typer.echo(f"findings {target.label}", err=True)
    typer.echo(findings_table(shown, computed=found is not None), nl=False)


def retention(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Agent config: its ledger: section.")
    ] = None,
    ledger: Annotated[
        str | None, typer.Option("--ledger", help="Ledger URL, overrides ledger.url.")
    ] = None,
    keep_months: Annotated[
        int | None,
        typer.Option(
            "--keep-months",
            help="Full months kept before the current one (>= 1); "
            "overrides ledger.retention_months.",
        ),
    ] = None,
    archive_dir: Annotated[
        Path | None, typer.Option("--archive-dir", help="Overrides ledger.archive_dir.")
    ] = None,
    no_archive: Annotated[
        bool, typer.Option("--no-archive", help="Drop old months without an archive copy.")
    ] = False,
) -> None:
    """Archive (gzip CSV) and drop ledger months older than the retention (docs/ledger.md)."""
    from datetime import UTC, datetime

    from gpuledger.chargeback.ledger.model import StoreError
    from gpuledger.chargeback.ledger.store import open_store
    from gpuledger.chargeback.ledger.store.retention import retention_cutoff
    from gpuledger.redact import safe_url

    overrides: dict[str, object] = {"ledger.url": ledger, "ledger.url_file": None} if ledger else {}
    if keep_months is not None:
        overrides["ledger.retention_months"] = keep_months
    cfg = load_or_exit(config, overrides)
    keep = cfg.ledger.retention_months
    if keep is None:
        err.print("[bold yellow]no retention set[/] (ledger.retention_months or --keep-months)")
        raise typer.Exit(EXIT_CONFIG)
    target = None if no_archive else archive_dir or cfg.ledger.archive_dir
    target = None if no_archive else target or cfg.state_dir / "ledger-archive"
    try:
        now, url = datetime.now(UTC), cfg.ledger_url()
    except ConfigError as exc:
        err.print(f"[bold red]invalid configuration[/]: {exc}")
        raise typer.Exit(EXIT_CONFIG) from None
    try:
        store = open_store(url)
        try:
            store.migrate()
            retired = store.retire_before(retention_cutoff(now, keep), archive_dir=target, now=now)
        finally:
            store.close()
    except (ValueError, StoreError) as exc:
        err.print(f"[bold red]retention failed[/] on {safe_url(url)}: {exc}")
        raise typer.Exit(EXIT_STORE) from None
    for r in retired:
        typer.echo(f"{r.month} {r.table}: {r.rows} rows {r.archive or '(not archived)'}")
    err.print(f"{len(retired)} table-months retired, kept from {retention_cutoff(now, keep):%Y-%m}")
