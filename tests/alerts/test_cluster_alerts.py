"""Rules over several clusters (issue 18): every series carries ``cluster``, and node
names and simulated GPU UUIDs repeat across clusters, so every aggregation keeps the
cluster and every join matches on it. Two clusters, east and west, each with a node
``n1`` holding a GPU ``GPU-a``, through ``promtool test rules``:

- east's GPU is allocated, west's is not: only west's is "unallocated" (a join on
  (node, uuid) alone let east's allocation hide it);
- both run at 39 % utilization, only east's is allocated: only east's is
  "over-provisioned", and it is named with its cluster (an average over both clusters'
  series gave one alert without one);
- the cost recording rules give each cluster its own service and idle cost (the idle
  cost's join of several clusters' series to one rate needs ``group_left``).
"""

from __future__ import annotations

from pathlib import Path

from gpuledger import schema as s
from gpuledger.alerts import rules
from gpuledger.alerts.config import AlertsConfig
from tests.support import rates
from tests.support.promtool_rules import Case, needs_promtool, run_promtool_tests, sel

H100 = "NVIDIA H100 80GB HBM3"
RATE_H100 = rates.capacity_rate("H100-80GB")


def _gpu(cluster: str) -> dict[str, str]:
    return {"cluster": cluster, "node": "n1", "gpu": "0", "uuid": "GPU-a", "model": H100}


def _alloc(cluster: str) -> dict[str, str]:
    return {"cluster": cluster, "node": "n1", "uuid": "GPU-a", "namespace": "ml",
            "pod": "api-0", "container": "vllm", "service": "api"}  # fmt: skip


def test_every_aggregation_and_join_keeps_the_cluster() -> None:
    for rule in rules.recording_rules(AlertsConfig()):
        expr = rule["expr"]
        if rule["record"] == rules.GPU_HOURLY_RATE_USD:
            continue  # one rate per GPU model, the same in every cluster
        assert " by (cluster, " in expr or "by (" not in expr, (rule["record"], expr)
    for rule in rules.alert_rules(AlertsConfig()):
        expr = rule["expr"]
        for clause in ("on (node", "by (node", "by (service"):
            assert clause not in expr, (rule["alert"], expr)


@needs_promtool
def test_two_clusters_with_the_same_node_and_gpu(tmp_path: Path) -> None:
    cfg = AlertsConfig()
    cases = []

    c = Case(cfg, interval="5m")
    for cluster in ("east", "west"):
        c.series(s.GPU_INFO.name, "1x90", **_gpu(cluster), driver="550")
    c.series(s.GPU_ALLOCATION.name, "1x90", **_alloc("east"))
    c.expect("5h50m", "GpuledgerGpuUnallocated", [])
    c.expect("6h10m", "GpuledgerGpuUnallocated", [({**_gpu("west"), "driver": "550"}, 1)])
    cases.append(c)

    c = Case(cfg)
    for cluster in ("east", "west"):
        c.series(s.GPU_UTILIZATION.name, "0.39x120", **_gpu(cluster))
    c.series(s.GPU_ALLOCATION.name, "1x120", **_alloc("east"))
    c.expect("14m", "GpuledgerGpuOverProvisioned", [])
    c.expect("90m", "GpuledgerGpuOverProvisioned", [(_gpu("east"), 0.39)])
    cases.append(c)

    # east: 2 H100s held for ml/api and 1 idle; west: 1 held and 3 idle
    c = Case(cfg)
    held = {"east": 2, "west": 1}
    idle = {"east": 1, "west": 3}
    svc = {"service": "api", "namespace": "ml", "gpu_model": H100}
    for cluster in ("east", "west"):
        c.series(s.SERVICE_GPU_SECONDS.name, f"0+{60 * held[cluster]}x120",
                 cluster=cluster, node="n1", **svc, kind="allocated")  # fmt: skip
        c.series(s.IDLE_GPU_SECONDS.name, f"0+{60 * idle[cluster]}x120",
                 cluster=cluster, node="n1", gpu_model=H100)  # fmt: skip
    c.expr(
        "90m",
        rules.SERVICE_COST_USD_PER_HOUR,
        [
            (sel(rules.SERVICE_COST_USD_PER_HOUR, cluster=cl, service="api", namespace="ml"),
             held[cl] * RATE_H100)
            for cl in ("east", "west")
        ],
    )  # fmt: skip
    c.expr(
        "90m",
        rules.IDLE_COST_USD_PER_HOUR,
        [
            (sel(rules.IDLE_COST_USD_PER_HOUR, cluster=cl, gpu_model=H100), idle[cl] * RATE_H100)
            for cl in ("east", "west")
        ],
    )
    cases.append(c)

    run_promtool_tests(tmp_path, cfg, cases)
