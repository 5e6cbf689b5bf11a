"""The schema follows Prometheus naming conventions and docs/metrics.md is generated from it."""

from __future__ import annotations

import re

import pytest

from gpuledger import schema
from gpuledger.schema import Kind
from tests.support.paths import REPO_ROOT

ROOT = REPO_ROOT


def test_docs_metrics_md_is_current() -> None:
    committed = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    assert committed == schema.render_markdown(), "run `make docs` to regenerate docs/metrics.md"


def test_names_follow_prometheus_conventions() -> None:
    names = [s.name for s in schema.SPECS]
    assert len(names) == len(set(names))
    for s in schema.SPECS:
        assert re.fullmatch(r"gpuledger_[a-z0-9_]+", s.name), s.name
        assert (s.kind is Kind.COUNTER) == s.name.endswith("_total"), s.name
        base = s.name.removesuffix("_total")
        if s.unit == "ratio":
            assert base.endswith("_ratio"), s.name
        if s.unit in ("bytes", "seconds", "watts", "joules", "hertz", "celsius"):
            assert base.endswith("_" + s.unit) or f"_{s.unit}_" in s.name, s.name
        assert "node" not in s.labels  # added once, by all_labels
        assert len(set(s.all_labels)) == len(s.all_labels), s.name


def test_design_schema_names_are_all_defined() -> None:
    """The names DESIGN.md promises dashboards and alerts (the contract) all exist."""
    promised = """
    gpuledger_gpu_info gpuledger_gpu_utilization_ratio gpuledger_gpu_memory_used_bytes
    gpuledger_gpu_memory_total_bytes gpuledger_gpu_power_watts gpuledger_gpu_energy_joules_total
    gpuledger_gpu_temperature_celsius gpuledger_gpu_sm_clock_hertz gpuledger_gpu_xid_errors_total
    gpuledger_gpu_throttled gpuledger_gpu_allocation_ratio gpuledger_service_gpu_seconds_total
    gpuledger_idle_gpu_seconds_total gpuledger_service_energy_joules_total
    gpuledger_vllm_requests_running gpuledger_vllm_requests_waiting
    gpuledger_vllm_kv_cache_usage_ratio gpuledger_vllm_prompt_tokens_total
    gpuledger_vllm_generation_tokens_total gpuledger_vllm_request_success_total
    gpuledger_vllm_preemptions_total gpuledger_vllm_time_to_first_token_seconds
    gpuledger_vllm_inter_token_latency_seconds gpuledger_vllm_e2e_request_latency_seconds
    gpuledger_vllm_request_queue_time_seconds gpuledger_probe_ttft_seconds
    gpuledger_probe_tpot_seconds gpuledger_probe_e2e_seconds
    gpuledger_probe_output_tokens_per_second gpuledger_probe_success_total
    gpuledger_probe_failures_total gpuledger_pg_table_bytes gpuledger_pg_table_rows_estimate
    gpuledger_pg_dead_tuples gpuledger_pgvector_column_dimensions gpuledger_pgvector_index_bytes
    gpuledger_pg_database_bytes gpuledger_pg_growth_bytes_per_day gpuledger_pg_days_until_full
    gpuledger_collector_up gpuledger_collector_duration_seconds
    gpuledger_collector_last_success_timestamp_seconds gpuledger_ledger_pending_rows
    gpuledger_ledger_flush_failures_total gpuledger_build_info
    """.split()
    assert set(promised) <= set(schema.BY_NAME)
    assert schema.BY_NAME["gpuledger_gpu_info"].labels[:2] == ("gpu", "uuid")


def test_a_family_in_an_untitled_group_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new source's families need a section in docs/metrics.md, else they would be
    exported but missing from the reference."""
    stray = schema.MetricSpec(
        name="gpuledger_example_thing", kind=schema.Kind.GAUGE, unit="", help="x",
        labels=(), group="example",
    )  # fmt: skip
    monkeypatch.setattr(schema, "SPECS", (*schema.SPECS, stray))
    with pytest.raises(ValueError, match="example"):
        schema.render_markdown()
