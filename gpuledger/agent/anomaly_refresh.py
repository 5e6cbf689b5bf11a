"""The reporter's hourly spend-anomaly refresh: every service's latest complete UTC day
scored against its trailing baseline, kept for ``/metrics``.

The scores are the ones the monthly report's "What changed" section uses
(:mod:`gpuledger.chargeback.anomalies`, the ``report.anomalies:`` config, days priced
with the report's rate card and policies), so an alert on
``gpuledger_spend_anomaly_score`` and the report agree on a day. The reporter schedules
:meth:`AnomalyRefresh.refresh` every hour (a day's buckets keep arriving from spools for
a while after midnight, so the day is scored again until it stops changing); a failed
refresh (store down, bad rate card) keeps the previous scores and is logged once per
state change, so a metric never drops to "no anomaly" because a read failed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime

from gpuledger import schema
from gpuledger.chargeback.anomalies.daily import Pricing, day_start
from gpuledger.chargeback.anomalies.detect import latest_scores
from gpuledger.chargeback.anomalies.model import DayScore
from gpuledger.chargeback.ledger.model import StoreError
from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
from gpuledger.chargeback.report.config import ReportConfig
from gpuledger.chargeback.report.ratecard import RateCardError, load_rate_card
from gpuledger.collectors.textformat.render import FamiliesBuilder

log = logging.getLogger(__name__)

REFRESH_MINUTE = 7
"""Past each hour: after the flushers' writes of the hour that just ended have landed."""


@dataclass(frozen=True, slots=True)
class SpendStatus:
    """The latest successful refresh: the day it judged and every service's score."""

    day: date
    scores: tuple[DayScore, ...]
    refreshed_unix: float


class AnomalyRefresh:
    def __init__(
        self,
        cfg: ReportConfig,
        store: AuditableLedgerStore,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.cfg = cfg
        self.store = store
        self._clock = clock
        self._lock = threading.Lock()  # one refresh at a time
        self._status: SpendStatus | None = None
        self._failing = False
        self.failures = 0

    def status(self) -> SpendStatus | None:
        return self._status

    def refresh(self) -> SpendStatus | None:
        """Score the latest complete day; never raises (the schedule survives a bad
        hour). Returns the new status, or None when this refresh failed."""
        with self._lock:
            now = self._clock()
            try:
                card = load_rate_card(self.cfg.rate_card)
                pricing = Pricing(card, self.cfg.idle_policy, self.cfg.headroom_policy,
                                  self.cfg.token_weights.weights())  # fmt: skip
                day, scores = latest_scores(self.store, pricing, self.cfg.anomalies, now=now)
            except (StoreError, RateCardError, OSError) as exc:
                self._failed(str(exc))
                return None
            except Exception as exc:  # a background job: anything else is logged, not fatal
                self._failed(f"{type(exc).__name__}: {exc}")
                return None
            if self._failing:
                log.info("spend anomalies refreshed again")
            self._failing = False
            self._status = SpendStatus(day, tuple(scores), now.timestamp())
            return self._status

    def _failed(self, why: str) -> None:
        self.failures += 1
        if not self._failing:
            log.warning("spend anomalies not refreshed (previous scores kept): %s", why)
        self._failing = True


def export_spend(f: FamiliesBuilder, status: SpendStatus | None) -> None:
    """The latest refresh's families; nothing before the first one succeeded (not
    computed is not "no anomaly")."""
    if status is None:
        return
    f.add(schema.SPEND_SCORED_DAY, (), day_start(status.day).timestamp())
    for s in status.scores:
        labels = (s.namespace, s.service)
        f.add(schema.SPEND_ANOMALY_SCORE, labels, s.score)
        f.add(schema.SPEND_DAILY_COST, labels, s.cost_usd)
        f.add(schema.SPEND_DAILY_BASELINE, labels, s.baseline_usd)
