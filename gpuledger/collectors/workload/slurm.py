"""Which Slurm job a host process belongs to, from ``/proc/PID/cgroup``, and what
``scontrol show job -o`` says about that job.

slurmd's cgroup plugins put every step's processes in a cgroup named after the job. The
layouts, each from SchedMD/slurm at tag ``slurm-26-05-3-1`` (commit
``56fe867884038ba2074bd414075b60c2fb1d68bb``) unless said otherwise:

* **cgroup v1** (``cgroup/v1``), one line per mounted controller:
  ``<prepend>/uid_<uid>/job_<jobid>/step_<step>[/task_<n>]``. ``<prepend>`` is
  ``CgroupPrepend``, default ``/slurm``, or ``/slurm_%n`` (``%n`` = the node name) when
  built with multiple-slurmd (``src/interfaces/cgroup.c`` lines 196 and 198); the
  ``uid_``/``job_``/``step_`` formats are ``"%s/uid_%u"``, ``"%s/job_%u"``,
  ``"%s/step_%s"`` (``src/plugins/cgroup/v1/xcgroup.c`` lines 414, 424, 439) and the task
  ``"%s/task_%u"`` (``src/plugins/cgroup/v1/cgroup_v1.c`` line 339).
* **cgroup v2** (``cgroup/v2``), the single ``0::`` line:
  ``<init path>/<CgroupSlice>/slurmstepd.scope/job_<jobid>/step_<step>/user/task_<n>``.
  The scope is ``"%s/%s/%s.scope"`` of the init cgroup path, ``CgroupSlice`` (default
  ``system.slice``) and ``slurmstepd``, or ``"%s/%s/%s_%s.scope"`` with the node name in
  front for multiple-slurmd (``src/plugins/cgroup/v2/cgroup_v2.c`` lines 67-68, 441,
  445); the job is ``"/job_%u"`` (line 1933), the step ``"%s/step_%s"`` (line 1955), the
  user processes ``"%s/user"`` (line 1985) and the tasks ``"%s/task_%u"`` or
  ``"%s/task_special"`` (lines 2763, 2766); slurmstepd itself sits in ``step_<x>/slurm``.
  Slurm 25.11 and earlier always write ``job_<jobid>`` (tag ``slurm-25-11-7-1``, commit
  ``f56e676bbd3e7cccbdd7c505c030c62bb983ebee``, cgroup_v2.c line 1924).
* **cgroup v2, Slurm 26.05+ default**: the job directory is the job's SLUID instead,
  ``"/%s"`` of ``print_sluid()`` (cgroup_v2.c line 1936; ``CgroupJobIdPaths=yes`` restores
  ``job_<id>``, ``doc/man/man5/cgroup.conf.5`` line 58): ``s`` and 13 characters of
  Crockford base32 ``0123456789ABCDEFGHJKMNPQRSTVWXYZ`` (``src/common/sluid.c`` lines 51,
  116-135), e.g. ``sEKNKTV3WPV500``. ``scontrol show job`` accepts a SLUID where a job id
  goes (``src/common/slurm_protocol_defs.c`` line 1059).

Step names are ``log_build_step_id_str(..., NO_PREFIX | NO_JOB)``: ``batch``, ``extern``,
``interactive``, ``TBD`` (pending), a number, or ``<n>+<het component>``
(``src/common/log.c`` lines 1745-1762).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gpuledger.collectors.workload.cgroupfile import tally_paths

__all__ = [
    "AmbiguousRecord",
    "SlurmJob",
    "SlurmJobRef",
    "parse_scontrol_job",
    "parse_slurm_cgroup",
    "valid_job_key",
]

# Each pattern with the upstream line it follows (SchedMD/slurm, tag slurm-26-05-3-1,
# commit 56fe867884038ba2074bd414075b60c2fb1d68bb):
# "job_%u" (v1: src/plugins/cgroup/v1/xcgroup.c l. 424; v2: src/plugins/cgroup/v2/
# cgroup_v2.c l. 1933): a uint32 job id, never 0
_JOB_ID = re.compile(r"[1-9][0-9]{0,9}")
# print_sluid(): "s" + 13 of cb32map "0123456789ABCDEFGHJKMNPQRSTVWXYZ" (src/common/sluid.c
# l. 51, 116-135), the v2 job directory by default since 26.05 (cgroup_v2.c l. 1936)
_SLUID = re.compile(r"[sS][0-9A-HJKMNP-TV-Z]{13}")
# "%s/step_%s" (xcgroup.c l. 439, cgroup_v2.c l. 1955) of log_build_step_id_str()
# (src/common/log.c l. 1745-1762): batch, extern, interactive, TBD, <n>, <n>+<het comp>
_STEP = re.compile(r"step_(?P<step>batch|extern|interactive|TBD|[0-9]+(?:\+[0-9]+)?)")
# CgroupPrepend "/slurm", or "/slurm_%n" with multiple-slurmd (src/interfaces/cgroup.c
# l. 196, 198)
_V1_ROOT = re.compile(r"slurm(?:_(?P<node>.+))?")
# "%s/uid_%u" (xcgroup.c l. 414)
_V1_UID = re.compile(r"uid_(?P<uid>[0-9]+)")
# "%s/%s/%s.scope" / "%s/%s/%s_%s.scope" with SYSTEM_CGSCOPE "slurmstepd" (cgroup_v2.c
# l. 68, 445, 441)
_V2_SCOPE = re.compile(r"(?:(?P<node>.+)_)?slurmstepd\.scope")


def valid_job_key(key: str) -> bool:
    """A job id (digits) or a SLUID: the only strings ever passed to ``scontrol``."""
    return bool(_JOB_ID.fullmatch(key) or _SLUID.fullmatch(key))


@dataclass(frozen=True, slots=True)
class SlurmJobRef:
    """What a Slurm cgroup path says: ``job`` is the numeric job id, or the job's SLUID
    on Slurm 26.05+ cgroup v2 hosts; ``step`` as Slurm names it (``batch``, ``0``...);
    ``uid`` only in v1 paths; ``node`` for a multiple-slurmd node's prefix."""

    job: str
    step: str | None = None
    uid: int | None = None
    cgroup_version: int = 2
    node: str | None = None


