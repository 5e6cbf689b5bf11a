"""``/proc/PID/cgroup`` → Slurm job, and ``scontrol show job -o`` → job metadata.

The v1 lines marked *captured* come from a real Slurm 22.05.8 on a cgroup v1 host
(``tests/support/fixtures/slurm/README.md``); the others are built from the path formats
of SchedMD/slurm's source at tag ``slurm-26-05-3-1`` (commit
56fe867884038ba2074bd414075b60c2fb1d68bb) or ``slurm-25-11-7-1`` (commit
f56e676bbd3e7cccbdd7c505c030c62bb983ebee), cited per case.
Expectations are written by hand from reading each path.
"""

from __future__ import annotations

import pytest

from gpuledger.collectors.workload.cgroup import parse_cgroup
from gpuledger.collectors.workload.slurm import (
    AmbiguousRecord,
    SlurmJob,
    SlurmJobRef,
    parse_scontrol_job,
    parse_slurm_cgroup,
    valid_job_key,
)
from tests.support.slurm import slurm_fixture

V1_CONTROLLERS = ("freezer", "cpuset", "memory", "devices")


def v1(path: str, others: str = "/") -> str:
    """A v1 file: the controllers Slurm constrains in ``path``, the rest at ``others``."""
    lines = [f"{n}:{c}:{path}" for n, c in zip((6, 3, 4, 5), V1_CONTROLLERS, strict=True)]
    lines += [f"{n}:{c}:{others}" for n, c in ((9, "name=systemd"), (8, "pids"), (1, "cpu"))]
    return "\n".join(lines) + "\n0::/\n"


