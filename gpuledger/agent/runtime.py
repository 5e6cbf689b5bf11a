"""Runs every collector on its own schedule, each isolated from the others.

A collector that raises, hangs past its timeout or returns something that is not its
declared reading type sets ``up=0`` for itself only. Each run happens in a fresh daemon
thread so that a call stuck inside a C library or a socket can be abandoned: the
scheduler's worker waits at most the timeout, and while the stuck call is still alive
the collector is not started again (no pile-up of hung threads). Logging happens on state
changes only -- one line when a collector goes down (with the reason), one when it
recovers -- so a source that stays broken for a day does not write a traceback per cycle.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from gpuledger.agent.snapshot import CollectorState, SnapshotStore
from gpuledger.collectors.base import Collector, CollectorDisabled, CollectorError, Schedule

log = logging.getLogger(__name__)

_POLL_S = 0.05  # how often a waiting worker checks for shutdown


class _Outcome:
    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: object = None
        self.error: BaseException | None = None


class CollectorRunner:
    def __init__(
        self,
        collector: Collector,
        schedule: Schedule,
        store: SnapshotStore,
        stopping: threading.Event,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.collector = collector
        self.schedule = schedule
        self._store = store
        self._stopping = stopping
        self._clock = clock
        self._inflight: threading.Thread | None = None
        self._state = CollectorState(name=collector.name)
        self._last_logged_error: str | None = None
        self._bugs_logged = 0
        store.register(self._state)

    @property
    def name(self) -> str:
        return self.collector.name

    @property
    def state(self) -> CollectorState:
        return self._state

    def _call(self, outcome: _Outcome) -> None:
        try:
            outcome.value = self.collector.collect()
        except BaseException as exc:
            outcome.error = exc
        finally:
            outcome.done.set()

    def run_once(self) -> CollectorState:
        """One scheduled run; returns the new state (also published to the store)."""
        if not self._state.enabled or self._stopping.is_set():
            return self._state
        if self._inflight is not None and self._inflight.is_alive():
            return self._fail(
                f"previous run still stuck after its {self.schedule.timeout_s:g}s timeout",
                self.schedule.timeout_s,
            )
        outcome = _Outcome()
        started = time.monotonic()
        thread = threading.Thread(
            target=self._call, args=(outcome,), name=f"collect-{self.name}", daemon=True
        )
        self._inflight = thread
        thread.start()
        deadline = started + self.schedule.timeout_s
        while not outcome.done.wait(min(_POLL_S, max(0.0, deadline - time.monotonic()))):
            if self._stopping.is_set():
                return self._state
            if time.monotonic() >= deadline:
                return self._fail(
                    f"timed out after {self.schedule.timeout_s:g}s", self.schedule.timeout_s
                )
        duration = time.monotonic() - started
        if outcome.error is not None:
            return self._on_error(outcome.error, duration)
        if not isinstance(outcome.value, self.schedule.expect):
            got = type(outcome.value).__name__
            return self._fail(f"returned {got}, expected {self.schedule.expect.__name__}", duration)
        return self._succeed(outcome.value, duration)

    def _on_error(self, exc: BaseException, duration: float) -> CollectorState:
        if isinstance(exc, CollectorDisabled):
            log.error("collector %s disabled: %s", self.name, exc)
            self._state = replace(
                self._state,
                enabled=False,
                up=False,
                runs=self._state.runs + 1,
                failures=self._state.failures + 1,
                duration_s=duration,
                last_error=str(exc),
                reading=None,
            )
            self._store.update(self._state)
            return self._state
        if isinstance(exc, CollectorError):
            return self._fail(str(exc), duration)
        if not isinstance(exc, Exception):
            raise exc  # KeyboardInterrupt, SystemExit: not ours to swallow
        # An unexpected exception is a bug in a collector: show the traceback, but only
        # the first few times, then the one-line form like any other failure.
        if self._bugs_logged < 3:
            self._bugs_logged += 1
            log.error("collector %s raised unexpectedly", self.name, exc_info=exc)
            self._last_logged_error = f"{type(exc).__name__}: {exc}"
        return self._fail(f"{type(exc).__name__}: {exc}", duration)

    def _fail(self, reason: str, duration: float) -> CollectorState:
        if reason != self._last_logged_error:
            level = logging.WARNING if self._state.up or self._state.runs == 0 else logging.INFO
            log.log(level, "collector %s down: %s", self.name, reason)
            self._last_logged_error = reason
        self._state = replace(
            self._state,
            up=False,
            runs=self._state.runs + 1,
            failures=self._state.failures + 1,
            duration_s=duration,
            last_error=reason,
            reading=None,
        )
        self._store.update(self._state)
        return self._state

    def _succeed(self, reading: object, duration: float) -> CollectorState:
        if self._last_logged_error is not None:
            log.info("collector %s recovered", self.name)
            self._last_logged_error = None
        self._state = replace(
            self._state,
            up=True,
            runs=self._state.runs + 1,
            duration_s=duration,
            last_success_unix=self._clock(),
            last_error=None,
            reading=reading,
        )
        self._store.update(self._state)
        return self._state


class AgentRuntime:
    """Owns one scheduling thread per runner; start() returns at once, stop() within ~1 s.

    Runs are timed on the monotonic clock. A wall-clock step (NTP correcting a drifted
    clock, a VM resumed, ``date -s``) must not stop collection: a wall-clock scheduler
    (APScheduler) sleeps until the wall clock reaches its next run time -- an hour after a
    -1 h step, with /metrics and the ledger frozen meanwhile. A run that overruns its
    interval skips the missed runs (no burst), as coalescing did.
    """

    def __init__(self, store: SnapshotStore) -> None:
        self.store = store
        self.runners: list[CollectorRunner] = []
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def add(self, collector: Collector, schedule: Schedule) -> CollectorRunner:
        runner = CollectorRunner(collector, schedule, self.store, self._stopping)
        self.runners.append(runner)
        return runner

    def _loop(self, runner: CollectorRunner) -> None:
        interval = runner.schedule.interval_s
        due = time.monotonic()
        while not self._stopping.is_set():
            try:
                state = runner.run_once()
            except Exception:  # never expected (run_once catches); keep the schedule alive
                log.exception("collector %s: scheduling its run failed", runner.name)
                state = runner.state
            if not state.enabled:
                return
            due += interval
            now = time.monotonic()
            if due < now:
                due += interval * math.ceil((now - due) / interval)
            self._stopping.wait(due - now)

    def start(self) -> None:
        for runner in self.runners:
            thread = threading.Thread(
                target=self._loop, args=(runner,), name=f"schedule-{runner.name}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def ready(self) -> tuple[bool, dict[str, str]]:
        """Ready once every collector that gates readiness has succeeded at least once."""
        pending = {
            r.name: (r.state.last_error or "not run yet")
            for r in self.runners
            if r.state.last_success_unix is None and r.schedule.gates_readiness
        }
        return (not pending, pending)

    def stop(self, timeout_s: float = 1.0) -> None:
        """Stop scheduling, close the collectors, and wait (bounded) for every scheduling
        thread to finish: a reading handed to the listeners just before stop() -- the
        ledger writing it to its spool -- is complete when stop() returns, so the
        ledger's final flush, which comes next, sends it instead of leaving it for the
        next start."""
        self._stopping.set()
        closers = [
            threading.Thread(target=_close_quietly, args=(r.collector,), daemon=True)
            for r in self.runners
        ]
        for closer in closers:
            closer.start()
        deadline = time.monotonic() + timeout_s
        for thread in [*closers, *self._threads]:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))


def _close_quietly(collector: Collector) -> None:
    try:
        collector.close()
    except Exception as exc:  # closing is best effort at shutdown
        log.debug("closing collector %s failed: %s", collector.name, exc)