def _job_key(segment: str) -> str | None:
    if segment.startswith("job_") and _JOB_ID.fullmatch(segment[4:]):
        return segment[4:]
    if _SLUID.fullmatch(segment):
        return segment[0].lower() + segment[1:]
    return None


def _step(segments: list[str], i: int) -> str | None:
    if i < len(segments):
        m = _STEP.fullmatch(segments[i])
        if m is not None:
            return m.group("step")
    return None


def _parse_path(path: str) -> SlurmJobRef | None:
    segments = [s for s in path.split("/") if s and s != ".."]
    for i, seg in enumerate(segments):
        m = _V2_SCOPE.fullmatch(seg)
        if m is not None and i + 1 < len(segments):
            job = _job_key(segments[i + 1])
            if job is not None:
                return SlurmJobRef(job, _step(segments, i + 2), None, 2, m.group("node"))
        m = _V1_ROOT.fullmatch(seg)
        if m is not None and i + 2 < len(segments):
            uid = _V1_UID.fullmatch(segments[i + 1])
            nxt = segments[i + 2]
            if uid is not None and nxt.startswith("job_") and _JOB_ID.fullmatch(nxt[4:]):
                return SlurmJobRef(
                    nxt[4:], _step(segments, i + 3), int(uid.group("uid")), 1, m.group("node")
                )
    return None


def parse_slurm_cgroup(text: str) -> SlurmJobRef | None:
    """The Slurm job named by a ``/proc/PID/cgroup`` file, or ``None`` (not in a job).

    Every line is read (v1 hosts have one per controller, and controllers Slurm does not
    constrain stay outside the job); the job most lines agree on wins, a line naming the
    step preferred over one that stops at the job (v1 cpuset/memory vs freezer).
    """
    found = tally_paths(text, _parse_path)
    if not found:
        return None
    return max(found.items(), key=lambda item: (item[0].step is not None, item[1]))[0]


