"""Shares of a physical GPU: whole, shared, MIG; always summing to exactly 1."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from gpuledger.chargeback.attribution.claims import IDLE_OWNER, Claim, Owner
from gpuledger.chargeback.attribution.shares import GpuAllocation, allocate
from gpuledger.collectors.gpu.readings import GpuReading

H100 = "NVIDIA H100 80GB HBM3"
A = Owner("llm", "chat", "chat-0", "vllm")
B = Owner("llm", "embed", "embed-0", "server")
GIB = 1024**3


def shares_of(alloc: GpuAllocation) -> dict[Owner, float]:
    return {s.owner: s.share for s in alloc.shares}


def claims_table(table: dict[tuple[str, int | None], Sequence[Claim]]):  # type: ignore[no-untyped-def]
    return lambda d: table.get(d.key, ())


def test_whole_gpu_one_owner_and_unclaimed_gpu() -> None:
    g0 = GpuReading(uuid="GPU-0", index=0, model=H100, utilization_ratio=0.6)
    g1 = GpuReading(uuid="GPU-1", index=1, model=H100, utilization_ratio=0.05)
    a0, a1 = allocate([g0, g1], claims_table({("GPU-0", None): [Claim(A)]}))
    assert shares_of(a0) == {A: 1.0}
    assert a0.shares[0].busy_ratio == 0.6
    assert shares_of(a1) == {IDLE_OWNER: 1.0}
    assert a1.shares[0].busy_ratio == 0.05  # activity nobody claimed stays visible


def test_shared_gpu_usage_policy_prefers_sm_then_memory_then_equal() -> None:
    g = GpuReading(uuid="GPU-0", index=0, model=H100, utilization_ratio=0.4)
    by_sm = [Claim(A, 0.3, 30 * GIB), Claim(B, 0.1, 10 * GIB)]
    (a,) = allocate([g], lambda d: by_sm)
    assert shares_of(a) == pytest.approx({A: 0.75, B: 0.25})
    by_mem = [Claim(A, None, 10 * GIB), Claim(B, 0.2, 30 * GIB)]  # one SM sample missing
    (a,) = allocate([g], lambda d: by_mem)
    assert shares_of(a) == pytest.approx({A: 0.25, B: 0.75})
    neither = [Claim(A, None, None), Claim(B, 0.2, 30 * GIB)]
    (a,) = allocate([g], lambda d: neither)
    assert shares_of(a) == {A: 0.5, B: 0.5}
    (a,) = allocate([g], lambda d: by_sm, "equal")
    assert shares_of(a) == {A: 0.5, B: 0.5}


def test_processes_of_one_owner_are_one_claim() -> None:
    g = GpuReading(uuid="GPU-0", index=0, model=H100)
    claims = [Claim(A, 0.1, GIB), Claim(A, 0.2, GIB), Claim(B, 0.1, GIB)]
    (a,) = allocate([g], lambda d: claims)
    assert shares_of(a) == pytest.approx({A: 0.75, B: 0.25})
    assert len(a.shares) == 2


def test_mig_split_by_compute_slices() -> None:
    board = GpuReading(uuid="GPU-7", index=7, model=H100, mig_enabled=True, power_watts=300.0,
                       energy_joules=1e6, mig_total_slices=7)  # fmt: skip
    i1 = GpuReading(uuid="GPU-7", index=7, model=H100, mig_instance=1, mig_profile="3g.40gb",
                    mig_slices=3, mig_total_slices=7, utilization_ratio=0.5)  # fmt: skip
    i5 = GpuReading(uuid="GPU-7", index=7, model=H100, mig_instance=5, mig_profile="1g.10gb",
                    mig_slices=1, mig_total_slices=7)  # fmt: skip
    i9 = GpuReading(uuid="GPU-7", index=7, model=H100, mig_instance=9, mig_profile="1g.10gb",
                    mig_slices=1, mig_total_slices=7)  # fmt: skip
    table = {("GPU-7", 1): [Claim(A)], ("GPU-7", 5): [Claim(B)]}
    (a,) = allocate([board, i1, i5, i9], claims_table(table))
    got = shares_of(a)
    assert got[A] == pytest.approx(3 / 7)
    assert got[B] == pytest.approx(1 / 7)
    # one unclaimed 1g instance + 2 slices never carved into an instance
    assert got[IDLE_OWNER] == pytest.approx(3 / 7)
    assert sum(got.values()) == pytest.approx(1.0, abs=1e-12)
    assert a.energy_joules == 1e6
    assert a.power_watts == 300.0
    a_share = next(s for s in a.shares if s.owner == A)
    assert (a_share.mig_instance, a_share.mig_profile, a_share.busy_ratio) == (1, "3g.40gb", 0.5)


def test_mig_slices_from_profile_when_the_source_has_no_counts() -> None:
    """dcgm-exporter gives GPU_I_PROFILE but no slice counts: derived from the name."""
    board = GpuReading(uuid="GPU-A30", index=0, model="NVIDIA A30", mig_enabled=True)
    i = GpuReading(uuid="GPU-A30", index=0, model="NVIDIA A30", mig_instance=3,
                   mig_profile="2g.12gb")  # fmt: skip
    (a,) = allocate([board, i], lambda d: [Claim(A)] if d.mig_instance == 3 else [])
    assert shares_of(a) == pytest.approx({A: 2 / 4, IDLE_OWNER: 2 / 4})  # A30 has 4 slices


def test_lost_gpu_is_not_allocated() -> None:
    lost = GpuReading(uuid="GPU-0", index=0, model=H100, lost=True)
    assert allocate([lost], lambda d: [Claim(A)]) == ()


@pytest.mark.parametrize("n", [1, 2, 3, 7, 11])
def test_shares_sum_to_one_exactly_enough(n: int) -> None:
    g = GpuReading(uuid="GPU-0", index=0, model=H100)
    claims = [Claim(Owner("ns", f"s{i}"), 0.1 * (i + 1), None) for i in range(n)]
    (a,) = allocate([g], lambda d: claims)
    assert abs(sum(s.share for s in a.shares) - 1.0) < 1e-12
