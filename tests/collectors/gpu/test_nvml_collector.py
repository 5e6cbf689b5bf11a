"""The NVML collector against the fake NVML (and, once, against the real library).

Expected readings are written out by hand from the fake's configured inputs.
"""

from __future__ import annotations

import ctypes
import inspect

import pynvml
import pytest

from gpuledger.collectors.base import Collector, CollectorDisabled, CollectorError
from gpuledger.collectors.gpu import nvml_backend
from gpuledger.collectors.gpu.nvml import NvmlCollector, handle_key, mig_profile_from_name
from gpuledger.collectors.gpu.nvml_backend import NvmlApi, load_real
from gpuledger.collectors.gpu.readings import GpuReading, ProcessReading
from gpuledger.sim.nvml_fake import (
    FakeHandle,
    FakeNvml,
    GpuSpec,
    MigInstanceSpec,
    ProcessSpec,
)

GIB = 1024**3
MIB = 1024**2
H100 = "NVIDIA H100 80GB HBM3"
A100_40 = "NVIDIA A100-SXM4-40GB"
NO_THROTTLE = {
    "gpu_idle": False,
    "applications_clocks_setting": False,
    "sw_power_cap": False,
    "hw_slowdown": False,
    "sync_boost": False,
    "sw_thermal_slowdown": False,
    "hw_thermal_slowdown": False,
    "hw_power_brake_slowdown": False,
    "display_clock_setting": False,
}


def collector_for(*specs: GpuSpec, **kwargs: object) -> tuple[FakeNvml, NvmlCollector]:
    fake = FakeNvml(list(specs), **kwargs)  # type: ignore[arg-type]
    return fake, NvmlCollector(fake)


def api_names() -> list[str]:
    return sorted(n for n in dir(NvmlApi) if n.startswith("nvml"))


# --- the seam ----------------------------------------------------------------------------
def test_backend_codes_are_the_librarys() -> None:
    names = [n for n in dir(nvml_backend) if n.startswith(("NVML_", "nvmlEventType"))]
    assert len(names) > 15
    for name in names:
        if name == "NVML_VALUE_NOT_AVAILABLE_UINT":
            assert getattr(nvml_backend, name) == pynvml.NVML_VALUE_NOT_AVAILABLE_uint.value
        else:
            assert getattr(nvml_backend, name) == getattr(pynvml, name), name


@pytest.mark.parametrize("name", api_names())
def test_protocol_and_fake_match_the_real_signatures(name: str) -> None:
    real = inspect.signature(getattr(pynvml, name))
    fake = inspect.signature(getattr(FakeNvml, name))
    proto = inspect.signature(getattr(NvmlApi, name))
    real_params = [(p.name, p.default) for p in real.parameters.values()]
    assert [(p.name, p.default) for p in list(fake.parameters.values())[1:]] == real_params
    assert [(p.name, p.default) for p in list(proto.parameters.values())[1:]] == real_params


def test_load_real_is_the_pynvml_module() -> None:
    assert load_real() is pynvml


def test_collector_satisfies_the_runtime_protocol() -> None:
    _, c = collector_for(GpuSpec())
    assert isinstance(c, Collector)
    assert c.name == "nvml"
    assert NvmlCollector(FakeNvml([GpuSpec()]), name="nvml-b").name == "nvml-b"


# --- the fake behaves like the library -----------------------------------------------------
def test_fake_is_uninitialized_until_init_like_the_library() -> None:
    fake = FakeNvml([GpuSpec()])
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fake.nvmlDeviceGetCount()
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fake.nvmlShutdown()
    fake.nvmlInit()
    assert fake.nvmlDeviceGetCount() == 1
    fake.nvmlShutdown()
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fake.nvmlDeviceGetHandleByIndex(0)


def test_real_library_is_uninitialized_before_init_too() -> None:
    # The same exception class the fake raises (with or without a driver on this host).
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        pynvml.nvmlDeviceGetCount()


