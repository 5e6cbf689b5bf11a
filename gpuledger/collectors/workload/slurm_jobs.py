"""Slurm job metadata for attribution, looked up with ``scontrol`` off the collection path.

:class:`ScontrolJobDirectory` answers :meth:`~ScontrolJobDirectory.lookup` from memory
only. A job it has not seen is queued for a background worker thread, which runs
``scontrol show job -o <job>`` (an argv list, never a shell; the job key is checked to be
a job id or a SLUID first) with a timeout, parses the record and stores it. Until the
lookup lands the caller gets ``None`` and names the job ``slurm-job-<id>``; a slow,
hanging, failing or missing ``scontrol`` only ever delays that worker, never a cycle.

A job's user, account, partition, name and QOS do not change while it runs, so an entry
is never refreshed; it is dropped when it has not been asked for in ``cache_seconds``
(the job is gone from this node). A failed lookup is retried after ``retry_seconds``;
``scontrol`` saying the job id is invalid (the job already ended) is remembered as such.

Health: :attr:`~ScontrolJobDirectory.healthy` is false while a job still on a GPU has a
failed lookup (with :attr:`~ScontrolJobDirectory.last_error`); :class:`SlurmLookupHealth`
is a collector that reports it, so the agent exports
``gpuledger_collector_up{collector="slurm"}``.
"""

from __future__ import annotations

import logging
import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gpuledger.collectors.base import CollectorError
from gpuledger.collectors.workload.slurm import (
    AmbiguousRecord,
    SlurmJob,
    parse_scontrol_job,
    valid_job_key,
)

__all__ = ["ScontrolJobDirectory", "SlurmLookupHealth", "SlurmLookupStatus", "run_scontrol"]

log = logging.getLogger(__name__)

_MAX_OUTPUT = 256 * 1024
_GONE = "Invalid job id"  # slurm_strerror(ESLURM_INVALID_JOB_ID) in scontrol's error line

Runner = Callable[[Sequence[str], float], tuple[int, str, str]]


def _child_env() -> dict[str, str]:
    """``scontrol``'s environment: ``PATH``, the C locale, and ``SLURM_CONF`` when the
    agent has it (a site whose slurm.conf is not at the compiled-in path); nothing else
    (no ``SQUEUE_*``/``SLURM_*`` formatting variables of whoever started the agent)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
    if os.environ.get("SLURM_CONF"):
        env["SLURM_CONF"] = os.environ["SLURM_CONF"]
    return env


def run_scontrol(argv: Sequence[str], timeout_s: float) -> tuple[int, str, str]:
    """Run ``argv`` (no shell) and return ``(returncode, stdout, stderr)``; raises
    :class:`subprocess.TimeoutExpired` (the child is killed) or :class:`OSError`."""
    proc = subprocess.run(  # an argv list with a validated job key, no shell
        list(argv),
        capture_output=True,
        timeout=timeout_s,
        check=False,
        stdin=subprocess.DEVNULL,
        env=_child_env(),
    )
    out = proc.stdout[:_MAX_OUTPUT].decode("utf-8", errors="replace")
    err = proc.stderr[:_MAX_OUTPUT].decode("utf-8", errors="replace")
    return proc.returncode, out, err


@dataclass(slots=True)
class _Entry:
    job: SlurmJob | None  # None: scontrol does not know the job (it ended)
    used: float


@dataclass(frozen=True, slots=True)
class SlurmLookupStatus:
    """The reading of :class:`SlurmLookupHealth`: the directory's counters."""

    cached_jobs: int
    lookups: int
    failures: int
    pending: int


