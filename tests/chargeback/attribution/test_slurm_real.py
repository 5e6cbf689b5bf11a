"""A real Slurm job's GPU time billed to its account: Debian's slurmctld and slurmd run a
private single-node cluster (``tests/support/slurm_cluster.py``), ``sbatch`` starts real
jobs under accounts chosen here, and the agent's own path reads each job process's
``/proc/<pid>/cgroup`` (written by Slurm's cgroup plugin, not by the test), asks the real
``scontrol`` on its worker thread, and names the owner from the account.

Only the GPU readings are made up (NVML is the one fake): they name the real PIDs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuledger.chargeback.attribution.claims import UNATTRIBUTED_OWNER, Owner
from gpuledger.chargeback.attribution.resolver import WorkloadResolver
from gpuledger.chargeback.attribution.shares import allocate
from gpuledger.chargeback.ledger.accumulator import Accumulator
from gpuledger.collectors.gpu.readings import GpuReading, ProcessReading
from gpuledger.collectors.workload.slurm import parse_slurm_cgroup
from tests.support.slurm import slurm_resolver, wait_for_lookups
from tests.support.slurm_cluster import SlurmCluster, missing_requirement, slurm_cluster

pytestmark = pytest.mark.skipif(missing_requirement() is not None,
                                reason=f"no real Slurm here: {missing_requirement()}")  # fmt: skip

GPU = "GPU-0d8a1c2e-3b4f-4a5d-8e6f-7a8b9c0d1e2f"
GIB = 1 << 30


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    with slurm_cluster(tmp_path_factory.mktemp("slurm")) as running:
        yield running


@pytest.fixture
def slurm_conf(cluster: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent hands ``SLURM_CONF`` on to ``scontrol`` when it has it (docs/slurm.md)."""
    monkeypatch.setenv("SLURM_CONF", cluster.env["SLURM_CONF"])


def resolver_for(tmp_path: Path, extra: str = "") -> WorkloadResolver:
    """The agent's resolver with Slurm on and the real ``scontrol``, reading the real /proc."""
    slurm = f"    enabled: true\n    scontrol: /usr/bin/scontrol\n{extra}"
    return slurm_resolver(tmp_path, slurm, node_name="gpu-node-1")


def test_the_cgroup_slurm_wrote_is_the_documented_layout(cluster: SlurmCluster) -> None:
    job = cluster.submit("-A", "physics-lab", "--wrap", "sleep 120")
    try:
        (pid,) = cluster.job_pids(job, "sleep")
        text = Path(f"/proc/{pid}/cgroup").read_text()
        if Path("/sys/fs/cgroup/cgroup.controllers").exists():  # cgroup v2
            assert re.search(rf"^0::/.*slurmstepd\.scope/job_{job}/step_batch/", text, re.M)
        else:  # v1, Debian's multiple-slurmd build: /slurm_<node>/uid_<uid>/job_<id>/step_<s>
            expected = f"/slurm_{cluster.node}/uid_{os.geteuid()}/job_{job}/step_batch"
            assert any(line.split(":", 2)[2] == expected for line in text.splitlines())
        ref = parse_slurm_cgroup(text)
        assert ref is not None
        assert (ref.job, ref.step) == (job, "batch")
    finally:
        cluster.run("scancel", job)


def test_real_jobs_are_billed_to_their_accounts(
    cluster: SlurmCluster, slurm_conf: None, tmp_path: Path
) -> None:
    batch = cluster.submit("-A", "physics-lab", "-J", "train lr=3e-4 bs=64", "--wrap",
                           "sleep 300")  # fmt: skip
    stepped = cluster.submit("-A", "ml-team", "-J", "eval", "--wrap", "srun sleep 300")
    try:
        (batch_pid,) = cluster.job_pids(batch, "sleep")
        (step_pid,) = cluster.job_pids(stepped, "sleep")
        assert cluster.state(batch) == "RUNNING"
        assert cluster.state(stepped) == "RUNNING"
        outsider = os.getpid()  # pytest itself: in no job's cgroup
        reading = GpuReading(
            uuid=GPU,
            index=0,
            model="NVIDIA H100 80GB HBM3",
            processes=(
                ProcessReading(pid=batch_pid, used_memory_bytes=30 * GIB,
                               sm_utilization_ratio=0.45),
                ProcessReading(pid=step_pid, used_memory_bytes=10 * GIB,
                               sm_utilization_ratio=0.15),
                ProcessReading(pid=outsider, used_memory_bytes=1 * GIB,
                               sm_utilization_ratio=0.15),
            ),
        )  # fmt: skip
        resolver = resolver_for(tmp_path, "    namespace_from: partition\n")
        try:
            # cycle 1: scontrol has not answered yet; placeholders hold the time
            first = {c.owner.service for c in resolver.claims(reading)}
            assert first == {f"slurm-job-{batch}", f"slurm-job-{stepped}", "__unattributed__"}
            wait_for_lookups(resolver, 30)
            owners = {c.owner for c in resolver.claims(reading)}
            assert owners == {
                Owner("gpu", "physics-lab", f"slurm-job-{batch}"),
                Owner("gpu", "ml-team", f"slurm-job-{stepped}"),
                UNATTRIBUTED_OWNER,
            }
            # the ledger: two cycles 10 s apart bill 10 GPU-seconds, split by SM use
            # 0.45 / 0.15 / 0.15 of 0.75 (the default split policy)
            acc = Accumulator("gpu-node-1", max_gap_s=60)
            t0 = 1_796_526_000.0  # inside one hour, so one row per owner
            for step in (0.0, 10.0):
                acc.observe(t0 + step, 1000.0 + step, allocate([reading], resolver.claims))
            usage, _ = acc.drain_dirty()
            billed = {(r.namespace, r.service): r.allocated_gpu_seconds for r in usage}
            assert billed == pytest.approx(
                {("gpu", "physics-lab"): 10 * 0.45 / 0.75, ("gpu", "ml-team"): 10 * 0.15 / 0.75,
                 ("", "__unattributed__"): 10 * 0.15 / 0.75}
            )  # fmt: skip
            assert sum(billed.values()) == pytest.approx(10.0)
        finally:
            resolver.close()
    finally:
        cluster.run("scancel", batch, stepped)


def test_service_from_the_job_name_of_a_real_job(
    cluster: SlurmCluster, slurm_conf: None, tmp_path: Path
) -> None:
    job = cluster.submit("-A", "physics-lab", "-J", "sweep (lr=3e-4) bs=64", "--wrap",
                         "sleep 300")  # fmt: skip
    try:
        (pid,) = cluster.job_pids(job, "sleep")
        reading = GpuReading(uuid=GPU, index=0, model="NVIDIA H100 80GB HBM3",
                             processes=(ProcessReading(pid=pid, used_memory_bytes=GIB,
                                                       sm_utilization_ratio=0.5),))  # fmt: skip
        resolver = resolver_for(tmp_path, "    service_from: job_name\n")
        try:
            resolver.claims(reading)
            wait_for_lookups(resolver, 30)
            (claim,) = resolver.claims(reading)
            assert claim.owner == Owner("", "sweep (lr=3e-4) bs=64", f"slurm-job-{job}")
        finally:
            resolver.close()
    finally:
        cluster.run("scancel", job)
