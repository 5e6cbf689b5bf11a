"""The demo's fast-forwarded month equals the simulated node's own ground truth."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from gpuledger.chargeback.attribution.claims import IDLE
from gpuledger.chargeback.attribution.resolver import WorkloadResolver
from gpuledger.chargeback.attribution.shares import allocate
from gpuledger.chargeback.ledger.store.sqlite import SqliteLedgerStore
from gpuledger.chargeback.report.model import Month, ServiceLine
from gpuledger.collectors.gpu.nvml import NvmlCollector
from gpuledger.sim.attribution import idle_holders, simulated_sources
from gpuledger.sim.month import DEMO_FLEET, SimNodeSpec, simulate_month
from gpuledger.sim.node import SimulatedNode
from gpuledger.sim.nvml_fake import A100_80GB, H100_80GB, L40S

FEB = Month.parse("2026-02")
NODE = SimNodeSpec("sim-a", 8, H100_80GB.name, 0, outage=(3, 5))


@pytest.fixture(scope="module")
def store() -> SqliteLedgerStore:
    s = SqliteLedgerStore(":memory:")
    s.migrate()
    summary = simulate_month(s, FEB, seed=7, fleet=(NODE,))
    assert summary.hours_written == FEB.hours - 5
    return s


def test_every_gpu_second_has_one_owner(store: SqliteLedgerStore) -> None:
    assert store.invariant_violations(FEB.start, FEB.end) == []
    cov = store.coverage(FEB.start, FEB.end)
    assert len(cov) == 8
    assert all(r.observed_seconds == pytest.approx((FEB.hours - 5) * 3600.0) for r in cov)


def test_dedicated_gpu_equals_the_model(store: SqliteLedgerStore) -> None:
    sim = SimulatedNode(7, 8, model=H100_80GB.name, start=FEB.start.timestamp())
    gpu = next(g for g in sim.gpus if g.role == "dedicated")
    rows = {
        r.hour: r
        for r in store.usage(FEB.start, FEB.end, ["gpu_uuid", "service", "hour"])
        if r.gpu_uuid == gpu.uuid
    }
    t0 = FEB.start.timestamp() + 10 * 3600  # hour 10 of the month: before the outage
    hour = rows["2026-02-01T10:00:00Z"]
    assert hour.service == gpu.devices[0].processes[0].service
    assert hour.allocated_gpu_seconds == pytest.approx(3600.0)
    assert hour.busy_gpu_seconds == pytest.approx(sim.busy_seconds(gpu.index, t0, t0 + 3600))
    energy = sim.energy_joules(gpu.index, t0 + 3600) - sim.energy_joules(gpu.index, t0)
    assert hour.energy_joules == pytest.approx(energy, rel=1e-9)
    assert "2026-02-03T04:00:00Z" not in rows  # the outage: 03:00-08:00 on the 3rd


def test_mig_instances_hold_their_slices(store: SqliteLedgerStore) -> None:
    sim = SimulatedNode(7, 8, model=H100_80GB.name, start=FEB.start.timestamp())
    mig = next(g for g in sim.gpus if g.role == "mig")
    held = {
        (r.service): r.allocated_gpu_seconds
        for r in store.usage(FEB.start, FEB.end, ["gpu_uuid", "service"])
        if r.gpu_uuid == mig.uuid
    }
    hours = FEB.hours - 5
    expected: dict[str, float] = {}
    for d in mig.devices:
        for p in d.processes:
            expected[p.service] = expected.get(p.service, 0.0) + (d.slices or 0) / 7 * 3600 * hours
    # the idle-holding notebook (pod-resources): the empty instance it holds, busy 0
    (holder,) = idle_holders(sim)
    if holder.device.gpu_uuid == mig.uuid:
        expected["notebook"] = (holder.device.slices or 0) / 7 * 3600 * hours
    idle = 3600.0 * hours - sum(expected.values())
    for service, seconds in expected.items():
        assert held[service] == pytest.approx(seconds), service
    assert held[IDLE] == pytest.approx(idle)
    (notebook,) = [
        r for r in store.usage(FEB.start, FEB.end, ["service"]) if r.service == "notebook"
    ]
    assert notebook.allocated_gpu_seconds == pytest.approx(expected["notebook"])
    assert notebook.busy_gpu_seconds == 0.0  # it holds the instance and runs nothing


def test_time_sliced_gpu_split_by_process_utilization(store: SqliteLedgerStore) -> None:
    sim = SimulatedNode(7, 8, model=H100_80GB.name, start=FEB.start.timestamp())
    shared = next(g for g in sim.gpus if g.role == "shared")
    a, b = shared.devices[0].processes
    t0 = FEB.start.timestamp() + 14 * 3600
    rows = {
        r.service: r
        for r in store.usage(FEB.start, FEB.end, ["gpu_uuid", "service", "hour"])
        if r.gpu_uuid == shared.uuid and r.hour == "2026-02-01T14:00:00Z"
    }
    # each process's busy seconds is its own SM time; the two shares fill the hour
    for p in (a, b):
        own = (
            sum(sim.process_utilization(p.pid, t0 + 60 * k) for k in range(61))
            - (sim.process_utilization(p.pid, t0) + sim.process_utilization(p.pid, t0 + 3600)) / 2
        )
        assert rows[p.service].busy_gpu_seconds == pytest.approx(60 * own, rel=1e-9)
    total = rows[a.service].allocated_gpu_seconds + rows[b.service].allocated_gpu_seconds
    assert total == pytest.approx(3600.0)


def test_tokens_and_probes_follow_the_served_models(store: SqliteLedgerStore) -> None:
    tokens = {r.service: r for r in store.tokens(FEB.start, FEB.end, ["service"])}
    assert set(tokens) >= {"chat-llama-70b", "summarize-mistral-7b"}
    # embedding and reranker engines count prompt tokens only, the probes' apart (issue 16)
    for pooled in ("embed-bge-m3", "rerank-bge-v2", "embed-e5-large"):
        assert tokens[pooled].generation_tokens == 0
        assert tokens[pooled].prompt_tokens > tokens[pooled].probe_prompt_tokens > 0
    assert "ocr-paddle" not in tokens  # serves nothing a probe or a token counter sees
    chat = tokens["chat-llama-70b"]
    assert chat.probe_prompt_tokens > 0
    assert chat.prompt_tokens > chat.probe_prompt_tokens
    probes = {(r.service): r for r in store.probes(FEB.start, FEB.end)}
    assert probes["guard-llama-8b"].disagree > 0
    assert probes["summarize-mistral-7b"].successes < probes["summarize-mistral-7b"].probes
    # the embedding and reranker services are probed and their verdicts agree
    for pooled in ("embed-bge-m3", "rerank-bge-v2", "embed-e5-large"):
        assert probes[pooled].agree == probes[pooled].successes > 0
        assert probes[pooled].disagree == 0
    for unprobed in ("ocr-paddle", "asr-whisper", "classify-deberta", "moderate-toxic-bert"):
        assert unprobed not in probes


def test_rerun_writes_the_same_totals(store: SqliteLedgerStore) -> None:
    before = store.usage(FEB.start, FEB.end, ["service"])
    tenants = store.tenant_tokens(FEB.start, FEB.end, ["hour", "tenant"])
    engine = store.engine_time(FEB.start, FEB.end, ["hour", "node"])
    assert tenants
    assert engine
    simulate_month(store, FEB, seed=7, fleet=(NODE,))
    assert store.usage(FEB.start, FEB.end, ["service"]) == before
    assert store.tenant_tokens(FEB.start, FEB.end, ["hour", "tenant"]) == tenants
    assert store.engine_time(FEB.start, FEB.end, ["hour", "node"]) == engine


def test_demo_fleet_gpu_models() -> None:
    """Three classes: the H100 and L40S nodes, and the A100 80GB node laid out for the
    findings (sim/services.py: FINDINGS_LAYOUT)."""
    assert [n.model for n in DEMO_FLEET] == [H100_80GB.name, L40S.name, A100_80GB.name]


def test_report_flags_of_the_simulated_month(store: SqliteLedgerStore) -> None:
    """Issue 16: every GPU of the one node spans the whole month and was down 5 of its 672
    hours, so every rental rests on 667 / 672 of the hours: validated at the default 99 %,
    not at 99.5 %. The embedding and reranker services are validated by their probes; the
    services no probe checks have no latency figure ("not applicable")."""
    from gpuledger.chargeback.report.build import ReportOptions, build_report
    from gpuledger.chargeback.report.ratecard import load_rate_card

    def report(min_coverage: float) -> dict[str, ServiceLine]:
        r = build_report(store, load_rate_card(), FEB, now=FEB.end,
                         options=ReportOptions(min_rental_coverage_ratio=min_coverage))  # fmt: skip
        return {line.service: line for line in r.lines if line.kind != "idle"}

    lines = report(0.99)
    for line in lines.values():
        assert line.rental_coverage_ratio == pytest.approx(667 / 672), line.service
        assert line.rental_flag == "validated", line.service
    for pooled in ("embed-bge-m3", "rerank-bge-v2", "embed-e5-large"):
        assert lines[pooled].latency_flag == "validated"
    for unprobed in ("ocr-paddle", "asr-whisper", "classify-deberta", "moderate-toxic-bert"):
        assert lines[unprobed].latency_flag == "not applicable"
        assert lines[unprobed].counterfactual_flagged is False
    assert all(line.rental_flag == "unvalidated" for line in report(0.995).values())


def test_peak_memory_is_what_the_agents_attribution_sees(
    store: SqliteLedgerStore, tmp_path: Path
) -> None:
    """Issue 17: each bucket's peak GPU memory in the month is what the live agent's path
    (fake NVML → collector → proc tree and pods → shares) says its owner holds on that
    GPU, summed over its shares; the idle-holding notebook (seen only through the
    kubelet, which this path leaves out) holds its empty instance's used memory."""
    sim = SimulatedNode(7, 8, model=H100_80GB.name, start=FEB.start.timestamp())
    readings = NvmlCollector(sim.nvml).collect().gpus
    root, pods = simulated_sources(sim, tmp_path / "proc")
    resolver = WorkloadResolver(proc_root=root, pods=pods, static=None)
    want: dict[tuple[str, str, str], float] = {}
    for alloc in allocate(readings, resolver.claims):
        for s in alloc.shares:
            if s.memory_bytes is not None:
                k = (alloc.uuid, s.owner.namespace, s.owner.service)
                want[k] = want.get(k, 0.0) + s.memory_bytes
    (holder,) = idle_holders(sim)
    (instance,) = [r for r in readings if r.mig_device_uuid == holder.device.mig_device_uuid]
    want[(holder.device.gpu_uuid, holder.namespace, holder.service)] = float(
        instance.memory_used_bytes or 0.0
    )
    hour = FEB.start + timedelta(hours=10)
    got = store.peak_memory(hour, hour + timedelta(hours=1), ["gpu_uuid", "namespace", "service"])
    assert {(str(g.gpu_uuid), str(g.namespace), str(g.service)): g.peak_memory_bytes
            for g in got} == want  # fmt: skip
    assert all(v > 0 for k, v in want.items() if k[2] != holder.service)
    # the idle remainder has no peak, in any hour of the month
    services = store.peak_memory(FEB.start, FEB.end, ["service"])
    assert IDLE not in {g.service for g in services}


