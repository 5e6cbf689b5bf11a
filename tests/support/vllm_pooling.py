"""What the vLLM stand-in serves beyond completions: embeddings, score and rerank, in
vLLM's shapes (``docs/probes.md``, "Probes beyond completions", cites the upstream files).

Which routes exist follows the model's tasks, as vLLM registers its routers
(``vllm/entrypoints/pooling/__init__.py``, ``register_pooling_api_routers``):

- ``"generate"``: ``/v1/completions``, ``/v1/chat/completions`` (the stand-in's streams);
- ``"embed"``: ``POST /v1/embeddings``, and the score/rerank routes (bi-encoder scoring);
- ``"score"`` (a cross-encoder): ``POST /score``, ``/v1/score``, ``/rerank``,
  ``/v1/rerank``, ``/v2/rerank``.

A route the model's tasks do not register answers FastAPI's ``404 {"detail": "Not
Found"}``. The engine counts a pooling request as vLLM V1 does: its whole prompt in
``vllm:prompt_tokens_total`` and one TTFT observation when its single output is produced
(``vllm/v1/metrics/stats.py``, ``IterationStats.update_from_output``), no generation
tokens.
"""

from __future__ import annotations

import time
from typing import Any

EMBED_PATHS = ("/v1/embeddings",)
SCORE_PATHS = ("/score", "/v1/score")
RERANK_PATHS = ("/rerank", "/v1/rerank", "/v2/rerank")
POOLING_PATHS = EMBED_PATHS + SCORE_PATHS + RERANK_PATHS
GENERATE_PATHS = ("/v1/completions", "/v1/chat/completions")
EMBEDDING_DIM = 8


def serves(tasks: tuple[str, ...], path: str) -> bool:
    """Whether a model with ``tasks`` has ``path`` registered."""
    if path in GENERATE_PATHS:
        return "generate" in tasks
    if path in EMBED_PATHS:
        return "embed" in tasks
    if path in SCORE_PATHS + RERANK_PATHS:
        return "embed" in tasks or "score" in tasks
    return False


def tokens(text: object) -> int:
    """The stand-in's tokenizer: one token per word, at least one (as for completions)."""
    return max(1, len(str(text).split()))


def _texts(value: object) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)]


def pooling_reply(path: str, body: dict[str, Any], model: str) -> tuple[dict[str, Any], int]:
    """The response body for one pooling request and the prompt tokens it cost the engine.
    ``body`` was checked to name ``model``; a malformed one raises ValueError (HTTP 400)."""
    now = int(time.time())
    if path in EMBED_PATHS:
        inputs = _texts(body["input"])
        n = sum(tokens(t) for t in inputs)
        data = [
            {"index": i, "object": "embedding",
             "embedding": [round(0.1 * (i + 1) * (k + 1), 3) for k in range(EMBEDDING_DIM)]}
            for i in range(len(inputs))
        ]  # fmt: skip
        return {
            "id": f"embd-{time.time_ns():x}", "object": "list", "created": now, "model": model,
            "data": data,
            "usage": {"prompt_tokens": n, "total_tokens": n, "completion_tokens": 0,
                      "prompt_tokens_details": None},
        }, n  # fmt: skip
    if path in SCORE_PATHS:
        left, right = _texts(body["text_1"]), _texts(body["text_2"])
        pairs = [(left[0] if len(left) == 1 else left[i], r) for i, r in enumerate(right)]
        n = sum(tokens(a) + tokens(b) for a, b in pairs)
        data = [{"index": i, "object": "score", "score": 0.5} for i in range(len(pairs))]
        return {
            "id": f"score-{time.time_ns():x}", "object": "list", "created": now,
            "model": model, "data": data,
            "usage": {"prompt_tokens": n, "total_tokens": n, "completion_tokens": 0,
                      "prompt_tokens_details": None},
        }, n  # fmt: skip
    query, documents = str(body["query"]), _texts(body["documents"])
    n = sum(tokens(query) + tokens(d) for d in documents)
    results = [
        {"index": i, "document": {"text": d, "multi_modal": None}, "relevance_score": 0.5}
        for i, d in enumerate(documents)
    ]
    return {
        "id": f"rerank-{time.time_ns():x}", "model": model,
        "usage": {"total_tokens": n}, "results": results,
    }, n  # fmt: skip
