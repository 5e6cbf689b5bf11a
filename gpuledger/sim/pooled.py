"""The simulated month's embedding and reranker services: their probes and token rows.

The live agent probes what an endpoint serves (``collectors/vllm/probe/served.py``): an
embedding model gets ``POST /v1/embeddings``, a reranker ``POST /rerank``, each timed end to
end, with the prompt tokens the server reports and a verdict on the engine's prompt-token
counter only (no stream, no first token). This module writes what that agent would have
recorded for them, so the demo's report shows them validated like the LLMs instead of
"unvalidated" for want of a probe. Their engines count prompt tokens only (vLLM counts a
pooling request's prompt in ``vllm:prompt_tokens_total``; ``docs/probes.md``).

The other services (OCR, ASR, a toxicity classifier, a notebook, a DeBERTa classifier)
serve nothing a probe checks: no probe, no row, "not applicable" in the report.

Draws come from their own random stream, so the LLM services' figures stay what they were.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from gpuledger.chargeback.ledger.tables import ProbeRecord, TokenRow

PROBE_EVERY_S = 600
HOUR_S = 3600
EMBED_PROBE_TOKENS = 7  # "Count from one to twenty in words:"
RERANK_PROBE_TOKENS = EMBED_PROBE_TOKENS + 5  # the query and the one document


@dataclass(frozen=True, slots=True)
class PooledModel:
    model_name: str
    kind: Literal["embeddings", "rerank"]
    prompt_tokens_per_busy_gpu_s: float
    e2e_median_s: float

    @property
    def probe_tokens(self) -> int:
        return EMBED_PROBE_TOKENS if self.kind == "embeddings" else RERANK_PROBE_TOKENS


POOLED: dict[str, PooledModel] = {
    "embed-bge-m3": PooledModel("BAAI/bge-m3", "embeddings", 40000.0, 0.018),
    "rerank-bge-v2": PooledModel("BAAI/bge-reranker-v2-m3", "rerank", 25000.0, 0.030),
    "embed-e5-large": PooledModel("intfloat/e5-large-v2", "embeddings", 45000.0, 0.015),
}


def pooled_hour(
    rng: random.Random, node: str, hour: int, busy: dict[tuple[str, str], float]
) -> tuple[list[ProbeRecord], list[TokenRow]]:
    """One hour of one node: a probe every ten minutes per pooled service that ran there
    (one in 500 times out), and its token row (traffic + the probes' own prompt tokens,
    kept apart as probe tokens, as the agent's ledger does)."""
    records: list[ProbeRecord] = []
    rows: list[TokenRow] = []
    services: Sequence[tuple[str, str]] = sorted(busy)
    for ns, svc in services:
        pooled = POOLED.get(svc)
        if pooled is None:
            continue
        endpoint = f"http://{svc}.{ns}.svc:8000"
        ok_count = 0
        for start in range(hour, hour + HOUR_S, PROBE_EVERY_S):
            at = start + rng.uniform(0, 30)
            if rng.random() < 0.002:
                records.append(
                    ProbeRecord(at, node, endpoint, ns, svc, pooled.model_name, False, "timeout")
                )
                continue
            ok_count += 1
            e2e = pooled.e2e_median_s * math.exp(rng.gauss(0.0, 0.2))
            records.append(
                ProbeRecord(
                    at, node, endpoint, ns, svc, pooled.model_name, True, None,
                    None, None, e2e, None, pooled.probe_tokens, 0, True, None, None,
                )
            )  # fmt: skip
        probe_prompt = float(ok_count * pooled.probe_tokens)
        traffic = round(busy[(ns, svc)] * pooled.prompt_tokens_per_busy_gpu_s)
        rows.append(
            TokenRow(hour, node, ns, svc, pooled.model_name, traffic + probe_prompt, 0.0,
                     probe_prompt, 0.0)
        )  # fmt: skip
    return records, rows
