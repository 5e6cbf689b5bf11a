"""A stand-in ``scontrol`` for the Slurm tests: a small shell script that answers
``scontrol show job -o <id>`` with output captured from a real Slurm 22.05.8
(``tests/support/fixtures/slurm/README.md``), or hangs, or fails as the real one does.

The agent runs ``scontrol`` with a minimal environment, so the behaviour is written into
the script itself rather than passed in variables.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from gpuledger.agent.config import load_config
from gpuledger.chargeback.attribution.resolver import WorkloadResolver, build_resolver
from gpuledger.collectors.workload.slurm_jobs import ScontrolJobDirectory
from tests.support.paths import FIXTURES

SLURM_FIXTURES = FIXTURES / "slurm"


def slurm_fixture(name: str) -> str:
    return (SLURM_FIXTURES / name).read_text(encoding="utf-8")


def write_fake_scontrol(
    directory: Path,
    jobs: dict[str, str] | None = None,
    *,
    mode: str = "answer",
    log: Path | None = None,
) -> Path:
    """An executable ``scontrol`` in ``directory``. ``jobs``: job id → the fixture file
    (or an absolute path) printed for it (an unknown id gets the real "Invalid job id"
    error, exit 1).
    ``mode``: ``answer``; ``hang`` (sleeps 30 s); ``down`` (slurmctld unreachable: the
    real error, exit 1). ``log``: each call's arguments are appended to it, one per line."""
    lines = ["#!/bin/sh"]
    if log is not None:
        lines.append(f'for a in "$@"; do printf "%s\\n" "$a"; done >> {shlex.quote(str(log))}')
        lines.append(f"echo -- >> {shlex.quote(str(log))}")
    if mode == "hang":
        lines.append("exec sleep 30")
    elif mode == "down":
        err = SLURM_FIXTURES / "show-job-controller-down.stderr"
        lines.append(f"cat {shlex.quote(str(err))} >&2; exit 1")
    else:
        lines.append('[ "$1 $2 $3" = "show job -o" ] || exit 2')
        lines.append('case "$4" in')
        for job, fixture in (jobs or {}).items():
            path = shlex.quote(str(SLURM_FIXTURES / fixture))  # an absolute path stays
            lines.append(f"  {job}) cat {path}; exit 0;;")
        invalid = shlex.quote(str(SLURM_FIXTURES / "show-job-invalid.stderr"))
        lines.append(f"  *) cat {invalid} >&2; exit 1;;")
        lines.append("esac")
    script = directory / "scontrol"
    script.write_text("\n".join(lines) + "\n", encoding="utf-8")
    script.chmod(0o755)
    return script


def slurm_resolver(
    tmp_path: Path, slurm_yaml: str, *, proc_root: Path | None = None, node_name: str = "vm"
) -> WorkloadResolver:
    """The agent's resolver as its YAML builds it: ``slurm_yaml`` is the indented body of
    ``attribution.slurm``; ``proc_root`` None keeps the default (the real ``/proc``)."""
    root = "" if proc_root is None else f"  proc_root: {proc_root}\n"
    path = tmp_path / "agent.yaml"
    path.write_text(
        f"node_name: {node_name}\nattribution:\n{root}  slurm:\n{slurm_yaml}", encoding="utf-8"
    )
    cfg = load_config(path, environ={})
    return build_resolver(cfg.attribution, cfg.node_name)


def wait_for_lookups(resolver: WorkloadResolver, timeout: float = 5.0) -> None:
    """Until the resolver's ``scontrol`` worker has answered every queued job."""
    assert resolver.slurm is not None
    jobs = resolver.slurm.jobs
    assert isinstance(jobs, ScontrolJobDirectory)
    assert jobs.wait_idle(timeout)
