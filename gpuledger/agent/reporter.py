"""The ``reporter`` role: last month's chargeback, written on a schedule and kept.

A cron job (APScheduler, UTC; ``report.schedule``, default the 1st at 02:00) builds the
previous month's report from the ledger and writes every configured format under
``report.out_dir``; past months stay (``report.keep_months`` prunes when set). An agent
that was down when the job was due catches up at start: if the schedule has fired this
month and last month's report is missing, it is written then. The work runs in the
scheduler's thread, never in an HTTP request; ``/reports/`` only reads files.

With ``report.delivery`` set, each report written is then delivered (e-mail, webhook;
``chargeback/delivery/``, ``docs/delivery.md``) from the files on disk, after the report
lock is released: a delivery that fails never touches the report. A pass also runs at
start and every hour (minute 17) for last month's report, so a delivery cut by a restart
or an outage resumes; the record in the ledger keeps a message from going out twice.

The same scheduler refreshes the spend-anomaly scores every hour
(:mod:`gpuledger.agent.anomaly_refresh`, when ``report.anomalies.enabled``), and once at
start, in a thread of its own.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from gpuledger.agent.anomaly_refresh import REFRESH_MINUTE, AnomalyRefresh, SpendStatus
from gpuledger.agent.budget_refresh import REFRESH_EVERY_S, BudgetRefresher, BudgetRefreshStatus
from gpuledger.chargeback.costcenters.resolve import CostCenterMap
from gpuledger.chargeback.delivery.contents import DeliveryError
from gpuledger.chargeback.delivery.send import Deliverer, PassResult
from gpuledger.chargeback.findings.model import Finding
from gpuledger.chargeback.ledger.model import StoreError
from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
from gpuledger.chargeback.report.build import NoLedgerData
from gpuledger.chargeback.report.config import ReportConfig
from gpuledger.chargeback.report.cost_centers import cost_center_map
from gpuledger.chargeback.report.model import Month, finding_from_dict
from gpuledger.chargeback.report.monthly import FindingsProvider, list_reports, run_report
from gpuledger.chargeback.report.ratecard import RateCardError
from gpuledger.chargeback.report.writers.files import file_name

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReporterStatus:
    runs: int
    failures: int
    last_success_unix: float | None
    last_month: str | None
    last_error: str | None
    # the findings of the latest report written (gpuledger_finding_savings_usd,
    # gpuledger_findings); findings_month None: no report with computed findings yet
    findings: tuple[Finding, ...] = ()
    findings_month: str | None = None
    # report delivery (empty when none is configured): tries per (channel, outcome), and
    # each channel's last success (unix seconds)
    deliveries: tuple[tuple[tuple[str, str], int], ...] = ()
    delivery_last_success: tuple[tuple[str, float], ...] = ()
    # the latest spend-anomaly refresh (gpuledger_spend_*); None: none succeeded yet
    spend: SpendStatus | None = None
    # the hourly budget refresh (agent/budget_refresh.py); None: no budget configured
    budgets: BudgetRefreshStatus | None = None


class Reporter:
    def __init__(
        self,
        cfg: ReportConfig,
        store: AuditableLedgerStore,
        out_dir: Path,
        *,
        store_label: str = "",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_run: Callable[[], None] | None = None,
        findings: FindingsProvider | None = None,
        delivery: Deliverer | None = None,
        cost_centers: Callable[[Month], CostCenterMap] | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.out_dir = out_dir
        self.store_label = store_label
        self._clock = clock
        self._on_run = on_run  # the agent re-renders /metrics with the new counts
        self._findings = findings  # monthly.findings_provider(cfg), wired by the agent
        self._delivery = delivery
        # the month's cost centers for delivery: the same map the report was grouped by
        # (report.cost_centers over what the agents recorded that month)
        self._cost_centers = cost_centers or (
            lambda month: cost_center_map(store, cfg.cost_centers, month.start, month.end)
        )
        self._lock = threading.Lock()  # one report at a time
        self._trigger = CronTrigger.from_crontab(cfg.schedule, timezone=UTC)
        self._scheduler = BackgroundScheduler(
            timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1}
        )
        self._runs = 0
        self._failures = 0
        self._last_success: float | None = None
        self._last_month: str | None = None
        self._last_error: str | None = None
        self._latest_findings: tuple[Finding, ...] = ()
        self._findings_month: str | None = None
        self.spend = AnomalyRefresh(cfg, store, clock=clock) if cfg.anomalies.enabled else None
        # budgets: the static rules over this month's recorded labels, read incrementally
        self.budgets = BudgetRefresher(cfg, store, clock=clock, on_refresh=on_run)

    def status(self) -> ReporterStatus:
        stats = self._delivery.stats if self._delivery is not None else None
        return ReporterStatus(
            self._runs,
            self._failures,
            self._last_success,
            self._last_month,
            self._last_error,
            self._latest_findings,
            self._findings_month,
            tuple(sorted(stats.counts().items())) if stats else (),
            tuple(sorted(stats.last_success().items())) if stats else (),
            self.spend.status() if self.spend is not None else None,
            self.budgets.status() if self.budgets.configured else None,
        )

    def restore_findings(self) -> str | None:
        """Take the findings of the newest report on disk (when its findings were
        computed), so that a restarted reporter exports them again instead of nothing
        until next month's run. Returns the month restored, or None. A file that cannot
        be read is logged and left alone."""
        for written in list_reports(self.out_dir):
            path = self.out_dir / written.month / file_name(written.month, "json")
            if not path.is_file():
                continue
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
                if not doc.get("findings_computed"):
                    return None
                found = tuple(finding_from_dict(d) for d in doc["findings"])
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                log.warning("findings of %s not restored: %s", path.name, exc)
                return None
            with self._lock:
                if self._findings_month is None or written.month > self._findings_month:
                    self._latest_findings = found
                    self._findings_month = written.month
            return written.month
        return None

    def start(self) -> None:
        self.restore_findings()
        self._scheduler.add_job(
            self.run,
            self._trigger,
            id="monthly-report",
            misfire_grace_time=6 * 3600,  # an agent restarted within hours still runs it
        )
        if self.budgets.configured:  # every hour, the first at start
            self._scheduler.add_job(
                self.budgets.refresh,
                "interval",
                seconds=REFRESH_EVERY_S,
                id="budget-refresh",
                next_run_time=datetime.now(UTC),
            )
        if self._delivery is not None:
            self._scheduler.add_job(
                self.resume_delivery,
                CronTrigger.from_crontab("17 * * * *", timezone=UTC),
                id="report-delivery",
                misfire_grace_time=1800,
            )
        if self.spend is not None:
            self._scheduler.add_job(
                self.refresh_spend,
                CronTrigger(minute=REFRESH_MINUTE, timezone=UTC),
                id="spend-anomalies",
                misfire_grace_time=1800,
            )
        self._scheduler.start()
        if self.spend is not None:
            self._first_refresh = threading.Thread(
                target=self.refresh_spend, name="spend-anomalies", daemon=True
            )
            self._first_refresh.start()
        if self.catch_up_due():
            threading.Thread(target=self.run, name="report-catch-up", daemon=True).start()
        elif self._delivery is not None:
            threading.Thread(
                target=self.resume_delivery, name="report-delivery-resume", daemon=True
            ).start()

    def stop(self) -> None:
        if self._delivery is not None:
            self._delivery.stop()  # a backoff wait ends; unsent rows stay for the next start
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        if self._first_refresh is not None:  # its store is closed next: let it finish
            self._first_refresh.join(timeout=10)

    def refresh_spend(self) -> None:
        """Score the latest complete day again (the hourly job); /metrics is re-rendered
        after a refresh that succeeded."""
        if self.spend is not None and self.spend.refresh() is not None and self._on_run:
            self._on_run()

    def catch_up_due(self) -> bool:
        """True when this month's scheduled run time has passed and last month's report
        is not on disk (the agent was down, or this is its first start)."""
        now = self._clock()
        this_month = Month.of(now)
        fire = self._trigger.get_next_fire_time(None, this_month.start)
        if fire is None or fire > now:
            return False
        last = this_month.previous()
        return not (self.out_dir / last.label / file_name(last.label, "json")).is_file()

    def run(self, month: Month | None = None) -> list[Path]:
        """Write ``month``'s report (default: the previous month), then deliver it when
        delivery is configured; never raises, so the schedule survives a bad month.
        Returns the paths written (empty on failure)."""
        target = month or Month.of(self._clock()).previous()
        try:
            paths = self._run(target)
            if paths:
                self.deliver(target)
            return paths
        finally:
            if self._on_run is not None:
                self._on_run()

    def deliver(self, month: Month) -> PassResult | None:
        """One delivery pass for ``month``'s report on disk (None: no delivery configured
        or no report there). What was sent before is not sent again."""
        if self._delivery is None:
            return None
        if not (self.out_dir / month.label / file_name(month.label, "json")).is_file():
            return None
        try:
            return self._delivery.deliver(self.out_dir, month.label, self._cost_centers(month))
        except (StoreError, DeliveryError) as exc:  # the cost centers' read, the record
            log.warning("report %s not delivered: %s", month.label, exc)
            return None
        finally:
            if self._on_run is not None:
                self._on_run()

    def resume_delivery(self) -> PassResult | None:
        """Last month's delivery, resumed (at start, then hourly): a restart, an outage of
        the mail server or a report written before delivery was configured."""
        return self.deliver(Month.of(self._clock()).previous())

    def _run(self, target: Month) -> list[Path]:
        with self._lock:
            self._runs += 1
            started = time.monotonic()
            try:
                report, paths = run_report(
                    self.store,
                    self.cfg,
                    target,
                    self.out_dir,
                    now=self._clock(),
                    store_label=self.store_label,
                    findings=self._findings,
                )
            except (NoLedgerData, StoreError, RateCardError, OSError) as exc:
                self._failures += 1
                self._last_error = f"{target.label}: {exc}"
                level = logging.INFO if isinstance(exc, NoLedgerData) else logging.WARNING
                log.log(level, "monthly report %s not written: %s", target.label, exc)
                return []
            self._last_success = time.time()
            self._last_month = target.label
            self._last_error = None
            if report.findings_computed and (
                self._findings_month is None or target.label >= self._findings_month
            ):  # a catch-up of an older month does not replace a newer month's findings
                self._latest_findings = report.findings
                self._findings_month = target.label
            log.info(
                "monthly report %s written",
                target.label,
                extra={
                    "fields": {
                        "dir": str(self.out_dir / target.label),
                        "lines": len(report.lines),
                        "seconds": round(time.monotonic() - started, 3),
                    }
                },
            )
            return paths
