"""Probes on a schedule (:class:`ProbeRunner`, the agent's) or as a one-off series
(:func:`run_series`, ``gpuledger probe URL``).

The runner sends probes (:func:`~gpuledger.collectors.vllm.probe.served.probe_served`:
what the endpoint serves, completions, embeddings or rerank)
every interval, one in flight per endpoint at most, never to an engine whose waiting
queue is over a threshold, and after each successful probe checks
(:mod:`gpuledger.collectors.vllm.probe.validation`) that the engine's own counters saw
it. What it has seen is read as an immutable :class:`ProbeStatus`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import httpx

from gpuledger.collectors.vllm.probe.client import (
    DEFAULT_MAX_TOKENS,
    DEFAULT_PROMPT,
    DEFAULT_TIMEOUT_S,
    FAILURE_REASONS,
)
from gpuledger.collectors.vllm.probe.served import NOT_APPLICABLE, Kind, ProbeApi, probe_served
from gpuledger.collectors.vllm.probe.validation import endpoint_series, validate
from gpuledger.collectors.vllm.types import (
    ProbeResult,
    ProbeVerdict,
    VllmEndpoint,
    VllmSeries,
    VllmTelemetry,
)

log = logging.getLogger(__name__)

SKIP_REASONS = ("in_flight", "queue_full")
DEFAULT_INTERVAL_S = 60.0
DEFAULT_QUEUE_THRESHOLD = 8.0
DEFAULT_RECHECK_S = 3600.0  # an endpoint that serves nothing a probe checks: ask again hourly


@dataclass(frozen=True, slots=True)
class EndpointProbeStatus:
    """What the exporter reads for one endpoint (immutable copy)."""

    endpoint: VllmEndpoint
    model_name: str  # last model probed or expected ("" until known)
    in_flight: bool
    successes: int
    failures: Mapping[str, int]  # reason -> count (every reason present, 0 included)
    skipped: Mapping[str, int]  # reason -> count (in_flight, queue_full)
    last_result: ProbeResult | None
    last_success: ProbeResult | None
    last_verdict: ProbeVerdict | None
    kind: Kind | None = None  # what the endpoint was last probed with
    applicable: bool | None = None  # False: it serves nothing a probe checks; None: unknown


@dataclass(frozen=True, slots=True)
class ProbeStatus:
    endpoints: tuple[EndpointProbeStatus, ...] = ()
    running: bool = False


@dataclass
class _EndpointState:
    endpoint: VllmEndpoint
    model_name: str = ""
    in_flight: bool = False
    last_result: ProbeResult | None = None
    last_success: ProbeResult | None = None
    last_verdict: ProbeVerdict | None = None
    kind: Kind | None = None
    applicable: bool | None = None
    recheck_at: float = 0.0  # monotonic; not probed before, when not applicable


class ProbeRunner:
    """Probes every endpoint every ``interval_s``, on its own threads.

    Per endpoint and tick: skip with ``in_flight`` when the previous probe to it has not
    finished; skip with ``queue_full`` when the engine's latest ``requests_waiting``
    (summed over the endpoint's series) is above ``queue_threshold`` -- a probe must not
    add load to a saturated server; an endpoint with no scrape yet is probed. Otherwise
    the probe runs on a worker thread, so a slow endpoint delays no other one.

    After a successful probe the worker waits for the engine's next scrape
    (``wait_for_scrape(previous, timeout)`` if given, else polling ``latest()`` until it
    has changed ``settle_scrapes`` times: the second change is a scrape that started
    after the probe ended), then calls ``on_verdict`` with
    :func:`~gpuledger.collectors.vllm.probe.validation.validate` of the before/after series.

    ``stop()`` returns within about a second: in-flight streams are cut; a probe still
    waiting for a response is abandoned (daemon thread) and its result dropped.
    """

    def __init__(
        self,
        endpoints: Callable[[], Sequence[VllmEndpoint]],
        latest: Callable[[], VllmTelemetry | None],
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        prompt: str = DEFAULT_PROMPT,
        model: str | None = None,
        queue_threshold: float = DEFAULT_QUEUE_THRESHOLD,
        api: ProbeApi = "auto",
        on_result: Callable[[ProbeResult], None] | None = None,
        on_verdict: Callable[[ProbeVerdict], None] | None = None,
        wait_for_scrape: Callable[[VllmTelemetry | None, float], VllmTelemetry | None]
        | None = None,
        validation_timeout_s: float | None = None,
        settle_scrapes: int = 2,
        poll_s: float = 0.2,
        initial_delay_s: float = 0.0,
        client: httpx.Client | None = None,
        wall: Callable[[], float] = time.time,
        recheck_s: float = DEFAULT_RECHECK_S,
    ) -> None:
        if interval_s <= 0 or timeout_s <= 0:
            raise ValueError("interval_s and timeout_s must be positive")
        if max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        self._endpoints = endpoints
        self._latest = latest
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.max_tokens = max_tokens
        self.prompt = prompt
        self.model = model
        self.queue_threshold = queue_threshold
        self.api: ProbeApi = api
        self.recheck_s = recheck_s
        self._on_result = on_result
        self._on_verdict = on_verdict
        self._wait_for_scrape = wait_for_scrape
        self.validation_timeout_s = (
            validation_timeout_s if validation_timeout_s is not None else max(interval_s, 30.0)
        )
        self.settle_scrapes = max(1, settle_scrapes)
        self._poll_s = poll_s
        self._initial_delay_s = initial_delay_s
        self._own_client = client is None
        self._client = client or httpx.Client(follow_redirects=False, trust_env=False)
        self._wall = wall
        self._lock = threading.Lock()
        self._state: dict[str, _EndpointState] = {}
        self._successes: dict[tuple[str, str], int] = {}
        self._failures: dict[tuple[str, str, str], int] = {}
        self._skipped: dict[tuple[str, str, str], int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._workers: set[threading.Thread] = set()

    # -- counters (copies; keys carry endpoint.name and the model) ---------------------

    @property
    def successes(self) -> Mapping[tuple[str, str], int]:
        """``(endpoint.name, model) -> count``."""
        with self._lock:
            return MappingProxyType(dict(self._successes))

    @property
    def failures(self) -> Mapping[tuple[str, str, str], int]:
        """``(endpoint.name, model, reason) -> count``."""
        with self._lock:
            return MappingProxyType(dict(self._failures))

    @property
    def skipped(self) -> Mapping[tuple[str, str, str], int]:
        """``(endpoint.name, model, reason) -> count``."""
        with self._lock:
            return MappingProxyType(dict(self._skipped))

    def status(self) -> ProbeStatus:
        """An immutable snapshot for the exporter and the ledger."""
        with self._lock:
            out = []
            for name, st in sorted(self._state.items()):
                model = st.model_name
                out.append(
                    EndpointProbeStatus(
                        endpoint=st.endpoint,
                        model_name=model,
                        in_flight=st.in_flight,
                        successes=sum(v for (e, _m), v in self._successes.items() if e == name),
                        failures=MappingProxyType(
                            {
                                r: sum(
                                    v
                                    for (e, _m, rr), v in self._failures.items()
                                    if e == name and rr == r
                                )
                                for r in FAILURE_REASONS
                            }
                        ),
                        skipped=MappingProxyType(
                            {
                                r: sum(
                                    v
                                    for (e, _m, rr), v in self._skipped.items()
                                    if e == name and rr == r
                                )
                                for r in SKIP_REASONS
                            }
                        ),
                        last_result=st.last_result,
                        last_success=st.last_success,
                        last_verdict=st.last_verdict,
                        kind=st.kind,
                        applicable=st.applicable,
                    )
                )
            running = self._thread is not None and self._thread.is_alive()
            return ProbeStatus(endpoints=tuple(out), running=running)

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("ProbeRunner already started")
        self._thread = threading.Thread(target=self._loop, name="probe-runner", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 1.0) -> None:
        self._stop.set()
        end = time.monotonic() + timeout_s
        if self._thread is not None:
            self._thread.join(max(0.0, end - time.monotonic()))
        with self._lock:
            workers = list(self._workers)
        for w in workers:
            w.join(max(0.0, end - time.monotonic()))
        if self._own_client:
            with contextlib.suppress(Exception):
                self._client.close()

    def __enter__(self) -> ProbeRunner:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        next_at = time.monotonic() + self._initial_delay_s
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            try:
                self.tick()
            except Exception:  # a bug here must not end the schedule
                log.exception("probe tick failed")
            next_at += self.interval_s
            now = time.monotonic()
            if next_at < now:  # fell behind (suspended host): no burst of catch-up ticks
                next_at = now + self.interval_s

    # -- one round -----------------------------------------------------------------

    def tick(self) -> list[threading.Thread]:
        """Decide, for every endpoint, skip or probe; return the workers started."""
        try:
            endpoints = list(self._endpoints())
        except Exception:
            log.exception("probe: listing endpoints failed")
            return []
        telemetry = self._safe_latest()
        started = []
        for ep in endpoints:
            with self._lock:
                st = self._state.get(ep.name)
                if st is None:
                    st = self._state[ep.name] = _EndpointState(ep, model_name=self.model or "")
                st.endpoint = ep
                if not st.model_name:
                    st.model_name = _guess_model(telemetry, ep)
                model = st.model_name
                if st.applicable is False and time.monotonic() < st.recheck_at:
                    continue  # serves nothing a probe checks: not a skip, not a failure
                if st.in_flight:
                    self._count(self._skipped, (ep.name, model, "in_flight"))
                    continue
                waiting = _waiting(telemetry, ep)
                if waiting is not None and waiting > self.queue_threshold:
                    self._count(self._skipped, (ep.name, model, "queue_full"))
                    continue
                st.in_flight = True
            worker = threading.Thread(
                target=self._probe, args=(ep, telemetry), name=f"probe {ep.name}", daemon=True
            )
            with self._lock:
                self._workers.add(worker)
            worker.start()
            started.append(worker)
        return started

    @staticmethod
    def _count(counter: dict[Any, int], key: Any) -> None:
        counter[key] = counter.get(key, 0) + 1

    def _safe_latest(self) -> VllmTelemetry | None:
        try:
            return self._latest()
        except Exception:
            log.exception("probe: reading the latest vLLM telemetry failed")
            return None

    def _probe(self, ep: VllmEndpoint, before: VllmTelemetry | None) -> None:
        released = False  # in_flight cleared by this worker (a later probe may set it)
        try:
            with self._lock:
                known = self._state[ep.name].kind
            result, kind = probe_served(
                self._client,
                ep,
                api=self.api,
                known=known,
                model=self.model,
                prompt=self.prompt,
                max_tokens=self.max_tokens,
                timeout_s=self.timeout_s,
                wall=self._wall,
                cancel=self._stop,
            )
            at_end = self._safe_latest()
            if self._stop.is_set():
                return  # cut by stop(): not a verdict on the server
            if result.reason == NOT_APPLICABLE:
                self._not_applicable(ep, result)
                released = True
                return
            with self._lock:
                st = self._state[ep.name]
                st.in_flight = False
                released = True
                if kind is not None:
                    st.kind = kind
                    st.applicable = True
                if result.model_name:
                    st.model_name = result.model_name
                st.last_result = result
                if result.ok:
                    st.last_success = result
                    self._count(self._successes, (ep.name, result.model_name))
                else:
                    self._count(self._failures, (ep.name, result.model_name, result.reason or ""))
            if not result.ok:
                log.info("probe %s failed: %s (%s)", ep.name, result.reason, result.detail)
            self._emit(self._on_result, result)
            if result.ok:
                verdict = self._validate(result, before, at_end)
                if verdict is not None:
                    with self._lock:
                        self._state[ep.name].last_verdict = verdict
                    self._emit(self._on_verdict, verdict)
        except Exception:
            log.exception("probe %s crashed", ep.name)
        finally:
            with self._lock:
                if not released:
                    self._state[ep.name].in_flight = False
                self._workers.discard(threading.current_thread())

    def _not_applicable(self, ep: VllmEndpoint, result: ProbeResult) -> None:
        """The endpoint serves nothing a probe checks: no failure counted, nothing for
        the ledger (its service reads "not applicable"), asked again after recheck_s."""
        with self._lock:
            st = self._state[ep.name]
            st.in_flight = False
            changed = st.applicable is not False
            st.applicable = False
            st.kind = None
            st.recheck_at = time.monotonic() + self.recheck_s
            if result.model_name:
                st.model_name = result.model_name
        if changed:
            log.info("probe %s: not applicable, %s", ep.name, result.detail)

    def _validate(
        self, result: ProbeResult, before: VllmTelemetry | None, at_end: VllmTelemetry | None
    ) -> ProbeVerdict | None:
        after = self._await_scrape(at_end)
        if self._stop.is_set():
            return None
        if after is None:
            return ProbeVerdict(
                endpoint=result.endpoint,
                model_name=result.model_name,
                checked_unix=self._wall(),
                tokens_counted=None,
                ttft_histogram_moved=None,
                ttft_agrees=None,
                detail=f"no engine scrape within {self.validation_timeout_s:g}s of the probe",
            )
        b = endpoint_series(before, result.endpoint, result.model_name)
        a = endpoint_series(after, result.endpoint, result.model_name)
        return validate(result, b, a, wall=self._wall)

    def _await_scrape(self, at_end: VllmTelemetry | None) -> VllmTelemetry | None:
        if self._wait_for_scrape is not None:
            try:
                return self._wait_for_scrape(at_end, self.validation_timeout_s)
            except Exception:
                log.exception("probe: waiting for a scrape failed")
                return None
        end = time.monotonic() + self.validation_timeout_s
        seen = at_end
        changes = 0
        while not self._stop.wait(self._poll_s):
            current = self._safe_latest()
            if current is not None and current is not seen:
                changes += 1
                seen = current
                if changes >= self.settle_scrapes:
                    return current
            if time.monotonic() >= end:
                return None
        return None

    @staticmethod
    def _emit(callback: Callable[[Any], None] | None, value: object) -> None:
        if callback is None:
            return
        try:
            callback(value)
        except Exception:
            log.exception("probe callback failed")


def _scrape_for(telemetry: VllmTelemetry | None, ep: VllmEndpoint) -> Sequence[VllmSeries]:
    if telemetry is None:
        return ()
    for scrape in telemetry.endpoints:
        if scrape.endpoint.name == ep.name and scrape.up:
            return scrape.series
    return ()


def _waiting(telemetry: VllmTelemetry | None, ep: VllmEndpoint) -> float | None:
    values = [s.requests_waiting for s in _scrape_for(telemetry, ep)]
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _guess_model(telemetry: VllmTelemetry | None, ep: VllmEndpoint) -> str:
    for s in _scrape_for(telemetry, ep):
        return s.model_name
    return ""


def run_series(
    endpoint: VllmEndpoint,
    *,
    n: int,
    model: str | None,
    prompt: str = DEFAULT_PROMPT,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    api: ProbeApi = "completions",
    on_result: Callable[[ProbeResult], None] | None = None,
    client: httpx.Client | None = None,
) -> list[ProbeResult]:
    """``n`` probes one after the other (never concurrent: the point is to measure the
    server, not to load it). With ``model=None`` the model is looked up once, by the
    first probe that reaches the server, and reused."""
    if n < 1:
        raise ValueError("n must be at least 1")
    own = client is None
    http = client or httpx.Client(follow_redirects=False, trust_env=False)
    results: list[ProbeResult] = []
    known: Kind | None = None
    try:
        for _ in range(n):
            result, found = probe_served(
                http,
                endpoint,
                api=api,
                known=known,
                model=model,
                prompt=prompt,
                max_tokens=max_tokens,
                timeout_s=timeout_s,
            )
            known = found or known
            if model is None and result.model_name:
                model = result.model_name
            results.append(result)
            if on_result is not None:
                on_result(result)
    finally:
        if own:
            http.close()
    return results
