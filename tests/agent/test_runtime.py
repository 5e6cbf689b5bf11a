"""The runtime isolates each collector: errors, hangs and garbage cost only its own up."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import pytest

from gpuledger.agent.runtime import AgentRuntime, CollectorRunner
from gpuledger.agent.snapshot import SnapshotStore
from gpuledger.collectors.base import CollectorDisabled, CollectorError, Schedule
from gpuledger.collectors.gpu.readings import GpuTelemetry


@dataclass
class Scripted:
    """A collector that does what each test tells it to (a test double of a source)."""

    name: str
    mode: str = "ok"  # ok | error | bug | hang | garbage | disabled
    release: threading.Event = field(default_factory=threading.Event)
    calls: int = 0
    closed: bool = False

    def collect(self) -> object:
        self.calls += 1
        if self.mode == "error":
            raise CollectorError("HTTP 500 from http://127.0.0.1:9400/metrics")
        if self.mode == "bug":
            raise KeyError("oops")
        if self.mode == "hang":
            self.release.wait(30)
        if self.mode == "garbage":
            return {"not": "telemetry"}
        if self.mode == "disabled":
            raise CollectorDisabled("NVML library not found")
        return GpuTelemetry(source=self.name)

    def close(self) -> None:
        self.closed = True
        self.release.set()


def runner_for(c: Scripted, timeout: float = 0.3) -> tuple[CollectorRunner, SnapshotStore]:
    store = SnapshotStore(lambda snap: b"")
    return CollectorRunner(c, Schedule(1.0, timeout, GpuTelemetry), store, threading.Event()), store


def test_success_publishes_reading() -> None:
    runner, store = runner_for(Scripted("nvml"))
    state = runner.run_once()
    assert state.up
    assert state.last_error is None
    assert state.last_success_unix is not None
    assert store.snapshot.reading("nvml", GpuTelemetry) == GpuTelemetry(source="nvml")


def test_error_sets_up_zero_and_drops_stale_reading() -> None:
    c = Scripted("dcgm")
    runner, store = runner_for(c)
    runner.run_once()
    c.mode = "error"
    state = runner.run_once()
    assert not state.up
    assert state.last_error == "HTTP 500 from http://127.0.0.1:9400/metrics"
    assert store.snapshot.reading("dcgm", GpuTelemetry) is None
    assert state.last_success_unix is not None  # kept: when it last worked


def test_hang_is_abandoned_at_timeout_and_not_restarted_while_stuck() -> None:
    c = Scripted("dcgm", mode="hang")
    runner, _ = runner_for(c, timeout=0.3)
    t0 = time.monotonic()
    state = runner.run_once()
    assert time.monotonic() - t0 < 0.3 + 0.25
    assert not state.up
    assert state.last_error == "timed out after 0.3s"
    state = runner.run_once()
    assert state.last_error == "previous run still stuck after its 0.3s timeout"
    assert c.calls == 1  # no pile-up of hung threads
    c.release.set()
    time.sleep(0.05)
    c.mode = "ok"
    assert runner.run_once().up


def test_garbage_return_is_a_failure() -> None:
    runner, _ = runner_for(Scripted("dcgm", mode="garbage"))
    state = runner.run_once()
    assert not state.up
    assert state.last_error == "returned dict, expected GpuTelemetry"


def test_one_log_line_per_state_change(caplog: pytest.LogCaptureFixture) -> None:
    c = Scripted("dcgm", mode="error")
    runner, _ = runner_for(c)
    with caplog.at_level(logging.INFO, logger="gpuledger.agent.runtime"):
        for _ in range(5):
            runner.run_once()
        c.mode = "ok"
        runner.run_once()
        runner.run_once()
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "collector dcgm down: HTTP 500 from http://127.0.0.1:9400/metrics",
        "collector dcgm recovered",
    ]
    assert all(r.exc_info is None for r in caplog.records)


def test_unexpected_exception_traceback_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    runner, _ = runner_for(Scripted("nvml", mode="bug"))
    with caplog.at_level(logging.INFO, logger="gpuledger.agent.runtime"):
        for _ in range(10):
            state = runner.run_once()
    assert state.last_error == "KeyError: 'oops'"
    assert sum(1 for r in caplog.records if r.exc_info) == 3


def test_disabled_collector_stops_being_scheduled() -> None:
    store = SnapshotStore(lambda snap: b"")
    rt = AgentRuntime(store)
    nvml = Scripted("nvml", mode="disabled")
    dcgm = Scripted("dcgm")
    rt.add(nvml, Schedule(0.1, 0.5, GpuTelemetry))
    rt.add(dcgm, Schedule(0.1, 0.5, GpuTelemetry))
    rt.start()
    try:
        deadline = time.monotonic() + 5
        while dcgm.calls < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        rt.stop()
    assert nvml.calls == 1
    assert dcgm.calls >= 5
    states = store.snapshot.collectors
    assert not states["nvml"].enabled
    assert not states["nvml"].up
    assert states["dcgm"].up
    ready, pending = rt.ready()
    assert not ready
    assert pending == {"nvml": "NVML library not found"}
    assert nvml.closed
    assert dcgm.closed


def test_stop_returns_promptly_with_a_hung_collector() -> None:
    store = SnapshotStore(lambda snap: b"")
    rt = AgentRuntime(store)
    hung = Scripted("dcgm", mode="hang")
    hung.close = lambda: None  # type: ignore[method-assign]  # a close that frees nothing
    rt.add(hung, Schedule(0.1, 60.0, GpuTelemetry))
    rt.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    rt.stop()
    assert time.monotonic() - t0 < 1.5
    hung.release.set()


def test_listener_failure_does_not_stop_collection(caplog: pytest.LogCaptureFixture) -> None:
    runner, store = runner_for(Scripted("nvml"))

    def broken(*_: object) -> None:
        raise RuntimeError("ledger bug")

    store.subscribe(broken)
    with caplog.at_level(logging.ERROR):
        assert runner.run_once().up
    assert store.snapshot.collectors["nvml"].up


def test_stop_waits_for_a_reading_being_handed_to_the_listeners() -> None:
    """The ledger's final flush comes right after stop(): a reading whose listener (the
    ledger writing its spool) is still running when stop() is called must be complete
    by the time stop() returns, or its seconds wait in the spool for the next start."""
    store = SnapshotStore(lambda snap: b"")
    rt = AgentRuntime(store)
    rt.add(Scripted("nvml"), Schedule(0.05, 0.5, GpuTelemetry))
    entered = threading.Event()
    calls: list[str] = []

    def slow_listener(*_: object) -> None:
        calls.append("enter")
        entered.set()
        time.sleep(0.3)  # a spool write on a busy disk
        calls.append("exit")

    store.subscribe(slow_listener)
    rt.start()
    assert entered.wait(5)
    rt.stop()
    after_stop = list(calls)
    time.sleep(0.4)
    assert after_stop[-1] == "exit", after_stop
    assert calls == after_stop  # nothing handed on after stop() returned
