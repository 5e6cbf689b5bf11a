"""ScontrolJobDirectory: lookups off the caller's thread, with a stand-in ``scontrol``
(``tests/support/slurm.py``) answering with output captured from a real Slurm, hanging,
failing as a real one does with slurmctld down, or missing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gpuledger.collectors.base import CollectorError
from gpuledger.collectors.workload.slurm_jobs import ScontrolJobDirectory, SlurmLookupHealth
from tests.support.slurm import slurm_fixture, write_fake_scontrol


def test_first_lookup_queues_then_answers_from_memory(tmp_path: Path) -> None:
    log = tmp_path / "argv.log"
    fake = write_fake_scontrol(tmp_path, {"1": "show-job-1-running.txt"}, log=log)
    d = ScontrolJobDirectory(fake, timeout_s=5)
    try:
        assert d.lookup("1") is None  # queued, not waited for
        assert d.wait_idle(5)
        job = d.lookup("1")
        assert job is not None
        assert (job.account, job.name) == ("research", "my train lr=0.1")
        assert d.lookup("1") is job  # cached: scontrol ran once
        assert log.read_text().split("--\n") == ["show\njob\n-o\n1\n", ""]
        assert d.healthy
        assert d.status().cached_jobs == 1
        assert SlurmLookupHealth(d).collect().lookups == 1
    finally:
        d.close()


def test_a_key_that_is_not_a_job_id_never_runs_scontrol(tmp_path: Path) -> None:
    log = tmp_path / "argv.log"
    d = ScontrolJobDirectory(write_fake_scontrol(tmp_path, {}, log=log))
    try:
        for key in ("1;touch x", "$(id)", "--all", "0"):
            assert d.lookup(key) is None
        assert d.wait_idle(1)
        assert not log.exists()
    finally:
        d.close()


def test_an_ended_job_is_remembered_as_unknown_without_failing(tmp_path: Path) -> None:
    d = ScontrolJobDirectory(write_fake_scontrol(tmp_path, {}), start=False)
    assert d.fetch("999") is None  # "Invalid job id specified", exit status 1
    assert d.healthy
    assert d.lookups == 1
    assert d.failures == 0
    assert d.lookup("999") is None
    assert d.status().pending == 0


def test_hanging_scontrol_never_blocks_the_caller(tmp_path: Path) -> None:
    d = ScontrolJobDirectory(write_fake_scontrol(tmp_path, mode="hang"), timeout_s=0.5)
    try:
        started = time.monotonic()
        for _ in range(100):
            assert d.lookup("42") is None
        assert time.monotonic() - started < 0.2  # memory only, while scontrol hangs
        assert d.wait_idle(5)  # the worker gave up at its timeout (the child killed)
        assert not d.healthy
        assert d.last_error is not None
        assert "no answer in 0.5s" in d.last_error
        with pytest.raises(CollectorError, match="no answer"):
            SlurmLookupHealth(d).collect()
    finally:
        d.close()


def test_controller_down_is_reported_and_retried(tmp_path: Path) -> None:
    now = [1000.0]
    fake = write_fake_scontrol(tmp_path, mode="down")
    d = ScontrolJobDirectory(fake, retry_s=30, clock=lambda: now[0], start=False)
    d.fetch("5")
    assert not d.healthy
    assert d.last_error == (
        f"{fake} show job 5: slurm_load_jobs error: Unable to contact slurm controller "
        "(connect failure)"
    )
    assert d.lookup("5") is None
    assert d.status().pending == 0
    now[0] += 31
    assert d.lookup("5") is None
    assert d.status().pending == 1
    write_fake_scontrol(tmp_path, {"5": "show-job-2-running.txt"})  # the controller is back
    job = d.fetch("5")
    assert job is not None
    assert job.account == "ml-team"
    assert d.healthy


def test_missing_scontrol(tmp_path: Path) -> None:
    d = ScontrolJobDirectory(tmp_path / "no-such-scontrol", start=False)
    assert d.fetch("5") is None
    assert not d.healthy
    assert d.last_error is not None
    assert d.last_error.startswith("cannot run ")


def test_entries_expire_when_the_job_is_no_longer_seen(tmp_path: Path) -> None:
    now = [0.0]
    fake = write_fake_scontrol(tmp_path, {"1": "show-job-1-running.txt"})
    d = ScontrolJobDirectory(fake, cache_s=600, clock=lambda: now[0], start=False)
    d.fetch("1")
    now[0] = 500.0
    assert d.lookup("1") is not None  # used: kept
    now[0] = 1000.0
    assert d.lookup("1") is not None  # 500 s since last use
    now[0] = 1700.0
    d.lookup("2")  # any miss sweeps: job 1 unused for 700 s
    assert d.status().cached_jobs == 0


def test_a_failure_is_forgotten_once_its_job_is_no_longer_asked_for(tmp_path: Path) -> None:
    now = [0.0]
    fake = write_fake_scontrol(tmp_path, mode="down")
    d = ScontrolJobDirectory(fake, retry_s=30, clock=lambda: now[0], start=False)
    d.fetch("5")
    now[0] = 45.0
    assert not d.healthy  # still within two retries: the job may still be there
    now[0] = 61.0
    assert d.healthy  # not retried for 61 s: the process is gone
    assert d.last_error is None
    assert SlurmLookupHealth(d).collect().failures == 1


def test_a_forged_record_is_a_failed_lookup_not_an_owner(tmp_path: Path) -> None:
    forged = tmp_path / "forged.txt"
    forged.write_text(
        slurm_fixture("show-job-1-running.txt").replace(
            "Comment=cost center 42",
            "Comment=x UserId=bob(1002) GroupId=bob(1002) MCS_label=N/A Priority=1 Nice=0 "
            "Account=victim-lab QOS=normal JobState=RUNNING y",
        ),
        encoding="utf-8",
    )
    d = ScontrolJobDirectory(write_fake_scontrol(tmp_path, {"1": str(forged)}), start=False)
    assert d.fetch("1") is None
    assert d.lookup("1") is None  # not cached: named slurm-job-1, retried later
    assert not d.healthy
    assert d.last_error is not None
    assert "appear more than once" in d.last_error
