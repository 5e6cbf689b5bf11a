"""A seeded simulated month in the ledger, for ``gpuledger demo --month`` and the tests.

Running the agent for a month of wall time is not a demo; integrating the simulated
node's model directly is. :class:`~gpuledger.sim.node.SimulatedNode` knows
every device's utilization, every process's share and every board's energy counter in
closed form, so each hour's buckets come straight from the model, on the minute knots the
model is defined on (piecewise linear, so the trapezoid sums are exact for utilization and
energy). The split follows the agent's own rules (``docs/attribution.md``): a whole GPU
goes to its one process; a time-sliced GPU is split by the processes' SM utilization; a
MIG instance holds slices / 7 of its board; a device the kubelet allocated to a pod that
runs nothing on it (the idle-holding notebook, read through pod-resources by the live
agent) is that pod's, busy 0; what nobody holds is ``__idle__``. Busy time
on MIG instances assumes dcgm-exporter runs beside the agent (it reports per-instance
engine activity, which NVML alone does not).

The fleet (deterministic for a seed): ``gpu-node-01`` with 8 × H100 (two in MIG mode, a
time-sliced one, an under-used one), ``gpu-node-02`` with 4 × L40S, down for six hours
on the 12th (the gap shows in coverage), and ``gpu-node-03`` with 8 × A100 80GB laid out
(:data:`~gpuledger.sim.services.FINDINGS_LAYOUT`) so that, with the first two, the month
shows one finding of each kind (``docs/findings.md``, "In the demo"): four vLLM replicas
whose p95 hour needs one GPU (over-provisioned), a Whisper server holding a whole GPU for
24 GiB and a sixth of its SMs (MIG fit), a spare GPU nobody is given (idle capacity), and
two replicas that idle at 10 % and saturate for two hours each morning (bursty: sized on
their p95 hour they keep both GPUs, so no finding). The H100 node's under-used batch GPU
fits an A100 (smaller class) and its idle-holding notebook is the zombie. The A100 node's
probes draw from a random stream of their own, so adding it left the first two nodes'
figures as they were. LLM services get token counts from their busy
time and the agent's probes every ten minutes, with one service whose engine metrics
disagree with its probes and one whose probes often fail, so every validation state
appears in the report. The embedding and reranker services are probed the way the agent
probes them (embeddings, rerank: :mod:`gpuledger.sim.pooled`) and count prompt tokens; the
others serve nothing a probe checks.

The fleet's teams (:mod:`gpuledger.sim.costcenters`) are recorded per hour in
``ledger_cost_centers``, as the agent records what its lookup sees.

``llm-prod/chat-llama-70b`` is a shared endpoint: a gateway counts its tenants' tokens
(``ledger_tenant_tokens``) and its engines report prefill/decode time
(``ledger_engine_time``), both derived from its token rows (:mod:`gpuledger.sim.tenants`).

Every row is written as a running total (upsert), so running the fast-forward twice
leaves the ledger unchanged.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from gpuledger.chargeback.attribution.claims import IDLE
from gpuledger.chargeback.ledger.store.common import AuditableLedgerStore
from gpuledger.chargeback.ledger.tables import (
    CostCenterRow,
    CoverageRow,
    EngineTimeRow,
    ProbeRecord,
    TenantTokenRow,
    TokenRow,
    UsageRow,
)
from gpuledger.chargeback.report.model import Month
from gpuledger.sim import costcenters
from gpuledger.sim.attribution import IdleHolder, idle_holders
from gpuledger.sim.node import KNOT_S, SimDevice, SimGpu, SimulatedNode
from gpuledger.sim.nvml_fake import A100_80GB, H100_80GB, L40S
from gpuledger.sim.pooled import pooled_hour
from gpuledger.sim.services import FINDINGS_LAYOUT, WholeGpu
from gpuledger.sim.tenants import SHARED_SERVICE, shared_hour

HOUR_S = 3600
KNOTS_PER_HOUR = int(HOUR_S / KNOT_S)


@dataclass(frozen=True, slots=True)
class SimNodeSpec:
    name: str
    gpus: int
    model: str
    seed_offset: int
    outage: tuple[int, int] | None = None  # (day of month, hours) the node was down
    layout: tuple[WholeGpu, ...] | None = None  # whole GPUs by service (SimulatedNode)
    # its probes from a random stream of its own, so that adding the node left the
    # others' draws (and the tests pinned on them) as they were
    own_probe_stream: bool = False


DEMO_FLEET: tuple[SimNodeSpec, ...] = (
    SimNodeSpec("gpu-node-01", 8, H100_80GB.name, 0),
    SimNodeSpec("gpu-node-02", 4, L40S.name, 1, outage=(12, 6)),
    SimNodeSpec(
        "gpu-node-03",
        len(FINDINGS_LAYOUT),
        A100_80GB.name,
        2,
        layout=FINDINGS_LAYOUT,
        own_probe_stream=True,
    ),
)


@dataclass(frozen=True, slots=True)
class ServedModel:
    model_name: str
    generation_tokens_per_busy_gpu_s: float
    prompt_per_generation: float
    ttft_median_s: float
    probe_failure_ratio: float = 0.002
    disagree_ratio: float = 0.0


SERVED: dict[str, ServedModel] = {
    "chat-llama-70b": ServedModel("meta-llama/Llama-3.1-70B-Instruct", 1800.0, 4.0, 0.180),
    "summarize-mistral-7b": ServedModel(
        "mistralai/Mistral-7B-Instruct-v0.3", 9000.0, 9.0, 0.060, probe_failure_ratio=0.12
    ),
    "code-qwen-14b": ServedModel("Qwen/Qwen2.5-Coder-14B-Instruct", 5000.0, 6.0, 0.090),
    "guard-llama-8b": ServedModel(
        "meta-llama/Llama-Guard-3-8B", 11000.0, 20.0, 0.040, disagree_ratio=0.20
    ),
    "rag-llama-8b": ServedModel("meta-llama/Llama-3.1-8B-Instruct", 11000.0, 8.0, 0.050),
    "support-qwen-7b": ServedModel("Qwen/Qwen2.5-7B-Instruct", 10000.0, 5.0, 0.055),
    "digest-llama-8b": ServedModel("meta-llama/Llama-3.1-8B-Instruct", 11000.0, 30.0, 0.050),
}
"""What the simulated LLM services serve (embedding and rerank ones: ``sim/pooled.py``)."""

PROBE_EVERY_S = 600
PROBE_PROMPT_TOKENS = 12
PROBE_COMPLETION_TOKENS = 16


@dataclass(frozen=True, slots=True)
class SimulatedMonth:
    month: str
    nodes: int
    gpus: int
    hours_written: int
    usage_rows: int
    token_rows: int
    probe_rows: int
    tenant_token_rows: int = 0
    engine_time_rows: int = 0


def _trapezoid(values: Sequence[float]) -> float:
    """∫ over one hour of a series given at its 61 minute knots (piecewise linear)."""
    return KNOT_S * (sum(values) - (values[0] + values[-1]) / 2.0)


def _device_hour(
    sim: SimulatedNode, d: SimDevice, knots: Sequence[float]
) -> list[tuple[str, str, float, float]]:
    """(namespace, service, share-seconds of the device, busy seconds) per process."""
    procs = d.processes
    if not procs:
        return []
    if len(procs) == 1:
        p = procs[0]
        util = [sim.utilization(d.gpu_index, t, d.mig_instance) for t in knots]
        return [(p.namespace, p.service, float(HOUR_S), _trapezoid(util))]
    utils = [[sim.process_utilization(p.pid, t) for t in knots] for p in procs]
    out = []
    for i, p in enumerate(procs):
        shares = []
        for k in range(len(knots)):
            total = sum(u[k] for u in utils)
            shares.append(utils[i][k] / total if total > 0 else 1.0 / len(procs))
        out.append((p.namespace, p.service, _trapezoid(shares), _trapezoid(utils[i])))
    return out


def _memory_held(
    g: SimGpu, holders: Mapping[tuple[int, int | None], IdleHolder]
) -> dict[tuple[str, str], float]:
    """The GPU memory each (namespace, service) holds on ``g`` (its peak: the model's
    processes keep theirs all hour), by the agent's rule (``docs/attribution.md``): its
    processes' memory, summed over its devices; a pod the kubelet gave a device with no
    process on it holds the device's used memory (NVML's: an instance's is its
    processes', a whole GPU's adds the driver's reserve)."""
    out: dict[tuple[str, str], float] = {}
    for d in g.devices:
        holder = holders.get((d.gpu_index, d.mig_instance))
        if d.processes:
            for p in d.processes:
                out[(p.namespace, p.service)] = out.get((p.namespace, p.service), 0.0) + float(
                    p.memory_bytes
                )
        elif holder is not None:
            used = d.memory_used_bytes if g.mig else g.memory_used_bytes
            key = (holder.namespace, holder.service)
            out[key] = out.get(key, 0.0) + float(used)
    return out


