"""The cached-prompt-token counters vLLM added after 0.11 reach /metrics, and a page
without them exports nothing for them (not measured, never 0).

Expected values by hand from ``generate_multiprocess.py``'s RECORDS: engine "0" had 300
(process A) + 120 (B) cached prompt tokens and external prefix-cache lookups 50 + 30 with
10 + 0 hits; engine "1" 300 + 120 cached, no external lookups.
"""

from __future__ import annotations

from typing import TypeVar

from gpuledger.collectors.textformat.parse import parse
from gpuledger.collectors.textformat.render import FamiliesBuilder
from gpuledger.collectors.vllm.export import export_vllm
from gpuledger.collectors.vllm.scrape import scrape_page
from gpuledger.collectors.vllm.types import VllmEndpoint, VllmTelemetry
from tests.support import paths as support_paths

T = TypeVar("T")
FIXTURES = support_paths.FIXTURES / "vllm"
EP = VllmEndpoint(url="http://10.0.0.5:8000", service="chat", namespace="llm", pod="chat-0")
NEW = (
    "gpuledger_vllm_prompt_tokens_cached_total",
    "gpuledger_vllm_external_prefix_cache_queries_total",
    "gpuledger_vllm_external_prefix_cache_hits_total",
)


class _Snap:
    def __init__(self, telemetry: VllmTelemetry) -> None:
        self._t = telemetry
        self.memo: dict[str, object] = {}

    def reading(self, name: str, kind: type[T]) -> T | None:
        assert name == "vllm"
        return self._t if isinstance(self._t, kind) else None


def _exported(page_name: str) -> dict[tuple[str, str], float]:
    scrape = scrape_page(parse((FIXTURES / page_name).read_bytes()), EP)
    f = FamiliesBuilder("node-a")
    export_vllm(f, _Snap(VllmTelemetry((scrape,))))
    out: dict[tuple[str, str], float] = {}
    for name, fam in parse(f.build().render()).items():
        for s in fam.samples:
            if name in NEW:
                assert s.labels["service"] == "chat"
                out[(name, s.labels["engine"])] = s.value
    return out


def test_cached_prompt_tokens_exported() -> None:
    assert _exported("vllm-0.33.0-api-servers2-dp2.prom") == {
        ("gpuledger_vllm_prompt_tokens_cached_total", "0"): 420.0,
        ("gpuledger_vllm_prompt_tokens_cached_total", "1"): 420.0,
        ("gpuledger_vllm_external_prefix_cache_queries_total", "0"): 80.0,
        ("gpuledger_vllm_external_prefix_cache_queries_total", "1"): 0.0,
        ("gpuledger_vllm_external_prefix_cache_hits_total", "0"): 10.0,
        ("gpuledger_vllm_external_prefix_cache_hits_total", "1"): 0.0,
    }


def test_not_measured_is_absent() -> None:
    assert _exported("vllm-0.11.0-api-servers2-dp2.prom") == {}
