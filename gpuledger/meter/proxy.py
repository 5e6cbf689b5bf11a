"""The meter's ASGI application: relay every request to the upstream, count the metered.

``POST /v1/chat/completions`` and ``POST /v1/completions`` are metered; every other path
(``/v1/models``, ``/health``, ...) is relayed unchanged, except ``GET /metrics``, which is
the meter's own page. It fails open: whatever the meter cannot read, the client still
receives exactly what the upstream sent, and the miss is counted with its reason.

Plain ASGI rather than a framework's response classes: the relay needs to send each
piece as it arrives, forward the upstream's status and headers as they are, and cut the
client's connection (no terminating chunk) when the upstream cut its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from gpuledger.meter.config import LoadedMeter
from gpuledger.meter.metrics import MeterMetrics, Uncounted
from gpuledger.meter.relay import SseRelay
from gpuledger.meter.tenants import TenantIdentifier
from gpuledger.meter.upstream import (
    UpstreamCut,
    UpstreamPool,
    UpstreamResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gpuledger.meter.usage import MalformedUsage, Usage, usage_of_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("gpuledger.meter")

METERED = frozenset({"/v1/chat/completions", "/v1/completions"})
# hop-by-hop (RFC 9110 7.6.1) plus what the relay recomputes
_HOP = frozenset(
    {
        b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
        b"trailer", b"transfer-encoding", b"upgrade", b"host", b"content-length",
    }
)  # fmt: skip


def _error_body(status: int, message: str) -> bytes:
    """An error in the OpenAI API's shape, so SDKs raise their usual exception."""
    err = {"error": {"message": message, "type": "gateway_error", "param": None, "code": status}}
    return json.dumps(err).encode()


class _Request:
    """What the meter read from one metered request."""

    __slots__ = ("body", "malformed", "model", "stream", "strip_usage", "tenant")

    def __init__(self, raw: bytes, headers: dict[str, str], ident: TenantIdentifier) -> None:
        self.body = raw
        self.malformed = False
        self.stream = False
        self.strip_usage = False
        parsed: Any = None
        try:
            parsed = json.loads(raw)
        except ValueError:
            self.malformed = True
        if not isinstance(parsed, dict):
            self.malformed = True
            parsed = None
        self.tenant = ident.identify(headers, parsed)
        self.model = ""
        if parsed is None:
            return
        model = parsed.get("model")
        self.model = model if isinstance(model, str) else ""
        self.stream = parsed.get("stream") is True
        options = parsed.get("stream_options")
        asked = isinstance(options, dict) and options.get("include_usage") is True
        if self.stream and not asked and (options is None or isinstance(options, dict)):
            # ask on the client's behalf; the relay removes the extra chunk again. Without
            # include_usage vLLM ignores continuous_usage_stats: keep it off, or every
            # chunk would carry a usage the client would not have seen
            asked_options: dict[str, Any] = {**(options or {}), "include_usage": True}
            if asked_options.get("continuous_usage_stats"):
                asked_options["continuous_usage_stats"] = False
            parsed["stream_options"] = asked_options
            self.body = json.dumps(parsed).encode()
            self.strip_usage = True