def _node_hour(
    sim: SimulatedNode, node: str, hour: int
) -> tuple[list[UsageRow], list[CoverageRow], dict[tuple[str, str], float]]:
    """One hour of one node's buckets, and each service's busy GPU-seconds."""
    t0, t1 = float(hour), float(hour + HOUR_S)
    knots = [t0 + KNOT_S * k for k in range(KNOTS_PER_HOUR + 1)]
    usage: list[UsageRow] = []
    coverage: list[CoverageRow] = []
    busy_by_service: dict[tuple[str, str], float] = {}
    # pods the kubelet allocated a device to that run nothing on it (pod-resources): the
    # device's whole hour is theirs, busy 0
    holders = {(h.device.gpu_index, h.device.mig_instance): h for h in idle_holders(sim)}
    for g in sim.gpus:
        # t0 before t1: the model's energy integral walks forward from its cursor
        e0 = sim.energy_joules(g.index, t0)
        energy = sim.energy_joules(g.index, t1) - e0
        totals: dict[tuple[str, str], list[float]] = {}
        profiles: dict[tuple[str, str], list[str]] = {}
        memory = _memory_held(g, holders)
        held = 0.0
        for d in g.devices:
            fraction = (d.slices or 0) / (d.total_slices or 1) if g.mig else 1.0
            rows = _device_hour(sim, d, knots)
            holder = holders.get((d.gpu_index, d.mig_instance))
            if not rows and holder is not None:
                rows = [(holder.namespace, holder.service, float(HOUR_S), 0.0)]
            for ns, svc, share_s, busy_s in rows:
                alloc = share_s * fraction
                slot = totals.setdefault((ns, svc), [0.0, 0.0])
                slot[0] += alloc
                slot[1] += busy_s * fraction
                held += alloc
                if d.mig_profile:
                    profiles.setdefault((ns, svc), []).append(d.mig_profile)
        idle_s = max(0.0, HOUR_S - held)
        for (ns, svc), (alloc, busy) in sorted(totals.items()):
            usage.append(
                UsageRow(hour, node, g.uuid, ns, svc, g.model.name,
                         "+".join(sorted(profiles.get((ns, svc), []))), alloc, busy,
                         energy * alloc / HOUR_S, memory.get((ns, svc)))
            )  # fmt: skip
            busy_by_service[(ns, svc)] = busy_by_service.get((ns, svc), 0.0) + busy
        if idle_s > 1e-9:
            usage.append(
                UsageRow(hour, node, g.uuid, "", IDLE, g.model.name, "", idle_s, 0.0,
                         energy * idle_s / HOUR_S)
            )  # fmt: skip
        coverage.append(CoverageRow(hour, node, g.uuid, g.model.name, float(HOUR_S)))
    return usage, coverage, busy_by_service


