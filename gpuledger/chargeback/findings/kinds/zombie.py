"""Zombies: GPUs held with ~0 busy for hours, and GPU time held by no pod.

A service-hour is a zombie hour when it held GPU time and its busy seconds are below
``zombie_busy_epsilon`` × its allocated seconds: a process stuck holding its memory, or a
pod holding a GPU with nothing running on it (peak memory 0) -- right-sizing keeps at
least one GPU, so this is where a holder that uses nothing is reported. The finding says
which (its peak memory; "not measured" where the ledger keeps none). Runs of at least
``zombie_min_hours`` consecutive zombie hours count:
wasted GPU-hours = Σ allocated GPU-hours over those runs, priced at the bill's rate.
``__unattributed__`` (a process on a GPU with no pod) is one finding per GPU model once it
held GPU time in at least ``zombie_min_hours`` hours: all its GPU-hours, priced.
"""

from __future__ import annotations

from gpuledger.chargeback.attribution.claims import UNATTRIBUTED
from gpuledger.chargeback.findings.inputs import RESERVED, ServiceHour, ServiceUsage
from gpuledger.chargeback.findings.kinds.common import Context, frozen, money
from gpuledger.chargeback.findings.model import Finding
from gpuledger.chargeback.findings.pricing import price_of_model

HOUR = 3600


def zombie_runs(
    hours: tuple[ServiceHour, ...], epsilon: float, min_hours: int
) -> list[list[ServiceHour]]:
    """Maximal runs of consecutive zombie hours at least ``min_hours`` long."""
    runs: list[list[ServiceHour]] = []
    run: list[ServiceHour] = []
    for h in hours:
        zombie = h.allocated_gpu_seconds > 0 and h.busy_gpu_seconds < epsilon * (
            h.allocated_gpu_seconds
        )
        if zombie and run and h.hour == run[-1].hour + HOUR:
            run.append(h)
            continue
        if len(run) >= min_hours:
            runs.append(run)
        run = [h] if zombie else []
    if len(run) >= min_hours:
        runs.append(run)
    return runs


def _held(ctx: Context, svc: ServiceUsage) -> Finding | None:
    runs = zombie_runs(svc.hours, ctx.config.zombie_busy_epsilon, ctx.config.zombie_min_hours)
    price = price_of_model(ctx.card, svc.gpu_model)
    if not runs or price is None:
        return None
    hours = [h for r in runs for h in r]
    wasted = sum(h.allocated_gpus for h in hours)
    cost = wasted * price.usd_per_gpu_hour
    measured = all(h.peak_memory_bytes is not None for h in hours)
    peak = max((h.peak_memory_bytes or 0.0) for h in hours) / float(1 << 30)
    longest = max(len(r) for r in runs)
    gpu_class = ctx.card.gpu_class(svc.gpu_model) or svc.gpu_model
    what = (
        "with no process on them"
        if measured and peak == 0
        else (f"with {peak:.1f} GiB of memory held" if measured else "with no kernel running")
    )
    return Finding(
        kind="zombie",
        namespace=svc.namespace,
        service=svc.service,
        gpu_model=gpu_class,
        title=f"{svc.service}: {wasted:.0f} GPU-hours held with no work",
        recommendation=(
            f"{svc.namespace}/{svc.service} held {gpu_class} GPUs {what} and under "
            f"{ctx.config.zombie_busy_epsilon:.0%} busy for {len(hours)} hours (longest run "
            f"{longest} h): stop or scale it to zero when idle. Cost {money(cost)}."
        ),
        current_gpus=wasted / len(hours),
        recommended_gpus=0.0,
        monthly_savings_usd=cost,
        hours_of_evidence=len(hours),
        assumption=(
            "Hours holding a GPU with no kernel running did no work for anyone."
            if measured
            else "Hours holding a GPU with no kernel running did no work for anyone "
            "(the ledger keeps no peak memory: the allocation is the evidence)."
        ),
        evidence=frozen(
            {
                "zombie_gpu_hours": wasted,
                "zombie_hours": float(len(hours)),
                "runs": float(len(runs)),
                "longest_run_hours": float(longest),
                "peak_memory_gib": peak if measured else "not measured",
                "busy_epsilon": ctx.config.zombie_busy_epsilon,
                "usd_per_gpu_hour": price.usd_per_gpu_hour,
                "price_basis": price.basis,
            }
        ),
        gpus=svc.gpus,
        peak_hours=tuple(r[0].hour for r in runs),
    )


def _orphan(ctx: Context, svc: ServiceUsage) -> Finding | None:
    hours = svc.evidence_hours()
    price = price_of_model(ctx.card, svc.gpu_model)
    if len(hours) < ctx.config.zombie_min_hours or price is None:
        return None
    held = sum(h.allocated_gpus for h in hours)
    cost = held * price.usd_per_gpu_hour
    gpu_class = ctx.card.gpu_class(svc.gpu_model) or svc.gpu_model
    return Finding(
        kind="zombie",
        namespace=svc.namespace,
        service=svc.service,
        gpu_model=gpu_class,
        title=f"{gpu_class}: {held:.0f} GPU-hours held by processes with no pod",
        recommendation=(
            f"Find and stop the processes holding {gpu_class} GPUs outside any pod "
            f"({len(hours)} hours; the GPUs are listed): cost {money(cost)} nobody is billed."
        ),
        current_gpus=held / len(hours),
        recommended_gpus=0.0,
        monthly_savings_usd=cost,
        hours_of_evidence=len(hours),
        assumption="A process whose pod no longer exists serves no workload anyone owns.",
        evidence=frozen(
            {
                "unattributed_gpu_hours": held,
                "busy_gpu_hours": sum(h.busy_gpus for h in hours),
                "usd_per_gpu_hour": price.usd_per_gpu_hour,
                "price_basis": price.basis,
            }
        ),
        gpus=svc.gpus,
        peak_hours=(hours[0].hour,),
    )


def find(ctx: Context) -> list[Finding]:
    out: list[Finding] = []
    for svc in ctx.inputs.services:
        if svc.service == UNATTRIBUTED:
            found = _orphan(ctx, svc)
        elif svc.service in RESERVED:
            continue
        else:
            found = _held(ctx, svc)
        if found is not None:
            out.append(found)
    return out
