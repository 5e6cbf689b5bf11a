"""The meter's HTTP/1.1 client to its one upstream: asyncio protocols and httptools' parser.

Why not httpx: a streamed completion is ~20 small pieces, and httpx reads each through
httpcore's async generators, h11's pure-Python chunked parser and anyio's stream (which
adds an event-loop round trip per read). At 200 concurrent streams that was most of the
meter's ~4 CPU-s per 1,000 requests, and on a machine whose cores are shared that CPU is
what the clients wait for (bench/bench_meter.py, docs/performance.md). Here each piece is
one ``data_received`` callback into httptools' C parser (the one uvicorn already uses on
the meter's own side), appended to a list the relaying task takes whole.

What the relay needs and no more: one origin, keep-alive connections up to a limit, the
request sent as given (no headers added but ``Host`` and ``Content-Length``), the status
and raw header pairs, the body de-chunked but never decoded, and distinct failures:

- :class:`UpstreamTimeout`: no connection, or no status line, within the timeouts (504);
- :class:`UpstreamUnavailable`: refused, reset, closed before a status line (502);
- :class:`UpstreamCut`: the body stopped short, broke the protocol or went silent for
  ``read_seconds`` (the client's connection is cut too).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from typing import Any, cast
from urllib.parse import urlsplit

import httptools


class UpstreamError(Exception):
    """The upstream did not answer as HTTP/1.1 should."""


class UpstreamUnavailable(UpstreamError):
    pass


class UpstreamTimeout(UpstreamUnavailable):
    pass


class UpstreamCut(UpstreamError):
    pass


# bytes held for a client that reads slower than the upstream writes, before the
# upstream's connection is paused (TCP backpressure then reaches the upstream)
_HIGH_WATER = 256 * 1024


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser: Any = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._status = 0
        self._head: asyncio.Future[None] | None = None
        self._body: list[bytes] = []
        self._held = 0
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._complete = False
        self._error: UpstreamError | None = None
        self._head_only = False
        self._length_known = True
        self.reusable = False
        # the read timeout: one timer per connection, re-armed only when it fires (a
        # timer per piece cost more than the rest of the piece's handling)
        self._silence_limit = 0.0
        self._last_data = 0.0
        self._watchdog: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._last_data = self._loop.time()
        if self._parser is None:  # bytes while idle: the upstream broke keep-alive
            self._fail(UpstreamCut("bytes from the upstream between responses"))
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamCut("the upstream switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(UpstreamCut(f"invalid HTTP from the upstream: {exc}"))

    def eof_received(self) -> bool | None:
        self._ended()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended()

    # -- httptools callbacks -------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim response: the final one follows
            self._headers = []
            return
        self._status = status
        names = {n.lower() for n, _ in self._headers}
        self._length_known = b"content-length" in names or b"transfer-encoding" in names
        if self._head is not None and not self._head.done():
            self._head.set_result(None)
        if self._head_only:  # a HEAD's answer has no body, whatever its headers say
            self._finished(reusable=False)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._held += len(body)
        if self._held > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._status == 0:  # the end of an interim response
            return
        self._finished(reusable=bool(self._parser.should_keep_alive()))

    # -- state ---------------------------------------------------------------------------

    def _arm(self, delay: float) -> None:
        self._watchdog = self._loop.call_later(delay, self._check_silence)

    def _check_silence(self) -> None:
        """The upstream must send something every ``read_seconds`` while the relay waits
        on it; time the relay spends on a slow client (pieces held, reading paused) does
        not count against the upstream."""
        self._watchdog = None
        if self._parser is None or self._complete or self._error is not None or self.closed:
            return
        now = self._loop.time()
        if self._body or self._paused:
            self._last_data = now
        quiet = now - self._last_data
        if quiet < self._silence_limit:
            self._arm(self._silence_limit - quiet)
        elif self._status:
            self._fail(UpstreamCut("the upstream went silent mid-body"))
        else:
            self._fail(UpstreamTimeout("no response within the read timeout"))

    def _disarm(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _finished(self, *, reusable: bool) -> None:
        if self._complete:
            return
        self._complete = True
        self.reusable = reusable and not self.closed
        self._wake()

    def _fail(self, error: UpstreamError) -> None:
        if self._error is None and not self._complete:
            self._error = error
        if self._head is not None and not self._head.done():
            self._head.set_exception(error)
            self._head.exception()  # retrieved: the sender may have given up already
        self._wake()
        self.close()

    def _ended(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.reusable = False
        if self._parser is None or self._complete:
            return
        if self._status and not self._length_known:  # a body delimited by the close
            self._finished(reusable=False)
        elif self._status:
            self._fail(UpstreamCut("the upstream closed the connection mid-body"))
        else:
            self._fail(UpstreamUnavailable("the upstream closed the connection"))

    def close(self) -> None:
        self.closed = True
        self.reusable = False
        if self.transport is not None:
            self.transport.close()

    # -- one exchange --------------------------------------------------------------------

    def start(
        self, request: bytes, *, head_only: bool, read_seconds: float
    ) -> asyncio.Future[None]:
        loop = self._loop
        self._parser = httptools.HttpResponseParser(self)
        self._headers, self._status, self._body, self._held = [], 0, [], 0
        self._complete, self._error, self._head_only = False, None, head_only
        self._length_known, self.reusable = True, False
        self._head = loop.create_future()
        self._silence_limit, self._last_data = read_seconds, loop.time()
        self._arm(read_seconds)
        assert self.transport is not None
        self.transport.write(request)
        return self._head

    async def read(self) -> bytes:
        """What arrived since the last read (b"" at the end of the body); raises
        :class:`UpstreamCut` when the body broke off or went silent."""
        while not self._body:
            if self._error is not None:
                raise self._error
            if self._complete:
                return b""
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        out = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._body, self._held = [], 0
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()
        return out

    def done(self) -> None:
        """The exchange is over; the connection is closed unless it may carry another."""
        self._parser = None
        self._disarm()
        if not (self._complete and self.reusable and self._error is None):
            self.close()


class UpstreamResponse:
    """A response whose body is read as it arrives; :meth:`aclose` once done with it."""

    def __init__(self, pool: UpstreamPool, conn: _Connection) -> None:
        self._pool = pool
        self._conn: _Connection | None = conn
        self.status_code = conn._status
        self.raw_headers = conn._headers

    def header(self, name: str) -> str:
        """The first value of a header (case-insensitive), "" when absent."""
        want = name.lower().encode("latin-1")
        for n, v in self.raw_headers:
            if n.lower() == want:
                return v.decode("latin-1")
        return ""

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body as it arrives: de-chunked, never decoded."""
        conn = self._conn
        if conn is None:
            return
        while piece := await conn.read():
            yield piece

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.release(conn)


