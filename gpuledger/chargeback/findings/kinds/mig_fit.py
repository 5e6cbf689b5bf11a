"""MIG fit: a service on whole GPUs whose peak memory and compute share fit a MIG
profile of its GPU class (profiles: ``findings/mig_profiles.yaml``, NVIDIA's MIG user
guide).

Considered only for services holding whole GPUs (the median hour holds ≥ 1 GPU: a
service already on a slice or sharing a GPU holds less). Per hour, the share of its GPUs
it keeps busy is busy ÷ allocated; the smallest profile (by share of the GPU) with
  memory_gib ≥ peak memory (GiB) × (1 + memory_headroom) and
  compute_fraction × target_utilization ≥ P(busy ÷ allocated)
fits. Each of its GPUs becomes one such instance, freeing (1 − share) of it:
savings = Σ allocated GPU-hours × (1 − share) × the bill's rate; share = max(compute
fraction, memory fraction).
"""

from __future__ import annotations

from gpuledger.chargeback.findings.catalog import profiles_for
from gpuledger.chargeback.findings.kinds.common import (
    Context,
    frozen,
    money,
    pct,
    peak_memory_gib,
    sized_services,
)
from gpuledger.chargeback.findings.model import Finding
from gpuledger.chargeback.findings.pricing import price_of_class
from gpuledger.chargeback.findings.stats import EPS, nearest_rank

WHOLE_GPU = 0.99
"""A median hour holding at least this many GPUs counts as a service on whole GPUs."""


def find(ctx: Context) -> list[Finding]:
    out: list[Finding] = []
    cfg = ctx.config
    for svc, hours in sized_services(ctx):
        gpu_class = ctx.card.gpu_class(svc.gpu_model)
        profiles = profiles_for(gpu_class)
        price = price_of_class(ctx.card, gpu_class)
        peak = peak_memory_gib(hours)
        if not profiles or price is None or peak is None or peak <= 0:
            continue
        if nearest_rank([h.allocated_gpus for h in hours], 0.5) < WHOLE_GPU:
            continue
        p_util = nearest_rank(
            [h.busy_gpu_seconds / h.allocated_gpu_seconds for h in hours], cfg.percentile
        )
        fit = next(
            (
                p
                for p in profiles
                if p.memory_gib >= peak * (1 + cfg.memory_headroom)
                and p.compute_fraction * cfg.target_utilization >= p_util - EPS
            ),
            None,
        )
        if fit is None or fit.gpu_share >= 1:
            continue
        allocated = sum(h.allocated_gpus for h in hours)
        freed = allocated * (1 - fit.gpu_share)
        savings = freed * price.usd_per_gpu_hour
        current = allocated / len(hours)
        name = pct(ctx)
        out.append(
            Finding(
                kind="mig_fit",
                namespace=svc.namespace,
                service=svc.service,
                gpu_model=gpu_class or svc.gpu_model,
                title=f"{svc.service}: MIG {fit.name} instead of whole {gpu_class} GPUs",
                recommendation=(
                    f"Run each replica of {svc.namespace}/{svc.service} on a MIG {fit.name} "
                    f"instance of its {gpu_class}: peak memory {peak:.1f} GiB, {name} busy "
                    f"{p_util:.0%} of a GPU. Frees {1 - fit.gpu_share:.0%} of each GPU, "
                    f"{money(savings)} a month."
                ),
                current_gpus=current,
                recommended_gpus=current * fit.gpu_share,
                monthly_savings_usd=savings,
                hours_of_evidence=len(hours),
                assumption=(
                    f"The freed slices are used by other work, and a {fit.name} instance "
                    f"({fit.compute_fraction:.0%} of the SMs) serves this load at "
                    f"{cfg.target_utilization:.0%} utilization."
                ),
                evidence=frozen(
                    {
                        "peak_memory_gib": peak,
                        f"{name}_busy_share_of_gpu": p_util,
                        "mig_profile": fit.name,
                        "profile_memory_gib": fit.memory_gib,
                        "profile_compute_fraction": fit.compute_fraction,
                        "profile_gpu_share": fit.gpu_share,
                        "freed_gpu_hours": freed,
                        "usd_per_gpu_hour": price.usd_per_gpu_hour,
                        "price_basis": price.basis,
                        "profile_source": fit.source,
                    }
                ),
                gpus=svc.gpus,
            )
        )
    return out