def _lognormal(rng: random.Random, median: float, sigma: float = 0.25) -> float:
    return median * math.exp(rng.gauss(0.0, sigma))


def _probes(
    rng: random.Random, node: str, hour: int, services: Sequence[tuple[str, str]]
) -> tuple[list[ProbeRecord], dict[tuple[str, str], tuple[int, int]]]:
    records: list[ProbeRecord] = []
    tokens: dict[tuple[str, str], tuple[int, int]] = {}
    for ns, svc in services:
        served = SERVED.get(svc)
        if served is None:
            continue
        n_ok = 0
        for start in range(hour, hour + HOUR_S, PROBE_EVERY_S):
            at = start + rng.uniform(0, 30)
            ok = rng.random() >= served.probe_failure_ratio
            if not ok:
                records.append(
                    ProbeRecord(at, node, f"http://{svc}.{ns}.svc:8000", ns, svc,
                                served.model_name, False, "timeout")
                )  # fmt: skip
                continue
            n_ok += 1
            ttft = _lognormal(rng, served.ttft_median_s)
            tpot = _lognormal(rng, served.ttft_median_s / 8.0, 0.15)
            e2e = ttft + (PROBE_COMPLETION_TOKENS - 1) * tpot
            agrees = rng.random() >= served.disagree_ratio
            records.append(
                ProbeRecord(
                    at, node, f"http://{svc}.{ns}.svc:8000", ns, svc, served.model_name, True,
                    None, ttft, tpot, e2e, (PROBE_COMPLETION_TOKENS - 1) / (e2e - ttft),
                    PROBE_PROMPT_TOKENS, PROBE_COMPLETION_TOKENS, True, True, agrees,
                )
            )  # fmt: skip
        tokens[(ns, svc)] = (n_ok * PROBE_PROMPT_TOKENS, n_ok * PROBE_COMPLETION_TOKENS)
    return records, tokens


