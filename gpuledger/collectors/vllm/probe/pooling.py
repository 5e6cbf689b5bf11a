"""Probes of what vLLM serves beyond completions: one embeddings or rerank request, timed.

An embedding or reranker model serves no completions, so a completion probe could only
fail against it, and its service stayed "unvalidated" for want of a check. vLLM serves
these models on their own routes (``docs/probes.md``, "Probes beyond completions", cites
the upstream files):

- ``POST /v1/embeddings`` (OpenAI's API): ``{"model", "input", "encoding_format"}`` →
  ``{"object": "list", "data": [{"index", "object": "embedding", "embedding"}], "model",
  "usage": {"prompt_tokens", "total_tokens", ...}}``;
- ``POST /rerank`` (Jina/Cohere-compatible; ``/v1/rerank`` and ``/v2/rerank`` are the same
  handler, and ``/score`` shares its serving class and its availability):
  ``{"model", "query", "documents"}`` → ``{"id", "model", "usage": {"total_tokens"},
  "results": [{"index", "document", "relevance_score"}]}``.

There is no stream and no first token: the probe times the whole exchange (``e2e_s``) and
reads the prompt tokens the server says it processed (``usage.prompt_tokens``, or the
rerank usage's ``total_tokens``, which are all prompt tokens). ``completion_tokens`` is
0, which is what tells validation to check only the prompt-token counter.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

import httpx

from gpuledger.collectors.http import redact_url
from gpuledger.collectors.vllm.probe.client import (
    MAX_STREAM_BYTES,
    _Deadline,
    _Failure,
    discover_model,
    failed_result,
    post_and_read,
)
from gpuledger.collectors.vllm.types import ProbeResult, VllmEndpoint

PoolingApi = Literal["embeddings", "rerank"]
POOLING_PATHS: dict[PoolingApi, str] = {"embeddings": "/v1/embeddings", "rerank": "/rerank"}
RERANK_DOCUMENT = "One, two, three, four, five."


def pooling_body(api: PoolingApi, model: str, prompt: str) -> dict[str, Any]:
    if api == "embeddings":
        return {"model": model, "input": prompt, "encoding_format": "float"}
    return {"model": model, "query": prompt, "documents": [RERANK_DOCUMENT]}


def _read(response: httpx.Response, max_bytes: int) -> bytes:
    body = b""
    for chunk in response.iter_raw():
        body += chunk
        if len(body) > max_bytes:
            raise _Failure("bad_stream", f"response exceeds {max_bytes} bytes")
    return body


def _prompt_tokens(api: PoolingApi, doc: dict[str, Any], where: str) -> int:
    """The prompt tokens the server reports, after checking the answer has its shape."""
    rows = doc.get("data") if api == "embeddings" else doc.get("results")
    if not isinstance(rows, list) or not rows:
        what = "data" if api == "embeddings" else "results"
        raise _Failure("bad_stream", f"{where} answered without {what}")
    key = "embedding" if api == "embeddings" else "relevance_score"
    for row in rows:
        if not isinstance(row, dict) or row.get(key) is None:
            raise _Failure("bad_stream", f"{where} answered a malformed {api} row")
    usage = doc.get("usage")
    if not isinstance(usage, dict):
        raise _Failure("bad_stream", f"no usage in the answer from {where}")
    tokens = usage.get("prompt_tokens", usage.get("total_tokens"))
    if not isinstance(tokens, int) or isinstance(tokens, bool):
        raise _Failure("bad_stream", f"usage from {where} lacks token counts")
    return tokens


def pooling_probe(
    client: httpx.Client,
    endpoint: VllmEndpoint,
    *,
    api: PoolingApi,
    model: str,
    prompt: str,
    deadline: _Deadline,
    timeout_s: float,
    clock: Callable[[], float],
    started_unix: float,
    max_bytes: int,
) -> ProbeResult:
    """One embeddings or rerank request (the model already known), timed end to end.
    Raises :class:`_Failure` with the same five reasons as a completion probe."""
    url = endpoint.url.rstrip("/") + POOLING_PATHS[api]
    where = redact_url(url)
    sent = clock()
    raw = post_and_read(
        client, endpoint, url, body=pooling_body(api, model, prompt), accept="application/json",
        deadline=deadline, timeout_s=timeout_s, read=lambda r: _read(r, max_bytes),
    )  # fmt: skip
    e2e = clock() - sent
    try:
        doc = json.loads(raw)
    except ValueError:
        raise _Failure("bad_stream", f"unparsable answer from {where}: {raw[:80]!r}") from None
    if not isinstance(doc, dict):
        raise _Failure("bad_stream", f"the answer from {where} is not a JSON object")
    got_model = doc.get("model")
    if isinstance(got_model, str) and got_model != model:
        raise _Failure("model_mismatch", f"asked for model {model!r}, answer is from {got_model!r}")
    tokens = _prompt_tokens(api, doc, where)
    return ProbeResult(
        endpoint=endpoint,
        model_name=model,
        started_unix=started_unix,
        ok=True,
        e2e_s=e2e,
        prompt_tokens=tokens,
        completion_tokens=0,
    )


def pooling_once(
    client: httpx.Client,
    endpoint: VllmEndpoint,
    *,
    api: PoolingApi,
    model: str | None,
    prompt: str,
    timeout_s: float,
    clock: Callable[[], float] = time.perf_counter,
    wall: Callable[[], float] = time.time,
    cancel: threading.Event | None = None,
    max_bytes: int = MAX_STREAM_BYTES,
) -> ProbeResult:
    """:func:`~gpuledger.collectors.vllm.probe.client.probe_once` for an embeddings or
    rerank endpoint: never raises for a server's misbehaviour; ``model=None`` asks
    ``/v1/models`` first; one deadline for the whole probe."""
    started_unix = wall()
    deadline = _Deadline(at=clock() + timeout_s, clock=clock, cancel=cancel)
    asked = model or ""
    try:
        if model is None:
            asked = discover_model(client, endpoint, timeout_s=timeout_s)
        if deadline.remaining() <= 0:
            raise _Failure("timeout", f"no time left after listing models ({timeout_s:g}s)")
        return pooling_probe(
            client, endpoint, api=api, model=asked, prompt=prompt, deadline=deadline,
            timeout_s=timeout_s, clock=clock, started_unix=started_unix, max_bytes=max_bytes,
        )  # fmt: skip
    except _Failure as f:
        return failed_result(endpoint, asked, started_unix, f)