class ScontrolJobDirectory:
    """Job key → :class:`SlurmJob`, filled by a background ``scontrol`` worker."""

    def __init__(
        self,
        scontrol: Path | str = "scontrol",
        *,
        timeout_s: float = 5.0,
        cache_s: float = 3600.0,
        retry_s: float = 30.0,
        runner: Runner = run_scontrol,
        clock: Callable[[], float] = time.monotonic,
        start: bool = True,
    ) -> None:
        self.scontrol = str(scontrol)
        self.timeout_s = timeout_s
        self.cache_s = cache_s
        self.retry_s = retry_s
        self._runner = runner
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, _Entry] = {}
        self._failed_at: dict[str, float] = {}
        self._queued: set[str] = set()
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._last_error: str | None = None
        self.lookups = 0
        self.failures = 0
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    # --- the caller's side: memory only ---------------------------------------------------
    def lookup(self, job: str) -> SlurmJob | None:
        """The job's metadata if known; else ``None`` and a lookup is queued (at most
        one in flight per job, a failed one retried after ``retry_s``)."""
        if not valid_job_key(job):
            return None
        now = self._clock()
        with self._lock:
            entry = self._cache.get(job)
            if entry is not None:
                entry.used = now
                return entry.job
            if job in self._queued:
                return None
            failed = self._failed_at.get(job)
            if failed is not None and now - failed < self.retry_s:
                return None
            self._queued.add(job)
            self._expire(now)
        self._queue.put(job)
        return None

    @property
    def healthy(self) -> bool:
        """False while some job's last lookup failed and that job is still being asked
        for (a failure is forgotten ``2 * retry_s`` after it, unless a retry renews it)."""
        with self._lock:
            self._expire(self._clock())
            return not self._failed_at

    @property
    def last_error(self) -> str | None:
        return None if self.healthy else self._last_error

    def status(self) -> SlurmLookupStatus:
        with self._lock:
            self._expire(self._clock())
            return SlurmLookupStatus(
                cached_jobs=len(self._cache),
                lookups=self.lookups,
                failures=self.failures,
                pending=len(self._queued),
            )

    def _expire(self, now: float) -> None:  # under the lock
        for key in [k for k, e in self._cache.items() if now - e.used > self.cache_s]:
            del self._cache[key]
        # a failed job is asked for again every cycle and retried after retry_s, which
        # renews its entry; one older than twice that is a job no longer on a GPU
        for key in [k for k, t in self._failed_at.items() if now - t > 2 * self.retry_s]:
            del self._failed_at[key]

    # --- the worker ---------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="gpuledger-slurm-lookup", daemon=True
            )
            self._thread.start()

    def close(self, timeout: float = 2.0) -> None:
        """Stop the worker; a ``scontrol`` still running is abandoned (it is killed at
        its own timeout)."""
        self._stopping.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_idle(self, timeout: float) -> bool:
        """Test helper: wait until no lookup is queued or running."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._queued:
                    return True
            time.sleep(0.01)
        return False

    def _run(self) -> None:
        while not self._stopping.is_set():
            job = self._queue.get()
            if job is None:
                return
            try:
                self.fetch(job)
            except Exception:  # never expected: fetch catches what scontrol can do
                log.exception("slurm: lookup of job %s failed", job)
                with self._lock:
                    self._queued.discard(job)

    def fetch(self, job: str) -> SlurmJob | None:
        """Run one lookup now (the worker's step) and store its result."""
        argv = [self.scontrol, "show", "job", "-o", job]
        error: str | None = None
        found: SlurmJob | None = None
        try:
            rc, out, err = self._runner(argv, self.timeout_s)
        except subprocess.TimeoutExpired:
            error = f"{self.scontrol} show job {job}: no answer in {self.timeout_s:g}s"
        except OSError as exc:
            error = f"cannot run {self.scontrol}: {exc.strerror or exc}"
        else:
            if rc == 0:
                try:
                    found = parse_scontrol_job(out)
                except AmbiguousRecord as exc:
                    error = f"{self.scontrol} show job {job}: {exc}"
                else:
                    if found is None:
                        error = f"{self.scontrol} show job {job}: no job record in its output"
            elif _GONE.lower() in err.lower():
                found = None  # the job ended: remembered as unknown until it expires
            else:
                line = (err.strip().splitlines() or [f"exit status {rc}"])[-1][:200]
                error = f"{self.scontrol} show job {job}: {line}"
        now = self._clock()
        with self._lock:
            self._queued.discard(job)
            self.lookups += 1
            if error is None:
                self._cache[job] = _Entry(found, now)
                self._failed_at.pop(job, None)
            else:
                self.failures += 1
                self._failed_at[job] = now
            failing = bool(self._failed_at)
        self._log_change(error, failing)
        return found

    def _log_change(self, error: str | None, failing: bool) -> None:
        """One log line per change of state or of error, not one per lookup."""
        if error is not None:
            if error != self._last_error:
                log.warning("slurm: job lookup failed: %s", error)
            self._last_error = error
        elif not failing and self._last_error is not None:
            log.info("slurm: job lookups work again")
            self._last_error = None


class SlurmLookupHealth:
    """A collector reporting the directory's health: ``up`` 0 while lookups fail. It
    reads memory only; the lookups themselves run on the directory's worker."""

    name = "slurm"

    def __init__(self, directory: ScontrolJobDirectory) -> None:
        self.directory = directory

    def collect(self) -> SlurmLookupStatus:
        if not self.directory.healthy:
            raise CollectorError(self.directory.last_error or "slurm job lookups fail")
        return self.directory.status()

    def close(self) -> None:
        return None