def test_fake_errors_are_the_librarys_classes() -> None:
    fake = FakeNvml([GpuSpec(unsupported=frozenset({"nvmlDeviceGetPowerUsage"}))])
    fake.nvmlInit()
    h = fake.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        fake.nvmlDeviceGetPowerUsage(h)
    fake.fail("nvmlDeviceGetTemperature", 0, pynvml.NVML_ERROR_UNKNOWN, times=1)
    with pytest.raises(pynvml.NVMLError_Unknown):
        fake.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)
    assert fake.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU) == 35
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        fake.nvmlDeviceGetUUID("not a handle")
    with pytest.raises(pynvml.NVMLError_Timeout):
        fake.nvmlEventSetWait(fake.nvmlEventSetCreate(), 0)


def test_fake_mig_devices_look_like_real_ones() -> None:
    fake = FakeNvml(
        [GpuSpec(model=H100, mig=(MigInstanceSpec("1g.10gb", 9), MigInstanceSpec("3g.40gb", 2)))]
    )
    fake.nvmlInit()
    h = fake.nvmlDeviceGetHandleByIndex(0)
    assert fake.nvmlDeviceGetMigMode(h) == [1, 1]
    assert fake.nvmlDeviceGetMaxMigDeviceCount(h) == 7
    m = fake.nvmlDeviceGetMigDeviceHandleByIndex(h, 0)
    assert fake.nvmlDeviceGetName(m) == "NVIDIA H100 80GB HBM3 MIG 1g.10gb"
    assert fake.nvmlDeviceGetUUID(m).startswith("MIG-")
    attrs = fake.nvmlDeviceGetAttributes(m)
    assert (attrs.gpuInstanceSliceCount, attrs.multiprocessorCount, attrs.memorySizeMB) == (
        1,
        16,
        9984,
    )
    with pytest.raises(pynvml.NVMLError_NotFound):  # an unused index below the maximum
        fake.nvmlDeviceGetMigDeviceHandleByIndex(h, 2)
    with pytest.raises(pynvml.NVMLError_NotSupported):  # no utilization in MIG mode
        fake.nvmlDeviceGetUtilizationRates(h)
    with pytest.raises(pynvml.NVMLError_NotSupported):  # board quantity on a MIG handle
        fake.nvmlDeviceGetPowerUsage(m)


# --- a whole GPU -----------------------------------------------------------------------------
def test_whole_gpu_every_field_with_units_converted() -> None:
    fake, c = collector_for(
        GpuSpec(
            model=H100,
            uuid="GPU-11111111-2222-3333-4444-555555555555",
            minor_number=6,  # not the index: the kernel's numbering, not NVML's order
            processes=(ProcessSpec(4242, 40 * GIB), ProcessSpec(4343, None)),
            memory_used_bytes=41 * GIB,
            utilization_gpu=83,
            utilization_memory=40,
            power_mw=312_456,
            energy_mj=9_876_543_210,
            temperature_c=61,
            sm_clock_mhz=1755,
            clocks_event_reasons=0x4 | 0x40,
            ecc_corrected=3,
            ecc_uncorrected=1,
            remapped_rows=(2, 1, 1, 0),
        ),
        driver_version="550.127.05",
    )
    fake.add_process_sample(0, 4242, 1_000, sm_util=70)
    fake.add_process_sample(0, 4242, 2_000, sm_util=50)

    t = c.collect()

    assert t.source == "nvml"
    assert t.driver == "550.127.05"
    assert t.notes == ()
    assert t.gpus == (
        GpuReading(
            uuid="GPU-11111111-2222-3333-4444-555555555555",
            index=0,
            model="NVIDIA H100 80GB HBM3",
            minor_number=6,
            driver="550.127.05",
            memory_used_bytes=41 * GIB,
            memory_total_bytes=81559 * MIB,
            utilization_ratio=0.83,
            power_watts=312.456,
            energy_joules=9_876_543.21,
            temperature_celsius=61.0,
            sm_clock_hertz=1_755_000_000.0,
            throttle_reasons={**NO_THROTTLE, "sw_power_cap": True, "hw_thermal_slowdown": True},
            xid_errors=0,
            last_xid=0,  # the event set watches this GPU and has seen none
            ecc_errors={"corrected": 3, "uncorrected": 1},
            remapped_rows={"correctable": 2, "uncorrectable": 1},
            row_remap_pending=True,
            row_remap_failed=False,
            processes=(
                ProcessReading(pid=4242, used_memory_bytes=40 * GIB, sm_utilization_ratio=0.6),
                ProcessReading(pid=4343, used_memory_bytes=None, sm_utilization_ratio=None),
            ),
        ),
    )


