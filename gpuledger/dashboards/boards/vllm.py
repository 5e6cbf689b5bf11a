"""vLLM serving: latency percentiles, throughput, queueing, KV cache, and the synthetic
probes beside the engine's own figures.
"""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard

from gpuledger import schema
from gpuledger.dashboards import queries as q
from gpuledger.dashboards.layout import Cell, make_dashboard
from gpuledger.dashboards.panels import RATIO, SECONDS, SHORT, Target, ts
from gpuledger.schema import MetricSpec

UID = "gpuledger-vllm"


def build() -> dashboard.Dashboard:
    def latency(title: str, spec: MetricSpec) -> Cell:
        targets = [
            Target(q.vllm_latency(spec, quant), legend=f"{{{{service}}}} p{round(quant * 100)}")
            for quant in q.VLLM_LATENCY_QUANTILES
        ]
        return Cell(ts(title, SECONDS, *targets), w=8)

    cells = [
        latency("Time to first token", schema.VLLM_TTFT),
        latency("Inter-token latency", schema.VLLM_ITL),
        latency("End-to-end latency", schema.VLLM_E2E),
        Cell(
            ts(
                "Tokens per second",
                SHORT,
                Target(
                    q.vllm_tokens_per_second(schema.VLLM_GENERATION_TOKENS),
                    legend="{{service}} generated",
                ),
                Target(
                    q.vllm_tokens_per_second(schema.VLLM_PROMPT_TOKENS),
                    legend="{{service}} prompt",
                ),
            ),
            w=8,
        ),
        Cell(
            ts(
                "Requests running / waiting",
                SHORT,
                Target(q.vllm_requests(schema.VLLM_REQUESTS_RUNNING), legend="{{service}} running"),
                Target(q.vllm_requests(schema.VLLM_REQUESTS_WAITING), legend="{{service}} waiting"),
            ),
            w=8,
        ),
        Cell(
            ts(
                "KV cache usage",
                RATIO,
                Target(q.vllm_kv_cache(), legend="{{service}} {{pod}}"),
                max_value=1,
            ),
            w=8,
        ),
        Cell(
            ts(
                "Finished requests per second",
                "reqps",
                Target(q.vllm_request_rate(), legend="{{service}} {{finished_reason}}"),
                stacked=True,
            ),
            w=8,
        ),
        Cell(
            ts(
                "Preemptions",
                SHORT,
                Target(q.vllm_preemptions(), legend="{{service}}"),
                description="Requests preempted by the scheduler (KV cache exhausted).",
                bars=True,
            ),
            w=8,
        ),
        Cell(
            ts(
                "Probe failures",
                SHORT,
                Target(q.probe_failures(), legend="{{service}} {{reason}}"),
                Target(q.probe_successes(), legend="{{service}} succeeded"),
                bars=True,
            ),
            w=8,
        ),
        Cell(
            ts(
                "TTFT: probe vs engine p50",
                SECONDS,
                Target(q.probe_latency(schema.PROBE_TTFT), legend="{{service}} probe"),
                Target(q.vllm_latency(schema.VLLM_TTFT, 0.5), legend="{{service}} engine p50"),
                description="The synthetic probe's measured TTFT beside the engine's own.",
            )
        ),
        Cell(
            ts(
                "Per-token latency: probe vs engine p50",
                SECONDS,
                Target(q.probe_latency(schema.PROBE_TPOT), legend="{{service}} probe TPOT"),
                Target(q.vllm_latency(schema.VLLM_ITL, 0.5), legend="{{service}} engine p50"),
            )
        ),
        Cell(
            ts(
                "End-to-end: probe vs engine p50",
                SECONDS,
                Target(q.probe_latency(schema.PROBE_E2E), legend="{{service}} probe"),
                Target(q.vllm_latency(schema.VLLM_E2E, 0.5), legend="{{service}} engine p50"),
            )
        ),
        Cell(
            ts(
                "Probe output tokens per second",
                SHORT,
                Target(q.probe_latency(schema.PROBE_TOKENS_PER_SECOND), legend="{{service}}"),
            )
        ),
    ]
    return make_dashboard(
        UID,
        "gpuledger / vLLM serving",
        "Latency percentiles, throughput, queueing, KV cache and synthetic probes per service.",
        schema.VLLM_REQUESTS_RUNNING,
        cells,
    )
