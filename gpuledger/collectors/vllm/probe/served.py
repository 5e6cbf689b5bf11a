"""Probe what an endpoint serves: completions, else embeddings, else rerank.

vLLM does not say in ``/v1/models`` what a model does (a ``ModelCard`` has no task), but
it registers only the routes the model's tasks support (``register_pooling_api_routers``
and the generate routers in ``vllm/entrypoints/openai/api_server.py``): a route it did
not register answers ``404 {"detail": "Not Found"}``, and releases that still register
every route answer ``400`` "The model does not support ... API" (or 501 from a
``NotImplementedError``). So ``api="auto"`` asks in order and keeps the first kind the
endpoint serves; an endpoint that serves none of them is *not applicable*: a result with
``reason="not_applicable"``, which the runner neither counts as a failure nor records in
the ledger, so its service reads "not applicable" in the report rather than
"unvalidated" (``docs/probes.md``).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Literal, get_args

import httpx

from gpuledger.collectors.vllm.probe.client import (
    DEFAULT_TIMEOUT_S,
    MAX_STREAM_BYTES,
    Api,
    probe_once,
)
from gpuledger.collectors.vllm.probe.pooling import pooling_once
from gpuledger.collectors.vllm.types import ProbeResult, VllmEndpoint

Kind = Literal["completions", "chat", "embeddings", "rerank"]
"""What one probe sends (docs/probes.md): a streamed completion or chat completion, an
embeddings request or a rerank request."""
ProbeApi = Literal["auto", "completions", "chat", "embeddings", "rerank"]
KINDS: tuple[Kind, ...] = get_args(Kind)
AUTO_ORDER: tuple[Kind, ...] = ("completions", "embeddings", "rerank")
NOT_APPLICABLE = "not_applicable"
_STATUS = re.compile(r"^HTTP (\d{3}) ")
_NOT_SUPPORTED = re.compile(r"does not support|not found", re.IGNORECASE)


def not_served(result: ProbeResult) -> bool:
    """Did the endpoint answer that it does not serve this route (as opposed to failing
    at it)? 404/405/501, or a 400 whose message says the model does not support it. A
    404 for an unknown *model* ("The model `x` does not exist.") is a failure, not this."""
    if result.ok or result.reason != "http_status":
        return False
    m = _STATUS.match(result.detail)
    if m is None:
        return False
    status = int(m.group(1))
    message = result.detail.partition(": ")[2]
    if status == 404:
        return "does not exist" not in message
    if status in (405, 501):
        return True
    return status == 400 and bool(_NOT_SUPPORTED.search(message))


def probe_kind(
    client: httpx.Client,
    endpoint: VllmEndpoint,
    kind: Kind,
    *,
    model: str | None,
    prompt: str,
    max_tokens: int,
    timeout_s: float,
    clock: Callable[[], float] = time.perf_counter,
    wall: Callable[[], float] = time.time,
    cancel: threading.Event | None = None,
    max_bytes: int = MAX_STREAM_BYTES,
) -> ProbeResult:
    """One probe of ``kind``."""
    if kind in ("embeddings", "rerank"):
        return pooling_once(
            client, endpoint, api=kind, model=model, prompt=prompt, timeout_s=timeout_s,
            clock=clock, wall=wall, cancel=cancel, max_bytes=max_bytes,
        )  # fmt: skip
    api: Api = "chat" if kind == "chat" else "completions"
    return probe_once(
        client, endpoint, model=model, prompt=prompt, max_tokens=max_tokens,
        timeout_s=timeout_s, api=api, clock=clock, wall=wall, cancel=cancel,
        max_bytes=max_bytes,
    )  # fmt: skip


def probe_served(
    client: httpx.Client,
    endpoint: VllmEndpoint,
    *,
    api: ProbeApi = "auto",
    known: Kind | None = None,
    model: str | None,
    prompt: str,
    max_tokens: int,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    wall: Callable[[], float] = time.time,
    cancel: threading.Event | None = None,
) -> tuple[ProbeResult, Kind | None]:
    """One probe of what ``endpoint`` serves, and the kind that answered (None: the
    endpoint serves no kind a probe can check; the result's reason is
    ``not_applicable``). A fixed ``api`` is sent as asked. With ``auto``, ``known`` (the
    kind found before) goes first; the others follow in :data:`AUTO_ORDER` only when the
    endpoint answers that it does not serve a route, each with the time left."""
    if api != "auto":
        return probe_kind(
            client, endpoint, api, model=model, prompt=prompt, max_tokens=max_tokens,
            timeout_s=timeout_s, wall=wall, cancel=cancel,
        ), api  # fmt: skip
    order: Sequence[Kind] = (
        (known, *(k for k in AUTO_ORDER if k != known)) if known is not None else AUTO_ORDER
    )
    started = wall()
    end = time.monotonic() + timeout_s
    asked: list[str] = []
    for kind in order:
        left = end - time.monotonic()
        if left <= 0:
            return ProbeResult(
                endpoint=endpoint,
                model_name=model or "",
                started_unix=started,
                ok=False,
                reason="timeout",
                detail=f"no time left to try {kind} within {timeout_s:g}s",
            ), None
        result = probe_kind(
            client, endpoint, kind, model=model, prompt=prompt, max_tokens=max_tokens,
            timeout_s=left, wall=wall, cancel=cancel,
        )  # fmt: skip
        if not not_served(result):
            return result, kind
        asked.append(f"{kind}: {result.detail.partition(' from ')[0]}")
        model = result.model_name or model  # looked up once, reused
    return ProbeResult(
        endpoint=endpoint,
        model_name=model or "",
        started_unix=started,
        ok=False,
        reason=NOT_APPLICABLE,
        detail="serves nothing a probe checks (" + "; ".join(asked) + ")",
    ), None