@pytest.mark.parametrize("own_stream", [True, False])
def test_a_node_with_its_own_probe_stream_leaves_the_other_nodes_draws(own_stream: bool) -> None:
    """gpu-node-03 came last and draws its probes from a stream of its own: with it in the
    fleet, the nodes before it get the same probes (outcomes and latencies) as without it.
    Drawing from the shared stream instead (False) would move them from the second day on
    -- the check can tell."""
    from gpuledger.sim.services import DIGEST, SUPPORT

    base = DEMO_FLEET[1]  # the 4-GPU L40S node: quick
    extra = SimNodeSpec("extra", 2, A100_80GB.name, 2, layout=((SUPPORT,), (DIGEST,)),
                        own_probe_stream=own_stream)  # fmt: skip

    def probes_of_base(fleet: tuple[SimNodeSpec, ...]) -> list[object]:
        with SqliteLedgerStore(":memory:") as s:
            s.migrate()
            simulate_month(s, FEB, seed=7, fleet=fleet)
            return [*s.probes(FEB.start, FEB.end, node=base.name),
                    *s.probe_latency(FEB.start, FEB.end, node=base.name)]  # fmt: skip

    alone = probes_of_base((base,))
    assert alone
    assert (probes_of_base((base, extra)) == alone) is own_stream
