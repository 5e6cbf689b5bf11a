"""The agent's HTTP surface: ``/metrics``, ``/healthz``, ``/readyz``, ``/api/v1``.

Handlers only read the latest snapshot; nothing here collects. ``/metrics`` is answered
by a few lines of plain ASGI in front of FastAPI: it returns the bytes rendered when the
snapshot last changed (gzip-compressed when the scraper asks), with no routing,
middleware or request objects, because under 20 concurrent scrapers the per-request
overhead -- not the work -- decides the p99 (see bench/bench_agent.py). When an API
token is configured, ``/api/*`` (and optionally ``/metrics``) require
``Authorization: Bearer <token>``, compared in constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from gpuledger import __version__
from gpuledger.agent.runtime import AgentRuntime

# Classic text format: every gpuledger name is a legacy-valid Prometheus name, and
# Prometheus 2.x servers (Debian ships 2.42) expect 0.0.4 from a text/plain scrape.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_UNAUTHORIZED = b'{"error":"bearer token required"}'


def _header(scope: Scope, name: bytes) -> bytes:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return b""


def _authorized(scope: Scope, token: bytes) -> bool:
    scheme, _, presented = _header(scope, b"authorization").partition(b" ")
    if scheme.lower() != b"bearer" or not presented:
        return False
    return hmac.compare_digest(presented.strip(), token)


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app(
    runtime: AgentRuntime, *, api_token: str | None = None, metrics_require_token: bool = False
) -> ASGIApp:
    api = _create_api(runtime)
    store = runtime.store
    token = api_token.encode() if api_token else None
    plain_headers = [(b"content-type", CONTENT_TYPE.encode())]
    gzip_headers = [*plain_headers, (b"content-encoding", b"gzip"), (b"vary", b"accept-encoding")]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await api(scope, receive, send)
            return
        path = scope["path"]
        is_metrics = path == "/metrics"
        protected = path.startswith("/api/") or (metrics_require_token and is_metrics)
        if token is not None and protected and not _authorized(scope, token):
            await _respond(
                send,
                401,
                _UNAUTHORIZED,
                [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")],
            )
            return
        if is_metrics and scope["method"] in ("GET", "HEAD"):
            rendered = store.rendered
            if b"gzip" in _header(scope, b"accept-encoding"):
                await _respond(send, 200, rendered.gzipped, gzip_headers)
            else:
                await _respond(send, 200, rendered.body, plain_headers)
            return
        await api(scope, receive, send)

    return app


def _create_api(runtime: AgentRuntime) -> FastAPI:
    app = FastAPI(
        title="gpuledger agent",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/v1/openapi.json",
    )
    store = runtime.store

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ready, pending = runtime.ready()
        body: dict[str, Any] = {"ready": ready}
        if pending:
            body["waiting_for"] = pending
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/api/v1/collectors")
    async def collectors() -> dict[str, Any]:
        snap = store.snapshot
        return {
            "snapshot_version": snap.version,
            "collectors": {
                name: {
                    "enabled": s.enabled,
                    "up": s.up,
                    "runs": s.runs,
                    "failures": s.failures,
                    "duration_seconds": s.duration_s,
                    "last_success_unix": s.last_success_unix,
                    "last_error": s.last_error,
                }
                for name, s in sorted(snap.collectors.items())
            },
        }

    return app
