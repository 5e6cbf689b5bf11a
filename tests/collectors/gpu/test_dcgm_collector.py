"""DcgmCollector against each exporter generation, served by a real HTTP server.

Expected numbers are read off the fixture text by hand and converted with the upstream
units (MiB = 2**20 bytes, mJ / 1000, MHz * 1e6, percent / 100); they are not produced by
the code under test.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from gpuledger.collectors.base import Collector, CollectorError
from gpuledger.collectors.gpu.dcgm import DcgmCollector
from gpuledger.collectors.gpu.readings import GpuReading, GpuTelemetry, WorkloadRef
from tests.support import paths as support_paths
from tests.support.standins import Behaviour, StandIn

FIXTURES = support_paths.FIXTURES / "dcgm"
MIB = 2**20
H100 = [
    "GPU-8b2281de-6d3c-22ed-0ec8-d3b864870b8b",
    "GPU-15338f3e-5fd9-962d-921a-979b820520f0",
    "GPU-838de0dd-3f65-636a-83e8-fcb0f9e03cd0",
    "GPU-47851d48-f307-a099-1a18-a942a79ec0d9",
    "GPU-a1c4e2f0-7b3d-4e59-8c21-6d0f9b3e7a12",
    "GPU-c93f0d11-2e8a-4b7c-9f45-1a6e3d2b8c70",
    "GPU-0e7d5b29-91c4-4f3a-b6d8-72e1c0a4f953",
    "GPU-f2a86c47-d35e-4a01-8b9c-5e7f3120d6ab",
]
A100_MIG = "GPU-34319582-d595-d1c7-d1d2-179bcfa61660"
A100_WHOLE = "GPU-06357e72-c3ee-614b-775f-a89e18e8cc08"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def collect_page(body: bytes, **kwargs: float) -> GpuTelemetry:
    with StandIn(Behaviour(body=body)) as s:
        c = DcgmCollector(s.url, **kwargs)  # type: ignore[arg-type]
        try:
            return c.collect()
        finally:
            c.close()


def by_key(t: GpuTelemetry) -> dict[tuple[str, int | None], GpuReading]:
    return {g.key: g for g in t.gpus}


def reasons_set(g: GpuReading) -> set[str]:
    assert g.throttle_reasons is not None
    return {name for name, on in g.throttle_reasons.items() if on}


@pytest.fixture
def refused_url() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/metrics"


# --- 3.x: 8x H100, Hostname, DCGM_FI_DRIVER_VERSION ---------------------------------


def test_h100x8_page_identity() -> None:
    t = collect_page(fixture("exporter-3.3-h100x8.prom"))
    assert t.source == "dcgm"
    assert t.hostname == "gpu-node-07"
    assert t.driver == "550.90.07"
    assert [g.uuid for g in t.gpus] == H100
    assert [g.index for g in t.gpus] == list(range(8))
    assert all(g.model == "NVIDIA H100 80GB HBM3" for g in t.gpus)
    assert all(g.mig_instance is None and not g.mig_enabled for g in t.gpus)
    assert all(g.driver == "550.90.07" for g in t.gpus)


def test_h100x8_values_after_unit_conversion() -> None:
    g = by_key(collect_page(fixture("exporter-3.3-h100x8.prom")))
    g0 = g[(H100[0], None)]
    assert g0.utilization_ratio == 0.812345  # GR_ENGINE_ACTIVE, preferred over GPU_UTIL 87
    assert g0.memory_used_bytes == 76436 * MIB
    assert g0.memory_total_bytes == (76436 + 5123) * MIB
    assert g0.power_watts == 512.347
    assert g0.energy_joules == pytest.approx(81234567.890)
    assert g0.temperature_celsius == 61
    assert g0.sm_clock_hertz == 1_980_000_000
    assert reasons_set(g0) == set()
    assert g0.last_xid == 0
    assert g0.ecc_errors == {"corrected": 0, "uncorrected": 0}
    assert g0.remapped_rows == {"correctable": 0, "uncorrectable": 0}
    assert g0.row_remap_failed is False
    assert g0.row_remap_pending is None  # DCGM_FI_DEV_ROW_REMAP_PENDING not on the page
    assert g0.xid_errors is None  # dcgm-exporter has no XID count

    g2 = g[(H100[2], None)]
    assert g2.sm_clock_hertz == 1_755_000_000
    assert reasons_set(g2) == {"sw_power_cap"}  # 4
    assert g[(H100[3], None)].last_xid == 13
    g4 = g[(H100[4], None)]
    assert g4.ecc_errors == {"corrected": 3, "uncorrected": 0}
    assert g4.remapped_rows == {"correctable": 1, "uncorrectable": 0}
    assert g4.memory_used_bytes == 21248 * MIB
    assert reasons_set(g[(H100[5], None)]) == {"sw_power_cap", "sw_thermal_slowdown"}  # 36
    assert g[(H100[5], None)].power_watts == 700.0
    g6 = g[(H100[6], None)]
    assert reasons_set(g6) == {"gpu_idle"}
    assert g6.utilization_ratio == 0.0
    assert g6.sm_clock_hertz == 345_000_000


def test_h100x8_workloads_only_where_a_pod_is_named() -> None:
    g = by_key(collect_page(fixture("exporter-3.3-h100x8.prom")))
    llama = (WorkloadRef(namespace="inference", pod="llama-70b-0", container="vllm"),)
    for i in range(4):
        assert g[(H100[i], None)].workloads == llama
    assert g[(H100[4], None)].workloads == (
        WorkloadRef(namespace="search", pod="embedder-7c9f4-x2kqp", container="server"),
    )
    assert g[(H100[6], None)].workloads == ()
    assert g[(H100[7], None)].workloads == ()


# --- 4.x MIG page (pre-rename) and its post-rename twin ------------------------------


@pytest.mark.parametrize(
    "page", ["exporter-4.x-a100-mig.prom", "exporter-4.9-a100-mig-renamed.prom"]
)
def test_mig_board_holds_board_values_once(page: str) -> None:
    t = collect_page(fixture(page))
    assert t.hostname == "a100-node-3"
    assert t.driver == "570.124.06"
    assert [g.key for g in t.gpus] == [
        (A100_MIG, None),
        (A100_MIG, 1),
        (A100_MIG, 5),
        (A100_MIG, 9),
        (A100_MIG, 13),
        (A100_WHOLE, None),
    ]
    g = by_key(t)
    board = g[(A100_MIG, None)]
    assert board.mig_enabled is True
    assert board.power_watts == 201.342
    assert board.energy_joules == 912_345_678  # 912345678000 mJ
    assert board.temperature_celsius == 38
    assert board.sm_clock_hertz == 1_410_000_000
    assert board.last_xid == 0
    assert board.ecc_errors == {"corrected": 2, "uncorrected": 0}
    assert board.remapped_rows == {"correctable": 2, "uncorrectable": 0}
    assert board.memory_used_bytes is None
    assert board.utilization_ratio is None
    assert board.workloads == ()
    for gi in (1, 5, 9, 13):
        inst = g[(A100_MIG, gi)]
        assert not inst.mig_enabled
        assert inst.power_watts is None
        assert inst.energy_joules is None
        assert inst.temperature_celsius is None
        assert inst.sm_clock_hertz is None
        assert inst.last_xid is None
        assert inst.throttle_reasons is None
        assert inst.ecc_errors is None
    # A node's energy is the sum over its readings: no joule counted twice.
    total = sum(r.energy_joules or 0.0 for r in t.gpus)
    assert total == 912_345_678 + 534_567_890


@pytest.mark.parametrize(
    "page", ["exporter-4.x-a100-mig.prom", "exporter-4.9-a100-mig-renamed.prom"]
)
def test_mig_instances(page: str) -> None:
    t = collect_page(fixture(page))
    g = by_key(t)
    i1 = g[(A100_MIG, 1)]
    assert (i1.mig_profile, i1.mig_slices) == ("3g.40gb", 3)
    assert i1.utilization_ratio == 0.712345
    assert i1.memory_used_bytes == 36864 * MIB
    assert i1.memory_total_bytes == (36864 + 3456 + 0) * MIB
    assert i1.workloads == (
        WorkloadRef(namespace="inference", pod="qwen-32b-6d8f7-abcde", container="vllm"),
    )
    i5 = g[(A100_MIG, 5)]
    assert (i5.mig_profile, i5.mig_slices, i5.utilization_ratio) == ("2g.20gb", 2, 0.250125)
    assert i5.memory_used_bytes == 12288 * MIB
    i9 = g[(A100_MIG, 9)]
    assert (i9.mig_profile, i9.mig_slices, i9.workloads) == ("1g.10gb", 1, ())
    # GPU_I_PROFILE="<<<NULL>>>": an instance of unknown profile, not a profile of that name.
    i13 = g[(A100_MIG, 13)]
    assert (i13.mig_profile, i13.mig_slices) == ("", None)
    assert i13.memory_total_bytes == (13 + 9843) * MIB
    assert any("<<<NULL>>>" in n and "13" in n for n in t.notes)


@pytest.mark.parametrize(
    "page", ["exporter-4.x-a100-mig.prom", "exporter-4.9-a100-mig-renamed.prom"]
)
def test_whole_gpu_next_to_mig(page: str) -> None:
    w = by_key(collect_page(fixture(page)))[(A100_WHOLE, None)]
    assert not w.mig_enabled
    assert w.index == 1
    assert w.utilization_ratio == 0.412345
    assert w.memory_used_bytes == 40448 * MIB
    assert w.memory_total_bytes == (40448 + 40512 + 547) * MIB  # used + free + reserved
    assert w.power_watts == 158.25
    assert w.energy_joules == 534_567_890
    assert w.sm_clock_hertz == 1_275_000_000
    assert w.last_xid == 79
    assert reasons_set(w) == {"sw_power_cap"}
    assert w.ecc_errors == {"corrected": 0, "uncorrected": 1}
    assert w.remapped_rows == {"correctable": 0, "uncorrectable": 1}


def test_pre_and_post_rename_pages_give_equal_readings() -> None:
    old = collect_page(fixture("exporter-4.x-a100-mig.prom"))
    new = collect_page(fixture("exporter-4.9-a100-mig-renamed.prom"))
    assert len(old.gpus) == 6
    assert old.gpus == new.gpus
    assert (old.hostname, old.driver) == (new.hostname, new.driver)


# --- time-slicing: vgpu label, several pods on one GPU -------------------------------


def test_time_slicing_one_reading_many_workloads() -> None:
    t = collect_page(fixture("exporter-4.x-l4-timeslicing.prom"))
    assert t.hostname == "l4-node-1"
    assert len(t.gpus) == 2
    g0, g1 = t.gpus
    assert g0.uuid == "GPU-5e0a2c44-8f1b-4d3e-a7c6-09b1d2e3f4a5"
    assert g0.workloads == (
        WorkloadRef("chat", "chat-ui-5f7d8-aaaaa", "app", vgpu="0"),
        WorkloadRef("chat", "chat-ui-5f7d8-bbbbb", "app", vgpu="1"),
        WorkloadRef("batch", "ocr-job-9k2lm", "worker", vgpu="3"),
    )
    assert g0.power_watts == 61.876
    assert g0.energy_joules == pytest.approx(4567890.123)
    assert g0.utilization_ratio == 0.73  # GPU_UTIL 73 %, no PROF field on this page
    assert g0.memory_used_bytes == 19245 * MIB
    assert g0.memory_total_bytes == (19245 + 3127 + 349) * MIB
    assert g1.workloads == ()
    assert g1.utilization_ratio == 0.0


# --- edge cases in labels and values -------------------------------------------------


def test_impossible_labels_and_blank_values() -> None:
    page = (
        b"# TYPE DCGM_FI_DEV_GPU_TEMP gauge\n"
        b'DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-aaa",modelName="X",Hostname="n"} 40\n'
        b'DCGM_FI_DEV_GPU_TEMP{gpu="1",UUID="",modelName="X",Hostname="n"} 41\n'
        b'DCGM_FI_DEV_GPU_TEMP{gpu="2",UUID="GPU-ccc",GPU_I_PROFILE="1g.5gb",'
        b'GPU_I_ID="<<<NULL>>>",Hostname="n"} 42\n'
        b"# TYPE DCGM_FI_DEV_POWER_USAGE gauge\n"
        b'DCGM_FI_DEV_POWER_USAGE{gpu="0",UUID="GPU-aaa",modelName="X",Hostname="n"} '
        b"140737488355328.000000\n"
        b"# TYPE DCGM_FI_DEV_SM_CLOCK gauge\n"
        b'DCGM_FI_DEV_SM_CLOCK{gpu="0",UUID="GPU-aaa",modelName="X",Hostname="n"} NaN\n'
    )
    t = collect_page(page)
    assert [g.key for g in t.gpus] == [("GPU-aaa", None)]
    (g,) = t.gpus
    assert g.temperature_celsius == 40
    assert g.power_watts is None  # DCGM_FP64_BLANK (2**47): no value, not 140 TW
    assert g.sm_clock_hertz is None
    assert any("without a GPU UUID" in n for n in t.notes)
    assert any("GPU_I_ID='<<<NULL>>>'" in n for n in t.notes)


def test_ratio_field_carrying_a_percent_is_read_as_percent() -> None:
    page = (
        b"# TYPE DCGM_FI_DEV_GPU_UTIL_RATIO gauge\n"
        b'DCGM_FI_DEV_GPU_UTIL_RATIO{gpu="0",UUID="GPU-aaa",hostname="n"} 57\n'
    )
    t = collect_page(page)
    assert t.gpus[0].utilization_ratio == 0.57
    assert t.notes


# --- faults --------------------------------------------------------------------------


def test_is_a_collector_and_close_closes_the_client() -> None:
    c = DcgmCollector("http://127.0.0.1:1/metrics")
    assert isinstance(c, Collector)
    assert c.name == "dcgm"
    c.close()
    with pytest.raises(RuntimeError):
        c._client.get("http://127.0.0.1:1/metrics")


def test_http_500() -> None:
    with StandIn(Behaviour(body=b"oops", status=500)) as s:
        c = DcgmCollector(s.url)
        with pytest.raises(CollectorError, match=r"^HTTP 500 from "):
            c.collect()
        c.close()


def test_hang_past_the_timeout() -> None:
    with StandIn(Behaviour(body=fixture("exporter-3.3-h100x8.prom"), delay_s=30)) as s:
        c = DcgmCollector(s.url, timeout_s=0.5)
        start = time.monotonic()
        with pytest.raises(CollectorError, match="timed out"):
            c.collect()
        assert time.monotonic() - start < 0.5 + 1.0
        c.close()


def test_truncated_mid_line_names_the_line() -> None:
    lines = fixture("exporter-3.3-h100x8.prom").split(b"\n")
    # Line 40 is a DCGM_FI_DEV_MEMORY_TEMP sample; cut it inside its label set.
    assert lines[39].startswith(b"DCGM_FI_DEV_MEMORY_TEMP{")
    body = b"\n".join(lines[:39]) + b"\n" + lines[39][:70]
    with StandIn(Behaviour(body=body)) as s:
        c = DcgmCollector(s.url)
        with pytest.raises(CollectorError, match=r"line 40: "):
            c.collect()
        c.close()


def test_huge_body_stops_at_the_cap_quickly() -> None:
    with StandIn(Behaviour(body=b"x" * 65536, repeat_body_bytes=100 * MIB)) as s:
        c = DcgmCollector(s.url)  # default 16 MiB cap
        start = time.monotonic()
        with pytest.raises(CollectorError, match="cap"):
            c.collect()
        assert time.monotonic() - start < 2.0
        c.close()


def test_connection_refused(refused_url: str) -> None:
    c = DcgmCollector(refused_url)
    with pytest.raises(CollectorError, match="connection refused"):
        c.collect()
    c.close()


def test_html_error_page_served_with_200() -> None:
    html = b"<!DOCTYPE html>\n<html><body><h1>502 Bad Gateway</h1></body></html>\n"
    with StandIn(Behaviour(body=html, content_type="text/html")) as s:
        c = DcgmCollector(s.url)
        with pytest.raises(CollectorError, match="line 1"):
            c.collect()
        c.close()


def test_valid_exposition_without_dcgm_series_is_refused() -> None:
    body = b"# TYPE node_load1 gauge\nnode_load1 0.42\n"
    with pytest.raises(CollectorError, match="no DCGM_FI_"):
        collect_page(body)
