"""Synthetic probes: one small streaming completion against a vLLM server, timed.

A probe is what a user sees, measured from outside the engine: time to first token,
time per output token, end-to-end latency. It is sent to vLLM's OpenAI-compatible API
(``/v1/completions`` or ``/v1/chat/completions``) with ``"stream": true`` and
``stream_options: {"include_usage": true}``, so that the server reports the exact prompt
and completion token counts in a last event with ``"choices": []`` before
``data: [DONE]`` (see ``docs/probes.md`` for the upstream format this relies on).

:func:`probe_once` sends one probe and classifies a failure as exactly one of
``connect``, ``timeout``, ``http_status``, ``bad_stream``, ``model_mismatch``.
:class:`ProbeRunner` sends probes on a schedule, one in flight per endpoint at most,
never to an engine whose waiting queue is over a threshold, and after each successful
probe checks (:mod:`gpuledger.collectors.vllm.probe.validation`) that the engine's own
counters saw it.

The endpoint's API key goes in the ``Authorization`` header and nowhere else: no
result, detail, log line or status ever carries it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import httpx

from gpuledger.collectors.http import _shutdown_stream, redact_url
from gpuledger.collectors.vllm.probe.validation import endpoint_series, validate
from gpuledger.collectors.vllm.types import (
    ProbeResult,
    ProbeVerdict,
    VllmEndpoint,
    VllmSeries,
    VllmTelemetry,
)

log = logging.getLogger(__name__)

Api = Literal["completions", "chat"]
FAILURE_REASONS = ("connect", "timeout", "http_status", "bad_stream", "model_mismatch")
SKIP_REASONS = ("in_flight", "queue_full")

DEFAULT_PROMPT = "Count from one to twenty, separated by commas:"
DEFAULT_MAX_TOKENS = 16
DEFAULT_INTERVAL_S = 60.0
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_QUEUE_THRESHOLD = 8.0
MAX_STREAM_BYTES = 4 * 1024 * 1024  # 16 tokens are a few kB; anything near this is broken
_DETAIL_CHARS = 300


class _Failure(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass
class _Deadline:
    """One deadline for the whole probe, enforced on the response body by a watchdog
    that shuts the socket down (httpx timeouts apply per socket operation only)."""

    at: float
    clock: Callable[[], float]
    cancel: threading.Event | None = None
    expired: threading.Event = field(default_factory=threading.Event)

    def remaining(self) -> float:
        return self.at - self.clock()

    @contextlib.contextmanager
    def watch(self, response: httpx.Response) -> Iterator[None]:
        done = threading.Event()
        cancel = self.cancel

        def _run() -> None:
            end = time.monotonic() + max(0.0, self.remaining())
            while not done.is_set():
                left = end - time.monotonic()
                if left <= 0 or (cancel is not None and cancel.is_set()):
                    self.expired.set()
                    _shutdown_stream(response)
                    return
                done.wait(min(left, 0.05) if cancel is not None else left)

        watcher = threading.Thread(target=_run, name="probe-watchdog", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            done.set()
            watcher.join(timeout=1.0)


def _scrub(text: str, secret: str | None) -> str:
    text = text.replace("\n", " ")[:_DETAIL_CHARS]
    if secret:
        text = text.replace(secret, "***")
    return text


def _headers(endpoint: VllmEndpoint) -> dict[str, str]:
    headers = {"Accept-Encoding": "identity"}
    if endpoint.api_key:
        headers["Authorization"] = f"Bearer {endpoint.api_key}"
    return headers


def _http_failure(exc: BaseException, where: str, *, got_headers: bool) -> _Failure:
    if isinstance(exc, httpx.ConnectTimeout):
        return _Failure("connect", f"connect to {where} timed out")
    if isinstance(exc, httpx.TimeoutException):
        return _Failure("timeout", f"timed out waiting for {where}")
    if isinstance(exc, httpx.ConnectError):
        return _Failure("connect", f"cannot connect to {where}: {_cause(exc)}")
    if got_headers:
        return _Failure("bad_stream", f"stream from {where} broke off: {_cause(exc)}")
    return _Failure("connect", f"{where} closed the connection without a response")


def _cause(exc: BaseException) -> str:
    cause: BaseException = exc
    while (nxt := cause.__cause__ or cause.__context__) is not None:
        cause = nxt
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror.lower()
    return type(exc).__name__


def discover_model(client: httpx.Client, endpoint: VllmEndpoint, *, timeout_s: float) -> str:
    """The first model ``GET /v1/models`` lists (vLLM lists the served model name first,
    then LoRA adapters). Raises :class:`_Failure` (via :func:`probe_once`)."""
    url = endpoint.url.rstrip("/") + "/v1/models"
    where = redact_url(url)
    try:
        response = client.get(url, headers=_headers(endpoint), timeout=httpx.Timeout(timeout_s))
    except (httpx.HTTPError, OSError) as exc:
        raise _http_failure(exc, where, got_headers=False) from None
    if not 200 <= response.status_code < 300:
        raise _Failure("http_status", f"HTTP {response.status_code} from {where}")
    try:
        data = response.json()["data"]
        model = data[0]["id"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise _Failure("bad_stream", f"{where} lists no model") from None
    if not isinstance(model, str) or not model:
        raise _Failure("bad_stream", f"{where} lists no model")
    return model


def _request_body(api: Api, model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0,
        # vLLM sampling parameter: always generate max_tokens, so every probe does the
        # same amount of work and TPOT is measured over the same number of tokens.
        "ignore_eos": True,
    }
    if api == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    return body


def _chunk_text(choice: object) -> str:
    """The text a streamed choice carries: ``text`` (completions) or the delta's
    ``content`` / ``reasoning_content`` / ``reasoning`` (chat; reasoning models stream
    their thinking there first, and it is output all the same)."""
    if not isinstance(choice, dict):
        raise _Failure("bad_stream", "a choice in the stream is not an object")
    text = choice.get("text")
    if isinstance(text, str) and text:
        return text
    delta = choice.get("delta")
    if isinstance(delta, dict):
        for key in ("content", "reasoning_content", "reasoning"):
            value = delta.get(key)
            if isinstance(value, str) and value:
                return value
    return ""


def _sse_events(chunks: Iterator[bytes], max_bytes: int) -> Iterator[str]:
    """The ``data`` of each server-sent event (multi-line data joined by newlines).
    Comments and other fields are skipped; an event only counts once the blank line
    that ends it has arrived, as the SSE spec says."""
    buf = b""
    total = 0
    data: list[str] = []
    for chunk in chunks:
        total += len(chunk)
        if total > max_bytes:
            raise _Failure("bad_stream", f"stream exceeds {max_bytes} bytes")
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for raw in lines:
            line = raw.rstrip(b"\r").decode("utf-8", errors="replace")
            if not line:
                if data:
                    yield "\n".join(data)
                    data = []
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            if name == "data":
                data.append(value[1:] if value.startswith(" ") else value)


def probe_once(
    client: httpx.Client,
    endpoint: VllmEndpoint,
    *,
    model: str | None,
    prompt: str = DEFAULT_PROMPT,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    api: Api = "completions",
    clock: Callable[[], float] = time.perf_counter,
    wall: Callable[[], float] = time.time,
    cancel: threading.Event | None = None,
    max_bytes: int = MAX_STREAM_BYTES,
) -> ProbeResult:
    """Send one streaming probe and time it; never raises for a server's misbehaviour.

    ``model=None`` asks ``/v1/models`` first and probes the first model listed. The whole
    probe (model lookup included) gets ``timeout_s``; the timings start when the
    completion request is sent.

    - TTFT: until the first event whose ``choices`` carry non-empty text (a chat
      stream's role-only first delta has none, so it does not count).
    - e2e: until ``data: [DONE]``.
    - TPOT = (e2e - TTFT) / (completion_tokens - 1), when completion_tokens > 1: the
      first token's cost is in TTFT, the others share what remains.
    - output tokens/s = (completion_tokens - 1) / (e2e - TTFT), the decode rate. Not
      completion_tokens / (e2e - TTFT): the first token was produced inside TTFT, so
      counting it in a rate over the time after it overstates the rate by
      n/(n-1) -- 7 % for 16 tokens, 2x for 2. Hence tokens/s = 1/TPOT for one probe;
      it is exported as its own series because dashboards and alerts read it that way.
    - prompt and completion tokens: from the usage event (``include_usage``); a stream
      without one is ``bad_stream``.

    Failures: ``connect`` (refused, unreachable, connect timeout, connection closed
    before any response), ``timeout`` (no response, no first token or no end within
    ``timeout_s``), ``http_status`` (non-2xx), ``bad_stream`` (not SSE, unparsable
    JSON, an error event, cut before ``[DONE]``, no usage, no text at all) and
    ``model_mismatch`` (an event names another model than the one asked for).
    ``cancel`` set from another thread ends the probe at once (as a ``timeout``).
    """
    started_unix = wall()
    start = clock()
    deadline = _Deadline(at=start + timeout_s, clock=clock, cancel=cancel)
    asked = model or ""
    secret = endpoint.api_key

    def failed(reason: str, detail: str) -> ProbeResult:
        return ProbeResult(
            endpoint=endpoint,
            model_name=asked,
            started_unix=started_unix,
            ok=False,
            reason=reason,
            detail=_scrub(detail, secret),
        )

    try:
        if model is None:
            asked = discover_model(client, endpoint, timeout_s=timeout_s)
        remaining = deadline.remaining()
        if remaining <= 0:
            return failed("timeout", f"no time left after listing models ({timeout_s:g}s)")
        path = "/v1/chat/completions" if api == "chat" else "/v1/completions"
        url = endpoint.url.rstrip("/") + path
        return _stream_probe(
            client,
            endpoint,
            url=url,
            body=_request_body(api, asked, prompt, max_tokens),
            asked=asked,
            deadline=deadline,
            timeout_s=timeout_s,
            clock=clock,
            started_unix=started_unix,
            max_bytes=max_bytes,
        )
    except _Failure as f:
        return failed(f.reason, f.detail)


def _stream_probe(
    client: httpx.Client,
    endpoint: VllmEndpoint,
    *,
    url: str,
    body: dict[str, Any],
    asked: str,
    deadline: _Deadline,
    timeout_s: float,
    clock: Callable[[], float],
    started_unix: float,
    max_bytes: int,
) -> ProbeResult:
    where = redact_url(url)
    got_headers = False
    sent = clock()
    ttft: float | None = None
    e2e: float | None = None
    usage: dict[str, Any] | None = None
    try:
        with client.stream(
            "POST",
            url,
            json=body,
            headers={**_headers(endpoint), "Accept": "text/event-stream"},
            timeout=httpx.Timeout(max(deadline.remaining(), 0.001)),
        ) as response:
            got_headers = True
            if not 200 <= response.status_code < 300:
                raise _Failure("http_status", f"HTTP {response.status_code} from {where}")
            with deadline.watch(response):
                try:
                    for data in _sse_events(response.iter_raw(), max_bytes):
                        if data == "[DONE]":
                            e2e = clock() - sent
                            break
                        ttft, usage = _handle_event(data, asked, ttft, usage, sent, clock)
                except (httpx.HTTPError, OSError) as exc:
                    if deadline.expired.is_set():
                        raise _Failure("timeout", _timeout_detail(timeout_s, ttft)) from None
                    raise _http_failure(exc, where, got_headers=True) from None
            if deadline.expired.is_set():
                raise _Failure("timeout", _timeout_detail(timeout_s, ttft))
    except _Failure:
        raise
    except (httpx.HTTPError, OSError) as exc:
        if deadline.expired.is_set():
            raise _Failure("timeout", _timeout_detail(timeout_s, ttft)) from None
        raise _http_failure(exc, where, got_headers=got_headers) from None

    if e2e is None:
        raise _Failure("bad_stream", f"stream from {where} ended without data: [DONE]")
    if ttft is None:
        raise _Failure("bad_stream", f"no event from {where} carried any text")
    if usage is None:
        raise _Failure(
            "bad_stream", f"no usage event from {where} (stream_options.include_usage ignored)"
        )
    prompt_tokens = usage.get("prompt_tokens")
    completion_tokens = usage.get("completion_tokens")
    if not isinstance(prompt_tokens, int) or not isinstance(completion_tokens, int):
        raise _Failure("bad_stream", f"usage event from {where} lacks token counts")
    tpot = tps = None
    decode_s = e2e - ttft
    if completion_tokens > 1 and decode_s > 0:
        tpot = decode_s / (completion_tokens - 1)
        tps = (completion_tokens - 1) / decode_s
    return ProbeResult(
        endpoint=endpoint,
        model_name=asked,
        started_unix=started_unix,
        ok=True,
        ttft_s=ttft,
        tpot_s=tpot,
        e2e_s=e2e,
        output_tokens_per_s=tps,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
    )


def _timeout_detail(timeout_s: float, ttft: float | None) -> str:
    if ttft is None:
        return f"no first token within {timeout_s:g}s"
    return f"stream not finished within {timeout_s:g}s (first token after {ttft:.3f}s)"


def _handle_event(
    data: str,
    asked: str,
    ttft: float | None,
    usage: dict[str, Any] | None,
    sent: float,
    clock: Callable[[], float],
) -> tuple[float | None, dict[str, Any] | None]:
    now = clock()
    try:
        event = json.loads(data)
    except ValueError:
        raise _Failure("bad_stream", f"unparsable event: {data[:80]!r}") from None
    if not isinstance(event, dict):
        raise _Failure("bad_stream", f"event is not a JSON object: {data[:80]!r}")
    error = event.get("error")
    if error is not None or event.get("object") == "error":
        message = error.get("message") if isinstance(error, dict) else event.get("message")
        raise _Failure("bad_stream", f"error event in stream: {str(message)[:120]}")
    got_model = event.get("model")
    if isinstance(got_model, str) and got_model != asked:
        raise _Failure("model_mismatch", f"asked for model {asked!r}, stream is from {got_model!r}")
    choices = event.get("choices")
    if choices is not None and not isinstance(choices, list):
        raise _Failure("bad_stream", "choices is not a list")
    if ttft is None and choices and any(_chunk_text(c) for c in choices):
        ttft = now - sent
    elif choices:
        for c in choices:
            _chunk_text(c)  # validates the shape
    if isinstance(event.get("usage"), dict):
        usage = event["usage"]
    return ttft, usage


# -- the scheduled runner ------------------------------------------------------------


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
        api: Api = "completions",
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
        self.api: Api = api
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
            result = probe_once(
                self._client,
                ep,
                model=self.model,
                prompt=self.prompt,
                max_tokens=self.max_tokens,
                timeout_s=self.timeout_s,
                api=self.api,
                wall=self._wall,
                cancel=self._stop,
            )
            at_end = self._safe_latest()
            if self._stop.is_set():
                return  # cut by stop(): not a verdict on the server
            with self._lock:
                st = self._state[ep.name]
                st.in_flight = False
                released = True
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


# -- one-off series (``gpuledger probe URL``) -----------------------------------------


def endpoint_from_url(url: str, *, api_key: str | None = None) -> VllmEndpoint:
    """A probe target from what a user types: the server's base URL (a trailing ``/v1``,
    as OpenAI clients take it, is accepted and dropped)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise ValueError(f"not a URL: {url!r}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"not an http(s) URL: {redact_url(url)}")
    base = url.rstrip("/")
    if base.endswith("/v1"):
        base = base[: -len("/v1")]
    return VllmEndpoint(url=base, service="", api_key=api_key)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass(frozen=True, slots=True)
class Quantiles:
    p50: float | None
    p90: float | None
    p99: float | None
    count: int


@dataclass(frozen=True, slots=True)
class ProbeSummary:
    total: int
    successes: int
    failures: Mapping[str, int]  # reason -> count, only reasons that occurred
    failure_examples: Mapping[str, str]  # reason -> the first detail seen
    ttft: Quantiles
    tpot: Quantiles
    e2e: Quantiles
    tokens_per_s: Quantiles

    @property
    def all_failed(self) -> bool:
        return self.successes == 0


def _quantiles(values: Sequence[float | None]) -> Quantiles:
    known = [v for v in values if v is not None]
    return Quantiles(
        p50=percentile(known, 50),
        p90=percentile(known, 90),
        p99=percentile(known, 99),
        count=len(known),
    )


def summarize(results: Sequence[ProbeResult]) -> ProbeSummary:
    ok = [r for r in results if r.ok]
    failures: dict[str, int] = {}
    examples: dict[str, str] = {}
    for r in results:
        if not r.ok:
            reason = r.reason or "unknown"
            failures[reason] = failures.get(reason, 0) + 1
            examples.setdefault(reason, r.detail)
    return ProbeSummary(
        total=len(results),
        successes=len(ok),
        failures=MappingProxyType(failures),
        failure_examples=MappingProxyType(examples),
        ttft=_quantiles([r.ttft_s for r in ok]),
        tpot=_quantiles([r.tpot_s for r in ok]),
        e2e=_quantiles([r.e2e_s for r in ok]),
        tokens_per_s=_quantiles([r.output_tokens_per_s for r in ok]),
    )


def run_series(
    endpoint: VllmEndpoint,
    *,
    n: int,
    model: str | None,
    prompt: str = DEFAULT_PROMPT,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    api: Api = "completions",
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
    try:
        for _ in range(n):
            result = probe_once(
                http,
                endpoint,
                model=model,
                prompt=prompt,
                max_tokens=max_tokens,
                timeout_s=timeout_s,
                api=api,
            )
            if model is None and result.model_name:
                model = result.model_name
            results.append(result)
            if on_result is not None:
                on_result(result)
    finally:
        if own:
            http.close()
    return results
