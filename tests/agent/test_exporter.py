"""Merged NVML + DCGM readings come out as one series per device, in the schema's names."""

from __future__ import annotations

from types import MappingProxyType

from prometheus_client.parser import text_string_to_metric_families

from gpuledger import schema
from gpuledger.agent.exporter import SnapshotExporter
from gpuledger.agent.snapshot import CollectorState, Snapshot
from gpuledger.collectors.gpu.merge import merge_devices
from gpuledger.collectors.gpu.readings import (
    GpuReading,
    GpuTelemetry,
    ProcessReading,
    WorkloadRef,
    decode_throttle_reasons,
)

UUID0 = "GPU-8b2281de-6d3c-22ed-0ec8-d3b864870b8b"
UUID1 = "GPU-15338f3e-5fd9-962d-921a-979b820520f0"
H100 = "NVIDIA H100 80GB HBM3"

NVML = GpuTelemetry(
    source="nvml",
    driver="550.144.03",
    gpus=(
        GpuReading(
            uuid=UUID0, index=0, model=H100, memory_used_bytes=1.0e9, memory_total_bytes=8.5e10,
            utilization_ratio=0.5, power_watts=300.0, energy_joules=1.0e6,
            temperature_celsius=60.0, sm_clock_hertz=1.98e9, xid_errors=2, last_xid=79,
            throttle_reasons=decode_throttle_reasons(0x4),
            ecc_errors=MappingProxyType({"corrected": 3, "uncorrected": 0}),
            processes=(ProcessReading(pid=4242, used_memory_bytes=10**9),),
        ),
        # GPU 1 in MIG mode: the board, and one 3g.40gb instance (GI 1)
        GpuReading(uuid=UUID1, index=1, model=H100, mig_enabled=True, power_watts=200.0,
                   energy_joules=5.0e5, temperature_celsius=50.0),
        GpuReading(uuid=UUID1, index=1, model=H100, mig_instance=1, mig_profile="3g.40gb",
                   memory_used_bytes=2.0e9, memory_total_bytes=4.0e10, mig_slices=3,
                   mig_total_slices=7),
    ),
)  # fmt: skip
DCGM = GpuTelemetry(
    source="dcgm",
    hostname="node-a",
    gpus=(
        GpuReading(
            uuid=UUID0, index=0, model=H100, utilization_ratio=0.75, power_watts=310.0,
            memory_used_bytes=1.1e9, last_xid=31,
            workloads=(WorkloadRef(namespace="llm", pod="vllm-0", container="vllm"),),
        ),
        GpuReading(uuid=UUID1, index=1, model=H100, mig_instance=1, mig_profile="3g.40gb",
                   utilization_ratio=0.25, memory_used_bytes=2.2e9),
        # A device only DCGM sees: exported from DCGM alone
        GpuReading(uuid="GPU-only-dcgm", index=2, model=H100, power_watts=90.0),
    ),
)  # fmt: skip


def test_precedence_per_field() -> None:
    merged = {r.key: r for r in merge_devices(NVML, DCGM)}
    g0 = merged[(UUID0, None)]
    assert g0.utilization_ratio == 0.75  # DCGM engine activity wins
    assert g0.power_watts == 300.0  # NVML wins
    assert g0.memory_used_bytes == 1.0e9
    assert g0.xid_errors == 2  # count only from NVML
    assert g0.last_xid == 31  # last code from DCGM first
    assert g0.workloads == (WorkloadRef(namespace="llm", pod="vllm-0", container="vllm"),)
    assert g0.processes == (ProcessReading(pid=4242, used_memory_bytes=10**9),)
    inst = merged[(UUID1, 1)]
    assert inst.utilization_ratio == 0.25
    assert inst.memory_used_bytes == 2.0e9
    assert inst.mig_slices == 3
    assert merged[("GPU-only-dcgm", None)].power_watts == 90.0
    assert [r.key for r in merge_devices(NVML, DCGM)] == [
        (UUID0, None), (UUID1, None), (UUID1, 1), ("GPU-only-dcgm", None)
    ]  # fmt: skip


