"""MPS clients through the NVML collector: listed with the MPS call beside the ordinary
process list, and a driver that cannot list them noted once, then left alone."""

from __future__ import annotations

import pytest

from gpuledger.collectors.gpu.nvml import NvmlCollector
from gpuledger.sim.nvml_fake import FakeNvml, GpuSpec, ProcessSpec

GIB = 1024**3
SERVER = 100
MPS_CALL = "nvmlDeviceGetMPSComputeRunningProcesses"


def mps_spec(**kwargs: object) -> GpuSpec:
    return GpuSpec(
        processes=(ProcessSpec(SERVER, 300 * 1024**2),),
        mps_clients=(ProcessSpec(201, 10 * GIB), ProcessSpec(202, 20 * GIB)),
        **kwargs,  # type: ignore[arg-type]
    )


def test_ordinary_list_shows_the_server_only_and_the_mps_call_its_clients() -> None:
    fake = FakeNvml([mps_spec()])
    fake.nvmlInit()
    h = fake.nvmlDeviceGetHandleByIndex(0)
    assert [p.pid for p in fake.nvmlDeviceGetComputeRunningProcesses(h)] == [SERVER]
    assert [p.pid for p in fake.nvmlDeviceGetMPSComputeRunningProcesses(h)] == [201, 202]


def test_clients_are_listed_with_their_memory_and_samples() -> None:
    fake = FakeNvml([mps_spec()])
    fake.add_process_sample(0, 201, 1_000, sm_util=30)
    c = NvmlCollector(fake)
    t = c.collect()
    (g,) = t.gpus
    by_pid = {p.pid: p for p in g.processes}
    assert sorted(by_pid) == [SERVER, 201, 202]
    assert (by_pid[SERVER].mps_client, by_pid[201].mps_client, by_pid[202].mps_client) == (
        False,
        True,
        True,
    )
    assert by_pid[202].used_memory_bytes == 20 * GIB
    assert by_pid[201].sm_utilization_ratio == 0.30
    assert by_pid[202].sm_utilization_ratio is None
    assert c.mps_support == {g.uuid: "listed"}
    assert t.notes == ()


def test_a_gpu_without_processes_is_not_asked_for_mps_clients() -> None:
    fake = FakeNvml([GpuSpec()])
    c = NvmlCollector(fake)
    c.collect()
    assert fake.calls[MPS_CALL] == 0
    assert list(c.mps_support.values()) == ["unknown"]


@pytest.mark.parametrize("driver", ["not_supported", "function_not_found"])
def test_a_driver_that_cannot_list_clients_is_noted_once_and_not_asked_again(
    driver: str,
) -> None:
    if driver == "not_supported":
        fake = FakeNvml([mps_spec(unsupported=frozenset({MPS_CALL}))])
    else:
        fake = FakeNvml([mps_spec()], missing_functions=frozenset({MPS_CALL}))
    c = NvmlCollector(fake)
    first = c.collect()
    assert [p.pid for p in first.gpus[0].processes] == [SERVER]
    assert not first.gpus[0].processes[0].mps_client
    assert len(first.notes) == 1
    assert MPS_CALL in first.notes[0]
    for _ in range(3):
        later = c.collect()
        assert later.notes == ()
        assert later.gpus[0].processes == first.gpus[0].processes
    assert fake.calls[MPS_CALL] == 1
    assert c.mps_support == {first.gpus[0].uuid: driver}


def test_another_mps_error_costs_the_clients_of_that_cycle_only() -> None:
    fake = FakeNvml([mps_spec()])
    fake.fail(MPS_CALL, 0, 999, times=1)  # NVML_ERROR_UNKNOWN once
    c = NvmlCollector(fake)
    first = c.collect()
    assert [p.pid for p in first.gpus[0].processes] == [SERVER]
    assert len(first.notes) == 1
    assert [p.pid for p in c.collect().gpus[0].processes] == [SERVER, 201, 202]