def test_not_supported_fields_are_absent_not_zero_and_make_no_note() -> None:
    _fake, c = collector_for(
        GpuSpec(
            model="NVIDIA L40S",
            power_mw=90_000,
            unsupported=frozenset(
                {
                    "nvmlDeviceGetTotalEnergyConsumption",
                    "nvmlDeviceGetTotalEccErrors",
                    "nvmlDeviceGetRemappedRows",
                    "nvmlDeviceGetUtilizationRates",
                }
            ),
        )
    )
    (r,) = c.collect().gpus
    assert r.energy_joules is None
    assert r.utilization_ratio is None
    assert r.ecc_errors is None
    assert r.remapped_rows is None
    assert r.row_remap_pending is None
    assert r.row_remap_failed is None
    assert r.power_watts == 90.0
    assert r.memory_total_bytes == 46068 * MIB
    assert r.mig_enabled is False  # the L40S has no MIG: GetMigMode is NOT_SUPPORTED
    assert c.collect().notes == ()


def test_another_error_costs_one_field_and_leaves_a_note() -> None:
    fake, c = collector_for(GpuSpec(power_mw=250_000, temperature_c=50), GpuSpec(power_mw=1_000))
    fake.fail("nvmlDeviceGetPowerUsage", 0, pynvml.NVML_ERROR_UNKNOWN, times=1)
    t = c.collect()
    r0, r1 = t.gpus
    assert r0.power_watts is None
    assert r0.temperature_celsius == 50.0  # the rest of the GPU is still read
    assert r1.power_watts == 1.0
    assert len(t.notes) == 1
    assert "GPU 0" in t.notes[0]
    assert "power" in t.notes[0]
    assert "Unknown Error" in t.notes[0]
    t2 = c.collect()
    assert t2.gpus[0].power_watts == 250.0
    assert t2.notes == ()


