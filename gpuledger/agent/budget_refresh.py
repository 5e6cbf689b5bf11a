"""The reporter role's hourly budget refresh: every budget's month to date and forecast,
read from the ledger (one grouped read per day, ``chargeback/budgets/status.py``) and kept for
``/metrics`` (``gpuledger_budget_*``), which the alert rules compare.

Why hourly: the ledger's buckets are hours, so a refresh more often would show the same
figures; why the reporter: it is the one role that reads the whole fleet's ledger. The
first refresh runs at start (a restarted reporter does not export nothing for an hour).

A refresh that fails (ledger unreachable, rate card or budgets file gone bad) never
stops the reporter: it is counted, logged once when the state changes, and the figures
of the last good refresh stay exported (dropping them would resolve a budget alert that
is still true); ``gpuledger_budget_refresh_last_success_timestamp_seconds`` shows their
age. The budgets file is read again at every refresh, so an edit applies within the hour.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gpuledger import schema
from gpuledger.chargeback.budgets.config import BudgetError
from gpuledger.chargeback.budgets.model import BudgetLine
from gpuledger.chargeback.budgets.status import budget_report
from gpuledger.chargeback.costcenters.resolve import CostCenterMap
from gpuledger.chargeback.ledger.model import LedgerStore, StoreError
from gpuledger.chargeback.report.config import ReportConfig
from gpuledger.chargeback.report.model import Month
from gpuledger.chargeback.report.ratecard import RateCardError, load_rate_card
from gpuledger.collectors.textformat.render import FamiliesBuilder

log = logging.getLogger(__name__)

REFRESH_EVERY_S = 3600
LABELS_OVERLAP = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class BudgetRefreshStatus:
    lines: tuple[BudgetLine, ...]  # the last good refresh's (empty before the first)
    refreshed: bool  # a refresh has succeeded since start
    runs: int
    failures: int
    last_success_unix: float | None
    last_duration_s: float | None
    last_error: str | None
    warnings: tuple[str, ...] = ()


class RecordedLabels:
    """This month's recorded cost centers (``store.cost_centers``: per service, the label
    of its latest recorded hour), read whole once a month and then only from the last
    read's end minus :data:`LABELS_OVERLAP`: a month of labels at 1,000 GPUs is ~2 M rows
    (2 s to read), an hour's ~4 k. Merging is exact because the latest hour wins: a
    service seen in the newer window has its latest hour there. The overlap takes in rows
    that agents flushed late (a spool catching up after a ledger outage); a label older
    than that reaches the map at the next month, and the monthly report reads the month
    whole anyway."""

    def __init__(self, store: LedgerStore) -> None:
        self._store = store
        self._month: Month | None = None
        self._end: datetime | None = None
        self._map: dict[tuple[str, str], str] = {}

    def get(self, now: datetime) -> dict[tuple[str, str], str]:
        end = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        month = Month.of(end)
        if month != self._month or self._end is None or end < self._end:
            got = self._store.cost_centers(month.start, end) if end > month.start else {}
            self._map = dict(got)
        elif end > self._end:
            start = max(month.start, self._end - LABELS_OVERLAP)
            self._map.update(self._store.cost_centers(start, end))
        self._month, self._end = month, end
        return dict(self._map)


class BudgetRefresher:
    def __init__(
        self,
        cfg: ReportConfig,
        store: LedgerStore,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        centers: Callable[[], CostCenterMap] | None = None,
        on_refresh: Callable[[], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self._clock = clock
        # the cost-center map: the static rules over this month's recorded labels, read
        # incrementally (RecordedLabels); a test or a wiring may pass its own
        self.labels = RecordedLabels(store)
        self._centers = centers or (
            lambda: CostCenterMap(cfg.cost_centers, recorded=self.labels.get(self._clock()))
        )
        self._on_refresh = on_refresh
        self._lock = threading.Lock()
        self._status = BudgetRefreshStatus((), False, 0, 0, None, None, None)

    @property
    def configured(self) -> bool:
        return bool(self.cfg.budgets) or self.cfg.budgets_file is not None

    def status(self) -> BudgetRefreshStatus:
        return self._status

    def refresh(self) -> bool:
        """One refresh; never raises. True when it succeeded."""
        try:
            return self._refresh()
        finally:
            if self._on_refresh is not None:
                self._on_refresh()

    def _refresh(self) -> bool:
        with self._lock:
            s = self._status
            started = time.monotonic()
            try:
                rows = self.cfg.budget_rows()
                card = load_rate_card(self.cfg.rate_card)
                got = budget_report(
                    self.store, card, rows, self._centers(), self._clock(),
                    policy=self.cfg.idle_policy, history_days=self.cfg.forecast_history_days,
                )  # fmt: skip
            except Exception as exc:
                took = time.monotonic() - started
                # a known failure says what it was; anything else (a store closed under a
                # stopping reporter) only its type: an unforeseen message may hold a DSN
                known = isinstance(exc, (BudgetError, RateCardError, StoreError, OSError))
                error = str(exc) if known else f"unexpected {type(exc).__name__}"
                if error != s.last_error:
                    log.warning("budget refresh failed: %s", error)
                self._status = BudgetRefreshStatus(
                    s.lines, s.refreshed, s.runs + 1, s.failures + 1, s.last_success_unix,
                    took, error, s.warnings,
                )  # fmt: skip
                return False
            took = time.monotonic() - started
            if s.last_error is not None or not s.refreshed:
                log.info(
                    "budgets refreshed",
                    extra={"fields": {"budgets": len(got.lines), "seconds": round(took, 3)}},
                )
            for warning in got.warnings:
                if warning not in s.warnings:
                    log.warning("budget: %s", warning)
            self._status = BudgetRefreshStatus(
                got.lines, True, s.runs + 1, s.failures, time.time(), took, None, got.warnings
            )
            return True


def export_budgets(f: FamiliesBuilder, status: BudgetRefreshStatus | None) -> None:
    """The budget families (nothing when the reporter has no budget configured)."""
    if status is None:
        return
    for line in status.lines:
        labels = (line.scope, line.name, line.namespace, line.service)
        f.add(schema.BUDGET, labels, line.budget_usd)
        f.add(schema.BUDGET_MONTH_TO_DATE, labels, line.month_to_date_usd)
        if line.forecast_usd is not None:
            f.add(schema.BUDGET_FORECAST, labels, line.forecast_usd)
    f.add(schema.BUDGET_REFRESH_FAILURES, (), float(status.failures))
    if status.last_duration_s is not None:
        f.add(schema.BUDGET_REFRESH_DURATION, (), status.last_duration_s)
    if status.last_success_unix is not None:
        f.add(schema.BUDGET_REFRESH_LAST_SUCCESS, (), status.last_success_unix)
