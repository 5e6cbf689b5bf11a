"""One monthly chargeback run: ledger + rate card + ``report:`` config → files on disk.

Shared by ``gpuledger report`` (a one-off run), the agent's ``reporter`` role (the
schedule) and ``gpuledger demo --month``, so all three price and lay out a month the
same way. Also the catalogue of reports already written, which ``/reports/`` and
``/api/v1/reports`` serve.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from gpuledger.chargeback.budgets.section import with_budgets
from gpuledger.chargeback.findings.model import Finding
from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
from gpuledger.chargeback.report.build import ReportOptions, build_report
from gpuledger.chargeback.report.config import ReportConfig
from gpuledger.chargeback.report.cost_centers import assign, cost_center_map
from gpuledger.chargeback.report.model import Month, Report
from gpuledger.chargeback.report.ratecard import RateCard, load_rate_card
from gpuledger.chargeback.report.writers.files import all_file_names, write_report

_MONTH_DIR = re.compile(r"^\d{4}-\d{2}$")

FindingsProvider = Callable[[AuditableLedgerStore, Month, RateCard], tuple[Finding, ...]]
"""Computes a month's findings from the ledger and the rate card the report is priced with."""


def findings_provider(cfg: ReportConfig) -> FindingsProvider | None:
    """The findings engine every run uses -- the scheduled report, ``gpuledger report``,
    ``gpuledger findings`` and the demo -- wired in this one place so they cannot differ.
    ``None`` (kept for callers that pass no engine) makes a report say its findings were
    not computed, never that there are none."""
    from gpuledger.chargeback.findings.engine import find

    thresholds = cfg.findings
    return lambda store, month, card: find(store, month, card, thresholds)


def rank_findings(found: tuple[Finding, ...]) -> tuple[Finding, ...]:
    """Largest monthly saving first; equal savings keep the order they were given in."""
    return tuple(sorted(found, key=lambda f: -f.monthly_savings_usd))


def with_findings(
    report: Report, store: AuditableLedgerStore, month: Month, card: RateCard,
    findings: FindingsProvider | None,
) -> Report:  # fmt: skip
    """``report`` carrying ``month``'s findings (unchanged when there is no provider)."""
    if findings is None:
        return report
    found = rank_findings(tuple(findings(store, month, card)))
    return replace(report, findings=found, findings_computed=True)


def with_anomalies(
    report: Report, store: AuditableLedgerStore, month: Month, card: RateCard,
    cfg: ReportConfig, now: datetime,
) -> Report:  # fmt: skip
    """``report`` carrying ``month``'s spend anomalies ("What changed"), judged with
    ``cfg.anomalies`` on days priced like the report (its card and policies); unchanged
    when the detector is switched off, so the report says they were not computed."""
    if not cfg.anomalies.enabled:
        return report
    from gpuledger.chargeback.anomalies.daily import Pricing
    from gpuledger.chargeback.anomalies.detect import month_anomalies

    pricing = Pricing(card, cfg.idle_policy, cfg.headroom_policy, cfg.token_weights.weights())
    found = month_anomalies(store, pricing, month, cfg.anomalies, now=now)
    return replace(report, anomalies=tuple(found), anomalies_computed=True)


def report_options(cfg: ReportConfig) -> ReportOptions:
    return ReportOptions(
        idle_policy=cfg.idle_policy,
        fleet=cfg.fleet,
        min_probe_success_ratio=cfg.min_probe_success_ratio,
        max_disagree_ratio=cfg.max_disagree_ratio,
        min_rental_coverage_ratio=cfg.min_rental_coverage_ratio,
        trend_months=cfg.trend_months,
        headroom_policy=cfg.headroom_policy,
        token_weights=cfg.token_weights.weights(),
    )


def run_report(
    store: AuditableLedgerStore,
    cfg: ReportConfig,
    month: Month,
    out_dir: Path,
    *,
    card: RateCard | None = None,
    now: datetime | None = None,
    store_label: str = "",
    progress: Callable[[str], None] | None = None,
    findings: FindingsProvider | None = None,
) -> tuple[Report, list[Path]]:
    """Build ``month``'s report and write every configured format under ``out_dir``.

    ``findings`` (usually :func:`findings_provider`) fills the report's Findings section;
    without one the section says findings were not computed. Every line gets its cost
    center (``report.cost_centers`` over what the agents recorded), with subtotals.
    Raises NoLedgerData, RateCardError or StoreError before anything is written."""
    card = card or load_rate_card(cfg.rate_card)
    report = build_report(
        store,
        card,
        month,
        options=report_options(cfg),
        now=now,
        store_label=store_label,
        progress=progress,
    )
    report = with_findings(report, store, month, card, findings)
    report = assign(report, cost_center_map(store, cfg.cost_centers, month.start, month.end))
    if cfg.anomalies.enabled and progress is not None:
        progress("spend anomalies (each day against its baseline)")
    report = with_anomalies(report, store, month, card, cfg, now or datetime.now(UTC))
    report = with_budgets(report, store, cfg, card, month, now=now)

    def written(path: Path) -> None:
        if progress is not None:
            progress(f"wrote {path.name}")

    paths = write_report(report, out_dir, cfg.formats, on_written=written)
    if cfg.keep_months:
        prune_reports(out_dir, cfg.keep_months)
    return report, paths


@dataclass(frozen=True, slots=True)
class WrittenReport:
    month: str
    files: tuple[str, ...]  # names inside the month's directory


def list_reports(out_dir: Path) -> list[WrittenReport]:
    """The months with a report under ``out_dir``, newest first."""
    if not out_dir.is_dir():
        return []
    out: list[WrittenReport] = []
    for entry in out_dir.iterdir():
        if not (entry.is_dir() and _MONTH_DIR.match(entry.name)):
            continue
        files = tuple(
            sorted(
                f.name
                for f in entry.iterdir()
                if f.is_file() and not f.name.startswith(".") and f.name.startswith("chargeback-")
            )
        )
        if files:
            out.append(WrittenReport(entry.name, files))
    return sorted(out, key=lambda r: r.month, reverse=True)


def report_file(out_dir: Path, month: str, name: str) -> Path | None:
    """The path of a written report file, or None. Only names the writer produces are
    accepted, so a request can never reach outside ``out_dir``."""
    try:
        m = Month.parse(month)
    except ValueError:
        return None
    if name not in all_file_names(m.label):
        return None
    path = out_dir / m.label / name
    return path if path.is_file() else None


def prune_reports(out_dir: Path, keep_months: int) -> list[str]:
    """Delete all but the newest ``keep_months`` months; returns the months removed."""
    removed = [r.month for r in list_reports(out_dir)[keep_months:]]
    for month in removed:
        shutil.rmtree(out_dir / month, ignore_errors=True)
    return removed