def test_throttle_reasons_fall_back_to_the_pre_r535_call_only_when_missing() -> None:
    fake, c = collector_for(GpuSpec(clocks_event_reasons=0x1))
    c.collect()
    assert fake.calls["nvmlDeviceGetCurrentClocksThrottleReasons"] == 0

    fake, c = collector_for(GpuSpec(clocks_event_reasons=0x1))
    fake.fail("nvmlDeviceGetCurrentClocksEventReasons", None, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
    r = c.collect().gpus[0]
    assert r.throttle_reasons == {**NO_THROTTLE, "gpu_idle": True}
    c.collect()
    assert fake.calls["nvmlDeviceGetCurrentClocksEventReasons"] == 1  # not tried again
    assert fake.calls["nvmlDeviceGetCurrentClocksThrottleReasons"] == 2


def test_throttle_reasons_fall_back_when_the_bindings_lack_the_newer_call() -> None:
    class OldBindings(FakeNvml):
        nvmlDeviceGetCurrentClocksEventReasons = None  # type: ignore[assignment]

    fake = OldBindings([GpuSpec(clocks_event_reasons=0x8)])
    r = NvmlCollector(fake).collect().gpus[0]  # type: ignore[arg-type]
    assert r.throttle_reasons == {**NO_THROTTLE, "hw_slowdown": True}


# --- processes -------------------------------------------------------------------------------
def test_process_utilization_not_found_means_no_value() -> None:
    fake, c = collector_for(GpuSpec(processes=(ProcessSpec(7, GIB),)))
    (p,) = c.collect().gpus[0].processes
    assert p == ProcessReading(pid=7, used_memory_bytes=GIB, sm_utilization_ratio=None)

    fake.add_process_sample(0, 7, 5_000_000, sm_util=35)
    fake.add_process_sample(0, 99, 5_000_000, sm_util=80)  # a pid no longer running
    t = c.collect()
    assert t.gpus[0].processes[0].sm_utilization_ratio == 0.35
    assert t.notes == ()

    # No sample newer than the last one seen: NOT_FOUND, so no value (not the old one).
    assert c.collect().gpus[0].processes[0].sm_utilization_ratio is None
    assert fake.calls["nvmlDeviceGetProcessUtilization"] == 3


# --- MIG -------------------------------------------------------------------------------------
def test_mig_gpu_is_a_board_plus_one_reading_per_instance() -> None:
    _fake, c = collector_for(
        GpuSpec(
            model=A100_40,
            uuid="GPU-aaaaaaaa-0000-0000-0000-000000000000",
            power_mw=180_500,
            energy_mj=5_000,
            temperature_c=44,
            sm_clock_mhz=1410,
            minor_number=3,
            mig=(  # placements (first slice) as NVIDIA's A100 placement table allows
                MigInstanceSpec(
                    "3g.20gb",
                    2,
                    uuid="MIG-3333",
                    processes=(ProcessSpec(100, 10 * GIB),),
                    placement_start=4,
                ),
                MigInstanceSpec("1g.5gb", 13, uuid="MIG-1111", placement_start=2),
                MigInstanceSpec(
                    "2g.10gb",
                    5,
                    uuid="MIG-2222",
                    processes=(ProcessSpec(101, None),),
                    placement_start=0,
                ),
            ),
        )
    )
    t = c.collect()
    assert t.notes == ()
    board, *instances = t.gpus
    assert board == GpuReading(
        uuid="GPU-aaaaaaaa-0000-0000-0000-000000000000",
        index=0,
        minor_number=3,
        model="NVIDIA A100-SXM4-40GB",
        driver="550.127.05",
        mig_enabled=True,
        mig_total_slices=7,
        power_watts=180.5,
        energy_joules=5.0,
        temperature_celsius=44.0,
        sm_clock_hertz=1.41e9,
        throttle_reasons=NO_THROTTLE,
        xid_errors=0,
        last_xid=0,
        ecc_errors={"corrected": 0, "uncorrected": 0},
        remapped_rows={"correctable": 0, "uncorrectable": 0},
        row_remap_pending=False,
        row_remap_failed=False,
    )

    def instance(gi: int, profile: str, mig_uuid: str, slices: int, mem_mib: int,
                 used: int, procs: tuple[ProcessReading, ...],
                 start: int) -> GpuReading:  # fmt: skip
        return GpuReading(
            uuid="GPU-aaaaaaaa-0000-0000-0000-000000000000",
            index=0,
            model="NVIDIA A100-SXM4-40GB",
            minor_number=3,
            mig_placement_start=start,
            driver="550.127.05",
            mig_instance=gi,
            mig_profile=profile,
            mig_device_uuid=mig_uuid,
            mig_slices=slices,
            mig_total_slices=7,
            memory_used_bytes=used,
            memory_total_bytes=mem_mib * MIB,
            processes=procs,
        )

    assert instances == [
        instance(2, "3g.20gb", "MIG-3333", 3, 19968, 10 * GIB,
                 (ProcessReading(100, 10 * GIB, None, gpu_instance_id=2, compute_instance_id=0),),
                 4),
        instance(5, "2g.10gb", "MIG-2222", 2, 9856, 0,
                 (ProcessReading(101, None, None, gpu_instance_id=5, compute_instance_id=0),), 0),
        instance(13, "1g.5gb", "MIG-1111", 1, 4864, 0, (), 2),
    ]  # fmt: skip
    # Board quantities are read once, on the board: energy summed over readings is the GPU's.
    assert sum(r.energy_joules or 0 for r in t.gpus) == 5.0


def test_mig_mode_pending_is_not_current() -> None:
    # MIG enabled but awaiting a GPU reset: NVML still answers as a whole GPU.
    _, c = collector_for(GpuSpec(model=H100, mig_pending=True, utilization_gpu=10))
    (r,) = c.collect().gpus
    assert r.mig_enabled is False
    assert r.utilization_ratio == 0.1


@pytest.mark.parametrize(
    ("name", "profile"),
    [
        ("NVIDIA H100 80GB HBM3 MIG 1g.10gb", "1g.10gb"),
        ("NVIDIA A100-SXM4-40GB MIG 3g.20gb", "3g.20gb"),
        ("NVIDIA A100-SXM4-80GB MIG 1c.3g.40gb", "1c.3g.40gb"),
        ("NVIDIA H100 80GB HBM3 MIG 1g.10gb+me", "1g.10gb+me"),
        ("NVIDIA H100 80GB HBM3", ""),
    ],
)
def test_mig_profile_from_device_name(name: str, profile: str) -> None:
    assert mig_profile_from_name(name) == profile


# --- lost GPUs ---------------------------------------------------------------------------------
def test_a_lost_gpu_is_reported_lost_and_the_others_are_complete() -> None:
    fake, c = collector_for(
        GpuSpec(power_mw=100_000),
        GpuSpec(uuid="GPU-lost", power_mw=200_000),
        GpuSpec(model=H100, power_mw=300_000, mig=(MigInstanceSpec("7g.80gb", 0),)),
    )
    c.collect()
    fake.mark_lost(1)
    t = c.collect()
    assert [r.index for r in t.gpus] == [0, 1, 2, 2]
    assert t.gpus[1] == GpuReading(
        uuid="GPU-lost", index=1, model="NVIDIA H100 80GB HBM3", driver="550.127.05", lost=True
    )
    assert t.gpus[0].power_watts == 100.0
    assert t.gpus[0].ecc_errors is not None
    assert t.gpus[2].power_watts == 300.0
    assert t.gpus[3].mig_profile == "7g.80gb"
    assert t.notes == ()

    # Lost while its MIG devices are enumerated: the board already read is dropped too.
    fake.fail("nvmlDeviceGetMigDeviceHandleByIndex", 2, pynvml.NVML_ERROR_GPU_IS_LOST)
    fake.recover(1)
    t = c.collect()
    assert [(r.index, r.lost) for r in t.gpus] == [(0, False), (1, False), (2, True)]


def test_a_gpu_lost_before_it_was_identified_is_picked_up_when_it_answers() -> None:
    fake, c = collector_for(GpuSpec(), GpuSpec())
    fake.mark_lost(0)
    t = c.collect()
    assert [r.index for r in t.gpus] == [1]
    assert any("GPU 0 is lost" in n for n in t.notes)
    fake.recover(0)
    assert [r.index for r in c.collect().gpus] == [0, 1]


# --- init and lifecycle ------------------------------------------------------------------------
def test_library_not_found_disables_the_collector_with_what_to_check() -> None:
    fake, c = collector_for(GpuSpec(), init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    with pytest.raises(CollectorDisabled) as info:
        c.collect()
    message = str(info.value)
    assert "libnvidia-ml.so.1" in message
    assert "driver" in message
    assert "NVIDIA_VISIBLE_DEVICES" in message
    assert "runtimeClassName" in message
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__
    with pytest.raises(CollectorDisabled):
        c.collect()
    assert fake.calls["nvmlInit"] == 1  # not retried


@pytest.mark.parametrize(
    "code",
    [pynvml.NVML_ERROR_DRIVER_NOT_LOADED, pynvml.NVML_ERROR_NO_PERMISSION],
)
def test_other_hopeless_init_errors_disable_too(code: int) -> None:
    _, c = collector_for(GpuSpec(), init_error=code)
    with pytest.raises(CollectorDisabled):
        c.collect()


def test_a_transient_init_error_is_retried_next_cycle() -> None:
    fake, c = collector_for(GpuSpec(), init_error=pynvml.NVML_ERROR_UNKNOWN)
    with pytest.raises(CollectorError) as info:
        c.collect()
    assert not isinstance(info.value, CollectorDisabled)
    fake.init_error = None
    assert len(c.collect().gpus) == 1
    assert fake.calls["nvmlInit"] == 2


def test_no_visible_gpu_disables_and_shuts_nvml_down() -> None:
    fake, c = collector_for()
    with pytest.raises(CollectorDisabled, match="NVIDIA_VISIBLE_DEVICES"):
        c.collect()
    assert fake.refcount == 0


def test_nvml_gone_mid_run_fails_the_cycle_then_reinitializes() -> None:
    fake, c = collector_for(GpuSpec(power_mw=5_000))
    c.collect()
    fake.nvmlShutdown()  # someone else shut the library down under us
    with pytest.raises(CollectorError, match="initialized again"):
        c.collect()
    assert c.collect().gpus[0].power_watts == 5.0
    assert fake.calls["nvmlInit"] == 2


def test_init_is_lazy_and_close_releases_everything() -> None:
    fake, c = collector_for(GpuSpec())
    assert fake.calls["nvmlInit"] == 0
    c.close()  # before any collect: nothing to release
    assert fake.calls["nvmlShutdown"] == 0
    c.collect()
    assert fake.refcount == 1
    assert fake.live_event_sets == 1
    c.close()
    assert fake.refcount == 0
    assert fake.live_event_sets == 0
    c.close()
    assert fake.calls["nvmlShutdown"] == 1


# --- XID events ----------------------------------------------------------------------------
def test_xid_events_are_counted_per_gpu_and_drained_without_blocking() -> None:
    fake, c = collector_for(GpuSpec(), GpuSpec(), GpuSpec(supported_events=0x1 | 0x2))
    t = c.collect()
    assert [r.xid_errors for r in t.gpus] == [0, 0, None]  # GPU 2 cannot report XIDs

    fake.inject_xid(0, 31)
    fake.inject_xid(0, 43)
    fake.inject_xid(1, 79)
    fake.inject_xid(2, 13)  # not registered there: never delivered
    t = c.collect()
    assert [(r.xid_errors, r.last_xid) for r in t.gpus] == [(2, 43), (1, 79), (None, None)]

    t = c.collect()  # drained: counted once, kept cumulatively
    assert [(r.xid_errors, r.last_xid) for r in t.gpus] == [(2, 43), (1, 79), (None, None)]
    fake.inject_xid(1, 48)
    assert c.collect().gpus[1].xid_errors == 2
    assert fake.wait_timeouts
    assert set(fake.wait_timeouts) == {0}


def test_an_xid_storm_is_drained_over_several_cycles() -> None:
    from gpuledger.collectors.gpu import nvml

    fake, c = collector_for(GpuSpec())
    c.collect()
    for _ in range(nvml.MAX_EVENTS_PER_CYCLE + 5):
        fake.inject_xid(0, 31)
    t = c.collect()
    assert t.gpus[0].xid_errors == nvml.MAX_EVENTS_PER_CYCLE
    assert any("XID events pending" in n for n in t.notes)
    assert c.collect().gpus[0].xid_errors == nvml.MAX_EVENTS_PER_CYCLE + 5


def test_real_handles_are_matched_by_address() -> None:
    a, b = pynvml.struct_c_nvmlDevice_t(), pynvml.struct_c_nvmlDevice_t()
    p1 = ctypes.pointer(a)
    p2 = ctypes.cast(ctypes.addressof(a), pynvml.c_nvmlDevice_t)
    assert p1 is not p2
    assert handle_key(p1) == handle_key(p2)
    assert handle_key(p1) != handle_key(ctypes.pointer(b))
    assert handle_key(FakeHandle(1)) == handle_key(FakeHandle(1))
    assert handle_key(FakeHandle(1)) != handle_key(FakeHandle(2))


# --- the real library on this host --------------------------------------------------------------
def _driver_present() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


def test_real_library_without_a_driver_disables_the_collector() -> None:
    if _driver_present():
        pytest.skip("an NVIDIA driver is present on this host")
    c = NvmlCollector(load_real())
    with pytest.raises(CollectorDisabled, match=r"libnvidia-ml\.so\.1"):
        c.collect()
    c.close()
