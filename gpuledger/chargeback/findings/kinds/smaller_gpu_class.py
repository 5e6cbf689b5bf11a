"""Smaller GPU class: a service's peak memory and its busy time fit a cheaper class.

For each class of the card's ``gpu_classes`` other than its own, with a price:
  fits when class memory_gib ≥ peak memory (GiB) × (1 + memory_headroom);
  needed GPUs = max(1, ceil(P(busy GPUs) × f_now / f_class / target_utilization)),
  f = relative_throughput (H100 = 1.0);
  cost now = Σ allocated GPU-hours × price now; cost there = needed × hours × its price;
  savings = cost now − cost there. The cheapest class that fits is reported.
Without peak memory in the ledger nothing is found: a class is never chosen blind.
"""

from __future__ import annotations

from gpuledger.chargeback.findings.kinds.common import (
    Context,
    busy_percentile,
    frozen,
    money,
    pct,
    peak_hours,
    peak_memory_gib,
    sized_services,
)
from gpuledger.chargeback.findings.model import Finding
from gpuledger.chargeback.findings.pricing import GpuHourPrice, price_of_class
from gpuledger.chargeback.findings.stats import ceil_gpus
from gpuledger.chargeback.report.ratecard import GpuClassSpec


def find(ctx: Context) -> list[Finding]:
    out: list[Finding] = []
    cfg = ctx.config
    for svc, hours in sized_services(ctx):
        now_class = ctx.card.gpu_class(svc.gpu_model)
        now_spec = ctx.card.class_spec(now_class)
        now_price = price_of_class(ctx.card, now_class)
        peak = peak_memory_gib(hours)
        if now_spec is None or now_price is None or peak is None or peak <= 0:
            continue
        p_busy = busy_percentile(ctx, hours)
        allocated = sum(h.allocated_gpus for h in hours)
        cost_now = allocated * now_price.usd_per_gpu_hour
        best: tuple[float, int, GpuClassSpec, GpuHourPrice] | None = None
        for spec in ctx.card.gpu_classes:
            if spec.name == now_class or spec.memory_gib < peak * (1 + cfg.memory_headroom):
                continue
            price = price_of_class(ctx.card, spec.name)
            if price is None:
                continue
            scaled = p_busy * now_spec.relative_throughput / spec.relative_throughput
            needed = max(1, ceil_gpus(scaled / cfg.target_utilization))
            saving = cost_now - needed * len(hours) * price.usd_per_gpu_hour
            if saving > 0 and (best is None or saving > best[0]):
                best = (saving, needed, spec, price)
        if best is None:
            continue
        saving, needed, spec, price = best
        name = pct(ctx)
        current = allocated / len(hours)
        ratio = spec.relative_throughput / now_spec.relative_throughput
        out.append(
            Finding(
                kind="smaller_gpu_class",
                namespace=svc.namespace,
                service=svc.service,
                gpu_model=now_class or svc.gpu_model,
                title=f"{svc.service}: {needed} {spec.name} instead of {current:.1f} {now_class}",
                recommendation=(
                    f"Move {svc.namespace}/{svc.service} from {now_class} to {needed} "
                    f"{spec.name} GPUs: its peak memory {peak:.1f} GiB fits {spec.memory_gib:g} "
                    f"GiB and its {name} busy time fits at {cfg.target_utilization:.0%}. "
                    f"Saves {money(saving)} a month."
                ),
                current_gpus=current,
                recommended_gpus=float(needed),
                monthly_savings_usd=saving,
                hours_of_evidence=len(hours),
                assumption=(
                    f"A {spec.name} serves {ratio:.2f}"
                    f"x the work of a {now_class} ({spec.basis} vs {now_spec.basis}), and the "
                    f"model runs there unchanged."
                ),
                evidence=frozen(
                    {
                        f"{name}_busy_gpus": p_busy,
                        "peak_memory_gib": peak,
                        "target_class": spec.name,
                        "target_memory_gib": spec.memory_gib,
                        "relative_throughput_now": now_spec.relative_throughput,
                        "relative_throughput_target": spec.relative_throughput,
                        "cost_now_usd": cost_now,
                        "cost_target_usd": needed * len(hours) * price.usd_per_gpu_hour,
                        "usd_per_gpu_hour_now": now_price.usd_per_gpu_hour,
                        "usd_per_gpu_hour_target": price.usd_per_gpu_hour,
                        "price_basis": f"{now_price.basis}; {price.basis}",
                        "throughput_source": spec.source,
                    }
                ),
                gpus=svc.gpus,
                peak_hours=peak_hours(hours, p_busy),
            )
        )
    return out
