"""The agent's HTTP surface (FastAPI): ``/metrics``, ``/healthz``, ``/readyz``, ``/api/v1``.

Handlers only read the latest snapshot; nothing here collects. ``/metrics`` returns the
bytes rendered when the snapshot last changed, gzip-compressed when the scraper asks.
When an API token is configured, ``/api/*`` (and optionally ``/metrics``) require
``Authorization: Bearer <token>``, compared in constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from gpuledger import __version__
from gpuledger.agent.runtime import AgentRuntime

# Classic text format: every gpuledger name is a legacy-valid Prometheus name, and
# Prometheus 2.x servers (Debian ships 2.42) expect 0.0.4 from a text/plain scrape.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _authorized(request: Request, token: str) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented:
        return False
    return hmac.compare_digest(presented.strip().encode(), token.encode())


def create_app(
    runtime: AgentRuntime, *, api_token: str | None = None, metrics_require_token: bool = False
) -> FastAPI:
    app = FastAPI(
        title="gpuledger agent",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/v1/openapi.json",
    )
    store = runtime.store

    @app.middleware("http")
    async def require_token(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        path = request.url.path
        protected = path.startswith("/api/") or (metrics_require_token and path == "/metrics")
        if api_token and protected and not _authorized(request, api_token):
            return JSONResponse(
                {"error": "bearer token required"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return await call_next(request)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        rendered = store.rendered
        if "gzip" in request.headers.get("accept-encoding", ""):
            return Response(
                rendered.gzipped,
                media_type=CONTENT_TYPE,
                headers={"Content-Encoding": "gzip", "Vary": "Accept-Encoding"},
            )
        return Response(rendered.body, media_type=CONTENT_TYPE)

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