def test_lost_gpu_ignores_stale_dcgm_values() -> None:
    lost = GpuTelemetry(
        source="nvml", gpus=(GpuReading(uuid=UUID0, index=0, model=H100, lost=True),)
    )
    (merged,) = merge_devices(lost, GpuTelemetry(source="dcgm", gpus=(DCGM.gpus[0],)))
    assert merged.lost
    assert merged.power_watts is None


def snapshot(*states: CollectorState) -> Snapshot:
    return Snapshot(version=1, collectors=MappingProxyType({s.name: s for s in states}))


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return (name, frozenset({"cluster": "default", "node": "node-a", **labels}.items()))


def test_exposition_values_and_labels() -> None:
    snap = snapshot(
        CollectorState("nvml", up=True, runs=1, duration_s=0.01, last_success_unix=1.7e9,
                       reading=NVML),
        CollectorState("dcgm", up=True, runs=1, duration_s=0.02, last_success_unix=1.7e9,
                       reading=DCGM),
    )  # fmt: skip
    text = SnapshotExporter("node-a", "9.9.9").render(snap).decode()
    got = samples(text)
    g0 = {"gpu": "0", "uuid": UUID0, "model": H100, "mig_instance": "", "mig_profile": ""}
    board1 = {**g0, "gpu": "1", "uuid": UUID1}
    inst1 = {**board1, "mig_instance": "1", "mig_profile": "3g.40gb"}
    assert got[key("gpuledger_gpu_info", **g0, driver="550.144.03")] == 1.0
    assert got[key("gpuledger_gpu_utilization_ratio", **g0)] == 0.75
    assert got[key("gpuledger_gpu_power_watts", **g0)] == 300.0
    assert got[key("gpuledger_gpu_energy_joules_total", **g0)] == 1.0e6
    assert got[key("gpuledger_gpu_sm_clock_hertz", **g0)] == 1.98e9
    assert got[key("gpuledger_gpu_xid_errors_total", **g0)] == 2.0
    assert got[key("gpuledger_gpu_throttled", **g0, reason="sw_power_cap")] == 1.0
    assert got[key("gpuledger_gpu_throttled", **g0, reason="hw_thermal_slowdown")] == 0.0
    assert got[key("gpuledger_gpu_ecc_errors_total", **g0, type="corrected")] == 3.0
    assert got[key("gpuledger_gpu_lost", **g0)] == 0.0
    # board-level energy only on the board series, per-instance memory on the instance
    assert got[key("gpuledger_gpu_energy_joules_total", **board1)] == 5.0e5
    assert key("gpuledger_gpu_energy_joules_total", **inst1) not in got
    assert got[key("gpuledger_gpu_memory_used_bytes", **inst1)] == 2.0e9
    # absent values are absent, not zero
    assert key("gpuledger_gpu_utilization_ratio", **board1) not in got
    assert got[key("gpuledger_collector_up", collector="dcgm")] == 1.0
    assert got[key("gpuledger_build_info", version="9.9.9")] == 1.0
    exported = {name for name, _ in got}
    allowed = schema.all_series_names()
    assert exported <= allowed, exported - allowed


def test_every_series_carries_the_configured_cluster() -> None:
    """Issue 18: one label on every series of every family, set once for the exporter."""
    snap = snapshot(
        CollectorState("nvml", up=True, runs=1, duration_s=0.01, last_success_unix=1.7e9,
                       reading=NVML),
    )  # fmt: skip
    text = SnapshotExporter("node-a", "9.9.9", cluster="prod-eu").render(snap).decode()
    series = [s for fam in text_string_to_metric_families(text) for s in fam.samples]
    assert len(series) > 20
    assert {s.labels.get("cluster") for s in series} == {"prod-eu"}
    assert {s.labels.get("node") for s in series} == {"node-a"}