class MeterApp:
    def __init__(self, loaded: LoadedMeter, metrics: MeterMetrics) -> None:
        cfg = loaded.config
        self._cfg = cfg
        self._upstream_key = loaded.upstream_key
        self.metrics = metrics
        self._ident = TenantIdentifier(
            cfg.tenant.order, cfg.tenant.header, loaded.key_hashes, cfg.tenant.max_name_length
        )
        self._pool: UpstreamPool | None = None
        self._upstream_down = False

    # -- ASGI ----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["path"] == "/metrics" and scope["method"] == "GET":
            await self._respond(send, 200, self.metrics.render(), b"text/plain; version=0.0.4")
            return
        raw = await self._read_body(receive)
        if raw is None:
            await self._respond(send, 413, _error_body(413, "request body too large"))
            return
        await self._relay(scope, raw, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._open_pool()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._pool is not None:
                    await self._pool.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _open_pool(self) -> UpstreamPool:
        t = self._cfg.timeouts
        self._pool = UpstreamPool(
            self._cfg.upstream,
            max_connections=self._cfg.upstream_max_connections,
            connect_seconds=t.connect_seconds,
            read_seconds=t.read_seconds,
        )
        return self._pool

    @property
    def pool(self) -> UpstreamPool:
        """The upstream's connections (opened here when served without a lifespan)."""
        return self._pool or self._open_pool()

    async def _read_body(self, receive: Receive) -> bytes | None:
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"".join(parts)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._cfg.max_request_bytes:
                return None
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)

    @staticmethod
    async def _respond(
        send: Send, status: int, body: bytes, ctype: bytes = b"application/json"
    ) -> None:
        headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    # -- the relay -----------------------------------------------------------------------

    def _upstream_headers(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        out = []
        for name, value in scope["headers"]:
            lname = name.lower()
            if lname in _HOP:
                continue
            if self._upstream_key is not None and lname in (b"authorization", b"api-key"):
                continue
            out.append((name, value))
        if self._upstream_key is not None:
            out.append((b"authorization", f"Bearer {self._upstream_key}".encode()))
        return out

    def _state(self, down: bool, why: str = "") -> None:
        """One log line per change of the upstream's state, never per request."""
        if down and not self._upstream_down:
            log.warning("upstream unavailable: %s", why)
        elif not down and self._upstream_down:
            log.info("upstream answering again")
        self._upstream_down = down

    async def _relay(self, scope: Scope, raw: bytes, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        metered = scope["method"] == "POST" and scope["path"] in METERED
        req = _Request(raw, headers, self._ident) if metered else None
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        try:
            async with asyncio.timeout(self._cfg.timeouts.response_seconds):
                response = await self.pool.send(
                    scope["method"], target.decode("latin-1"), self._upstream_headers(scope),
                    req.body if req else raw,
                )  # fmt: skip
        except (TimeoutError, UpstreamTimeout):
            self._state(True, "no response within the timeout")
            if req:
                self.metrics.miss(Uncounted.UPSTREAM_ERROR)
            await self._respond(send, 504, _error_body(504, "upstream timed out"))
            return
        except UpstreamUnavailable as exc:
            self._state(True, str(exc) or type(exc).__name__)
            if req:
                self.metrics.miss(Uncounted.UPSTREAM_ERROR)
            await self._respond(send, 502, _error_body(502, "upstream unreachable"))
            return
        self._state(False)
        try:
            await self._stream_back(response, req, receive, send)
        finally:
            await response.aclose()

    async def _stream_back(
        self, response: UpstreamResponse, req: _Request | None, receive: Receive, send: Send
    ) -> None:
        ok = 200 <= response.status_code < 300
        encoded = (response.header("content-encoding") or "identity").lower() != "identity"
        sse = response.header("content-type").startswith("text/event-stream")
        relay = (
            SseRelay(strip_usage=req.strip_usage) if req and ok and sse and not encoded else None
        )
        keep_length = relay is None or not relay.strips
        out_headers = [
            (n, v)
            for n, v in response.raw_headers
            if n.lower() not in _HOP or (keep_length and n.lower() == b"content-length")
        ]
        disconnected = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            disconnected.set()

        watcher = asyncio.create_task(watch())
        copy: list[bytes] = []
        try:
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": out_headers})  # fmt: skip
            try:
                async for piece in response.aiter_raw():
                    if disconnected.is_set():
                        raise ConnectionResetError("client went away")
                    if relay is not None:
                        piece = relay.feed(piece)
                    elif req is not None and ok:
                        copy.append(piece)
                    if piece:
                        await send({"type": "http.response.body", "body": piece,
                                    "more_body": True})  # fmt: skip
                tail = relay.finish() if relay is not None else b""
            except UpstreamCut as exc:
                # the upstream cut or stalled mid-body: the client's connection is cut too
                # (returning without the final body message makes the server close it)
                self._state(True, f"response cut: {exc}")
                if req is not None:
                    self._finish_cut(req, relay)
                return
            except OSError:
                if req is not None:
                    self.metrics.miss(Uncounted.CLIENT_DISCONNECT)
                return
            try:
                await send({"type": "http.response.body", "body": tail, "more_body": False})
            except OSError:
                if req is not None:
                    self.metrics.miss(Uncounted.CLIENT_DISCONNECT)
                return
        finally:
            watcher.cancel()
        if req is not None:
            self._account(req, ok=ok, encoded=encoded, relay=relay, body=b"".join(copy))

    def _finish_cut(self, req: _Request, relay: SseRelay | None) -> None:
        if relay is not None and relay.usage is not None:
            self._count(req, relay.usage)  # the usage arrived before the cut
        else:
            self.metrics.miss(Uncounted.UPSTREAM_ERROR)

    def _count(self, req: _Request, usage: Usage) -> None:
        self.metrics.count(req.tenant, usage.model or req.model, usage)

    def _account(
        self, req: _Request, *, ok: bool, encoded: bool, relay: SseRelay | None, body: bytes
    ) -> None:
        """Count one relayed request, or its miss: exactly one of the two, once."""
        if req.malformed:
            self.metrics.miss(Uncounted.MALFORMED)
        elif not ok:
            self.metrics.miss(Uncounted.UPSTREAM_ERROR)
        elif encoded:
            self.metrics.miss(Uncounted.NO_USAGE)
        elif relay is not None:
            if relay.usage is not None:
                self._count(req, relay.usage)
            else:
                self.metrics.miss(Uncounted.MALFORMED if relay.malformed else Uncounted.NO_USAGE)
        else:
            try:
                usage = usage_of_body(body)
            except MalformedUsage:
                self.metrics.miss(Uncounted.MALFORMED)
                return
            if usage is None:
                self.metrics.miss(Uncounted.NO_USAGE)
            else:
                self._count(req, usage)