# --- scontrol show job -o ------------------------------------------------------------------
# scontrol_print_job()'s one-liner (src/scontrol/info_job.c, tag slurm-26-05-3-1, lines
# 171-773): "Key=value" fields joined by single spaces, values printed raw with "%s" (so
# a job name or comment may hold spaces and "=", a NULL string prints "(null)"). Only
# state_desc (Reason) has its spaces replaced (line 236). The keys below are every key
# that function prints; inside a free-text value (the comment) a word only starts a new
# field when it is one of them, so "Comment=budget=ERC owner Ana" keeps its text. (Keys
# taken from the "Key=" literals of that file, plus those printed through "%s".)
_KNOWN_KEYS = frozenset(
    {
        "Account", "AccrueTime", "AdminComment", "AllocNode:Sid", "AllocTRES", "ArrayJobId",
        "ArrayTaskId", "ArrayTaskThrottle", "BatchFeatures", "BatchFlag", "BatchHost",
        "BurstBuffer", "BurstBufferState", "CPUFreqReq", "CPU_IDs", "CPUs/Task",
        "ClusterFeatures", "Command", "Comment", "CompletingTime", "Container", "ContainerID",
        "ContainerType", "Contiguous", "CoreSpec", "CpusPerTres", "CronJob", "CrontabSpec",
        "Deadline", "DelayBoot", "Dependency", "DerivedExitCode", "EligibleTime", "EndTime",
        "ExcNodeList", "Exclusive", "ExitCode", "ExpeditedRequeue", "Extra", "FailedNode",
        "Features", "FedOrigin", "GRES", "GresAllowTaskSharing", "GresEnforceBind",
        "GresOneTaskPerSharing", "GroupId", "HetJobId", "HetJobIdSet", "HetJobOffset",
        "Index", "JOB_GRES", "JobId", "JobName", "JobState", "KillOnInvalidDependent",
        "LastSchedEval", "Licenses", "LicensesAlloc", "MCS_label", "MailType", "MailUser",
        "Mem", "MemPerTres", "MinCPUsNode", "MinMemoryCPU", "MinMemoryNode", "MinTmpDiskNode",
        "Network", "Nice", "Node", "NodeList", "Nodes", "NtasksPerN:B:S:C", "NtasksPerTRES",
        "NumCPUs", "NumNodes", "NumTasks", "OOMKillStep", "OverSubscribe", "Partition",
        "Power", "PreemptEligibleTime", "PreemptTime", "Prefer", "Priority", "QOS", "Reason",
        "Reboot", "ReqB:S:C:T", "ReqNodeList", "ReqTRES", "Requeue", "Reservation",
        "ResizeTime", "Restarts", "ResvPorts", "RunTime", "SELinuxContext", "SLUID",
        "Scheduler", "SecsPreSuspend", "SegmentSize", "Socks/Node", "SpreadJob",
        "SrunHost:Pid", "StartTime", "State", "StdErr", "StdIn", "StdOut", "StepId",
        "StepMgrEnabled", "SubmitLine", "SubmitTime", "SuspendTime", "Switches",
        "SystemComment", "TRES", "ThreadSpec", "TimeLimit", "TimeMin", "TresBind", "TresFreq",
        "TresPerJob", "TresPerNode", "TresPerSocket", "TresPerStep", "TresPerTask", "UserId",
        "WCKey", "WorkDir",
    }
)  # fmt: skip
_FREE_TEXT = frozenset(
    {"JobName", "Comment", "AdminComment", "SystemComment", "Extra", "Command",
     "SubmitLine", "WorkDir", "StdErr", "StdIn", "StdOut", "MailUser"}
)  # fmt: skip
_KEY = re.compile(r"([A-Za-z][A-Za-z0-9_:/]*)=")


def _fields(line: str) -> dict[str, str]:
    """One ``scontrol show job -o`` record → ``{key: value}`` (first record only)."""
    out: dict[str, str] = {}
    key: str | None = None
    for word in line.strip().split(" "):
        m = _KEY.match(word)  # an empty word: two spaces in a row, kept in the value
        new = m is not None and (
            m.group(1) in _KNOWN_KEYS or (key not in _FREE_TEXT and word[:1].isupper())
        )
        if m is not None and new:
            key = m.group(1)
            if key == "JobId" and "JobId" in out:
                break  # a second record (a het or array job printed whole)
            out[key] = word[m.end() :]
        elif key is not None:
            out[key] += " " + word
    return out