def test_collector_down_exports_other_source_alone() -> None:
    snap = snapshot(
        CollectorState("nvml", up=True, reading=NVML),
        CollectorState("dcgm", up=False, last_error="HTTP 500", reading=None),
    )
    got = samples(SnapshotExporter("node-a", "1").render(snap).decode())
    g0 = {"gpu": "0", "uuid": UUID0, "model": H100, "mig_instance": "", "mig_profile": ""}
    assert got[key("gpuledger_gpu_utilization_ratio", **g0)] == 0.5  # NVML's, DCGM is down
    assert got[key("gpuledger_collector_up", collector="dcgm")] == 0.0
    assert key("gpuledger_gpu_power_watts", gpu="2", uuid="GPU-only-dcgm", model=H100,
               mig_instance="", mig_profile="") not in got  # fmt: skip


def test_vllm_series_histograms_keep_upstream_buckets() -> None:
    from types import MappingProxyType as MP

    from gpuledger.collectors.vllm.types import (
        EndpointScrape,
        Histogram,
        VllmEndpoint,
        VllmSeries,
        VllmTelemetry,
    )

    ep = VllmEndpoint(url="http://10.0.0.5:8000", service="chat", namespace="llm", pod="chat-0")
    down = VllmEndpoint(url="http://10.0.0.6:8000", service="rag", namespace="llm", pod="rag-0")
    ttft = Histogram(buckets=((0.001, 0.0), (0.02, 3.0), (0.5, 9.0), (float("inf"), 10.0)),
                     sum=2.25, count=10.0)  # fmt: skip
    series = VllmSeries(
        model_name="meta-llama/Llama-3.1-70B", engine="1", requests_running=4.0,
        requests_waiting=0.0, kv_cache_usage_ratio=0.375, prompt_tokens=12345.0,
        generation_tokens=678.0, request_success=MP({"stop": 9.0, "length": 1.0}), ttft=ttft,
        prefix_cache_queries=900.0, prefix_cache_hits=300.0,
        prefill_time=Histogram(((0.3, 2.0), (float("inf"), 3.0)), sum=1.5, count=3.0),
        decode_time=Histogram(((5.0, 1.0), (float("inf"), 3.0)), sum=21.0, count=3.0),
    )  # fmt: skip
    tel = VllmTelemetry(
        (EndpointScrape(ep, up=True, series=(series,)), EndpointScrape(down, up=False, error="x"))
    )
    snap = snapshot(CollectorState("vllm", up=True, reading=tel))
    got = samples(SnapshotExporter("node-a", "1").render(snap).decode())
    lab = {"service": "chat", "namespace": "llm", "pod": "chat-0",
           "model_name": "meta-llama/Llama-3.1-70B", "engine": "1"}  # fmt: skip
    assert got[key("gpuledger_vllm_kv_cache_usage_ratio", **lab)] == 0.375
    assert got[key("gpuledger_vllm_prompt_tokens_total", **lab)] == 12345.0
    assert got[key("gpuledger_vllm_request_success_total", **lab, finished_reason="length")] == 1.0
    buckets = {
        dict(labels)["le"]: v
        for (name, labels), v in got.items()
        if name == "gpuledger_vllm_time_to_first_token_seconds_bucket"
    }
    assert buckets == {"0.001": 0.0, "0.02": 3.0, "0.5": 9.0, "+Inf": 10.0}
    assert got[key("gpuledger_vllm_time_to_first_token_seconds_count", **lab)] == 10.0
    assert got[key("gpuledger_vllm_time_to_first_token_seconds_sum", **lab)] == 2.25
    assert got[key("gpuledger_vllm_prefix_cache_queries_total", **lab)] == 900.0
    assert got[key("gpuledger_vllm_prefix_cache_hits_total", **lab)] == 300.0
    assert got[key("gpuledger_vllm_request_prefill_time_seconds_sum", **lab)] == 1.5
    assert got[key("gpuledger_vllm_request_prefill_time_seconds_bucket", **lab, le="0.3")] == 2.0
    assert got[key("gpuledger_vllm_request_decode_time_seconds_count", **lab)] == 3.0
    assert got[key("gpuledger_vllm_request_decode_time_seconds_bucket", **lab, le="+Inf")] == 3.0
    up = {dict(labels)["service"]: v for (name, labels), v in got.items()
          if name == "gpuledger_vllm_endpoint_up"}  # fmt: skip
    assert up == {"chat": 1.0, "rag": 0.0}


