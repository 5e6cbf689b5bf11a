"""Property: however tenants, tokens, engine seconds and gaps fall, every GPU-second,
busy second and joule of a shared service lands on exactly one line.

Per service-hour Σ tenants + ``__untenanted__`` + ``__probes__`` (+ ``__headroom__``)
equals the service's allocated seconds (and busy seconds, and energy) to 1e-9, for both
headroom policies; over a month too, where hours without tokens are pooled. Gaps are
hours where the gateway was down (no tenant rows, the engine still counted), where the
engine was not scraped (no token or engine rows), or where nothing was counted at all.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpuledger.chargeback.ledger.model import EngineTimeGroup, TokenGroup
from gpuledger.chargeback.report.tenant_split import (
    HEADROOM,
    PROBES,
    UNTENANTED,
    ServiceHour,
    ServiceSplit,
    TenantShare,
    TokenWeights,
    _HourLine,
)

MODELS = ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB")
TENANTS = ("team-a", "team-b", "team-c", "__other__", "__untenanted__")

amount = st.floats(min_value=0, max_value=1e7, allow_nan=False, allow_infinity=False)
seconds = st.floats(min_value=0, max_value=3600, allow_nan=False, allow_infinity=False)


@st.composite
def usage(draw: st.DrawFn) -> tuple[float, float, float]:
    alloc = draw(seconds)
    busy = draw(st.floats(min_value=0, max_value=alloc)) if alloc > 0 else 0.0
    return alloc, busy, draw(st.floats(min_value=0, max_value=3e6))


@st.composite
def tenant_line(draw: st.DrawFn, tenant: str) -> _HourLine:
    prompt = draw(amount)
    cached = draw(st.floats(min_value=0, max_value=prompt)) if prompt > 0 else 0.0
    return _HourLine(tenant, draw(amount), prompt, cached, draw(amount))


@st.composite
def service_hour(draw: st.DrawFn) -> ServiceHour:
    hour = ServiceHour()
    for model in draw(st.lists(st.sampled_from(MODELS), max_size=2, unique=True)):
        hour.usage[model] = draw(usage())
    gateway_up = draw(st.booleans())
    if gateway_up:
        for tenant in draw(st.lists(st.sampled_from(TENANTS), max_size=4, unique=True)):
            hour.tenants.append(draw(tenant_line(tenant)))
    if draw(st.booleans()):  # the engine was scraped this hour
        prompt, generation = draw(amount), draw(amount)
        hour.tokens = TokenGroup(
            prompt_tokens=prompt,
            generation_tokens=generation,
            probe_prompt_tokens=draw(st.floats(min_value=0, max_value=prompt)),
            probe_generation_tokens=draw(st.floats(min_value=0, max_value=generation)),
        )
        if draw(st.booleans()):  # and it exports prefill/decode histograms
            hour.engine = EngineTimeGroup(
                prefill_seconds=draw(seconds),
                decode_seconds=draw(seconds),
                prefill_requests=draw(amount),
                decode_requests=draw(amount),
                prefix_cache_queries=prompt,
                prefix_cache_hits=draw(st.floats(min_value=0, max_value=prompt)),
            )
    return hour


def _sums(lines: dict[str, TenantShare]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for line in lines.values():
        for model, s in line.allocated_seconds.items():
            out[model][0] += s
            out[model][1] += line.busy_seconds[model]
            out[model][2] += line.energy_joules[model]
    return out


def _expected(hours: list[ServiceHour]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for hour in hours:
        for model, (alloc, busy, energy) in hour.usage.items():
            out[model][0] += alloc
            out[model][1] += busy
            out[model][2] += energy
    return out


def _assert_conserved(hours: list[ServiceHour], lines: dict[str, TenantShare]) -> None:
    got, want = _sums(lines), _expected(hours)
    for model in set(got) | set(want):
        for i in range(3):
            g, w = got[model][i], want[model][i]
            assert g == pytest.approx(w, rel=1e-9, abs=1e-9), (model, i, g, w)
    for line in lines.values():
        assert all(v >= -1e-9 for v in line.allocated_seconds.values())


weights = st.builds(
    TokenWeights,
    cached_prompt=st.floats(min_value=0, max_value=1),
    generation=st.floats(min_value=0.01, max_value=1000),
)


@settings(max_examples=300, deadline=None)
@given(hour=service_hour(), policy=st.sampled_from(["spread", "separate"]), w=weights)
def test_every_service_hour_is_conserved(hour: ServiceHour, policy: str, w: TokenWeights) -> None:
    split = ServiceSplit(policy, w)  # type: ignore[arg-type]
    split.add_hour(hour)
    lines = split.finish()
    _assert_conserved([hour], lines)
    if policy == "spread":
        assert HEADROOM not in lines or not any(
            t.prompt_tokens + t.generation_tokens for t in lines.values()
        )


@settings(max_examples=150, deadline=None)
@given(
    hours=st.lists(service_hour(), min_size=1, max_size=24),
    policy=st.sampled_from(["spread", "separate"]),
    w=weights,
)
def test_a_month_is_conserved_and_no_tokens_are_lost(
    hours: list[ServiceHour], policy: str, w: TokenWeights
) -> None:
    split = ServiceSplit(policy, w)  # type: ignore[arg-type]
    for hour in hours:
        split.add_hour(hour)
    lines = split.finish()
    _assert_conserved(hours, lines)
    # every token the gateway counted stays with its tenant; the engine's billable rest
    # is __untenanted__, the probes' are __probes__
    gateway: dict[str, float] = defaultdict(float)
    rest = probes = 0.0
    for hour in hours:
        counted = 0.0
        for t in hour.tenants:
            gateway[t.tenant] += t.prompt
            counted += t.prompt
        if hour.tokens is not None:
            billable = hour.tokens.prompt_tokens - hour.tokens.probe_prompt_tokens
            rest += max(0.0, billable - counted)
            probes += hour.tokens.probe_prompt_tokens
    gateway[UNTENANTED] += rest
    for tenant, prompt in gateway.items():
        if prompt == 0 and tenant not in lines:
            continue
        assert lines[tenant].prompt_tokens == pytest.approx(prompt, rel=1e-9, abs=1e-6)
    if probes > 0:
        assert lines[PROBES].prompt_tokens == pytest.approx(probes, rel=1e-9)
