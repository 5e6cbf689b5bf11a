"""The report's "Budgets" section: each configured budget against the month the report
covers, as of the report's period end (a complete month: its whole cost, and the
forecast equals it; a month under way: month to date and the end-of-month forecast).

A budget problem never stops a report: a budgets file that went bad since the config was
loaded, or an unknown cost center, becomes a note of the report (row-named), and the
rest of the report is written as it would be without budgets.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from gpuledger.chargeback.budgets.config import BudgetError
from gpuledger.chargeback.budgets.status import budget_report
from gpuledger.chargeback.costcenters.resolve import CostCenterMap
from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
from gpuledger.chargeback.report.config import ReportConfig
from gpuledger.chargeback.report.cost_centers import cost_center_map
from gpuledger.chargeback.report.model import Month, Report
from gpuledger.chargeback.report.ratecard import RateCard


def with_budgets(
    report: Report,
    store: AuditableLedgerStore,
    cfg: ReportConfig,
    card: RateCard,
    month: Month,
    *,
    now: datetime | None = None,
    centers: CostCenterMap | None = None,
) -> Report:
    """``report`` with its Budgets section and, with ``report.forecasts``, every cost
    center's and service's forecast (unchanged when neither is configured)."""
    configured = bool(cfg.budgets) or cfg.budgets_file is not None
    if not configured and not cfg.forecasts:
        return report
    notes: tuple[str, ...] = ()
    try:
        rows = cfg.budget_rows()
    except BudgetError as exc:
        notes = tuple(f"BUDGETS NOT SHOWN: {row}: {msg}" for row, msg in exc.problems)
        rows = ()
        if not cfg.forecasts:
            return replace(report, budgets_configured=True, notes=(*report.notes, *notes))
    got = budget_report(
        store, card, rows,
        centers or cost_center_map(store, cfg.cost_centers, month.start, month.end),
        now or datetime.now(UTC),
        month=month, policy=cfg.idle_policy, history_days=cfg.forecast_history_days,
        forecasts=cfg.forecasts,
    )  # fmt: skip
    notes += tuple(f"Budget warning: {w}" for w in got.warnings)
    return replace(
        report,
        budgets=got.lines,
        budgets_configured=configured,
        forecasts=got.forecasts,
        notes=(*report.notes, *notes),
    )
