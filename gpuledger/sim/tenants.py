"""The simulated month's shared endpoint: its tenants and its engine's time accounting.

``llm-prod/chat-llama-70b`` is the demo's shared model endpoint (``docs/tenants.md``): a
gateway in front of it counts each caller's requests and tokens (``ledger_tenant_tokens``),
and its vLLM engines report prefill/decode seconds and prefix-cache lookups
(``ledger_engine_time``). Both are derived here from the service-hour's token row
(``ledger_tokens``), so the three tables agree the way a real deployment's would:

- **Tenants.** Each tenant has a request profile (prompt and generation tokens per
  request, the share of its prompt tokens the prefix cache holds) and a diurnal request
  volume with its own peak hour, times seeded lognormal noise per hour. The gateway saw
  all but a few percent of the engine's traffic (``UNSEEN_FRACTION`` with noise: callers
  that bypass it), so the hour's billable tokens (engine − probe) less that part are
  divided among the tenants in proportion to their profiles, prompt and generation tokens
  each on their own, and rounded down: Σ tenant tokens ≤ engine tokens − probe tokens,
  always. ``__untenanted__`` is traffic the gateway counted without a tenant.
- **Engine time.** Prefill seconds are proportional to the uncached prompt tokens and
  decode seconds to the generated tokens (per-request intervals, which overlap under
  batching, so an hour's sum is many times 3,600); requests are the tenants', the unseen
  traffic's and the probes'; ``prefix_cache_queries`` are the engine's prompt tokens and
  ``prefix_cache_hits`` the cached ones. In a maintenance window (``LEGACY_ENGINE_WINDOW``)
  the service ran an older engine without those histograms: no engine-time rows there,
  so the report's fixed-ratio fallback has hours to show.

Deterministic for a seed: the noise comes from its own generator, so the other tables'
rows (and their random draws) are the same as without the shared endpoint.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from gpuledger.chargeback.ledger.tables import EngineTimeRow, TenantTokenRow, TokenRow

SHARED_SERVICE = ("llm-prod", "chat-llama-70b")
"""(namespace, service) of the demo's shared endpoint."""

UNTENANTED = "__untenanted__"


@dataclass(frozen=True, slots=True)
class SimTenant:
    """One caller of the shared endpoint: what its requests look like and when it calls."""

    name: str
    requests: float  # relative request volume at its daily mean
    prompt_per_request: float
    generation_per_request: float
    cache_hit_ratio: float  # of its prompt tokens, found in the prefix cache
    peak_hour_utc: float
    amplitude: float  # diurnal swing, a fraction of the mean


TENANTS: tuple[SimTenant, ...] = (
    # RAG: long retrieved contexts behind a shared system prompt, short answers
    SimTenant("team-search", 30.0, 2600.0, 120.0, 0.65, 14.0, 0.5),
    # a chat assistant: short prompts, long answers
    SimTenant("team-assistant", 30.0, 350.0, 700.0, 0.25, 16.0, 0.6),
    SimTenant("team-support", 12.0, 900.0, 250.0, 0.45, 10.0, 0.4),
    SimTenant("team-legal", 4.0, 5000.0, 400.0, 0.30, 13.0, 0.3),
    # nightly batch jobs
    SimTenant("team-analytics", 5.0, 1200.0, 300.0, 0.10, 2.0, 0.7),
    SimTenant(UNTENANTED, 6.0, 600.0, 220.0, 0.20, 15.0, 0.3),
)
"""The shared endpoint's tenants (prompt:generation from 22:1 down to 1:2)."""

UNSEEN_FRACTION = 0.03
"""The engine's traffic the gateway did not see (its median; seeded noise around it)."""
UNSEEN_CACHE_HIT_RATIO = 0.3
NOISE_SIGMA = 0.15
"""Lognormal sigma of a tenant's hourly request volume."""

PREFILL_S_PER_UNCACHED_PROMPT_TOKEN = 0.0002
DECODE_S_PER_GENERATION_TOKEN = 0.03
ENGINE_NOISE_SIGMA = 0.05

