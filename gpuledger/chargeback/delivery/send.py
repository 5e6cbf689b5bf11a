"""The retry loop: every message of a month, recorded before it is sent, retried with
exponential backoff, counted.

For each (channel, recipient) of the month: the record's row is written ``pending`` with
its Message-ID first (a row already ``sent`` is skipped: a month is never sent twice),
one more attempt is recorded, the message is sent, and the row is marked ``sent``. A try
that fails waits ``backoff_base_s * 2**(k-1)`` (capped at ``backoff_max_s``) and tries
again, up to ``retry.attempts``; then the row is ``failed`` with the (redacted) error,
and the reporter's next pass (hourly, and at start) tries it again. If the record cannot
be written, nothing is sent: an unrecorded send could not be told from an unsent one.

The report on disk is only read here: a delivery that fails never loses or rewrites it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gpuledger.chargeback.costcenters.resolve import CostCenterMap
from gpuledger.chargeback.delivery.config import DeliveryConfig, RetryConfig
from gpuledger.chargeback.delivery.contents import DeliveryError, ReportFiles, read_report
from gpuledger.chargeback.delivery.mime import Audience, build_email, message_id
from gpuledger.chargeback.delivery.record import DeliveryLog
from gpuledger.chargeback.delivery.smtp import SendError, send_mail
from gpuledger.chargeback.delivery.webhook import post_summary

log = logging.getLogger(__name__)

CHANNELS = ("email", "webhook")
OUTCOMES = ("sent", "error", "failed")
"""``sent``: accepted by the server; ``error``: one try failed; ``failed``: every try of a
pass failed (the next pass tries again)."""

Hook = Callable[[str, "Job"], None]
"""Called at ``"recorded"`` (the row is pending, nothing sent yet) and ``"sent"`` (the
server accepted, the row not yet marked): where a test kills the process."""


@dataclass(frozen=True, slots=True)
class Job:
    channel: str
    recipient: str  # the record's key: finance:a@b, cost-center:<name>:c@d, webhook
    message_id: str
    send: Callable[[], None] = field(compare=False, repr=False)


class DeliveryStats:
    """Counters for ``/metrics``: tries per (channel, outcome), last success per channel."""

    def __init__(self, channels: tuple[str, ...]) -> None:
        self._lock = threading.Lock()
        self.channels = channels
        self._counts = {(c, o): 0 for c in channels for o in OUTCOMES}
        self._last: dict[str, float] = {}

    def count(self, channel: str, outcome: str) -> None:
        with self._lock:
            self._counts[(channel, outcome)] = self._counts.get((channel, outcome), 0) + 1
            if outcome == "sent":
                self._last[channel] = time.time()

    def counts(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._counts)

    def last_success(self) -> dict[str, float]:
        with self._lock:
            return dict(self._last)


def backoff_s(retry: RetryConfig, failed_tries: int) -> float:
    """The wait after the ``failed_tries``-th failed try (1-based)."""
    return float(min(retry.backoff_max_s, retry.backoff_base_s * 2 ** (failed_tries - 1)))


@dataclass(frozen=True, slots=True)
class PassResult:
    month: str
    sent: int
    skipped: int  # already sent in an earlier pass
    failed: int
    error: str | None = None  # the pass could not start (files, record)


class Deliverer:
    def __init__(
        self,
        cfg: DeliveryConfig,
        record: DeliveryLog,
        *,
        fleet: str | None = None,
        hook: Hook | None = None,
    ) -> None:
        self.cfg = cfg
        self.record = record
        self.fleet = fleet or record.fleet  # names the Message-IDs
        self._hook = hook
        channels = (("email",) if cfg.smtp else ()) + (("webhook",) if cfg.webhook else ())
        self.stats = DeliveryStats(channels)
        self._stop = threading.Event()
        self._pass = threading.Lock()  # one pass at a time

    def stop(self) -> None:
        """Ends a backoff wait now; the row stays pending for the next start."""
        self._stop.set()

    def jobs(self, files: ReportFiles) -> list[Job]:
        """Finance's messages, each cost center's, then the webhook's summary."""
        out: list[Job] = []
        smtp = self.cfg.smtp
        if smtp is not None:
            domain = smtp.from_.rpartition("@")[2]
            audiences = [Audience(a) for a in self.cfg.recipients.finance] + [
                Audience(a, name)
                for name, addresses in self.cfg.recipients.cost_centers.items()
                for a in addresses
            ]
            for audience in audiences:
                mid = message_id(self.fleet, files.month, "email", audience.key, domain)

                def send(audience: Audience = audience, mid: str = mid) -> None:
                    send_mail(smtp, build_email(files, audience, smtp.from_, mid))

                out.append(Job("email", audience.key, mid, send))
        webhook = self.cfg.webhook
        if webhook is not None:
            mid = message_id(self.fleet, files.month, "webhook", "webhook", "gpuledger")
            out.append(Job("webhook", "webhook", mid, lambda: post_summary(webhook, files)))
        return out

    def deliver(self, out_dir: Path, month: str, cost_centers: CostCenterMap) -> PassResult:
        """Deliver ``month``'s report written under ``out_dir`` to whoever has not had it."""
        if not self._pass.acquire(blocking=False):
            return PassResult(month, 0, 0, 0, "a delivery pass is already running")
        try:
            try:
                files = read_report(out_dir, month, cost_centers)
            except DeliveryError as exc:
                log.warning("report %s not delivered: %s", month, exc)
                return PassResult(month, 0, 0, 0, str(exc))
            sent = skipped = failed = 0
            for job in self.jobs(files):
                if self._stop.is_set():
                    break  # stopping: what is left stays for the next start
                try:
                    outcome = self._one(month, job)
                except DeliveryError as exc:  # the record cannot be written: send nothing
                    log.warning("report %s: delivery record unavailable: %s", month, exc)
                    return PassResult(month, sent, skipped, failed, str(exc))
                sent += outcome == "sent"
                skipped += outcome == "skipped"
                failed += outcome == "failed"
            if sent or failed:
                log.info(
                    "report %s delivery pass: %d sent, %d already sent, %d failed",
                    month, sent, skipped, failed,
                )  # fmt: skip
            return PassResult(month, sent, skipped, failed)
        finally:
            self._pass.release()

    def _one(self, month: str, job: Job) -> str:
        row = self.record.begin(month, job.channel, job.recipient, job.message_id)
        if row.state == "sent":
            return "skipped"
        # a row begun by an earlier run keeps its Message-ID (derived the same way anyway)
        job = Job(job.channel, job.recipient, row.message_id, job.send)
        retry = self.cfg.retry
        for attempt in range(1, retry.attempts + 1):
            self.record.attempt(month, job.channel, job.recipient)
            if self._hook is not None:
                self._hook("recorded", job)
            try:
                self._send(job)
            except (SendError, DeliveryError) as exc:
                final = attempt == retry.attempts or self._stop.is_set()
                self.stats.count(job.channel, "error")
                self.record.error(month, job.channel, job.recipient, str(exc), final=final)
                log.warning(
                    "report %s: %s delivery try %d/%d failed: %s",
                    month, job.channel, attempt, retry.attempts, exc,
                )  # fmt: skip
                if final:
                    self.stats.count(job.channel, "failed")
                    return "failed"
                if self._stop.wait(backoff_s(retry, attempt)):
                    return "failed"  # stopping: the row stays pending for the next start
                continue
            if self._hook is not None:
                self._hook("sent", job)
            self.stats.count(job.channel, "sent")  # the server has it, recorded or not
            self._mark_sent(month, job)
            return "sent"
        return "failed"  # pragma: no cover - the loop returns on its last try

    @staticmethod
    def _send(job: Job) -> None:
        """``job.send()``, with an unforeseen exception made one failed try (its type only:
        its text could carry what the library was handed) rather than the end of the pass."""
        try:
            job.send()
        except (SendError, DeliveryError):
            raise
        except Exception as exc:
            log.debug("unexpected %s in a %s delivery", type(exc).__name__, job.channel)
            raise SendError(f"unexpected {type(exc).__name__}") from None

    def _mark_sent(self, month: str, job: Job) -> None:
        """Mark the row sent, trying a few times: until it is, a restart resends."""
        at = int(time.time())
        for wait in (0.0, 1.0, 5.0):
            if wait and self._stop.wait(wait):
                break  # stopping: the first try was made; the next start resends
            try:
                self.record.sent(month, job.channel, job.recipient, at)
                return
            except DeliveryError as exc:
                log.warning("report %s: %s sent but not yet recorded: %s", month, job.channel, exc)
        raise DeliveryError(f"{job.channel} sent but not recorded: the next pass resends it")
