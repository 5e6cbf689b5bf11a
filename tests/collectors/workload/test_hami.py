"""HAMi's allocation annotation parsed as HAMi writes it (pkg/device/devices.go,
EncodePodSingleDevice / EncodeContainerDevices): containers ended by ';', devices by ':',
fields '<uuid>,<type>,<memory MiB>,<cores %>'."""

from __future__ import annotations

from gpuledger.collectors.workload.hami import (
    ALLOCATED_ANNOTATION,
    HamiDevice,
    declared_core_share,
    parse_allocated,
)

# as shown in HAMi's docs (one container, 3000 MiB, no core limit) and a 30 % one
DOC_EXAMPLE = "GPU-0fc3eda5-e98b-a25b-5b0d-cf5c855d1448,NVIDIA,3000,0:;"
GPU_A = "GPU-03f69c50-207a-2038-9b45-23cac89cb67d"
GPU_B = "GPU-5c3a1e2b-7f4d-4e8a-9b6c-1d2e3f4a5b6c"


def test_one_container_one_device() -> None:
    assert parse_allocated(DOC_EXAMPLE) == (
        (HamiDevice("GPU-0fc3eda5-e98b-a25b-5b0d-cf5c855d1448", "NVIDIA", 3000, 0),),
    )


def test_several_containers_and_devices_keep_their_order() -> None:
    value = f"{GPU_A},NVIDIA,3000,30:{GPU_B},NVIDIA,1000,10:;;{GPU_A},NVIDIA,2000,20:;"
    assert parse_allocated(value) == (
        (HamiDevice(GPU_A, "NVIDIA", 3000, 30), HamiDevice(GPU_B, "NVIDIA", 1000, 10)),
        (HamiDevice(GPU_A, "NVIDIA", 2000, 20),),
    )


def test_malformed_entries_are_skipped() -> None:
    value = f"{GPU_A},NVIDIA,3000:{GPU_B},NVIDIA,x,10:,NVIDIA,1,1:{GPU_A},NVIDIA,1,5:;"
    assert parse_allocated(value) == ((HamiDevice(GPU_A, "NVIDIA", 1, 5),),)
    assert parse_allocated("") == ()
    assert parse_allocated(";") == ()


def test_declared_share_sums_the_pods_containers_on_that_gpu() -> None:
    value = f"{GPU_A},NVIDIA,3000,30:{GPU_B},NVIDIA,1000,10:;{GPU_A},NVIDIA,2000,20:;"
    annotations = {ALLOCATED_ANNOTATION: value}
    assert declared_core_share(annotations, GPU_A) == 0.5  # 30 + 20
    assert declared_core_share(annotations, GPU_B) == 0.1
    assert declared_core_share(annotations, "GPU-other") is None


def test_no_annotation_or_zero_cores_declares_nothing() -> None:
    assert declared_core_share({}, GPU_A) is None
    assert declared_core_share({ALLOCATED_ANNOTATION: ""}, GPU_A) is None
    zero = {ALLOCATED_ANNOTATION: DOC_EXAMPLE}
    assert declared_core_share(zero, "GPU-0fc3eda5-e98b-a25b-5b0d-cf5c855d1448") is None


def test_a_declaration_over_the_whole_gpu_is_capped() -> None:
    value = f"{GPU_A},NVIDIA,1,80:;{GPU_A},NVIDIA,1,70:;"
    assert declared_core_share({ALLOCATED_ANNOTATION: value}, GPU_A) == 1.0
