"""Who holds what fraction of each physical GPU right now.

The unit of capacity is one physical GPU. Its shares always sum to exactly 1: every
fraction a workload does not hold goes to ``__idle__`` -- computed as the remainder, so
the ledger invariant (Σ allocated over owners incl. idle = Σ observed) holds by
construction, not by luck.

- A whole GPU is split among its claims (``usage``: by per-process SM utilization when
  every claim has a sample, else by memory when every claim reports it, else equally;
  ``equal``: equally; ``declared``: see below). No claim: the whole GPU is idle.
- ``declared`` (HAMi): a claim that declared a core share (``Claim.declared_share``,
  HAMi's ``nvidia.com/gpucores`` / 100) holds that fraction of the device whether it used
  it or not; the claims that declared none split what is left by ``usage``; what nobody
  declared and nobody undeclared holds is idle. Declarations summing over the whole
  device are scaled down to it (the undeclared then hold nothing). A device whose claims
  declared nothing is split by ``usage``.
- A MIG-enabled GPU is split by compute slices: an instance of profile ``Ng.*`` holds
  ``slices / total_slices`` of the board (1/7 for ``1g.10gb`` on an H100; the total is 7
  on A100/H100/H200, 4 on A30, read from NVML when it reports it). Each instance's
  fraction is split among its claims as above; instances nobody holds and slices no
  instance was carved from are idle.
- Busy time: an owner's allocated share × its device's utilization (engine activity);
  when the device reports none, the sum of its processes' SM utilization (capped at 1);
  else 0 -- busy is never guessed upward.
- Memory held (``OwnerShare.memory_bytes``, the ledger's peak GPU memory): per device (a
  whole GPU or one MIG instance), each owner's own processes' memory (the claim's, summed
  per owner) -- so on a shared, time-sliced or MPS GPU each owner has only its own; when
  the owner is the device's only claim and its processes report none (no process seen,
  or NVML hid their memory), the device's used memory (the instance's on MIG), since the
  owner holds the whole device; else None (not measured, never 0). ``__idle__`` holds
  none: None.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from gpuledger.chargeback.attribution.claims import IDLE_OWNER, Claim, Owner
from gpuledger.collectors.gpu.readings import GpuReading

SplitPolicy = Literal["usage", "equal", "declared"]

_SLICES_RE = re.compile(r"^(\d+)g\.")
_ROUNDING = 1e-12  # an idle remainder this small is float rounding of shares summing to 1


@dataclass(frozen=True, slots=True)
class OwnerShare:
    owner: Owner
    share: float  # of the physical GPU
    busy_ratio: float  # 0..1: of the share's time, how much its device was busy
    mig_instance: int | None = None
    mig_profile: str = ""
    memory_bytes: float | None = None  # GPU memory the owner holds now; None: not measured


@dataclass(frozen=True, slots=True)
class GpuAllocation:
    """One physical GPU at one instant: its owners and its board energy/power readings."""

    uuid: str
    index: int
    model: str
    energy_joules: float | None
    power_watts: float | None
    shares: tuple[OwnerShare, ...]


def total_slices(model: str, reported: int | None) -> int:
    if reported:
        return reported
    return 4 if "A30" in model else 7


def profile_slices(profile: str, reported: int | None) -> int | None:
    if reported:
        return reported
    m = _SLICES_RE.match(profile)
    return int(m.group(1)) if m else None


def _busy(device: GpuReading) -> float:
    if device.utilization_ratio is not None:
        return min(1.0, max(0.0, device.utilization_ratio))
    samples = [
        p.sm_utilization_ratio for p in device.processes if p.sm_utilization_ratio is not None
    ]
    return min(1.0, sum(samples)) if samples else 0.0


def _declared_weights(claims: Sequence[Claim]) -> list[float] | None:
    """Fractions (summing to at most 1) of one device under ``declared``; None when no
    claim declared a share. The remainder below 1 is the device's idle."""
    declared = [c.declared_share for c in claims]
    if all(d is None for d in declared):
        return None
    total = sum(max(0.0, d) for d in declared if d is not None)
    scale = 1.0 / total if total > 1.0 else 1.0
    out = [0.0 if d is None else max(0.0, d) * scale for d in declared]
    rest = [c for c, d in zip(claims, declared, strict=True) if d is None]
    left = max(0.0, 1.0 - total * scale)
    if rest and left > 0:
        it = iter(_weights(rest, "usage"))
        out = [next(it) * left if d is None else w for d, w in zip(declared, out, strict=True)]
    return out


