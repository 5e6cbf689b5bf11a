"""Bounded HTTP GET shared by the collectors that scrape a ``/metrics`` page.

An exporter that misbehaves must not be able to stall the agent or exhaust its memory:
a hung socket, a body that drips one byte a second, or a multi-gigabyte page all end in a
:class:`CollectorError` within the collector's time budget. httpx's timeouts apply to
each socket operation separately, so a slow drip that always delivers just before the
read timeout would never trip them; this module therefore adds one deadline for the
whole exchange, enforced by a watchdog that shuts the socket down: one thread for the
whole process (:data:`WATCHDOG`), not one started per request -- starting a thread cost
more CPU than the rest of a keep-alive fetch of a small page.

Error messages are meant for a log line that operators paste into tickets, so they never
carry the URL's userinfo (``user:password@``), its query string, or any header value.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import socket
import threading
import time
from collections.abc import Callable, Mapping

import httpx

from gpuledger.collectors.base import CollectorError

_CHUNK_BYTES = 64 * 1024
# What Prometheus sends when its scrape_protocols is [PrometheusText0.0.4]: the one format
# collectors/textformat/parse.py reads, then anything at a lower weight, so an exporter
# that cannot negotiate still answers (prometheus/prometheus v3.14.0 scrape/scrape.go
# acceptHeader, config/config.go ScrapeProtocolsHeaders; docs/upstream-prometheus-text.md).
ACCEPT = "text/plain;version=0.0.4;q=0.6,*/*;q=0.5"


class Watchdog:
    """Runs an action at a deadline, from one daemon thread shared by every fetch.

    :meth:`watch` returns a handle that :meth:`cancel` disarms; an action runs at most
    once, under the watchdog's lock, so once :meth:`cancel` has returned the action has
    either run to its end or never will (a connection handed back to a pool cannot be
    shut down afterwards). Actions must therefore be quick and must not block: the
    fetches' actions set an event and shut a socket down.
    The thread starts with the first watch. Disarmed entries stay in the heap until their
    deadline comes up, so the heap holds at most the fetches of the last timeout's span.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, list[Callable[[], None] | None]]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, deadline: float, action: Callable[[], None]) -> list[Callable[[], None] | None]:
        """Run ``action`` once the monotonic clock passes ``deadline``, unless cancelled."""
        handle: list[Callable[[], None] | None] = [action]
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="gpuledger-http-watchdog", daemon=True
                )
                self._thread.start()
            earliest = not self._heap or deadline < self._heap[0][0]
            heapq.heappush(self._heap, (deadline, next(self._seq), handle))
            if earliest:
                self._cond.notify()
        return handle

    def cancel(self, handle: list[Callable[[], None] | None]) -> None:
        """Disarm a watch (harmless if it already ran)."""
        with self._cond:
            handle[0] = None

    def _run(self) -> None:
        heap = self._heap
        while True:
            with self._cond:
                while heap and heap[0][2][0] is None:
                    heapq.heappop(heap)
                if not heap:
                    self._cond.wait()
                    continue
                wait = heap[0][0] - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                handle = heapq.heappop(heap)[2]
                action, handle[0] = handle[0], None
                if action is not None:
                    with contextlib.suppress(Exception):  # an action's failure is its own
                        action()


WATCHDOG = Watchdog()


@functools.lru_cache(maxsize=1024)
def redact_url(url: str) -> str:
    """The URL as it may appear in a log: no userinfo, no query (tokens often live there).
    Cached: every fetch names its URL this way, and parsing one costs ~25 µs."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return "<invalid URL>"
    host = parsed.host or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    port = f":{parsed.port}" if parsed.port is not None else ""
    return f"{parsed.scheme}://{host}{port}{parsed.path}"


def _shutdown_stream(response: httpx.Response) -> None:
    """Wake a read blocked in another thread. Closing a socket does not reliably
    interrupt a blocked ``recv`` on Linux; ``shutdown`` does."""
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):  # already closed by the peer or the reader
            sock.shutdown(socket.SHUT_RDWR)


def fetch(
    client: httpx.Client,
    url: str,
    *,
    timeout_s: float,
    max_bytes: int,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """GET ``url`` and return its body, or raise :class:`CollectorError`.

    The whole exchange (connect, headers, body) gets ``timeout_s``; the body is read in
    chunks and abandoned as soon as it would pass ``max_bytes``, so at most ``max_bytes``
    plus one chunk is ever held in memory. The request asks for the text format 0.0.4
    (:data:`ACCEPT`) unless ``headers`` names another ``Accept``.
    """
    if timeout_s <= 0:
        raise ValueError("timeout_s must be positive")
    if max_bytes <= 0:
        raise ValueError("max_bytes must be positive")
    where = redact_url(url)
    deadline = time.monotonic() + timeout_s
    expired = threading.Event()
    watch: list[Callable[[], None] | None] | None = None
    try:
        # identity: a compressed body would defeat the byte cap (a small gzip can
        # inflate to gigabytes) and the cap is about what we hold, not what is sent.
        request_headers = httpx.Headers({"Accept": ACCEPT, "Accept-Encoding": "identity"})
        for name, value in (headers or {}).items():  # the caller's win, whatever their case
            request_headers[name] = value
        with client.stream(
            "GET", url, headers=request_headers, timeout=httpx.Timeout(timeout_s)
        ) as response:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CollectorError(f"timed out after {timeout_s:g}s waiting for {where}")

            def _expire() -> None:
                expired.set()
                _shutdown_stream(response)

            watch = WATCHDOG.watch(deadline, _expire)

            if not 200 <= response.status_code < 300:
                raise CollectorError(f"HTTP {response.status_code} from {where}")
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise CollectorError(
                    f"{where} announced {int(declared)} bytes, over the {max_bytes}-byte cap"
                )
            body = bytearray()
            for chunk in response.iter_raw(_CHUNK_BYTES):
                if len(body) + len(chunk) > max_bytes:
                    raise CollectorError(f"body from {where} exceeds the {max_bytes}-byte cap")
                body += chunk
                if expired.is_set():
                    break
            if expired.is_set():
                raise CollectorError(f"timed out after {timeout_s:g}s reading {where}")
            return bytes(body)
    except CollectorError:
        raise
    except httpx.TimeoutException:
        raise CollectorError(f"timed out after {timeout_s:g}s waiting for {where}") from None
    except httpx.ConnectError as exc:
        raise CollectorError(f"cannot connect to {where}: {_reason(exc)}") from None
    except (httpx.HTTPError, OSError) as exc:
        if expired.is_set():
            raise CollectorError(f"timed out after {timeout_s:g}s reading {where}") from None
        raise CollectorError(f"request to {where} failed: {_reason(exc)}") from None
    finally:
        if watch is not None:
            WATCHDOG.cancel(watch)


def _reason(exc: BaseException) -> str:
    """A short cause without the URL (httpx sometimes embeds the full URL, userinfo
    included, in its messages) -- the caller already names the redacted target."""
    cause: BaseException = exc
    while (nxt := cause.__cause__ or cause.__context__) is not None:
        cause = nxt
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(cause, socket.gaierror):
        return "name resolution failed"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror.lower()
    return type(exc).__name__
