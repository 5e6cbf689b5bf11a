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
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse

from gpuledger import __version__
from gpuledger.agent.runtime import AgentRuntime
from gpuledger.chargeback.costcenters.config import CostCentersConfig
from gpuledger.chargeback.costcenters.usage import COST_CENTER, usage_by_cost_center
from gpuledger.chargeback.ledger.model import LedgerStore, StoreError

# Classic text format: every gpuledger name is a legacy-valid Prometheus name, and
# Prometheus 2.x servers (Debian ships 2.42) expect 0.0.4 from a text/plain scrape.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_UNAUTHORIZED = b'{"error":"bearer token required"}'
_TOO_LARGE = b'{"error":"request body too large"}'
_HEADERS_TOO_LARGE = b'{"error":"request headers too large"}'
MAX_HEADER_BYTES = 16 * 1024
"""Scrapers and API clients send a few hundred bytes of headers; more is refused (431)."""


class RequestTooLarge(Exception):
    """A streamed request body passed ``http.max_request_bytes``."""


def _bounded(receive: Receive, limit: int) -> Receive:
    """``receive`` that stops a chunked body once it passes ``limit`` bytes (a declared
    Content-Length over the limit is refused before anything is read)."""
    seen = 0

    async def bounded() -> Message:
        nonlocal seen
        message = await receive()
        if message.get("type") == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise RequestTooLarge(f"request body over {limit} bytes")
        return message

    return bounded


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
    runtime: AgentRuntime,
    *,
    api_token: str | None = None,
    metrics_require_token: bool = False,
    ledger_store: LedgerStore | None = None,
    reports_dir: Path | None = None,
    max_request_bytes: int = 64 * 1024,
    attribution: Callable[[], list[dict[str, object]]] | None = None,
    cost_centers: CostCentersConfig | None = None,
) -> ASGIApp:
    api = _create_api(runtime, ledger_store, reports_dir, attribution, cost_centers)
    store = runtime.store
    token = api_token.encode() if api_token else None
    plain_headers = [(b"content-type", CONTENT_TYPE.encode())]
    gzip_headers = [*plain_headers, (b"content-encoding", b"gzip"), (b"vary", b"accept-encoding")]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await api(scope, receive, send)
            return
        if sum(len(k) + len(v) for k, v in scope["headers"]) > MAX_HEADER_BYTES:
            await _respond(send, 431, _HEADERS_TOO_LARGE, [(b"content-type", b"application/json")])
            return
        declared = _header(scope, b"content-length")
        if (declared and (not declared.isdigit() or int(declared) > max_request_bytes)) or (
            _header(scope, b"transfer-encoding") and max_request_bytes == 0
        ):
            await _respond(send, 413, _TOO_LARGE, [(b"content-type", b"application/json")])
            return
        receive = _bounded(receive, max_request_bytes)
        path = scope["path"]
        is_metrics = path == "/metrics"
        protected = (
            path.startswith(("/api/", "/reports"))  # the reports are finance's figures
            or (metrics_require_token and is_metrics)
        )
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


