"""Over-provisioned: a service holds more GPUs than its busy time needs at the target
utilization.

recommended = max(1, ceil(P(busy GPUs per hour) / target_utilization)) with P the
configured nearest-rank percentile: sized on a high percentile, never the mean, so a
bursty service is never told to shrink below its peaks. saved GPU-hours = Σ over its
hours of max(0, allocated GPUs that hour − recommended), priced at the bill's rate.
"""

from __future__ import annotations

from gpuledger.chargeback.findings.kinds.common import (
    Context,
    busy_percentile,
    frozen,
    gpus,
    money,
    pct,
    peak_hours,
    sized_services,
)
from gpuledger.chargeback.findings.model import Finding
from gpuledger.chargeback.findings.pricing import price_of_model
from gpuledger.chargeback.findings.stats import ceil_gpus


def find(ctx: Context) -> list[Finding]:
    out: list[Finding] = []
    target = ctx.config.target_utilization
    for svc, hours in sized_services(ctx):
        price = price_of_model(ctx.card, svc.gpu_model)
        if price is None:
            continue
        p_busy = busy_percentile(ctx, hours)
        recommended = max(1, ceil_gpus(p_busy / target))
        saved = sum(max(0.0, h.allocated_gpus - recommended) for h in hours)
        if saved <= 0:
            continue
        current = sum(h.allocated_gpus for h in hours) / len(hours)
        savings = saved * price.usd_per_gpu_hour
        name = pct(ctx)
        out.append(
            Finding(
                kind="over_provisioned",
                namespace=svc.namespace,
                service=svc.service,
                gpu_model=ctx.card.gpu_class(svc.gpu_model) or svc.gpu_model,
                title=f"{svc.service}: {gpus(recommended)} instead of {current:.1f}",
                recommendation=(
                    f"Cap {svc.namespace}/{svc.service} at {gpus(recommended)} "
                    f"({svc.gpu_model}); its {name} busy time is {p_busy:.2f} GPUs: at "
                    f"{target:.0%} utilization that needs {gpus(recommended)}. "
                    f"Saves {money(savings)} a month."
                ),
                current_gpus=current,
                recommended_gpus=float(recommended),
                monthly_savings_usd=savings,
                hours_of_evidence=len(hours),
                assumption=(
                    f"Demand stays as it was this month: its {name} hourly busy time is "
                    f"the load to serve, at {target:.0%} target utilization."
                ),
                evidence=frozen(
                    {
                        f"{name}_busy_gpus": p_busy,
                        "mean_busy_gpus": sum(h.busy_gpus for h in hours) / len(hours),
                        "mean_allocated_gpus": current,
                        "max_allocated_gpus": max(h.allocated_gpus for h in hours),
                        "target_utilization": target,
                        "saved_gpu_hours": saved,
                        "usd_per_gpu_hour": price.usd_per_gpu_hour,
                        "price_basis": price.basis,
                    }
                ),
                gpus=svc.gpus,
                peak_hours=peak_hours(hours, p_busy),
            )
        )
    return out
