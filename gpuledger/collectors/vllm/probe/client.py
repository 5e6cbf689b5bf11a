"""One synthetic probe: a small streaming completion against a vLLM server, timed.

A probe is what a user sees, measured from outside the engine: time to first token,
time per output token, end-to-end latency. It is sent to vLLM's OpenAI-compatible API
(``/v1/completions`` or ``/v1/chat/completions``) with ``"stream": true`` and
``stream_options: {"include_usage": true}``, so that the server reports the exact prompt
and completion token counts in a last event with ``"choices": []`` before
``data: [DONE]`` (see ``docs/probes.md`` for the upstream format this relies on).

:func:`probe_once` sends one probe and classifies a failure as exactly one of
``connect``, ``timeout``, ``http_status``, ``bad_stream``, ``model_mismatch``; it is the
only part that speaks HTTP and server-sent events, so the scheduler
(:mod:`~gpuledger.collectors.vllm.probe.runner`) and ``gpuledger probe`` share it.

The endpoint's API key goes in the ``Authorization`` header and nowhere else: no
result, detail, log line or status ever carries it.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import httpx

from gpuledger.collectors.http import _shutdown_stream, redact_url
from gpuledger.collectors.vllm.types import ProbeResult, VllmEndpoint

T = TypeVar("T")

Api = Literal["completions", "chat"]
FAILURE_REASONS = ("connect", "timeout", "http_status", "bad_stream", "model_mismatch")

DEFAULT_PROMPT = "Count from one to twenty, separated by commas:"
DEFAULT_MAX_TOKENS = 16
DEFAULT_TIMEOUT_S = 30.0
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


def failed_result(
    endpoint: VllmEndpoint, model: str, started_unix: float, failure: _Failure
) -> ProbeResult:
    """A failed probe: no timings, the reason, a detail without the endpoint's key."""
    return ProbeResult(
        endpoint=endpoint,
        model_name=model,
        started_unix=started_unix,
        ok=False,
        reason=failure.reason,
        detail=_scrub(failure.detail, endpoint.api_key),
    )


_ERROR_BODY_BYTES = 4096


def http_status_failure(response: httpx.Response, where: str) -> _Failure:
    """``http_status`` for a non-2xx answer; the detail is ``HTTP <code> from <url>``,
    then the server's error message when its (small) JSON body has one: vLLM says "The
    model does not support Embeddings API" there, which is how a probe learns that an
    endpoint does not serve what it asked (:mod:`~gpuledger.collectors.vllm.probe.served`)."""
    detail = f"HTTP {response.status_code} from {where}"
    body = b""
    try:
        for chunk in response.iter_raw():
            body += chunk
            if len(body) >= _ERROR_BODY_BYTES:
                break
        doc = json.loads(body[:_ERROR_BODY_BYTES])
    except (httpx.HTTPError, OSError, ValueError):
        return _Failure("http_status", detail)
    message = None
    if isinstance(doc, dict):
        error = doc.get("error")
        if isinstance(error, dict):
            message = error.get("message")
        elif isinstance(doc.get("message"), str):
            message = doc["message"]
        elif isinstance(doc.get("detail"), str):
            message = doc["detail"]
    if isinstance(message, str) and message:
        detail += f": {message[:160]}"
    return _Failure("http_status", detail)


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

    def failed(reason: str, detail: str) -> ProbeResult:
        return failed_result(endpoint, asked, started_unix, _Failure(reason, detail))

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


def post_and_read(
    client: httpx.Client,
    endpoint: VllmEndpoint,
    url: str,
    *,
    body: dict[str, Any],
    accept: str,
    deadline: _Deadline,
    timeout_s: float,
    read: Callable[[httpx.Response], T],
    ttft: Callable[[], float | None] = lambda: None,
) -> T:
    """POST ``body`` to ``url`` and ``read`` the answer within ``deadline``. The one mapping
    of transport errors, HTTP statuses and the deadline to a probe's failure reasons, for
    every probe kind (completion streams here, embeddings and rerank in ``pooling``);
    ``ttft`` says how far a stream had got when the deadline struck."""
    where = redact_url(url)
    got_headers = False
    try:
        with client.stream(
            "POST",
            url,
            json=body,
            headers={**_headers(endpoint), "Accept": accept},
            timeout=httpx.Timeout(max(deadline.remaining(), 0.001)),
        ) as response:
            got_headers = True
            if not 200 <= response.status_code < 300:
                raise http_status_failure(response, where)
            with deadline.watch(response):
                try:
                    out = read(response)
                except (httpx.HTTPError, OSError) as exc:
                    if deadline.expired.is_set():
                        raise _Failure("timeout", _timeout_detail(timeout_s, ttft())) from None
                    raise _http_failure(exc, where, got_headers=True) from None
            if deadline.expired.is_set():
                raise _Failure("timeout", _timeout_detail(timeout_s, ttft()))
            return out
    except _Failure:
        raise
    except (httpx.HTTPError, OSError) as exc:
        if deadline.expired.is_set():
            raise _Failure("timeout", _timeout_detail(timeout_s, ttft())) from None
        raise _http_failure(exc, where, got_headers=got_headers) from None


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
    sent = clock()
    ttft: float | None = None
    e2e: float | None = None
    usage: dict[str, Any] | None = None

    def read(response: httpx.Response) -> None:
        nonlocal ttft, e2e, usage
        for data in _sse_events(response.iter_raw(), max_bytes):
            if data == "[DONE]":
                e2e = clock() - sent
                break
            ttft, usage = _handle_event(data, asked, ttft, usage, sent, clock)

    post_and_read(
        client, endpoint, url, body=body, accept="text/event-stream", deadline=deadline,
        timeout_s=timeout_s, read=read, ttft=lambda: ttft,
    )  # fmt: skip

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
