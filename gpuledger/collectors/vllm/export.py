"""The vLLM families: per endpoint its ``up``, per (endpoint, model, engine) the engine's
gauges, counters and histograms (buckets exactly as upstream exposed them)."""

from __future__ import annotations

from gpuledger import schema
from gpuledger.collectors.source import Readings
from gpuledger.collectors.textformat.render import FamiliesBuilder
from gpuledger.collectors.vllm.types import VllmTelemetry

VLLM = "vllm"

_GAUGES = (
    (schema.VLLM_REQUESTS_RUNNING, "requests_running"),
    (schema.VLLM_REQUESTS_WAITING, "requests_waiting"),
    (schema.VLLM_KV_CACHE_USAGE, "kv_cache_usage_ratio"),
    (schema.VLLM_PROMPT_TOKENS, "prompt_tokens"),
    (schema.VLLM_GENERATION_TOKENS, "generation_tokens"),
    (schema.VLLM_PREEMPTIONS, "preemptions"),
    (schema.VLLM_PREFIX_CACHE_QUERIES, "prefix_cache_queries"),
    (schema.VLLM_PREFIX_CACHE_HITS, "prefix_cache_hits"),
    (schema.VLLM_EXTERNAL_PREFIX_CACHE_QUERIES, "external_prefix_cache_queries"),
    (schema.VLLM_EXTERNAL_PREFIX_CACHE_HITS, "external_prefix_cache_hits"),
    (schema.VLLM_PROMPT_TOKENS_CACHED, "prompt_tokens_cached"),
)
_HISTOGRAMS = (
    (schema.VLLM_TTFT, "ttft"),
    (schema.VLLM_ITL, "inter_token_latency"),
    (schema.VLLM_E2E, "e2e_latency"),
    (schema.VLLM_QUEUE_TIME, "queue_time"),
    (schema.VLLM_PREFILL_TIME, "prefill_time"),
    (schema.VLLM_DECODE_TIME, "decode_time"),
)


def export_vllm(f: FamiliesBuilder, snap: Readings, _live: object = None) -> None:
    telemetry = snap.reading(VLLM, VllmTelemetry)
    if telemetry is None:
        return
    for scrape in telemetry.endpoints:
        ep = scrape.endpoint
        f.add(
            schema.VLLM_ENDPOINT_UP,
            (ep.service, ep.namespace, ep.pod, ep.name),
            1.0 if scrape.up else 0.0,
        )
        for s in scrape.series:
            labels = (ep.service, ep.namespace, ep.pod, s.model_name, s.engine)
            for spec, attr in _GAUGES:
                value = getattr(s, attr)
                if value is not None:
                    f.add(spec, labels, float(value))
            for reason, count in sorted(s.request_success.items()):
                f.add(schema.VLLM_REQUEST_SUCCESS, (*labels, reason), count)
            for spec, attr in _HISTOGRAMS:
                hist = getattr(s, attr)
                if hist is not None:
                    f.add_histogram(spec, labels, hist)