LEGACY_ENGINE_WINDOW = (20, 1, 6)
"""(day of month, first hour UTC, hours): the shared service ran an older engine build
without prefill/decode histograms or prefix-cache counters, so no engine-time rows."""


def legacy_engine(hour_of_month: int) -> bool:
    """Whether the month's ``hour_of_month`` (0-based) is in the legacy-engine window."""
    day, first, hours = LEGACY_ENGINE_WINDOW
    start = (day - 1) * 24 + first
    return start <= hour_of_month < start + hours


def _diurnal(t: SimTenant, hour_of_day: int) -> float:
    return t.requests * (
        1.0 + t.amplitude * math.cos(2 * math.pi * (hour_of_day - t.peak_hour_utc) / 24)
    )


def _lognormal(rng: random.Random, sigma: float) -> float:
    return math.exp(rng.gauss(0.0, sigma))


def shared_hour(
    rng: random.Random, row: TokenRow, hour_of_month: int, probe_requests: int
) -> tuple[list[TenantTokenRow], list[EngineTimeRow]]:
    """The tenant rows and (outside the legacy window) the engine-time row of one
    service-hour of the shared endpoint, given its token row (probe tokens included) and
    the number of probes the engine served in that hour."""
    hour_of_day = hour_of_month % 24
    volume = [_diurnal(t, hour_of_day) * _lognormal(rng, NOISE_SIGMA) for t in TENANTS]
    unseen = min(0.06, max(0.01, UNSEEN_FRACTION * _lognormal(rng, 0.2)))
    prompt = row.prompt_tokens - row.probe_prompt_tokens
    generation = row.generation_tokens - row.probe_generation_tokens
    seen_prompt = math.floor(prompt * (1.0 - unseen))
    seen_generation = math.floor(generation * (1.0 - unseen))
    raw_prompt = [v * t.prompt_per_request for v, t in zip(volume, TENANTS, strict=True)]
    raw_generation = [v * t.generation_per_request for v, t in zip(volume, TENANTS, strict=True)]
    prompt_scale = seen_prompt / sum(raw_prompt)
    generation_scale = seen_generation / sum(raw_generation)
    tenants: list[TenantTokenRow] = []
    cached_total = 0.0
    requests_total = 0.0
    for t, p, g in zip(TENANTS, raw_prompt, raw_generation, strict=True):
        t_prompt = math.floor(p * prompt_scale)
        t_generation = math.floor(g * generation_scale)
        hit = min(0.95, t.cache_hit_ratio * _lognormal(rng, 0.1))
        t_cached = math.floor(t_prompt * hit)
        t_requests = max(1, round(t_generation / t.generation_per_request))
        cached_total += t_cached
        requests_total += t_requests
        tenants.append(
            TenantTokenRow(row.hour_start, row.node, row.namespace, row.service, row.model_name,
                           t.name, float(t_requests), float(t_prompt), float(t_cached),
                           float(t_generation))
        )  # fmt: skip
    if legacy_engine(hour_of_month):
        return tenants, []
    seen_prompt_sum = sum(r.prompt_tokens for r in tenants)
    unseen_prompt = prompt - seen_prompt_sum
    hits = cached_total + math.floor(unseen_prompt * UNSEEN_CACHE_HIT_RATIO)
    requests = requests_total + round(requests_total * unseen / (1.0 - unseen)) + probe_requests
    uncached = row.prompt_tokens - hits
    engine = EngineTimeRow(
        row.hour_start, row.node, row.namespace, row.service, row.model_name,
        uncached * PREFILL_S_PER_UNCACHED_PROMPT_TOKEN * _lognormal(rng, ENGINE_NOISE_SIGMA),
        row.generation_tokens * DECODE_S_PER_GENERATION_TOKEN
        * _lognormal(rng, ENGINE_NOISE_SIGMA),
        float(requests), float(requests), row.prompt_tokens, float(hits),
    )  # fmt: skip
    return tenants, [engine]
