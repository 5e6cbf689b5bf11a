"""The ``declared`` split policy (HAMi's declared core share), by hand-computed shares, and
HAMi pods attributed through their processes with their declarations attached."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuledger.chargeback.attribution.claims import IDLE_OWNER, Claim, Owner
from gpuledger.chargeback.attribution.resolver import WorkloadResolver
from gpuledger.chargeback.attribution.shares import allocate
from gpuledger.collectors.gpu.readings import GpuReading, ProcessReading
from gpuledger.collectors.workload.hami import ALLOCATED_ANNOTATION
from gpuledger.collectors.workload.pods import PodInfo, StaticPodDirectory

H100 = "NVIDIA H100 80GB HBM3"
GPU = "GPU-03f69c50-207a-2038-9b45-23cac89cb67d"
OTHER = "GPU-5c3a1e2b-7f4d-4e8a-9b6c-1d2e3f4a5b6c"
A, B, C = Owner("ml", "a"), Owner("ml", "b"), Owner("ml", "c")
GIB = 1024**3


def split(claims: list[Claim], policy: str = "declared") -> dict[Owner, float]:
    g = GpuReading(uuid=GPU, index=0, model=H100, utilization_ratio=0.5)
    (alloc,) = allocate([g], lambda d: claims, policy)  # type: ignore[arg-type]
    assert sum(s.share for s in alloc.shares) == pytest.approx(1.0, abs=1e-12)
    return {s.owner: s.share for s in alloc.shares}


def test_declared_shares_are_billed_whatever_was_used_and_the_rest_is_idle() -> None:
    # A declared 30 %, B 50 %; A used far more than B: declared wins; 20 % nobody declared
    shares = split([Claim(A, 0.9, 30 * GIB, 0.3), Claim(B, 0.05, 1 * GIB, 0.5)])
    assert shares == pytest.approx({A: 0.3, B: 0.5, IDLE_OWNER: 0.2})


def test_undeclared_claims_split_the_rest_by_usage() -> None:
    # A declared 30 %; B and C declared nothing, SM 0.2 and 0.6 -> 70 % split 1:3
    shares = split([Claim(A, 0.1, None, 0.3), Claim(B, 0.2), Claim(C, 0.6)])
    assert shares == pytest.approx({A: 0.3, B: 0.175, C: 0.525})


def test_undeclared_without_samples_split_the_rest_by_memory_then_equally() -> None:
    by_mem = split([Claim(A, None, None, 0.4), Claim(B, None, 1 * GIB), Claim(C, None, 2 * GIB)])
    assert by_mem == pytest.approx({A: 0.4, B: 0.2, C: 0.4})
    equal = split([Claim(A, None, None, 0.4), Claim(B), Claim(C)])
    assert equal == pytest.approx({A: 0.4, B: 0.3, C: 0.3})


def test_declarations_over_the_gpu_are_scaled_to_it() -> None:
    # 80 % + 60 % declared: 8/14 and 6/14; the undeclared C holds nothing
    shares = split([Claim(A, None, None, 0.8), Claim(B, None, None, 0.6), Claim(C, 0.5)])
    assert shares == pytest.approx({A: 8 / 14, B: 6 / 14, C: 0.0})


def test_without_any_declaration_declared_is_usage() -> None:
    claims = [Claim(A, 0.3, 30 * GIB), Claim(B, 0.1, 10 * GIB)]
    assert split(claims) == split(claims, "usage") == pytest.approx({A: 0.75, B: 0.25})


def test_usage_policy_ignores_declarations() -> None:
    shares = split([Claim(A, 0.3, None, 0.9), Claim(B, 0.1, None, 0.1)], "usage")
    assert shares == pytest.approx({A: 0.75, B: 0.25})


# --- through the resolver ------------------------------------------------------------------
def _uid(n: int) -> str:
    return f"{n:08x}-0000-4000-8000-000000000000"


def _cid(n: int) -> str:
    return f"{n:064x}"


def _write_proc(root: Path, pid: int, pod: int) -> None:
    d = root / str(pid)
    d.mkdir(parents=True)
    (d / "cgroup").write_text(
        "0::/kubepods.slice/kubepods-burstable.slice/"
        f"kubepods-burstable-pod{_uid(pod).replace('-', '_')}.slice/"
        f"cri-containerd-{_cid(pid)}.scope\n",
        encoding="utf-8",
    )
    (d / "comm").write_text("python3\n", encoding="utf-8")


def _pod(n: int, service: str, containers: dict[int, str], allocated: str | None) -> PodInfo:
    return PodInfo(
        uid=_uid(n),
        namespace="ml",
        name=f"{service}-0",
        labels={"app.kubernetes.io/name": service},
        container_ids={_cid(pid): name for pid, name in containers.items()},
        annotations={} if allocated is None else {ALLOCATED_ANNOTATION: allocated},
    )


def test_hami_pods_are_billed_their_declared_cores(tmp_path: Path) -> None:
    # pod 1: 30 cores on GPU; pod 2: two containers, 20 + 20 cores on GPU (and 50 on another
    # GPU); pod 3: HAMi placed it with no core limit (0); pod 4: not a HAMi pod
    pods = [
        _pod(1, "chat", {11: "main"}, f"{GPU},NVIDIA,8000,30:;"),
        _pod(
            2,
            "train",
            {21: "a", 22: "b"},
            f"{GPU},NVIDIA,1,20:{OTHER},NVIDIA,1,50:;{GPU},NVIDIA,1,20:;",
        ),
        _pod(3, "notebook", {31: "main"}, f"{GPU},NVIDIA,4000,0:;"),
        _pod(4, "batch", {41: "main"}, None),
    ]
    pod_of = {11: 1, 21: 2, 22: 2, 31: 3, 41: 4}
    for pid, pod in pod_of.items():
        _write_proc(tmp_path, pid, pod)
    r = WorkloadResolver(proc_root=tmp_path, pods=StaticPodDirectory(pods), static=None)
    sm = {11: 0.05, 21: 0.3, 22: 0.3, 31: 0.1, 41: 0.3}
    g = GpuReading(
        uuid=GPU, index=0, model=H100, utilization_ratio=0.9,
        processes=tuple(ProcessReading(pid, GIB, sm[pid]) for pid in pod_of),
    )  # fmt: skip
    declared = {c.owner.service + "/" + c.owner.container: c.declared_share for c in r.claims(g)}
    assert declared == {
        "batch/main": None, "chat/main": 0.3, "notebook/main": None, "train/a": 0.2, "train/b": 0.2
    }  # fmt: skip
    assert r.counters["hami_declared"] == 3
    (alloc,) = allocate([g], r.claims, "declared")
    by_service: dict[str, float] = {}
    for s in alloc.shares:
        by_service[s.owner.service] = by_service.get(s.owner.service, 0.0) + s.share
    # chat 30 %, train 40 % (its pod's 20 + 20); the rest (30 %) to notebook and batch by
    # SM 0.1 : 0.3 -> 7.5 % and 22.5 %
    assert by_service == pytest.approx(
        {"chat": 0.3, "train": 0.4, "notebook": 0.075, "batch": 0.225}
    )
