"""Idle capacity: GPUs of a model that nobody held, sized on concurrent use.

Per hour, used GPUs = (observed − ``__idle__``) GPU-seconds ÷ 3600 (a process with no
pod counts as used). keep = ceil(P(used GPUs)); fleet = max observed GPUs in an hour;
released GPU-hours = Σ over hours of max(0, observed GPUs − keep), priced at the bill's
rate: what keeping the GPUs nobody needed cost this month.
"""

from __future__ import annotations

from gpuledger.chargeback.findings.kinds.common import Context, frozen, money, pct
from gpuledger.chargeback.findings.model import Finding
from gpuledger.chargeback.findings.pricing import price_of_model
from gpuledger.chargeback.findings.stats import ceil_gpus, nearest_rank

PEAK_HOURS_SHOWN = 5


def find(ctx: Context) -> list[Finding]:
    out: list[Finding] = []
    cfg = ctx.config
    for model in ctx.inputs.models:
        hours = tuple(h for h in model.hours if h.observed_gpu_seconds > 0)
        if len(hours) < cfg.min_evidence_hours:
            continue
        price = price_of_model(ctx.card, model.gpu_model)
        if price is None:
            continue
        p_used = nearest_rank([h.used_gpus for h in hours], cfg.percentile)
        keep = ceil_gpus(p_used)
        released = sum(max(0.0, h.observed_gpus - keep) for h in hours)
        fleet = max(h.observed_gpus for h in hours)
        if released <= 0 or fleet - keep < 1:
            continue
        savings = released * price.usd_per_gpu_hour
        name = pct(ctx)
        gpu_class = ctx.card.gpu_class(model.gpu_model) or model.gpu_model
        busiest = sorted(hours, key=lambda h: (-h.used_gpus, h.hour))[:PEAK_HOURS_SHOWN]
        out.append(
            Finding(
                kind="idle_capacity",
                namespace="",
                service="",
                gpu_model=gpu_class,
                title=f"{gpu_class}: {fleet - keep:.0f} of {fleet:.0f} GPUs never needed",
                recommendation=(
                    f"Release or repurpose {fleet - keep:.0f} {model.gpu_model} GPUs: at most "
                    f"{keep} were in use at once in the {name} hour. Keeping them cost "
                    f"{money(savings)} this month."
                ),
                current_gpus=fleet,
                recommended_gpus=float(keep),
                monthly_savings_usd=savings,
                hours_of_evidence=len(hours),
                assumption=(
                    f"Next month's concurrent use stays at or under this month's {name}; "
                    f"the hours above it queue or borrow."
                ),
                evidence=frozen(
                    {
                        f"{name}_used_gpus": p_used,
                        "max_used_gpus": max(h.used_gpus for h in hours),
                        "max_observed_gpus": fleet,
                        "idle_gpu_hours": sum(h.idle_gpu_seconds for h in hours) / 3600.0,
                        "released_gpu_hours": released,
                        "usd_per_gpu_hour": price.usd_per_gpu_hour,
                        "price_basis": price.basis,
                    }
                ),
                peak_hours=tuple(sorted(h.hour for h in busiest)),
            )
        )
    return out