@dataclass(frozen=True, slots=True)
class SlurmJob:
    """The fields of one job that attribution names owners from (``None``: not set)."""

    job_id: str
    name: str | None = None
    user: str | None = None
    uid: int | None = None
    account: str | None = None
    partition: str | None = None
    qos: str | None = None
    wckey: str | None = None
    comment: str | None = None
    state: str | None = None

    def field(self, name: str) -> str | None:
        """``account``, ``user``, ``partition``, ``job_name``, ``qos``, ``wckey`` or
        ``comment``; ``None`` for an unset value."""
        if name == "job_name":
            return self.name
        value = getattr(self, name, None)
        return value if isinstance(value, str) and value else None


# The fields attribution names owners from are read by position, not by key: a job name,
# a comment or the submit line is free text the job's user chose, and may itself hold
# "Account=other-team". scontrol_print_job() prints, right after the job name, always
# (src/scontrol/info_job.c, tag slurm-26-05-3-1, lines 218-234):
#   "UserId=%s(%u) GroupId=%s(%u) MCS_label=%s" " Priority=%u Nice=%"PRIi64" Account=%s
#   QOS=%s" [" WCKey=%s" with TrackWCKey] " JobState=%s "
# and later "Partition=%s AllocNode:Sid=%s:%u" (line 407). Each block must occur exactly
# once in the record; a second one (forged in free text) makes the record ambiguous.
_OWNER_BLOCK = re.compile(
    r" UserId=(?P<user>[^()]*)\((?P<uid>[0-9]+)\) GroupId=[^()]*\([0-9]+\) MCS_label=\S*"
    r" Priority=[0-9]+ Nice=-?[0-9]+ Account=(?P<account>\S*) QOS=(?P<qos>\S*)"
    r"(?: WCKey=(?P<wckey>\S*))? JobState=(?P<state>[A-Z_]+) "
)
_PARTITION_BLOCK = re.compile(r" Partition=(?P<partition>\S*) AllocNode:Sid=\S*:[0-9]+ ")
_NAME_TAIL = re.compile(r"(?: SLUID=\S+)?(?: HetJobIdSet=\S+)?$")  # lines 203-212


class AmbiguousRecord(ValueError):
    """A record whose owner fields occur more than once (forged in a free-text value)."""


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return None if value in ("", "(null)", "N/A") else value


def parse_scontrol_job(text: str) -> SlurmJob | None:
    """The first record of ``scontrol show job -o <id>`` output, or ``None`` if the text
    holds no job record. ``UserId=alice(1000)`` gives user ``alice`` and uid 1000;
    ``(null)`` and empty values are ``None``; a WCKey's leading ``*`` (Slurm marks a
    default wckey so) is dropped. Raises :class:`AmbiguousRecord` when the user, account
    or partition block appears twice (free text forging it): no owner is better than a
    wrong one."""
    for line in text.splitlines():
        if not line.startswith("JobId="):
            continue
        line = line.rstrip("\n") + " "
        job_id = line[len("JobId=") :].split(" ", 1)[0]
        if not _JOB_ID.fullmatch(job_id):
            return None
        owners = list(_OWNER_BLOCK.finditer(line))
        partitions = list(_PARTITION_BLOCK.finditer(line))
        if len(owners) > 1 or len(partitions) > 1:
            raise AmbiguousRecord(
                f"job {job_id}: its user/account fields appear more than once "
                "(forged in the job name or comment?)"
            )
        if not owners:
            return None
        o = owners[0]
        name_at = line.find(" JobName=")
        name = None
        if 0 <= name_at < o.start():
            name = _NAME_TAIL.sub("", line[name_at + len(" JobName=") : o.start()])
        wckey = _clean(o.group("wckey"))
        if wckey is not None:
            wckey = wckey.lstrip("*") or None
        after = line[o.end() - 1 :]  # free text only ever after the owner block
        return SlurmJob(
            job_id=job_id,
            name=_clean(name),
            user=_clean(o.group("user")),
            uid=int(o.group("uid")),
            account=_clean(o.group("account")),
            partition=_clean(partitions[0].group("partition")) if partitions else None,
            qos=_clean(o.group("qos")),
            wckey=wckey,
            comment=_clean(_fields(after).get("Comment")),
            state=o.group("state"),
        )
    return None
