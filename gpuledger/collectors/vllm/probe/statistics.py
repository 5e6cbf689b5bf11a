"""The summary of a series of probes that ``gpuledger probe`` prints: success and
failure counts, and p50/p90/p99 of TTFT, TPOT, end-to-end latency and output tokens/s.

Percentiles interpolate linearly between closest ranks (numpy's default), so a handful
of probes gives the same figures a notebook would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from gpuledger.collectors.vllm.types import ProbeResult


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass(frozen=True, slots=True)
class Quantiles:
    p50: float | None
    p90: float | None
    p99: float | None
    count: int


@dataclass(frozen=True, slots=True)
class ProbeSummary:
    total: int
    successes: int
    failures: Mapping[str, int]  # reason -> count, only reasons that occurred
    failure_examples: Mapping[str, str]  # reason -> the first detail seen
    ttft: Quantiles
    tpot: Quantiles
    e2e: Quantiles
    tokens_per_s: Quantiles

    @property
    def all_failed(self) -> bool:
        return self.successes == 0


def _quantiles(values: Sequence[float | None]) -> Quantiles:
    known = [v for v in values if v is not None]
    return Quantiles(
        p50=percentile(known, 50),
        p90=percentile(known, 90),
        p99=percentile(known, 99),
        count=len(known),
    )


def summarize(results: Sequence[ProbeResult]) -> ProbeSummary:
    ok = [r for r in results if r.ok]
    failures: dict[str, int] = {}
    examples: dict[str, str] = {}
    for r in results:
        if not r.ok:
            reason = r.reason or "unknown"
            failures[reason] = failures.get(reason, 0) + 1
            examples.setdefault(reason, r.detail)
    return ProbeSummary(
        total=len(results),
        successes=len(ok),
        failures=MappingProxyType(failures),
        failure_examples=MappingProxyType(examples),
        ttft=_quantiles([r.ttft_s for r in ok]),
        tpot=_quantiles([r.tpot_s for r in ok]),
        e2e=_quantiles([r.e2e_s for r in ok]),
        tokens_per_s=_quantiles([r.output_tokens_per_s for r in ok]),
    )
