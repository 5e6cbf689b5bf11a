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

import httpx

from gpuledger.meter.config import LoadedMeter
from gpuledger.meter.metrics import MeterMetrics, Uncounted
from gpuledger.meter.relay import SseRelay
from gpuledger.meter.tenants import TenantIdentifier
from gpuledger.meter.usage import MalformedUsage, Usage, usage_of_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("gpuledger.meter")

_SHARDS = 16
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
        self._clients: list[httpx.AsyncClient] = []
        self._next = 0
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
                self._open_clients()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for client in self._clients:
                    await client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _open_clients(self) -> None:
        """Several small connection pools rather than one large one: httpcore scans its
        whole pool for every request it places, so one pool of 200 streaming connections
        costs milliseconds per request (bench/bench_meter.py measured it)."""
        shards = min(_SHARDS, self._cfg.upstream_max_connections)
        limit = -(-self._cfg.upstream_max_connections // shards)
        self._clients = [self._new_client(limit) for _ in range(shards)]

    def _new_client(self, limit: int) -> httpx.AsyncClient:
        t = self._cfg.timeouts
        return httpx.AsyncClient(
            timeout=httpx.Timeout(connect=t.connect_seconds, read=t.read_seconds,
                                  write=t.read_seconds, pool=t.connect_seconds),
            limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
            follow_redirects=False,
            trust_env=False,
        )  # fmt: skip

    @property
    def client(self) -> httpx.AsyncClient:
        """The next pool, round robin."""
        if not self._clients:  # served without a lifespan (some test servers)
            self._open_clients()
        self._next = (self._next + 1) % len(self._clients)
        return self._clients[self._next]

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
        url = self._cfg.upstream + scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        sent_headers = self._upstream_headers(scope)
        client = self.client
        request = client.build_request(
            scope["method"], url, headers=sent_headers, content=req.body if req else raw
        )
        # httpx adds its default headers (Accept-Encoding, User-Agent, ...): the upstream
        # must see what the client sent, so remove every header the client did not send
        keep = {n.lower().decode("latin-1") for n, _ in sent_headers} | {"host", "content-length"}
        for name in list(request.headers.keys()):
            if name.lower() not in keep:
                del request.headers[name]
        try:
            async with asyncio.timeout(self._cfg.timeouts.response_seconds):
                response = await client.send(request, stream=True)
        except (TimeoutError, httpx.TimeoutException):
            self._state(True, "no response within the timeout")
            if req:
                self.metrics.miss(Uncounted.UPSTREAM_ERROR)
            await self._respond(send, 504, _error_body(504, "upstream timed out"))
            return
        except httpx.HTTPError as exc:
            self._state(True, type(exc).__name__)
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
        self, response: httpx.Response, req: _Request | None, receive: Receive, send: Send
    ) -> None:
        ok = 200 <= response.status_code < 300
        encoded = response.headers.get("content-encoding", "identity").lower() != "identity"
        sse = response.headers.get("content-type", "").startswith("text/event-stream")
        relay = (
            SseRelay(strip_usage=req.strip_usage) if req and ok and sse and not encoded else None
        )
        keep_length = relay is None or not relay.strips
        out_headers = [
            (n, v)
            for n, v in response.headers.raw
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
            except httpx.HTTPError as exc:
                # the upstream cut or stalled mid-body: the client's connection is cut too
                # (returning without the final body message makes the server close it)
                self._state(True, f"response cut: {type(exc).__name__}")
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