CASES = [
    pytest.param(
        # captured: Debian's multiple-slurmd build, prefix "/slurm_%n" (src/interfaces/cgroup.c
        # line 198), "%s/uid_%u" / "%s/job_%u" / "%s/step_%s" (src/plugins/cgroup/v1/
        # xcgroup.c lines 414, 424, 439); the batch step is "batch" (src/common/log.c 1746)
        slurm_fixture("cgroup-v1-step-batch.txt"),
        SlurmJobRef("1", "batch", 0, 1, "vm"),
        id="v1-multiple-slurmd-batch-captured",
    ),
    pytest.param(
        slurm_fixture("cgroup-v1-step-0.txt"),  # captured: an srun step, numeric step 0
        SlurmJobRef("2", "0", 0, 1, "vm"),
        id="v1-multiple-slurmd-step0-captured",
    ),
    pytest.param(
        # default prefix "/slurm" (src/interfaces/cgroup.c line 196); the task cgroup is
        # "%s/task_%u" (src/plugins/cgroup/v1/cgroup_v1.c line 339)
        v1("/slurm/uid_1000/job_4242/step_0/task_1", others="/system.slice/slurmd.service"),
        SlurmJobRef("4242", "0", 1000, 1, None),
        id="v1-default-task",
    ),
    pytest.param(
        # the extern step (src/common/log.c line 1748) on a freezer-only layout: the
        # job line stops at step level, cpuset/memory at the job (more lines win only
        # among equally complete answers: a line naming the step is preferred)
        "6:freezer:/slurm/uid_1001/job_77/step_extern\n3:cpuset:/slurm/uid_1001/job_77\n"
        "4:memory:/slurm/uid_1001/job_77\n0::/\n",
        SlurmJobRef("77", "extern", 1001, 1, None),
        id="v1-extern-step-over-job-level-lines",
    ),
    pytest.param(
        # cgroup v2: "%s/%s/%s.scope" of init path, CgroupSlice (default system.slice) and
        # "slurmstepd" (src/plugins/cgroup/v2/cgroup_v2.c lines 67-68, 445); "/job_%u"
        # (line 1933, with CgroupJobIdPaths=yes; always so in 25.11: line 1924 there);
        # "%s/step_%s" (1955), "%s/user" (1985), "%s/task_%u" (2766)
        "0::/system.slice/slurmstepd.scope/job_1234/step_0/user/task_0\n",
        SlurmJobRef("1234", "0", None, 2, None),
        id="v2-default-task",
    ),
    pytest.param(
        "0::/system.slice/slurmstepd.scope/job_1234/step_batch/user/task_0\n",
        SlurmJobRef("1234", "batch", None, 2, None),
        id="v2-batch",
    ),
    pytest.param(
        # salloc's interactive step (src/common/log.c line 1750) and "%s/task_special"
        # (cgroup_v2.c line 2763)
        "0::/system.slice/slurmstepd.scope/job_99/step_interactive/user/task_special\n",
        SlurmJobRef("99", "interactive", None, 2, None),
        id="v2-interactive-task-special",
    ),
    pytest.param(
        # slurmstepd itself in step_x/slurm (the comment above cgroup_p_step_create,
        # cgroup_v2.c line 1900); the extern step's "sleep infinity" lives in step_extern
        "0::/system.slice/slurmstepd.scope/job_99/step_extern/slurm\n",
        SlurmJobRef("99", "extern", None, 2, None),
        id="v2-extern-stepd",
    ),
    pytest.param(
        # a heterogeneous job component's step: "%u" then "+%u" (src/common/log.c 1754-1762)
        "0::/system.slice/slurmstepd.scope/job_500/step_3+1/user/task_2\n",
        SlurmJobRef("500", "3+1", None, 2, None),
        id="v2-het-step",
    ),
    pytest.param(
        # multiple-slurmd: "%s/%s/%s_%s.scope" with the node name (cgroup_v2.c line 441)
        "0::/system.slice/node07_slurmstepd.scope/job_8/step_0/user/task_0\n",
        SlurmJobRef("8", "0", None, 2, "node07"),
        id="v2-multiple-slurmd",
    ),
    pytest.param(
        # CgroupSlice=slurm.slice, slurmd started below a container's cgroup (the init path
        # comes first: cgroup_v2.c line 445)
        "0::/docker/3726184226f5/slurm.slice/slurmstepd.scope/job_61/step_batch/user/task_0\n",
        SlurmJobRef("61", "batch", None, 2, None),
        id="v2-custom-slice-under-init-path",
    ),
    pytest.param(
        # Slurm 26.05's default: the job directory is the SLUID, "/%s" of print_sluid()
        # (cgroup_v2.c line 1936); the example is cgroup.conf(5)'s (doc/man/man5/cgroup.conf.5
        # line 58), the alphabet src/common/sluid.c line 51
        "0::/system.slice/slurmstepd.scope/sEKNKTV3WPV500/step_0/user/task_0\n",
        SlurmJobRef("sEKNKTV3WPV500", "0", None, 2, None),
        id="v2-sluid",
    ),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_slurm_cgroup_layouts(text: str, expected: SlurmJobRef) -> None:
    assert parse_slurm_cgroup(text) == expected
    assert parse_cgroup(text) is None  # not mistaken for a container


@pytest.mark.parametrize(
    "text",
    [
        "0::/system.slice/slurmd.service\n",  # slurmd itself
        "0::/system.slice/slurmstepd.scope/system\n",  # the scope's own sleep infinity
        "6:freezer:/slurm/uid_1000\n",  # a user directory, no job
        "6:freezer:/slurm/job_12/step_0\n",  # v1 without uid_: not a layout Slurm writes
        "0::/system.slice/slurmstepd.scope/job_0/step_0\n",  # job ids start at 1
        "0::/system.slice/slurmstepd.scope/sILLEGAL00000U/step_0\n",  # I, L, U not in the alphabet
        "0::/user.slice/user-1000.slice/session-3.scope\n",
        "0::/kubepods.slice/kubepods-besteffort.slice/job_12\n",
        "not a cgroup file",
    ],
)
def test_not_a_slurm_job(text: str) -> None:
    assert parse_slurm_cgroup(text) is None


@pytest.mark.parametrize(
    ("key", "ok"),
    [
        ("1", True),
        ("4294967294", True),
        ("sEKNKTV3WPV500", True),
        ("0", False),
        ("12;rm", False),
        ("-1", False),
        ("12 13", False),
        ("--help", False),
        ("", False),
    ],
)
def test_only_job_ids_and_sluids_reach_scontrol(key: str, ok: bool) -> None:
    assert valid_job_key(key) is ok


# --- scontrol show job -o ------------------------------------------------------------------
def test_captured_running_job_with_spaces_and_equals_in_values() -> None:
    job = parse_scontrol_job(slurm_fixture("show-job-1-running.txt"))
    assert job == SlurmJob(
        job_id="1",
        name="my train lr=0.1",
        user="root",
        uid=0,
        account="research",
        partition="gpu",
        qos=None,  # "QOS=(null)": no accounting database
        wckey=None,  # not printed unless TrackWCKey
        comment="cost center 42",  # followed by two spaces in the capture
        state="RUNNING",
    )


def test_captured_job_name_with_an_uppercase_word_and_equals() -> None:
    job = parse_scontrol_job(slurm_fixture("show-job-2-running.txt"))
    assert job is not None
    assert (job.name, job.account, job.partition, job.user) == (
        "llama ft A=1",
        "ml-team",
        "gpu",
        "root",
    )


# A record as scontrol_print_job() prints it with accounting and TrackWCKey on
# (src/scontrol/info_job.c, tag slurm-26-05-3-1, lines 179-230 and 407): an array task,
# WCKey after QOS, a user whose name has a dash, a comment with "Key=" words in it.
ODD = (
    "JobId=4242 ArrayJobId=4240 ArrayTaskId=2 JobName=sweep (lr=3e-4) bs=64 "
    "UserId=ana-maria(10042) GroupId=ml(2000) MCS_label=N/A "
    "Priority=4294901759 Nice=0 Account=vision-lab QOS=high WCKey=*proj-x "
    "JobState=RUNNING Reason=None Dependency=(null) Partition=h100 AllocNode:Sid=login1:4242 "
    "TRES=cpu=8,mem=64G,node=1,billing=8,gres/gpu=1 "
    "Command=/home/ana-maria/run sweep.sh WorkDir=/home/ana-maria "
    "Comment=budget=ERC-2024 owner Ana Power=\n"
)


def test_odd_values() -> None:
    job = parse_scontrol_job(ODD)
    assert job == SlurmJob(
        job_id="4242",
        name="sweep (lr=3e-4) bs=64",
        user="ana-maria",
        uid=10042,
        account="vision-lab",
        partition="h100",
        qos="high",
        wckey="proj-x",
        comment="budget=ERC-2024 owner Ana",
        state="RUNNING",
    )
    assert job.field("job_name") == "sweep (lr=3e-4) bs=64"
    assert job.field("wckey") == "proj-x"
    assert job.field("qos") == "high"


def test_only_the_first_record_is_read() -> None:
    two = ODD + ODD.replace("JobId=4242", "JobId=4243").replace("vision-lab", "other")
    job = parse_scontrol_job(two)
    assert job is not None
    assert (job.job_id, job.account) == ("4242", "vision-lab")


@pytest.mark.parametrize(
    "text",
    [
        "",
        slurm_fixture("show-job-invalid.stderr"),
        "No jobs in the system\n",
        "JobId=abc JobName=x\n",
        "JobId=7 JobName=x UserId=a(1)\n",  # cut short: no owner block
    ],
)
def test_no_record(text: str) -> None:
    assert parse_scontrol_job(text) is None


def test_null_account_and_unresolved_user() -> None:
    # uid_to_string() prints the number when the uid has no name (src/common/uid.c
    # lines 506-514, tag slurm-26-05-3-1); a NULL account prints "(null)"; a group name
    # from a directory service may hold a space
    job = parse_scontrol_job(
        "JobId=7 JobName=x UserId=12345(12345) GroupId=domain users(513) MCS_label=N/A "
        "Priority=1 Nice=0 Account=(null) QOS=normal JobState=RUNNING Reason=None "
        "Partition=gpu AllocNode:Sid=login1:77\n"
    )
    assert job is not None
    assert (job.user, job.uid, job.account, job.qos, job.partition) == (
        "12345",
        12345,
        None,
        "normal",
        "gpu",
    )


def test_a_job_name_cannot_move_the_job_to_another_account() -> None:
    forged = slurm_fixture("show-job-1-running.txt").replace(
        "JobName=my train lr=0.1", "JobName=x Account=victim-lab Partition=a100 QOS=high"
    )
    job = parse_scontrol_job(forged)
    assert job is not None
    assert (job.account, job.partition, job.qos) == ("research", "gpu", None)
    assert job.name == "x Account=victim-lab Partition=a100 QOS=high"


@pytest.mark.parametrize(
    "forgery",
    [
        " UserId=bob(1002) GroupId=bob(1002) MCS_label=N/A Priority=1 Nice=0 "
        "Account=victim-lab QOS=normal JobState=RUNNING x",
        " Partition=a100 AllocNode:Sid=login1:1 x",
    ],
)
def test_a_forged_owner_block_in_free_text_makes_the_record_ambiguous(forgery: str) -> None:
    real = slurm_fixture("show-job-1-running.txt")
    for forged in (
        real.replace("Comment=cost center 42", "Comment=cost" + forgery),
        real.replace("JobName=my train lr=0.1", "JobName=my" + forgery),
    ):
        with pytest.raises(AmbiguousRecord):
            parse_scontrol_job(forged)


def test_captured_forgery_is_refused() -> None:
    # a real Slurm 22.05.8 printed this job: a forged account in its name and a whole
    # forged owner block in its comment
    text = slurm_fixture("show-job-5-forged.txt")
    with pytest.raises(AmbiguousRecord):
        parse_scontrol_job(text)
    without_comment = text.split(" Comment=", 1)[0] + " Power=\n"
    job = parse_scontrol_job(without_comment)
    assert job is not None
    assert (job.name, job.account, job.user) == ("x Account=victim-lab", "research", "root")
