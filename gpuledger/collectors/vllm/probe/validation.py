"""Does the engine's own telemetry agree with what a probe measured?

A probe is a request we know everything about, so the engine's counters over the
probe's window must show at least that request. Three checks, each ``True``, ``False`` or
``None`` (undecidable: a side lacks the series, the engine restarted in between):

``tokens_counted``
    ``prompt_tokens`` and ``generation_tokens`` each moved by at least the probe's
    usage counts. Other traffic in the window only adds, so "at least" is exact. vLLM
    (V1, ``vllm/v1/metrics/stats.py``) adds the whole prompt length at the first token,
    prefix-cache hits included, so a cached probe prompt still counts in full.
``ttft_histogram_moved``
    The TTFT histogram's count grew.
``ttft_agrees``
    The probe's TTFT lies inside the engine's TTFT distribution over the window: with
    the per-bucket increases (after - before), the probe's TTFT must be no lower than
    the lower bound of the bucket *below* the lowest bucket that grew, and no higher
    than the upper bound of the bucket *above* the highest one that grew. One bucket of
    slack each side, because the engine measures from the request's arrival at the
    frontend, the probe from before the request was sent (network, HTTP parsing and
    tokenization are in the probe's number only), and a value close to a boundary may
    fall either side of it. Both bounds also get ``abs_slack_s`` (default 50 ms): at the
    bottom of vLLM's buckets (1, 5, 10, 20 ms ...) one bucket is narrower than that
    HTTP overhead. On a quiet server the window holds just the probe, so this
    compares the probe with the engine's measurement of that same request.

An embeddings or rerank probe (``completion_tokens == 0``, no TTFT) is checked on
``tokens_counted`` alone: its prompt tokens (``generation_tokens`` must not have moved
less than 0, which holds trivially); the TTFT checks are None.

A counter that went backwards means the engine restarted between the two scrapes: the
window is meaningless, every check is ``None`` and ``detail`` says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import MappingProxyType

from gpuledger.collectors.vllm.types import (
    Histogram,
    ProbeResult,
    ProbeVerdict,
    VllmEndpoint,
    VllmSeries,
    VllmTelemetry,
)

# vLLM's lowest TTFT buckets are 1-5 ms wide, narrower than the HTTP path the probe's
# number includes and the engine's does not: one bucket of slack is not enough there.
DEFAULT_ABS_SLACK_S = 0.05


def _sum(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if len(known) == len(values) and known else None


def _merge_hist(hists: Sequence[Histogram | None]) -> Histogram | None:
    if not hists or any(h is None for h in hists):
        return None
    first = hists[0]
    assert first is not None
    bounds = [le for le, _ in first.buckets]
    totals = [0.0] * len(bounds)
    total_sum = total_count = 0.0
    for h in hists:
        assert h is not None
        if [le for le, _ in h.buckets] != bounds:
            return None
        for i, (_, c) in enumerate(h.buckets):
            totals[i] += c
        total_sum += h.sum
        total_count += h.count
    return Histogram(
        buckets=tuple(zip(bounds, totals, strict=True)), sum=total_sum, count=total_count
    )


def merge_series(series: Sequence[VllmSeries]) -> VllmSeries | None:
    """Several engines (data parallel) of one model as one: counters and buckets summed.
    A probe may land on any engine, so the check is over all of them."""
    if not series:
        return None
    if len(series) == 1:
        return series[0]
    return VllmSeries(
        model_name=series[0].model_name,
        engine="*",
        requests_running=_sum([s.requests_running for s in series]),
        requests_waiting=_sum([s.requests_waiting for s in series]),
        prompt_tokens=_sum([s.prompt_tokens for s in series]),
        generation_tokens=_sum([s.generation_tokens for s in series]),
        request_success=MappingProxyType({}),
        ttft=_merge_hist([s.ttft for s in series]),
    )


def endpoint_series(
    telemetry: VllmTelemetry | None, endpoint: VllmEndpoint, model_name: str
) -> VllmSeries | None:
    """The endpoint's series for ``model_name`` (engines merged), or None when the
    endpoint was not scraped successfully or serves no such model."""
    if telemetry is None:
        return None
    for scrape in telemetry.endpoints:
        if scrape.endpoint.name == endpoint.name:
            if not scrape.up:
                return None
            return merge_series([s for s in scrape.series if s.model_name == model_name])
    return None


def _bucket_range(before: Histogram, after: Histogram) -> tuple[float, float] | None:
    """(lower, upper) TTFT bounds of the window's observations, one bucket of slack
    each side; None when nothing was observed."""
    bounds = [le for le, _ in after.buckets]
    delta_cum = [a - b for (_, a), (_, b) in zip(after.buckets, before.buckets, strict=True)]
    per_bucket = [delta_cum[0], *(delta_cum[i] - delta_cum[i - 1] for i in range(1, len(bounds)))]
    grew = [i for i, d in enumerate(per_bucket) if d > 0]
    if not grew:
        return None
    lo, hi = grew[0], grew[-1]
    # bucket i covers (bounds[i-1], bounds[i]]; bucket lo-1 starts at bounds[lo-2]
    lower = bounds[lo - 2] if lo >= 2 else 0.0
    upper = bounds[hi + 1] if hi + 1 < len(bounds) else float("inf")
    return lower, upper


def validate(
    result: ProbeResult,
    before: VllmSeries | None,
    after: VllmSeries | None,
    *,
    wall: Callable[[], float],
    abs_slack_s: float = DEFAULT_ABS_SLACK_S,
) -> ProbeVerdict:
    """Compare one successful probe with the engine's series scraped before and after it."""
    notes: list[str] = []

    def verdict(tokens: bool | None, moved: bool | None, agrees: bool | None) -> ProbeVerdict:
        return ProbeVerdict(
            endpoint=result.endpoint,
            model_name=result.model_name,
            checked_unix=wall(),
            tokens_counted=tokens,
            ttft_histogram_moved=moved,
            ttft_agrees=agrees,
            detail="; ".join(notes),
        )

    if not result.ok:
        notes.append(f"probe failed ({result.reason}); nothing to compare")
        return verdict(None, None, None)
    if before is None or after is None:
        notes.append(f"no engine series {'before' if before is None else 'after'} the probe")
        return verdict(None, None, None)

    pairs = [
        (before.prompt_tokens, after.prompt_tokens),
        (before.generation_tokens, after.generation_tokens),
        (before.ttft.count if before.ttft else None, after.ttft.count if after.ttft else None),
    ]
    if any(b is not None and a is not None and a < b for b, a in pairs):
        notes.append("engine counters went backwards (engine restarted between scrapes)")
        return verdict(None, None, None)

    tokens: bool | None = None
    if (
        before.prompt_tokens is None
        or after.prompt_tokens is None
        or before.generation_tokens is None
        or after.generation_tokens is None
        or result.prompt_tokens is None
        or result.completion_tokens is None
    ):
        notes.append("token counters missing")
    else:
        d_prompt = after.prompt_tokens - before.prompt_tokens
        d_gen = after.generation_tokens - before.generation_tokens
        tokens = d_prompt >= result.prompt_tokens and d_gen >= result.completion_tokens
        if not tokens:
            notes.append(
                f"engine counted {d_prompt:g} prompt / {d_gen:g} generation tokens, "
                f"probe used {result.prompt_tokens} / {result.completion_tokens}"
            )

    moved: bool | None = None
    agrees: bool | None = None
    if result.ttft_s is None and result.completion_tokens == 0:
        # an embeddings or rerank probe (probe/pooling.py): no stream, no first token the
        # probe could time, so only its prompt tokens are checked
        notes.append("pooling probe: prompt tokens checked, no TTFT to compare")
        return verdict(tokens, None, None)
    if before.ttft is None or after.ttft is None:
        notes.append("TTFT histogram missing")
    else:
        moved = after.ttft.count > before.ttft.count
        if not moved:
            notes.append("TTFT histogram count did not move")
        elif [le for le, _ in before.ttft.buckets] != [le for le, _ in after.ttft.buckets]:
            notes.append("TTFT bucket boundaries changed between scrapes")
        elif result.ttft_s is not None:
            window = _bucket_range(before.ttft, after.ttft)
            if window is None:
                notes.append("TTFT count moved but no bucket did")
                agrees = False
            else:
                lower, upper = window
                lower, upper = max(0.0, lower - abs_slack_s), upper + abs_slack_s
                agrees = lower <= result.ttft_s <= upper
                if not agrees:
                    notes.append(
                        f"probe TTFT {result.ttft_s:.3f}s outside the engine's "
                        f"[{lower:g}s, {upper:g}s] over the window"
                    )
    return verdict(tokens, moved, agrees)
