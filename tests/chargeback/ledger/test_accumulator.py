"""Integration of shares over monotonic time into hourly running totals."""

from __future__ import annotations

import pytest

from gpuledger.chargeback.attribution.claims import IDLE, IDLE_OWNER, Owner
from gpuledger.chargeback.attribution.shares import GpuAllocation, OwnerShare
from gpuledger.chargeback.ledger.accumulator import Accumulator, hour_segments

A = Owner("llm", "chat")
B = Owner("llm", "embed")
H = 1_767_225_600  # 2026-01-01T00:00:00Z, an hour boundary


def alloc(
    energy: float | None = None, power: float | None = None, uuid: str = "GPU-0"
) -> GpuAllocation:
    return GpuAllocation(
        uuid=uuid, index=0, model="H100", energy_joules=energy, power_watts=power,
        shares=(OwnerShare(A, 0.75, 0.8), OwnerShare(IDLE_OWNER, 0.25, 0.0)),
    )  # fmt: skip


def totals(
    acc: Accumulator,
) -> tuple[dict[tuple[int, str], tuple[float, float, float]], dict[int, float]]:
    usage, coverage = acc.drain_dirty()
    return (
        {(u.hour_start, u.service): (u.allocated_gpu_seconds, u.busy_gpu_seconds, u.energy_joules)
         for u in usage},
        {c.hour_start: c.observed_seconds for c in coverage},
    )  # fmt: skip


def test_first_observation_is_only_a_baseline() -> None:
    acc = Accumulator("n", max_gap_s=60)
    acc.observe(H + 100, 1000.0, [alloc(energy=5000.0)])
    assert acc.drain_dirty() == ([], [])


def test_shares_times_seconds_and_energy_from_the_counter() -> None:
    acc = Accumulator("n", max_gap_s=60)
    acc.observe(H + 100, 1000.0, [alloc(energy=5000.0, power=999.0)])
    acc.observe(H + 110, 1010.0, [alloc(energy=8000.0, power=999.0)])
    usage, coverage = totals(acc)
    # 10 s; A holds 0.75 busy 0.8; energy delta 3000 J split by share
    assert usage[(H, "chat")] == pytest.approx((7.5, 6.0, 2250.0))
    assert usage[(H, IDLE)] == pytest.approx((2.5, 0.0, 750.0))
    assert coverage == {H: 10.0}


def test_interval_split_at_the_hour_boundary() -> None:
    acc = Accumulator("n", max_gap_s=60)
    acc.observe(H - 6, 1000.0, [alloc(power=100.0)])
    acc.observe(H + 4, 1010.0, [alloc(power=100.0)])
    usage, coverage = totals(acc)
    assert coverage == pytest.approx({H - 3600: 6.0, H: 4.0})
    assert usage[(H - 3600, "chat")][0] == pytest.approx(0.75 * 6)
    assert usage[(H, "chat")][0] == pytest.approx(0.75 * 4)
    # power × 10 s = 1000 J, 60/40 across the boundary, 0.75 to A
    assert usage[(H - 3600, "chat")][2] == pytest.approx(1000 * 0.6 * 0.75)
    assert hour_segments(H + 4, 10) == [(H - 3600, 6.0), (H, 4.0)]


def test_gap_is_recorded_not_invented() -> None:
    acc = Accumulator("n", max_gap_s=60)
    acc.observe(H + 100, 1000.0, [alloc()])
    acc.observe(H + 400, 1300.0, [alloc()])  # 300 s: the agent was away
    assert acc.drain_dirty() == ([], [])
    assert acc.lifetime().gaps == 1
    acc.observe(H + 410, 1310.0, [alloc()])
    _, coverage = totals(acc)
    assert coverage == {H: 10.0}


def test_wall_clock_step_moves_seconds_but_never_adds_any() -> None:
    acc = Accumulator("n", max_gap_s=60)
    acc.observe(H + 100, 1000.0, [alloc()])
    acc.observe(H + 100 - 3600 + 10, 1010.0, [alloc()])  # wall stepped back an hour
    _, coverage = totals(acc)
    assert coverage == {H - 3600: 10.0}  # 10 monotonic seconds, placed by the new wall time


def test_energy_counter_reset_falls_back_to_power() -> None:
    acc = Accumulator("n", max_gap_s=60)
    acc.observe(H + 100, 1000.0, [alloc(energy=9e6, power=200.0)])
    acc.observe(H + 110, 1010.0, [alloc(energy=1000.0, power=200.0)])  # driver reloaded
    usage, _ = totals(acc)
    assert usage[(H, "chat")][2] == pytest.approx(200.0 * 10 * 0.75)


def test_gpu_that_disappears_stops_being_covered() -> None:
    acc = Accumulator("n", max_gap_s=60)
    both = [alloc(uuid="GPU-0"), alloc(uuid="GPU-1")]
    acc.observe(H + 100, 1000.0, both)
    acc.observe(H + 110, 1010.0, both)
    acc.observe(H + 120, 1020.0, both[:1])
    usage, coverage_rows = acc.drain_dirty()
    observed = {c.gpu_uuid: c.observed_seconds for c in coverage_rows}
    assert observed == {"GPU-0": 20.0, "GPU-1": 10.0}
    # invariant per node-hour: Σ allocated = Σ observed
    assert sum(u.allocated_gpu_seconds for u in usage) == pytest.approx(30.0, rel=1e-12)


def test_restore_continues_running_totals() -> None:
    first = Accumulator("n", max_gap_s=60)
    first.observe(H + 100, 1000.0, [alloc()])
    first.observe(H + 110, 1010.0, [alloc()])
    usage, coverage = first.drain_dirty()
    second = Accumulator("n", max_gap_s=60)
    second.restore(usage, coverage)
    second.observe(H + 200, 5.0, [alloc()])  # new process: new monotonic origin
    second.observe(H + 210, 15.0, [alloc()])
    u2, c2 = totals(second)
    assert c2 == {H: 20.0}
    assert u2[(H, "chat")][0] == pytest.approx(15.0)


def test_lifetime_counters_for_prometheus() -> None:
    acc = Accumulator("n", max_gap_s=60)
    two = GpuAllocation("GPU-0", 0, "H100", None, 100.0,
                        (OwnerShare(A, 0.5, 1.0), OwnerShare(B, 0.5, 0.5)))  # fmt: skip
    acc.observe(H, 0.0, [two])
    acc.observe(H + 20, 20.0, [two])
    life = acc.lifetime()
    assert life.service_seconds[("chat", "llm", "H100", "allocated")] == pytest.approx(10.0)
    assert life.service_seconds[("embed", "llm", "H100", "busy")] == pytest.approx(5.0)
    assert life.service_energy[("chat", "llm")] == pytest.approx(1000.0)
    assert life.idle_seconds == {}
