"""One span per synthetic probe: a root CLIENT span named :data:`SPAN_NAME` that starts
when the probe was sent and ends when its stream did, carrying the probe's labels, its
outcome and its measurements, so a slow or failed probe can be found in a tracing
backend beside the requests it competed with.
"""

from __future__ import annotations

import time

from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from gpuledger.collectors.http import redact_url
from gpuledger.collectors.vllm.types import ProbeResult

SPAN_NAME = "gpuledger.probe"


def _endpoint_label(name: str) -> str:
    """The endpoint as the probe metrics label it; redacted should it carry credentials
    or a query (config refuses both, discovery never builds them)."""
    safe = redact_url(name)
    return name if safe.rstrip("/") == name.rstrip("/") else safe


def probe_span_attributes(result: ProbeResult, node: str) -> dict[str, str | bool | int | float]:
    """What a probe span carries: the schema's probe labels (the endpoint as its name,
    which holds no credentials), the outcome and the probe's measurements."""
    ep = result.endpoint
    attrs: dict[str, str | bool | int | float] = {
        "node": node,
        "endpoint": _endpoint_label(ep.name),
        "service": ep.service,
        "namespace": ep.namespace,
        "pod": ep.pod,
        "model_name": result.model_name,
        "ok": result.ok,
        "reason": result.reason or "",
        "detail": "" if result.ok else result.detail,
    }
    measured = (
        ("ttft_s", result.ttft_s),
        ("tpot_s", result.tpot_s),
        ("e2e_s", result.e2e_s),
        ("output_tokens_per_s", result.output_tokens_per_s),
        ("prompt_tokens", result.prompt_tokens),
        ("completion_tokens", result.completion_tokens),
    )
    attrs.update({k: v for k, v in measured if v is not None})
    return {k: v for k, v in attrs.items() if v != ""}


def record_probe(tracer: Tracer, result: ProbeResult, node: str) -> None:
    """Start and end ``result``'s span (timed from the probe, not from now)."""
    start_ns = int(result.started_unix * 1e9)
    end_unix = result.started_unix + result.e2e_s if result.e2e_s is not None else time.time()
    span = tracer.start_span(
        SPAN_NAME,
        context=Context(),  # always a root span
        kind=SpanKind.CLIENT,
        start_time=start_ns,
        attributes=probe_span_attributes(result, node),
    )
    if result.ok:
        span.set_status(Status(StatusCode.OK))
    else:
        span.set_status(Status(StatusCode.ERROR, result.reason or "failed"))
    span.end(end_time=max(start_ns, int(end_unix * 1e9)))
