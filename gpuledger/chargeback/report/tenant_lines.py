"""Price a shared service's tenant shares like the service itself: :class:`TenantLine`.

A tenant's GPU-hours on each GPU model are priced at that model's rates on the service's
line, and it takes the same fraction of the service's idle share as of its GPU-hours, so
the tenant lines add up to the service's line. The total is split into an input and an
output part by the GPU-seconds each kind of token earned (the hour's weights), which gives
the cost per 1M input and per 1M output tokens beside the API's input and output prices.
"""

from __future__ import annotations

from collections.abc import Mapping

from gpuledger.chargeback.report.clusters import by_gpu_model
from gpuledger.chargeback.report.model import (
    ModelLine,
    ServiceLine,
    TenantLine,
    TenantModelPart,
    WeightBasis,
)
from gpuledger.chargeback.report.ratecard import RateCard, TokenPrice
from gpuledger.chargeback.report.tenant_split import TenantShare, tenant_kind
from gpuledger.chargeback.report.units import (
    JOULES_PER_KWH,
    SECONDS_PER_HOUR,
    TOKENS_PER_UNIT,
    sum_or_none,
)

TenantModelTokens = Mapping[str, Mapping[str, tuple[float, float]]]
"""tenant → served model name → (prompt, generation) tokens the gateway counted."""

_RANK = {"tenant": 0, "other": 1, "untenanted": 2, "probes": 3, "headroom": 4}


def _basis(share: TenantShare) -> WeightBasis:
    if share.weighted_tokens <= 0:
        return "none"
    if share.fixed_ratio_weight <= 0:
        return "measured"
    if share.fixed_ratio_weight >= share.weighted_tokens * (1 - 1e-12):
        return "fixed-ratio"
    return "mixed"


def _default_class(line: ServiceLine) -> str | None:
    """The API class of the service's tokens the gateway did not name a model for: the
    one class its engines served, when there is exactly one."""
    classes = {q.model_class for q in line.served_models if q.model_class is not None}
    return classes.pop() if len(classes) == 1 else None


def _price(
    card: RateCard, cls: str, line: ServiceLine, prompt: float, generation: float
) -> TokenPrice | None:
    """The provider the service's own counterfactual chose for ``cls``, else the
    cheapest for these tokens (ties by provider name)."""
    prices = card.token_prices(cls)
    if not prices:
        return None
    chosen = {q.provider for q in line.served_models if q.model_class == cls and q.provider}
    for p in prices:
        if p.provider in chosen:
            return p
    return min(
        prices,
        key=lambda p: (prompt * p.usd_per_1m_input + generation * p.usd_per_1m_output, p.provider),
    )


def _api(
    card: RateCard,
    line: ServiceLine,
    share: TenantShare,
    by_model: Mapping[str, tuple[float, float]],
) -> tuple[float | None, str, str | None, float | None, float | None]:
    """usd, basis, provider, effective $/1M input, effective $/1M output."""
    kind = tenant_kind(share.tenant)
    if kind == "probes":
        return None, "the agent's own probes (not billed)", None, None, None
    if kind == "headroom":
        return None, "unused headroom", None, None, None
    parts = {name: tokens for name, tokens in by_model.items() if tokens[0] + tokens[1] > 0}
    rest = (
        max(0.0, share.prompt_tokens - sum(p for p, _ in parts.values())),
        max(0.0, share.generation_tokens - sum(g for _, g in parts.values())),
    )
    if rest[0] + rest[1] > 0:
        parts[""] = rest
    if not parts:
        return None, "no tokens", None, None, None
    usd = usd_in = usd_out = 0.0
    providers: list[str] = []
    default = _default_class(line)
    for name, (prompt, generation) in sorted(parts.items()):
        cls = (card.model_class(name) if name else None) or default
        if cls is None:
            what = f"model {name!r}" if name else "tokens without a model name"
            return None, f"no API class on the rate card for {what}", None, None, None
        price = _price(card, cls, line, prompt, generation)
        if price is None:
            return None, f"no API price for class {cls!r}", None, None, None
        usd_in += prompt * price.usd_per_1m_input / TOKENS_PER_UNIT
        usd_out += generation * price.usd_per_1m_output / TOKENS_PER_UNIT
        providers.append(f"{price.provider} ({cls})")
    usd = usd_in + usd_out
    unique = sorted(set(providers))
    provider = unique[0].split(" (")[0] if len(unique) == 1 else None
    per_in = usd_in / share.prompt_tokens * TOKENS_PER_UNIT if share.prompt_tokens > 0 else None
    per_out = (
        usd_out / share.generation_tokens * TOKENS_PER_UNIT if share.generation_tokens > 0 else None
    )
    return usd, "; ".join(unique), provider, per_in, per_out


