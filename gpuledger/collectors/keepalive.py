"""Bounded GET of a page over persistent HTTP/1.1 connections, for a source that scrapes
the same servers every cycle (the vLLM collector).

Why not httpx, as :func:`gpuledger.collectors.http.fetch`: on a 230 KB vLLM page httpx
costs about 1.2 ms of CPU per fetch even on a kept-alive connection (its request and
response objects, h11's event parsing, the byte stream wrappers), the standard
library's ``http.client`` about 0.2 ms (``bench/bench_vllm.py``). Four endpoints every
cycle made the fetch a third of the vLLM collector's CPU.

The promises are those of :func:`~gpuledger.collectors.http.fetch`, and so are the error
messages: the whole exchange (connect, request, headers, body) gets ``timeout_s``, enforced
by the shared :data:`~gpuledger.collectors.http.WATCHDOG`, which shuts the socket down at
the deadline (a body that drips one byte just inside every socket timeout still ends
then); the body is refused as soon as it would pass ``max_bytes`` (at once when the
``Content-Length`` says so); the request asks for the text format 0.0.4 and an identity
encoding; no redirect is followed and no proxy is read from the environment; errors
name the URL without its userinfo or query and never carry a header value. TLS uses the
context httpx would (``httpx.create_ssl_context``: certifi's roots, the hostname
checked).

Connections: an idle connection per origin is kept after a complete response the
server did not mark ``Connection: close``, up to ``max_idle`` per origin, for at most
``max_idle_s`` (an endpoint that went away -- a pod deleted -- must not keep a socket
open in this process for ever: idle connections past their age are closed whenever a
connection is handed back, whichever its origin). A server may
close an idle connection at any time -- vLLM's OpenAI server runs uvicorn with
``timeout_keep_alive=envs.VLLM_HTTP_TIMEOUT_KEEP_ALIVE`` (vllm-project/vllm
``vllm/entrypoints/openai/api_server.py``), whose default is ``"5"`` seconds
(``vllm/envs.py`` at 001f69f8; uvicorn's own default is 5 too, uvicorn 0.55.0
``uvicorn/config.py:233``), so at the default 15 s scrape interval every scrape finds its
connection closed. A kept connection whose peer has hung up is therefore dropped
before use, and a request that fails on a reused connection before any byte of the
answer came back is sent once more on a new one (a GET is safe to repeat).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import select
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

import httpx

from gpuledger.collectors.base import CollectorError
from gpuledger.collectors.http import ACCEPT, WATCHDOG, _reason, redact_url

__all__ = ["KeepAliveClient"]

_CHUNK_BYTES = 64 * 1024
# Failures that mean "the server had already closed this kept connection".
_STALE = (
    http.client.RemoteDisconnected,
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
)

_Origin = tuple[str, str, int]


class _Expired(Exception):
    """The watchdog shut the socket down: the deadline passed."""


def _peer_closed(conn: http.client.HTTPConnection) -> bool:
    """Whether an idle kept connection is unusable: readable while idle means the peer
    sent EOF (or stray bytes); either way it must not carry another request."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class KeepAliveClient:
    """GETs pages with :meth:`fetch`; thread-safe (each fetch holds its own connection)."""

    def __init__(self, *, max_idle: int = 8, max_idle_s: float = 60.0) -> None:
        if max_idle <= 0 or max_idle_s <= 0:
            raise ValueError("max_idle and max_idle_s must be positive")
        self.max_idle = max_idle
        self.max_idle_s = max_idle_s
        self._lock = threading.Lock()
        # per origin: idle connections with the monotonic time each was handed back
        self._idle: dict[_Origin, list[tuple[http.client.HTTPConnection, float]]] = {}
        self._ssl: ssl.SSLContext | None = None
        self._closed = False

    def fetch(
        self,
        url: str,
        *,
        timeout_s: float,
        max_bytes: int,
        headers: Mapping[str, str] | None = None,
    ) -> bytes:
        """GET ``url`` and return its body, or raise :class:`CollectorError` (the
        messages of :func:`gpuledger.collectors.http.fetch`)."""
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        where = redact_url(url)
        try:
            parts = urlsplit(url)
            scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
        except ValueError:
            raise CollectorError(f"request to {where} failed: invalid URL") from None
        if scheme not in ("http", "https") or not host:
            raise CollectorError(f"request to {where} failed: UnsupportedProtocol")
        origin: _Origin = (scheme, host, port or (443 if scheme == "https" else 80))
        request_headers = {"Accept": ACCEPT, "Accept-Encoding": "identity"}
        if parts.username is not None or parts.password is not None:  # as httpx does
            userinfo = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
            request_headers["Authorization"] = "Basic " + base64.b64encode(
                userinfo.encode()
            ).decode("ascii")
        for name, value in (headers or {}).items():  # the caller's win, whatever their case
            for same in [k for k in request_headers if k.lower() == name.lower()]:
                del request_headers[same]
            request_headers[name] = value
        exchange = _Exchange(
            target=(parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
            headers=request_headers,
            deadline=time.monotonic() + timeout_s,
            timeout_s=timeout_s,
            max_bytes=max_bytes,
            where=where,
        )
        conn, reused = self._take(origin)
        try:
            body, keep = exchange.run(conn, reused)
        except _Stale:  # the server had closed the kept connection: once more, afresh
            conn = self._new(origin)
            body, keep = exchange.run(conn, False)
        if keep:
            self._give_back(origin, conn)
        return body

    def _take(self, origin: _Origin) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            idle = self._idle.get(origin)
            while idle:
                conn, _ = idle.pop()
                if not _peer_closed(conn):
                    return conn, True
                conn.close()
        return self._new(origin), False

    def _new(self, origin: _Origin) -> http.client.HTTPConnection:
        scheme, host, port = origin
        if scheme == "https":
            with self._lock:
                if self._ssl is None:
                    self._ssl = httpx.create_ssl_context(trust_env=False)
                context = self._ssl
            return http.client.HTTPSConnection(host, port, context=context)
        return http.client.HTTPConnection(host, port)

    def _give_back(self, origin: _Origin, conn: http.client.HTTPConnection) -> None:
        now = time.monotonic()
        old: list[http.client.HTTPConnection] = []
        with self._lock:
            for key, conns in list(self._idle.items()):
                fresh = [(c, since) for c, since in conns if now - since < self.max_idle_s]
                old += [c for c, since in conns if now - since >= self.max_idle_s]
                if fresh:
                    self._idle[key] = fresh
                else:
                    del self._idle[key]
            idle = self._idle.setdefault(origin, [])
            if self._closed or len(idle) >= self.max_idle:
                old.append(conn)
            else:
                idle.append((conn, now))
        for c in old:
            with contextlib.suppress(OSError):
                c.close()

    def close(self) -> None:
        """Close every idle connection; a fetch still running closes its own when done."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn, _ in conns:
                with contextlib.suppress(OSError):
                    conn.close()


class _Stale(Exception):
    """A reused connection was closed by the server before any answer: send again."""


class _Exchange:
    """One GET, possibly tried twice (a stale kept connection, then a new one)."""

    def __init__(
        self,
        *,
        target: str,
        headers: Mapping[str, str],
        deadline: float,
        timeout_s: float,
        max_bytes: int,
        where: str,
    ) -> None:
        self.target = target
        self.headers = headers
        self.deadline = deadline
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.where = where

    def _timed_out(self, reading: bool) -> CollectorError:
        verb = "reading" if reading else "waiting for"
        return CollectorError(f"timed out after {self.timeout_s:g}s {verb} {self.where}")

    def run(self, conn: http.client.HTTPConnection, reused: bool) -> tuple[bytes, bool]:
        """``(body, whether conn may be kept)``; on any error ``conn`` is closed."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            conn.close()
            raise self._timed_out(False)
        expired = threading.Event()

        def _expire() -> None:
            expired.set()
            sock = conn.sock
            if sock is not None:
                with contextlib.suppress(OSError):  # already closed
                    sock.shutdown(socket.SHUT_RDWR)

        watch = WATCHDOG.watch(self.deadline, _expire)
        keep = False
        try:
            body, keep = self._run(conn, reused, remaining, expired)
            return body, keep
        finally:
            WATCHDOG.cancel(watch)  # after this the watchdog can no longer touch conn
            if not keep or expired.is_set():
                conn.close()

    def _run(
        self,
        conn: http.client.HTTPConnection,
        reused: bool,
        remaining: float,
        expired: threading.Event,
    ) -> tuple[bytes, bool]:
        where, max_bytes = self.where, self.max_bytes
        if conn.sock is None:
            conn.timeout = remaining
            try:
                conn.connect()
            except TimeoutError:
                raise self._timed_out(False) from None
            except OSError as exc:
                if expired.is_set():
                    raise self._timed_out(False) from None
                raise CollectorError(f"cannot connect to {where}: {_reason(exc)}") from None
        else:
            conn.sock.settimeout(remaining)
        answered = False
        try:
            conn.putrequest("GET", self.target, skip_accept_encoding=True)
            for name, value in self.headers.items():
                conn.putheader(name, value)
            conn.endheaders()
            response = conn.getresponse()
            answered = True
            if not 200 <= response.status < 300:
                raise CollectorError(f"HTTP {response.status} from {where}")
            declared = response.getheader("content-length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise CollectorError(
                    f"{where} announced {int(declared)} bytes, over the {max_bytes}-byte cap"
                )
            if response.length is not None:  # a Content-Length within the cap
                body = response.read()
            else:  # chunked or close-delimited: capped while reading
                buf = bytearray()
                while chunk := response.read1(_CHUNK_BYTES):
                    if len(buf) + len(chunk) > max_bytes:
                        raise CollectorError(f"body from {where} exceeds the {max_bytes}-byte cap")
                    buf += chunk
                body = bytes(buf)
            if expired.is_set():
                raise self._timed_out(True)
            return body, not response.will_close
        except CollectorError:
            raise
        except _STALE:
            if reused and not answered and not expired.is_set():
                raise _Stale from None
            if expired.is_set():
                raise self._timed_out(answered) from None
            raise CollectorError(
                f"request to {where} failed: server closed the connection"
            ) from None
        except TimeoutError:
            raise self._timed_out(answered) from None
        except (http.client.HTTPException, OSError, ValueError) as exc:
            if expired.is_set():
                raise self._timed_out(answered) from None
            if isinstance(exc, ValueError):  # an invalid header value or request target
                raise CollectorError(f"request to {where} failed: invalid request") from None
            raise CollectorError(f"request to {where} failed: {_reason(exc)}") from None
