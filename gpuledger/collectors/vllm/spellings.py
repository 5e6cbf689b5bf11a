"""Which upstream vLLM sample names fill which :class:`VllmSeries` field, in one table.

vLLM renamed metrics between generations (sources in ``docs/upstream-vllm.md``); each
field lists its spellings newest first. :data:`DISPATCH` maps every sample name the
collector reads (``_bucket``/``_sum``/``_count`` for histograms) to its field, its kind
and its rank (0 = newest spelling); :data:`READ_FAMILIES` is the set of family names as
prometheus_client prints them in ``# HELP`` lines (a counter's with ``_total``, a
histogram's base name), which is what the page pre-selection keeps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "BUCKET",
    "COUNT",
    "DISPATCH",
    "GAUGE_FIELDS",
    "HISTOGRAMS",
    "OLDER_HISTOGRAM_SPELLINGS",
    "READ_FAMILIES",
    "SCALAR",
    "SCALARS",
    "SUCCESS",
    "SUCCESS_KIND",
    "SUM",
    "Target",
]

# Scalar quantities: VllmSeries field -> upstream sample names, newest spelling first.
SCALARS: Mapping[str, tuple[str, ...]] = {
    "requests_running": ("vllm:num_requests_running",),
    "requests_waiting": ("vllm:num_requests_waiting",),
    "kv_cache_usage_ratio": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    "prompt_tokens": ("vllm:prompt_tokens_total",),
    "generation_tokens": ("vllm:generation_tokens_total",),
    "preemptions": ("vllm:num_preemptions_total",),
    # V1 only (V0 printed a hit-rate gauge, not counters): tokens looked up / found
    "prefix_cache_queries": (
        "vllm:prefix_cache_queries_total",
        "vllm:gpu_prefix_cache_queries_total",
    ),
    "prefix_cache_hits": ("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"),
    # V1 with a KV connector (0.11.1+): tokens found in an external cache (LMCache, ...)
    "external_prefix_cache_queries": ("vllm:external_prefix_cache_queries_total",),
    "external_prefix_cache_hits": ("vllm:external_prefix_cache_hits_total",),
    # V1 0.16+: prompt tokens not computed because cached, local + external, per request
    "prompt_tokens_cached": ("vllm:prompt_tokens_cached_total",),
}
# The gauges among SCALARS: the only fields a multiprocess page can print per process
# (prometheus_client adds ``pid`` only to gauges in the "all"/"liveall" modes).
GAUGE_FIELDS = frozenset({"requests_running", "requests_waiting", "kv_cache_usage_ratio"})
SUCCESS = "vllm:request_success_total"
# Histograms: VllmSeries field -> upstream base names, newest spelling first.
HISTOGRAMS: Mapping[str, tuple[str, ...]] = {
    "ttft": ("vllm:time_to_first_token_seconds",),
    "inter_token_latency": (
        "vllm:inter_token_latency_seconds",
        "vllm:time_per_output_token_seconds",
    ),
    "e2e_latency": ("vllm:e2e_request_latency_seconds",),
    "queue_time": ("vllm:request_queue_time_seconds",),
    # where a request's GPU time went: the cost weights of prompt vs generated tokens
    "prefill_time": ("vllm:request_prefill_time_seconds",),
    "decode_time": ("vllm:request_decode_time_seconds",),
}
# A deprecated histogram spelling -> the newer one that makes it redundant when printed.
OLDER_HISTOGRAM_SPELLINGS: Mapping[str, str] = MappingProxyType(
    {old: names[0] for names in HISTOGRAMS.values() for old in names[1:]}
)
# Names only the V1 engine prints (for EndpointScrape.version_hint).
V1_NAMES = frozenset({"vllm:kv_cache_usage_perc", "vllm:inter_token_latency_seconds_count"})

SCALAR, SUCCESS_KIND, BUCKET, SUM, COUNT = range(5)  # histogram kinds last (>= BUCKET)


@dataclass(frozen=True, slots=True)
class Target:
    kind: int
    field: str
    rank: int  # 0 = newest spelling
    v1: bool = False  # only the V1 engine prints this name
    hist: tuple[str, int] | None = None  # histograms: (field, rank), one object per spelling


def _dispatch() -> Mapping[str, Target]:
    table: dict[str, Target] = {}
    for fld, names in SCALARS.items():
        for rank, name in enumerate(names):
            table[name] = Target(SCALAR, fld, rank, name in V1_NAMES)
    table[SUCCESS] = Target(SUCCESS_KIND, "request_success", 0)
    for fld, names in HISTOGRAMS.items():
        for rank, name in enumerate(names):
            hist = (fld, rank)
            for suffix, kind in (("_bucket", BUCKET), ("_sum", SUM), ("_count", COUNT)):
                v1 = name + suffix in V1_NAMES
                table[name + suffix] = Target(kind, fld, rank, v1, hist)
    return MappingProxyType(table)


DISPATCH = _dispatch()
READ_FAMILIES = frozenset(
    {n for names in (*SCALARS.values(), *HISTOGRAMS.values()) for n in names} | {SUCCESS}
)