def _model_part(
    ml: ModelLine | None, model: str, seconds: float, share: TenantShare
) -> TenantModelPart:
    """The tenant's seconds and joules on one GPU model at that model's rates on the
    service's line (None where the card does not price it, never zero), with the same
    fraction of the model line's idle share as of its GPU-hours."""
    hours = seconds / SECONDS_PER_HOUR
    kwh = share.energy_joules.get(model, 0.0) / JOULES_PER_KWH
    cap_rate = ml.capacity_usd_per_gpu_hour if ml is not None else None
    kwh_rate = ml.energy_usd_per_kwh if ml is not None else None
    capacity = hours * cap_rate if cap_rate is not None else None
    energy = kwh * kwh_rate if kwh_rate is not None else None
    internal = capacity + energy if capacity is not None and energy is not None else None
    idle = (
        ml.idle_share_usd * hours / ml.allocated_gpu_hours
        if ml is not None and ml.allocated_gpu_hours > 0
        else 0.0
    )
    return TenantModelPart(
        gpu_model=model,
        allocated_gpu_hours=hours,
        busy_gpu_hours=share.busy_seconds.get(model, 0.0) / SECONDS_PER_HOUR,
        energy_kwh=kwh,
        capacity_cost_usd=capacity,
        energy_cost_usd=energy,
        internal_cost_usd=internal,
        idle_share_usd=idle,
        total_cost_usd=internal + idle if internal is not None else None,
    )


def price_tenants(
    card: RateCard,
    line: ServiceLine,
    shares: Mapping[str, TenantShare],
    by_model: TenantModelTokens,
) -> tuple[TenantLine, ...]:
    models = by_gpu_model(line.models)  # one per GPU model, whatever the clusters
    service_seconds = line.allocated_gpu_hours * SECONDS_PER_HOUR
    out: list[TenantLine] = []
    for share in shares.values():
        parts = tuple(
            _model_part(models.get(model), model, seconds, share)
            for model, seconds in sorted(share.allocated_seconds.items())
        )
        capacity = sum_or_none(p.capacity_cost_usd for p in parts)
        energy_cost = sum_or_none(p.energy_cost_usd for p in parts)
        internal = sum_or_none(p.internal_cost_usd for p in parts)
        idle_share = sum(p.idle_share_usd for p in parts)
        total = sum_or_none(p.total_cost_usd for p in parts)
        kwh = sum(p.energy_kwh for p in parts)
        alloc = share.allocated
        input_part = share.input_seconds / alloc if alloc > 0 else 0.0
        input_cost = total * input_part if total is not None else None
        output_cost = total - input_cost if total is not None and input_cost is not None else None
        api, basis, provider, per_in, per_out = _api(
            card, line, share, by_model.get(share.tenant, {})
        )
        out.append(
            TenantLine(
                tenant=share.tenant,
                kind=tenant_kind(share.tenant),
                requests=share.requests,
                prompt_tokens=share.prompt_tokens,
                cached_prompt_tokens=share.cached_prompt_tokens,
                generation_tokens=share.generation_tokens,
                weighted_tokens=share.weighted_tokens,
                allocated_gpu_hours=alloc / SECONDS_PER_HOUR,
                busy_gpu_hours=sum(share.busy_seconds.values()) / SECONDS_PER_HOUR,
                share_ratio=alloc / service_seconds if service_seconds > 0 else 0.0,
                energy_kwh=kwh,
                capacity_cost_usd=capacity,
                energy_cost_usd=energy_cost,
                internal_cost_usd=internal,
                idle_share_usd=idle_share,
                total_cost_usd=total,
                input_cost_usd=input_cost,
                output_cost_usd=output_cost,
                cost_per_1m_input_usd=(
                    input_cost / share.prompt_tokens * TOKENS_PER_UNIT
                    if input_cost is not None and share.prompt_tokens > 0
                    else None
                ),
                cost_per_1m_output_usd=(
                    output_cost / share.generation_tokens * TOKENS_PER_UNIT
                    if output_cost is not None and share.generation_tokens > 0
                    else None
                ),
                api_provider=provider,
                api_usd_per_1m_input=per_in,
                api_usd_per_1m_output=per_out,
                token_api_usd=api,
                token_api_basis=basis,
                savings_vs_token_api_usd=api - total
                if api is not None and total is not None
                else None,
                weights=_basis(share),
                models=parts,
                fixed_ratio_share=(
                    min(1.0, share.fixed_ratio_weight / share.weighted_tokens)
                    if share.weighted_tokens > 0
                    else 0.0
                ),
            )
        )
    return tuple(sorted(out, key=_order))


def _order(t: TenantLine) -> tuple[int, float, str]:
    cost = t.total_cost_usd if t.total_cost_usd is not None else float("-inf")
    return (_RANK[t.kind], -cost, t.tenant)