class UpstreamPool:
    """Keep-alive connections to one origin, at most ``max_connections`` at a time."""

    def __init__(
        self,
        base_url: str,
        *,
        max_connections: int,
        connect_seconds: float,
        read_seconds: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        self._tls = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (443 if self._tls else 80)
        default = parts.port is None or parts.port == (443 if self._tls else 80)
        host = f"[{self._host}]" if ":" in self._host else self._host
        self.host_header = (host if default else f"{host}:{self._port}").encode("idna")
        self.base_path = parts.path.rstrip("/")
        self._ssl = (ssl_context or ssl.create_default_context()) if self._tls else None
        self._connect_seconds = connect_seconds
        self.read_seconds = read_seconds
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_seconds):
                _, conn = await loop.create_connection(
                    _Connection, self._host, self._port, ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                )  # fmt: skip
        except TimeoutError:
            raise UpstreamTimeout("no connection within the connect timeout") from None
        except OSError as exc:
            raise UpstreamUnavailable(type(exc).__name__) from None
        return conn

    def _acquire_idle(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        return None

    def release(self, conn: _Connection) -> None:
        conn.done()
        if not conn.closed:
            self._idle.append(conn)
        self._slots.release()

    async def send(
        self, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> UpstreamResponse:
        """Send one request; return once the status line and headers are in.

        ``target`` is the path and query as the client sent them (the base URL's path is
        put in front); ``headers`` go out as given, after ``Host`` and before a
        ``Content-Length`` this computes."""
        try:
            async with asyncio.timeout(self._connect_seconds):
                await self._slots.acquire()
        except TimeoutError:
            raise UpstreamTimeout("no free upstream connection within the timeout") from None
        conn: _Connection | None = None
        try:
            conn = self._acquire_idle() or await self._connect()
            parts = [f"{method} {self.base_path}{target} HTTP/1.1\r\n".encode("latin-1"),
                     b"host: " + self.host_header + b"\r\n"]  # fmt: skip
            parts.extend(n + b": " + v + b"\r\n" for n, v in headers)
            if body or method in ("POST", "PUT", "PATCH"):
                parts.append(b"content-length: %d\r\n" % len(body))
            parts.append(b"\r\n")
            parts.append(body)
            head = conn.start(
                b"".join(parts), head_only=method == "HEAD", read_seconds=self.read_seconds
            )
            try:
                await head
            except UpstreamCut as exc:
                raise UpstreamUnavailable(str(exc)) from None
            return UpstreamResponse(self, conn)
        except BaseException:
            if conn is not None:
                conn.close()
                conn.done()
            self._slots.release()
            raise

    async def aclose(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()
