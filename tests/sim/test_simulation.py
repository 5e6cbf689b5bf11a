"""The simulated node: deterministic, plausible, and what the NVML collector reads of it."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from gpuledger.collectors.gpu.nvml import NvmlCollector
from gpuledger.collectors.gpu.readings import GpuReading
from gpuledger.sim import mps
from gpuledger.sim.node import (
    DEFAULT_START,
    SimulatedNode,
    simulated_nvml_api,
)
from gpuledger.sim.nvml_fake import FakeNvml

DAY = 86400.0
H100_PROFILES = {"1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"}


def role_index(node: SimulatedNode, role: str) -> int:
    (index,) = [g.index for g in node.gpus if g.role == role][:1]
    return index


def test_same_seed_same_node_and_values() -> None:
    a, b = SimulatedNode(seed=7), SimulatedNode(seed=7)
    assert [g.uuid for g in a.gpus] == [g.uuid for g in b.gpus]
    assert [p.pid for p in a.processes] == [p.pid for p in b.processes]
    t = DEFAULT_START + 3 * 3600 + 17
    for i in range(8):
        assert a.utilization(i, t) == b.utilization(i, t)
        assert a.power_watts(i, t) == b.power_watts(i, t)
        assert a.energy_joules(i, t) == b.energy_joules(i, t)
    a.advance_to(t)
    b.advance_to(t)
    assert NvmlCollector(a.nvml).collect() == NvmlCollector(b.nvml).collect()

    c = SimulatedNode(seed=8)
    assert [g.uuid for g in c.gpus] != [g.uuid for g in a.gpus]
    assert [c.utilization(i, t) for i in range(8)] != [a.utilization(i, t) for i in range(8)]


def test_values_do_not_depend_on_how_the_node_was_stepped() -> None:
    fine, coarse = SimulatedNode(seed=3), SimulatedNode(seed=3)
    t = DEFAULT_START
    for _ in range(240):
        t += 15.0
        fine.advance_to(t)
    coarse.advance_to(t)

    def instantaneous(node: SimulatedNode) -> list[GpuReading]:
        # Per-process SM utilization is a mean over the samples taken since the last
        # collection, so it rightly depends on the stepping; every other value must not.
        return [
            replace(r, processes=tuple(replace(p, sm_utilization_ratio=None) for p in r.processes))
            for r in NvmlCollector(node.nvml).collect().gpus
        ]

    assert instantaneous(fine) == instantaneous(coarse)


def test_the_node_has_the_documented_shape() -> None:
    node = SimulatedNode(seed=1, gpus=8)
    assert [g.role for g in node.gpus].count("idle") == 1
    assert [g.role for g in node.gpus].count("shared") == 1
    assert [g.role for g in node.gpus].count("mig") == 2
    assert [g.role for g in node.gpus].count("mps") == 1
    pids = [p.pid for p in node.processes]
    assert len(pids) == len(set(pids))
    for p in node.processes:
        assert p.service
        assert p.namespace
        assert p.pod
        assert p.container
    shared = node.gpus[role_index(node, "shared")]
    assert len(shared.devices) == 1
    assert len(shared.devices[0].processes) == 2
    assert len({p.service for p in shared.devices[0].processes}) == 2


def test_collector_sees_two_mig_gpus_with_several_instances() -> None:
    node = SimulatedNode(seed=1)
    t = NvmlCollector(node.nvml).collect()
    boards = [r for r in t.gpus if r.mig_enabled]
    assert len(boards) == 2
    for board in boards:
        instances = [r for r in t.gpus if r.uuid == board.uuid and r.mig_instance is not None]
        assert len(instances) >= 3
        assert {r.mig_profile for r in instances} <= H100_PROFILES
        assert all(r.mig_total_slices == 7 and r.mig_slices for r in instances)
        assert sum(r.mig_slices or 0 for r in instances) <= 7
        assert board.power_watts is not None
        assert board.memory_used_bytes is None
        assert all(r.power_watts is None for r in instances)
    with_processes = [r for r in t.gpus if r.mig_instance is not None and r.processes]
    assert all(p.gpu_instance_id == r.mig_instance for r in with_processes for p in r.processes)
    assert len(t.gpus) == 8 + sum(len(g.devices) for g in node.gpus if g.mig)


def test_shared_gpu_shows_two_processes_splitting_the_device() -> None:
    node = SimulatedNode(seed=5)
    i = role_index(node, "shared")
    c = NvmlCollector(node.nvml)
    c.collect()
    t = DEFAULT_START + 14 * 3600.0
    node.advance_to(t)
    r = c.collect().gpus[i]
    assert len(r.processes) == 2
    shares = [p.sm_utilization_ratio for p in r.processes]
    assert all(s is not None and s > 0 for s in shares)
    expected = [node.process_utilization(p.pid, t) for p in r.processes]
    assert shares == pytest.approx(expected, abs=0.006)  # NVML's whole percent
    assert sum(expected) == pytest.approx(node.utilization(i, t))


def test_idle_gpu_averages_under_40_percent_over_a_day_and_the_others_do_not() -> None:
    node = SimulatedNode(seed=11)
    times = [DEFAULT_START + k * 300.0 for k in range(288)]
    mean = {
        g.index: sum(node.utilization(g.index, t) for t in times) / len(times)
        for g in node.gpus
        if not g.mig
    }
    idle = role_index(node, "idle")
    assert mean[idle] < 0.40
    assert all(m >= 0.40 for i, m in mean.items() if node.gpus[i].role == "dedicated")


def test_diurnal_load_peaks_in_the_afternoon_utc() -> None:
    node = SimulatedNode(seed=2)
    i = role_index(node, "dedicated")
    night = sum(node.utilization(i, DEFAULT_START + 3 * 3600 + m * 60) for m in range(60))
    afternoon = sum(node.utilization(i, DEFAULT_START + 15 * 3600 + m * 60) for m in range(60))
    assert afternoon > night + 10  # over 60 samples: a clear difference, not noise


def test_energy_is_monotonic_and_the_integral_of_power() -> None:
    node = SimulatedNode(seed=9)
    t0 = DEFAULT_START + 1000.0
    for g in node.gpus:
        step, n = 5.0, 1440  # two hours, numerically: trapezoids over 5 s
        ts = [t0 + k * step for k in range(n + 1)]
        powers = [node.power_watts(g.index, t) for t in ts]
        numeric = sum((powers[k] + powers[k + 1]) / 2 * step for k in range(n))
        exact = node.energy_joules(g.index, ts[-1]) - node.energy_joules(g.index, t0)
        assert exact == pytest.approx(numeric, rel=1e-4)
        idle, tdp = g.model.idle_power_w, g.model.power_limit_w
        assert all(idle <= p <= tdp for p in powers)

    c = NvmlCollector(node.nvml)
    last = [0.0] * 8
    t = DEFAULT_START
    for _ in range(100):
        t += 15.0
        node.advance_to(t)
        boards = [r for r in c.collect().gpus if r.mig_instance is None]
        energies = [r.energy_joules or 0.0 for r in boards]
        assert all(e > prev for e, prev in zip(energies, last, strict=True))
        last = energies


def test_energy_queries_in_the_past_agree_with_the_running_counter() -> None:
    node = SimulatedNode(seed=4)
    t = DEFAULT_START + 3 * DAY + 123.0
    forward = node.energy_joules(0, t)  # computed by walking forward
    fresh = SimulatedNode(seed=4)
    fresh.energy_joules(0, t + DAY)  # walked past it first, then asked about the past
    assert fresh.energy_joules(0, t) == pytest.approx(forward, rel=1e-12)


def test_collector_reads_the_models_values() -> None:
    node = SimulatedNode(seed=6)
    t = DEFAULT_START + 10 * 3600.0 + 7.5
    node.advance_to(t)
    readings = NvmlCollector(node.nvml).collect().gpus
    for r in readings:
        if r.mig_instance is not None:
            continue
        assert r.power_watts == pytest.approx(node.power_watts(r.index, t), abs=0.001)
        assert r.energy_joules == pytest.approx(node.energy_joules(r.index, t), abs=0.001)
        assert r.temperature_celsius == round(node.temperature_celsius(r.index, t))
        if not r.mig_enabled:
            assert r.utilization_ratio == round(node.utilization(r.index, t) * 100) / 100
            assert r.memory_used_bytes == node.gpus[r.index].memory_used_bytes
            assert {p.pid for p in r.processes if p.pid != mps.server_pid(r.index)} == {
                p.pid for p in node.gpus[r.index].devices[0].processes
            }


def test_temperature_follows_power() -> None:
    node = SimulatedNode(seed=2)
    i = role_index(node, "dedicated")
    times = [DEFAULT_START + k * 600.0 for k in range(144)]
    hot = max(times, key=lambda t: node.power_watts(i, t))
    cool = min(times, key=lambda t: node.power_watts(i, t))
    assert node.temperature_celsius(i, hot + 120) > node.temperature_celsius(i, cool + 120) + 5


def test_pids_are_stable_over_time() -> None:
    node = SimulatedNode(seed=12)
    c = NvmlCollector(node.nvml)
    first = {p.pid for r in c.collect().gpus for p in r.processes}
    node.advance_to(DEFAULT_START + DAY)
    later = {p.pid for r in c.collect().gpus for p in r.processes}
    servers = {mps.server_pid(g.index) for g in node.gpus if g.role == "mps"}
    assert len(servers) == 1  # the MPS GPU's server, listed beside its clients
    assert first == later == {p.pid for p in node.processes} | servers


def test_busy_seconds_is_the_integral_of_utilization() -> None:
    node = SimulatedNode(seed=13)
    t0, t1 = DEFAULT_START + 500.0, DEFAULT_START + 4 * 3600.0 + 20.0
    for g in node.gpus:
        mig = g.devices[0].mig_instance
        n = 2000
        step = (t1 - t0) / n
        us = [node.utilization(g.index, t0 + k * step, mig) for k in range(n + 1)]
        numeric = sum((us[k] + us[k + 1]) / 2 * step for k in range(n))
        assert node.busy_seconds(g.index, t0, t1, mig) == pytest.approx(numeric, rel=1e-3)


def test_xid_events_reach_the_collector() -> None:
    node = SimulatedNode(seed=21)
    events = node.xid_events(DEFAULT_START, DEFAULT_START + 30 * DAY)
    assert 0 < len(events) < 8 * 30  # rare but present in a month
    at, gpu, code = events[0]
    c = NvmlCollector(node.nvml)
    node.advance_to(at - 1.0)
    c.collect()
    node.advance_to(at + 1.0)
    r = next(r for r in c.collect().gpus if r.index == gpu and r.mig_instance is None)
    assert (r.xid_errors, r.last_xid) == (1, code)


def test_time_only_goes_forward() -> None:
    node = SimulatedNode(seed=1)
    node.advance_to(DEFAULT_START + 60)
    with pytest.raises(ValueError, match="forward"):
        node.advance_to(DEFAULT_START)


def test_a_clock_driven_node_advances_itself() -> None:
    now = [DEFAULT_START]
    node = SimulatedNode(seed=3, clock=lambda: now[0])
    c = NvmlCollector(node.nvml)
    e0 = c.collect().gpus[0].energy_joules
    now[0] += 600.0
    e1 = c.collect().gpus[0].energy_joules
    assert e0 is not None
    assert e1 is not None
    assert e1 - e0 == pytest.approx(
        node.energy_joules(0, DEFAULT_START + 600) - node.energy_joules(0, DEFAULT_START),
        abs=0.002,
    )
    now[0] -= 300.0  # a wall clock stepping back does not run the counters backwards
    assert c.collect().gpus[0].energy_joules == e1


def test_simulated_nvml_api_is_what_the_agent_reads() -> None:
    api = simulated_nvml_api(seed=42, gpus=5, clock=lambda: DEFAULT_START)
    assert isinstance(api, FakeNvml)
    t = NvmlCollector(api).collect()
    assert sorted({r.index for r in t.gpus}) == [0, 1, 2, 3, 4]
    assert t.notes == ()


@pytest.mark.parametrize("gpus", [1, 2, 3, 4, 12])
def test_small_and_large_nodes(gpus: int) -> None:
    node = SimulatedNode(seed=1, gpus=gpus)
    t = NvmlCollector(node.nvml).collect()
    assert len({r.index for r in t.gpus}) == gpus


def test_a_model_without_mig_has_no_mig_gpus() -> None:
    node = SimulatedNode(seed=1, model="NVIDIA L40S")
    assert not any(g.mig for g in node.gpus)
    assert not any(r.mig_enabled for r in NvmlCollector(node.nvml).collect().gpus)


def test_a_day_of_15_second_steps_is_cheap() -> None:
    node = SimulatedNode(seed=1)
    t = DEFAULT_START
    started = time.perf_counter()
    for _ in range(5760):
        t += 15.0
        node.advance_to(t)
    assert time.perf_counter() - started < 10.0  # ~1 s here; a month stays well under a minute


# -- a laid-out node (sim/services.py) ---------------------------------------------------------


def test_a_layout_gives_whole_gpus_one_replica_each_and_spares() -> None:
    from gpuledger.sim.nvml_fake import A100_80GB
    from gpuledger.sim.services import FINDINGS_LAYOUT

    node = SimulatedNode(11, 8, model=A100_80GB.name, layout=FINDINGS_LAYOUT)
    assert [g.role for g in node.gpus] == ["dedicated"] * 7 + ["spare"]
    assert all(len(g.devices) == 1 and g.devices[0].mig_instance is None for g in node.gpus)
    services = [[p.service for p in g.devices[0].processes] for g in node.gpus]
    assert services == [["support-qwen-7b"]] * 4 + [["digest-llama-8b"]] * 2 + [
        ["transcribe-whisper"],
        [],
    ]
    pods = [p.pod for p in node.processes]
    assert len(set(pods)) == 7  # a pod per replica, as a Deployment's replicas are
    # memory: vLLM's 90 % of the GPU, the Whisper server's 30 %, in whole MiB
    mib = A100_80GB.memory_mib
    assert node.gpus[0].devices[0].processes[0].memory_bytes == int(0.9 * mib) * 1024 * 1024
    assert node.gpus[6].devices[0].processes[0].memory_bytes == int(0.3 * mib) * 1024 * 1024
    # the spare: NVML shows the driver's reserve and no process, and it is never busy
    t = DEFAULT_START + 5 * 3600
    node.advance_to(t)
    (spare,) = [r for r in NvmlCollector(node.nvml).collect().gpus if r.index == 7]
    assert spare.processes == ()
    assert spare.utilization_ratio == 0.0
    assert spare.memory_used_bytes == 512 * 1024 * 1024
    assert node.busy_seconds(7, t, t + 3600) == 0.0


def test_a_layout_must_name_every_gpu() -> None:
    from gpuledger.sim.services import FINDINGS_LAYOUT

    with pytest.raises(ValueError, match="a layout of 8 GPUs for a node of 4"):
        SimulatedNode(1, 4, layout=FINDINGS_LAYOUT)


def test_a_burst_saturates_around_its_hour_and_idles_at_base_otherwise() -> None:
    """The digest service: base 0.10 + 0.95 x max(0, cos)^16 peaking at 06:30 UTC. The
    seeded noise moves a knot by at most 0.07 + 0.04, so on a weekday (DEFAULT_START is a
    Monday) the peak knot is ≥ min(1, 1.05) − 0.11 and a knot 12 h away (cos = −1, no
    burst) is within 0.10 ± 0.11; three hours from the peak, cos(π/4)^16 = 1/256 adds
    0.004."""
    from gpuledger.sim.nvml_fake import A100_80GB
    from gpuledger.sim.services import FINDINGS_LAYOUT

    node = SimulatedNode(11, 8, model=A100_80GB.name, layout=FINDINGS_LAYOUT)
    digest = 4  # the first of its two GPUs
    assert node.gpus[digest].devices[0].processes[0].service == "digest-llama-8b"
    for day in range(5):
        peak = DEFAULT_START + day * DAY + 6.5 * 3600
        assert node.utilization(digest, peak) >= 1.0 - 0.11
        assert node.utilization(digest, peak + 12 * 3600) <= 0.10 + 0.11
        assert node.utilization(digest, peak + 3 * 3600) <= 0.10 + 0.95 / 256 + 0.11
