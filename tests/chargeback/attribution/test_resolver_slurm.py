"""Processes in Slurm job cgroups attributed through the agent's real path: the YAML
config → ``build_resolver`` → ``/proc/<pid>/cgroup`` → the Slurm cgroup parser → a
``scontrol`` lookup on the background worker → the owner → the GPU's shares.

The cgroup files and ``scontrol`` answers were captured from a real Slurm 22.05.8
(``tests/support/fixtures/slurm/README.md``): job 1 runs with ``-A research`` as a batch
step, job 2 with ``-A ml-team`` as an srun step, both in partition ``gpu``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gpuledger.agent.config import ConfigError, load_config
from gpuledger.chargeback.attribution.claims import UNATTRIBUTED_OWNER, Claim, Owner
from gpuledger.chargeback.attribution.resolver import (
    SlurmNaming,
    StaticMapping,
    WorkloadResolver,
)
from gpuledger.chargeback.attribution.shares import allocate
from gpuledger.collectors.gpu.readings import GpuReading, ProcessReading
from tests.support.paths import REPO_ROOT
from tests.support.slurm import (
    slurm_fixture,
    slurm_resolver,
    wait_for_lookups,
    write_fake_scontrol,
)

GPU = "GPU-5c3a1e2b-7f4d-4e8a-9b6c-1d2e3f4a5b6c"
GIB = 1 << 30
JOBS = {"1": "show-job-1-running.txt", "2": "show-job-2-running.txt"}


def write_proc(root: Path, pid: int, cgroup: str, comm: str = "python3") -> None:
    d = root / str(pid)
    d.mkdir(parents=True)
    (d / "cgroup").write_text(cgroup)
    (d / "comm").write_text(comm + "\n")
    (d / "cmdline").write_text(f"{comm}\x00train.py")


@pytest.fixture
def proc_root(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    write_proc(root, 200, slurm_fixture("cgroup-v1-step-batch.txt"))  # job 1
    write_proc(root, 201, slurm_fixture("cgroup-v1-step-batch.txt"))  # job 1, a 2nd worker
    write_proc(root, 300, slurm_fixture("cgroup-v1-step-0.txt"))  # job 2
    write_proc(root, 400, "0::/user.slice/user-1000.slice/session-4.scope\n")  # a login shell
    return root


def reading() -> GpuReading:
    return GpuReading(
        uuid=GPU,
        index=0,
        model="NVIDIA H100 80GB HBM3",
        processes=(
            ProcessReading(pid=200, used_memory_bytes=20 * GIB, sm_utilization_ratio=0.30),
            ProcessReading(pid=201, used_memory_bytes=4 * GIB, sm_utilization_ratio=0.10),
            ProcessReading(pid=300, used_memory_bytes=8 * GIB, sm_utilization_ratio=0.20),
            ProcessReading(pid=400, used_memory_bytes=1 * GIB, sm_utilization_ratio=0.10),
        ),
    )


def test_jobs_named_from_their_accounts_after_the_lookup_lands(
    tmp_path: Path, proc_root: Path
) -> None:
    fake = write_fake_scontrol(tmp_path, JOBS)
    resolver = slurm_resolver(
        tmp_path,
        proc_root=proc_root,
        slurm_yaml=f"    enabled: true\n    scontrol: {fake}\n    namespace_from: partition\n",
    )
    try:
        # cycle 1: scontrol has not answered yet; the jobs are held by placeholders
        first = resolver.claims(reading())
        assert first == [
            Claim(Owner("", "slurm-job-1", "slurm-job-1"), 0.30 + 0.10, 24 * GIB),
            Claim(Owner("", "slurm-job-2", "slurm-job-2"), 0.20, 8 * GIB),
            Claim(UNATTRIBUTED_OWNER, 0.10, 1 * GIB),
        ]
        wait_for_lookups(resolver)
        # cycle 2: Account=research / Account=ml-team, Partition=gpu (the captured records)
        second = resolver.claims(reading())
        research = Owner("gpu", "research", "slurm-job-1")
        ml_team = Owner("gpu", "ml-team", "slurm-job-2")
        assert second == [
            Claim(ml_team, 0.20, 8 * GIB),
            Claim(research, 0.30 + 0.10, 24 * GIB),
            Claim(UNATTRIBUTED_OWNER, 0.10, 1 * GIB),
        ]
        # the usage split of the GPU: SM 0.4 / 0.2 / 0.1 of 0.7
        (alloc,) = allocate([reading()], resolver.claims)
        shares = {s.owner.ledger_key: s.share for s in alloc.shares}
        assert shares == pytest.approx(
            {("gpu", "research"): 4 / 7, ("gpu", "ml-team"): 2 / 7, ("", "__unattributed__"): 1 / 7}
        )
        assert resolver.counters["slurm_pending"] == 3  # cycle 1: pids 200, 201, 300
        assert resolver.counters["slurm"] == 6  # cycle 2 and the allocation: 3 + 3
        assert resolver.counters["no_cgroup"] == 3  # pid 400, three times
    finally:
        resolver.close()


@pytest.mark.parametrize(
    ("service_from", "expected"),
    [("user", "root"), ("job_name", "my train lr=0.1"), ("partition", "gpu"),
     ("wckey", "research")],  # no WCKey in the record: falls back to the account
)  # fmt: skip
def test_service_from_another_field(
    tmp_path: Path, proc_root: Path, service_from: str, expected: str
) -> None:
    fake = write_fake_scontrol(tmp_path, JOBS)
    resolver = slurm_resolver(
        tmp_path,
        proc_root=proc_root,
        slurm_yaml=f"    enabled: true\n    scontrol: {fake}\n    service_from: {service_from}\n",
    )
    try:
        resolver.claims(reading())
        wait_for_lookups(resolver)
        owners = [c.owner for c in resolver.claims(reading())]
        assert Owner("", expected, "slurm-job-1") in owners
    finally:
        resolver.close()


def test_a_hanging_scontrol_does_not_hold_the_cycle(tmp_path: Path, proc_root: Path) -> None:
    fake = write_fake_scontrol(tmp_path, mode="hang")
    resolver = slurm_resolver(
        tmp_path,
        proc_root=proc_root,
        slurm_yaml=f"    enabled: true\n    scontrol: {fake}\n    timeout_seconds: 1\n",
    )
    try:
        started = time.monotonic()
        for _ in range(20):
            claims = resolver.claims(reading())
        assert time.monotonic() - started < 0.5
        assert [c.owner.service for c in claims] == [
            "slurm-job-1",
            "slurm-job-2",
            "__unattributed__",
        ]
    finally:
        resolver.close()


def test_precedence_static_gpu_then_slurm_then_static_process(proc_root: Path) -> None:
    class NotYetKnown:
        def lookup(self, job: str) -> None:
            return None

    rule = StaticMapping(processes=[("python3", Owner("", "by-regex"))])
    resolver = WorkloadResolver(
        proc_root=proc_root, pods=None, static=rule, slurm=SlurmNaming(NotYetKnown())
    )
    services = [c.owner.service for c in resolver.claims(reading())]
    # the Slurm cgroup beats the process regex; pid 400 (no job) falls to the regex
    assert services == ["by-regex", "slurm-job-1", "slurm-job-2"]
    pinned = StaticMapping(gpus={GPU: Owner("", "pinned")})
    resolver = WorkloadResolver(
        proc_root=proc_root, pods=None, static=pinned, slurm=SlurmNaming(NotYetKnown())
    )
    assert [c.owner.service for c in resolver.claims(reading())] == ["pinned"]


def test_slurm_disabled_leaves_jobs_unattributed(tmp_path: Path, proc_root: Path) -> None:
    resolver = slurm_resolver(tmp_path, proc_root=proc_root, slurm_yaml="    enabled: false\n")
    assert resolver.slurm is None
    assert [c.owner for c in resolver.claims(reading())] == [UNATTRIBUTED_OWNER]


@pytest.mark.parametrize(
    ("yaml", "key"),
    [
        ("    service_from: email\n", "attribution.slurm.service_from"),
        ("    timeout_seconds: 0\n", "attribution.slurm.timeout_seconds"),
        ("    scontroll: /usr/bin/scontrol\n", "attribution.slurm.scontroll"),
    ],
)
def test_bad_slurm_keys_are_named(tmp_path: Path, yaml: str, key: str) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(f"attribution:\n  slurm:\n{yaml}", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert key in [k for k, _ in info.value.problems]


def test_the_documented_config_loads_with_the_documented_defaults(tmp_path: Path) -> None:
    doc = (REPO_ROOT / "docs" / "slurm.md").read_text(encoding="utf-8")
    block = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "agent.yaml"
    path.write_text(block, encoding="utf-8")
    documented = load_config(path, environ={}).attribution.slurm
    defaults = load_config(None, environ={}).attribution.slurm
    assert documented.enabled is True
    assert documented.model_copy(update={"enabled": False}) == defaults
    assert (defaults.service_from, defaults.namespace_from) == ("account", "none")
    assert str(defaults.scontrol) == "/usr/bin/scontrol"