def _parse_time(value: str, name: str) -> datetime:
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise HTTPException(400, f"{name}: not an ISO-8601 time: {value!r}") from None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _create_api(
    runtime: AgentRuntime,
    ledger_store: LedgerStore | None,
    reports_dir: Path | None,
    attribution: Callable[[], list[dict[str, object]]] | None = None,
    cost_centers: CostCentersConfig | None = None,
) -> FastAPI:
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

    @app.get("/api/v1/usage")
    def usage(
        from_: Annotated[str, Query(alias="from")],
        to: str,
        group_by: str = "service,namespace,gpu_model",
        node: str | None = None,
    ) -> dict[str, Any]:
        """GPU-seconds from the durable ledger over ``[from, to)`` (hours), grouped.

        A sync handler on purpose: FastAPI runs it in its thread pool, so a slow store
        query never blocks /metrics on the event loop."""
        if ledger_store is None:
            raise HTTPException(404, "the ledger is disabled on this agent")
        start, end = _parse_time(from_, "from"), _parse_time(to, "to")
        if end <= start:
            raise HTTPException(400, "to must be after from")
        keys = [k.strip() for k in group_by.split(",") if k.strip()]
        try:
            if COST_CENTER in keys:  # who pays: the report's map over the recorded labels
                config = cost_centers or CostCentersConfig()
                out = usage_by_cost_center(ledger_store, start, end, keys, config, node=node)
            else:
                out = [row.as_json(keys) for row in ledger_store.usage(start, end, keys, node=node)]
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        except StoreError as exc:
            raise HTTPException(503, f"ledger store unavailable: {exc}") from None
        return {"from": start.isoformat(), "to": end.isoformat(), "group_by": keys, "rows": out}

    @app.get("/api/v1/tenants")
    def tenants(
        from_: Annotated[str, Query(alias="from")],
        to: str,
        group_by: str = "service,namespace,tenant",
        node: str | None = None,
    ) -> dict[str, Any]:
        """Per-tenant requests and tokens (gateway counters) from the durable ledger over
        ``[from, to)``, grouped in SQL; a sync handler, as ``/api/v1/usage``."""
        if ledger_store is None:
            raise HTTPException(404, "the ledger is disabled on this agent")
        start, end = _parse_time(from_, "from"), _parse_time(to, "to")
        if end <= start:
            raise HTTPException(400, "to must be after from")
        keys = list(dict.fromkeys(k.strip() for k in group_by.split(",") if k.strip()))
        try:
            rows = ledger_store.tenant_tokens(start, end, keys, node=node)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        except StoreError as exc:
            raise HTTPException(503, f"ledger store unavailable: {exc}") from None
        return {
            "from": start.isoformat(),
            "to": end.isoformat(),
            "group_by": keys,
            "rows": [row.as_json(keys) for row in rows],
        }

    if reports_dir is not None:
        _mount_reports(app, reports_dir)

    @app.get("/api/v1/attribution")
    async def attribution_now() -> dict[str, Any]:
        """Who holds each device now (at its last attribution by the ledger), and which
        source decided it: ``static``, ``process``, ``podresources``, ``dcgm``,
        ``unattributed`` or ``idle`` (docs/attribution.md)."""
        if attribution is None:
            raise HTTPException(404, "this agent attributes no devices")
        return {"devices": attribution()}

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


_MEDIA_TYPES = {
    ".csv": "text/csv; charset=utf-8",
    ".json": "application/json",
    ".html": "text/html; charset=utf-8",
}
_REPORT_FORMATS = {
    "json": "{m}.json",
    "csv": "{m}.csv",
    "focus": "{m}-focus.csv",
    "html": "{m}.html",
    "coverage": "{m}-coverage.csv",
    "tenants": "{m}-tenants.csv",
    "findings": "{m}-findings.csv",
    "cost-centers": "{m}-cost-centers.csv",
    "anomalies": "{m}-anomalies.csv",
}


def _mount_reports(app: FastAPI, reports_dir: Path) -> None:
    """``/reports/`` (an index page and the files) and ``/api/v1/reports[/{month}]``:
    they serve what the reporter wrote and never build a report in the request."""
    from gpuledger.chargeback.report.monthly import list_reports, report_file

    def served(month: str, name: str) -> FileResponse:
        path = report_file(reports_dir, month, name)
        if path is None:
            raise HTTPException(404, f"no report file {name!r} for {month!r}")
        return FileResponse(path, media_type=_MEDIA_TYPES.get(path.suffix, "text/plain"))

    @app.get("/reports", include_in_schema=False)
    async def reports_root() -> RedirectResponse:
        return RedirectResponse("/reports/")

    @app.get("/reports/", response_class=HTMLResponse)
    def reports_index() -> HTMLResponse:
        rows = "".join(
            f"<li><b>{escape(r.month)}</b>: "
            + ", ".join(
                f'<a href="/reports/{escape(r.month)}/{escape(f)}">{escape(f)}</a>' for f in r.files
            )
            + "</li>"
            for r in list_reports(reports_dir)
        )
        body = f"<ul>{rows}</ul>" if rows else "<p>No report written yet.</p>"
        return HTMLResponse(
            "<!doctype html><html><head><meta charset='utf-8'><title>gpuledger reports</title>"
            f"</head><body><h1>Monthly chargeback reports</h1>{body}</body></html>"
        )

    @app.get("/reports/{month}/{name}")
    def report_download(month: str, name: str) -> FileResponse:
        return served(month, name)

    @app.get("/api/v1/reports")
    def reports_list() -> dict[str, Any]:
        return {
            "reports": [
                {
                    "month": r.month,
                    "files": {f: f"/reports/{r.month}/{f}" for f in r.files},
                    "api": f"/api/v1/reports/{r.month}",
                }
                for r in list_reports(reports_dir)
            ]
        }

    @app.get("/api/v1/reports/{month}")
    def report_month(month: str, format: str = "json") -> FileResponse:
        """The month's report as written: JSON by default, or ``format=csv|focus|html|
        coverage|tenants|findings``."""
        pattern = _REPORT_FORMATS.get(format)
        if pattern is None:
            raise HTTPException(400, f"format must be one of {', '.join(_REPORT_FORMATS)}")
        return served(month, "chargeback-" + pattern.format(m=month))