def _weights(claims: Sequence[Claim], policy: SplitPolicy) -> list[float]:
    """Fractions of one device among its claims (summing to 1; under ``declared``, to at
    most 1)."""
    n = len(claims)
    if policy == "declared":
        declared = _declared_weights(claims)
        if declared is not None:
            return declared
        policy = "usage"
    if policy == "usage":
        for values in (
            [c.sm_utilization_ratio for c in claims],
            [None if c.memory_bytes is None else float(c.memory_bytes) for c in claims],
        ):
            if all(v is not None for v in values):
                total = sum(v for v in values if v is not None)
                if total > 0:
                    return [v / total for v in values if v is not None]
    return [1.0 / n] * n


def _merge_claims(claims: Iterable[Claim]) -> list[Claim]:
    """One claim per owner (a pod with several processes holds the device once)."""
    merged: dict[Owner, Claim] = {}
    for c in claims:
        prev = merged.get(c.owner)
        if prev is None:
            merged[c.owner] = c
            continue

        def add(a: float | int | None, b: float | int | None) -> float | int | None:
            return None if a is None or b is None else a + b

        sm = add(prev.sm_utilization_ratio, c.sm_utilization_ratio)
        mem = add(prev.memory_bytes, c.memory_bytes)
        a, b = prev.declared_share, c.declared_share
        merged[c.owner] = Claim(
            c.owner,
            None if sm is None else float(sm),
            None if mem is None else int(mem),
            None if a is None and b is None else (a or 0.0) + (b or 0.0),
        )
    return sorted(merged.values(), key=lambda c: c.owner)


def _device_shares(
    device: GpuReading,
    fraction: float,
    claims: Sequence[Claim],
    policy: SplitPolicy,
) -> list[OwnerShare]:
    busy = _busy(device)
    claims = _merge_claims(claims)
    if not claims:
        return []
    return [
        OwnerShare(c.owner, fraction * w, busy, device.mig_instance, device.mig_profile, m)
        for c, w, m in zip(claims, _weights(claims, policy), _memory(device, claims), strict=True)
    ]


def _memory(device: GpuReading, claims: Sequence[Claim]) -> list[float | None]:
    """The memory each claim holds on ``device`` (see the module's docstring): its own
    processes'; the device's used memory for a sole claim whose processes report none."""
    out = [None if c.memory_bytes is None else float(c.memory_bytes) for c in claims]
    if len(claims) == 1 and out[0] is None and device.memory_used_bytes is not None:
        out[0] = float(device.memory_used_bytes)
    return out


def allocate(
    devices: Sequence[GpuReading],
    claims_for: Callable[[GpuReading], Sequence[Claim]],
    policy: SplitPolicy = "usage",
) -> tuple[GpuAllocation, ...]:
    """Shares of every physical GPU seen in ``devices`` (merged readings, lost ones skipped)."""
    by_gpu: dict[str, list[GpuReading]] = {}
    for d in devices:
        if not d.lost:
            by_gpu.setdefault(d.uuid, []).append(d)
    out: list[GpuAllocation] = []
    for uuid, group in by_gpu.items():
        board = next((d for d in group if d.mig_instance is None), group[0])
        instances = [d for d in group if d.mig_instance is not None]
        shares: list[OwnerShare] = []
        if instances:
            total = total_slices(board.model, board.mig_total_slices)
            carved = 0.0
            for inst in instances:
                slices = profile_slices(inst.mig_profile, inst.mig_slices)
                if slices is None:
                    continue  # unknown profile: its slices stay idle rather than guessed
                fraction = min(slices / total, max(0.0, 1.0 - carved))
                carved += fraction
                shares += _device_shares(inst, fraction, claims_for(inst), policy)
        else:
            shares = _device_shares(board, 1.0, claims_for(board), policy)
        held = sum(s.share for s in shares)
        if held > 1.0:  # rounding only; never more than the whole GPU
            shares = [replace(s, share=s.share / held) for s in shares]
            held = 1.0
        idle = 1.0 - held
        if idle > _ROUNDING:
            idle_busy = _busy(board) if not instances else 0.0
            shares.append(OwnerShare(IDLE_OWNER, idle, idle_busy))
        out.append(
            GpuAllocation(
                uuid=uuid,
                index=board.index,
                model=board.model,
                energy_joules=board.energy_joules,
                power_watts=board.power_watts,
                shares=tuple(shares),
            )
        )
    out.sort(key=lambda a: a.index)
    return tuple(out)