def test_pgvector_tables_indexes_growth_and_days_until_full() -> None:
    from types import MappingProxyType as MP

    from gpuledger.collectors.pgvector.export import GrowthState
    from gpuledger.collectors.pgvector.growth import Growth
    from gpuledger.collectors.pgvector.source import PGVECTOR_SOURCE
    from gpuledger.collectors.pgvector.types import (
        DatabaseStats,
        IndexBuild,
        PgTelemetry,
        TableStats,
        VectorColumn,
        VectorIndex,
    )

    docs = TableStats(
        "Ünïcode Schema", 'we"ird Table', heap_bytes=8192, toast_bytes=16384, index_bytes=40960,
        total_bytes=65536, rows_estimate=1000.0, dead_tuples=12,
        vector_columns=(VectorColumn("embedding", "vector", 1536),),
        vector_indexes=(VectorIndex("docs_hnsw", "hnsw", 32768,
                                    MP({"m": "24", "ef_construction": "100"})),),
    )  # fmt: skip
    db = DatabaseStats(
        "rag", up=True, database_bytes=4 * 10**10, capacity_bytes=10**11, tables=(docs,),
        skipped_locked=("public.locked",),
        index_builds=(IndexBuild("public", "t", "t_ivf", "building index", 25, 100, 0, 0),),
    )  # fmt: skip
    down = DatabaseStats("analytics", up=False, error="connection refused")
    growth = {
        ("rag", "", ""): Growth(10**9, 12),
        ("rag", "Ünïcode Schema", 'we"ird Table'): Growth(5.0, 12),
    }
    exporter = SnapshotExporter("node-a", "1", live={PGVECTOR_SOURCE.name: GrowthState(growth)})
    snap = snapshot(CollectorState("pgvector", up=True, reading=PgTelemetry((db, down))))
    got = samples(exporter.render(snap).decode())
    t = {"database": "rag", "schema": "Ünïcode Schema", "table": 'we"ird Table'}
    assert got[key("gpuledger_pg_table_bytes", **t, kind="toast")] == 16384.0
    assert got[key("gpuledger_pg_table_bytes", **t, kind="total")] == 65536.0
    assert got[key("gpuledger_pg_dead_tuples", **t)] == 12.0
    assert (
        got[key("gpuledger_pgvector_column_dimensions", **t, column="embedding", type="vector")]
        == 1536.0
    )
    assert (
        got[key("gpuledger_pgvector_index_bytes", **t, index="docs_hnsw", method="hnsw")] == 32768.0
    )
    assert got[key("gpuledger_pgvector_index_info", **t, index="docs_hnsw", method="hnsw", m="24",
                   ef_construction="100", lists="")] == 1.0  # fmt: skip
    assert got[key("gpuledger_pg_growth_bytes_per_day", **t)] == 5.0
    assert got[key("gpuledger_pg_growth_bytes_per_day", database="rag", schema="", table="")] == 1e9
    # (1e11 - 4e10) / 1e9 per day
    assert got[key("gpuledger_pg_days_until_full", database="rag")] == 60.0
    assert got[key("gpuledger_pg_skipped_relations", database="rag")] == 1.0
    assert got[key("gpuledger_pg_index_build_progress_ratio", database="rag", schema="public",
                   table="t", index="t_ivf", phase="building index")] == 0.25  # fmt: skip
    assert got[key("gpuledger_pg_database_up", database="analytics")] == 0.0
    assert key("gpuledger_pg_database_bytes", database="analytics") not in got