def _cost_centers(node: str, hour: int, usage: Sequence[UsageRow]) -> list[CostCenterRow]:
    """What the agent would record in ``hour``: the cost center its lookup finds for each
    owner it attributed time to (:mod:`gpuledger.sim.costcenters`)."""
    owners = sorted({(r.namespace, r.service) for r in usage if r.allocated_gpu_seconds > 0})
    out: list[CostCenterRow] = []
    for namespace, service in owners:
        found = costcenters.seen(namespace) if service != IDLE else None
        if found is not None:
            out.append(CostCenterRow(hour, node, namespace, service, *found))
    return out


def simulate_month(
    store: AuditableLedgerStore,
    month: Month,
    *,
    seed: int = 42,
    fleet: Sequence[SimNodeSpec] = DEMO_FLEET,
    progress: Callable[[int, int], None] | None = None,
) -> SimulatedMonth:
    """Write ``month`` of the simulated fleet into ``store`` (migrated), a day per batch.

    ``progress(done, total)`` is called after each simulated day."""
    start = int(month.start.timestamp())
    hours = month.hours
    sims = [
        (
            spec,
            SimulatedNode(
                seed + spec.seed_offset,
                spec.gpus,
                model=spec.model,
                start=float(start),
                layout=spec.layout,
            ),
            random.Random(f"{seed}:{month.label}:{spec.name}")  # noqa: S311 -- reproducible
            if spec.own_probe_stream
            else None,
        )
        for spec in fleet
    ]
    rng = random.Random(f"{seed}:{month.label}")  # noqa: S311 -- reproducible, not secret
    # the shared endpoint's own stream: the other tables' draws stay what they were
    tenant_rng = random.Random(f"{seed}:{month.label}:tenants")  # noqa: S311
    pooled_rng = random.Random(f"{seed}:{month.label}:pooled")  # noqa: S311
    days = hours // 24
    counts = [0, 0, 0, 0, 0, 0]  # hours, usage, tokens, probes, tenant tokens, engine time
    for day in range(days):
        usage: list[UsageRow] = []
        coverage: list[CoverageRow] = []
        token_rows: list[TokenRow] = []
        probes: list[ProbeRecord] = []
        tenant_rows: list[TenantTokenRow] = []
        engine_rows: list[EngineTimeRow] = []
        cost_center_rows: list[CostCenterRow] = []
        for spec, sim, own_rng in sims:
            for h in range(day * 24, day * 24 + 24):
                if spec.outage is not None:
                    first = (spec.outage[0] - 1) * 24 + 3
                    if first <= h < first + spec.outage[1]:
                        continue  # the node is down: nothing observed, nothing billed
                hour = start + h * HOUR_S
                u, c, busy = _node_hour(sim, spec.name, hour)
                usage += u
                coverage += c
                cost_center_rows += _cost_centers(spec.name, hour, u)
                records, probe_tokens = _probes(own_rng or rng, spec.name, hour, sorted(busy))
                probes += records
                pooled_probes, pooled_tokens = pooled_hour(pooled_rng, spec.name, hour, busy)
                probes += pooled_probes
                token_rows += pooled_tokens
                for (ns, svc), busy_s in sorted(busy.items()):
                    served = SERVED.get(svc)
                    if served is None:
                        continue
                    pp, pg = probe_tokens.get((ns, svc), (0, 0))
                    generation = round(busy_s * served.generation_tokens_per_busy_gpu_s)
                    prompt = round(generation * served.prompt_per_generation)
                    row = TokenRow(
                        hour, spec.name, ns, svc, served.model_name,
                        float(prompt + pp), float(generation + pg), float(pp), float(pg),
                    )  # fmt: skip
                    token_rows.append(row)
                    if (ns, svc) == SHARED_SERVICE:
                        tenants, engine = shared_hour(tenant_rng, row, h, pp // PROBE_PROMPT_TOKENS)
                        tenant_rows += tenants
                        engine_rows += engine
                counts[0] += 1
        store.upsert(usage, coverage)
        store.upsert_tokens(token_rows)
        store.upsert_probes(probes)
        store.upsert_tenant_tokens(tenant_rows)
        store.upsert_engine_time(engine_rows)
        store.upsert_cost_centers(cost_center_rows)
        counts[1] += len(usage)
        counts[2] += len(token_rows)
        counts[3] += len(probes)
        counts[4] += len(tenant_rows)
        counts[5] += len(engine_rows)
        if progress is not None:
            progress(day + 1, days)
    return SimulatedMonth(
        month=month.label,
        nodes=len(fleet),
        gpus=sum(spec.gpus for spec in fleet),
        hours_written=counts[0],
        usage_rows=counts[1],
        token_rows=counts[2],
        probe_rows=counts[3],
        tenant_token_rows=counts[4],
        engine_time_rows=counts[5],
    )
