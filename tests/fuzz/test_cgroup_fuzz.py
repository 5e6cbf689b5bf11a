"""Property-based tests (hypothesis) for gpuledger.collectors.workload.cgroup.

* any text (and bytes decoded as ``read_process`` decodes them), huge lines and deep
  paths: ``parse_cgroup`` returns ``None`` or a well-formed :class:`CgroupRef` naming only
  a UID and container ID that are in the text, within a deadline and with memory bounded
  by the input's size;
* round trip: cgroup files built from parts (QoS class, pod UID dashed, with ``_`` or a
  static pod's hash, runtime scope / containerd colon form / cgroupfs bare ID, systemd and
  cgroupfs drivers, v1 controller lines, the v2 ``0::`` line, hybrids, kind and minikube
  nesting, a private cgroup namespace) give back exactly the UID (normalized), container
  ID, runtime and QoS class they were built from;
* files mutated so that they no longer name the pod (UID truncated or made non-hex,
  ``kubepods`` or ``.slice`` broken, the text cut anywhere) never give a *wrong* UID:
  the right one or none;
* ``read_process`` over a fake proc root: arbitrary file contents, files missing, a
  directory or a dangling or looping symlink in place of a file, and errors injected at
  open (the process exiting between the listing and the read, permission denied, EIO)
  give ``None`` or a ``ProcessInfo`` that says which; reads stop at 64 KiB whatever the
  file's size.
"""

from __future__ import annotations

import errno
import os
import re
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gpuledger.collectors.workload.cgroup import CgroupRef, ProcessInfo, parse_cgroup, read_process

FUZZ = settings(
    max_examples=400,
    deadline=timedelta(milliseconds=500),
    suppress_health_check=[HealthCheck.too_slow],
)
ROUND_TRIP = settings(max_examples=400, deadline=timedelta(milliseconds=500))
# Examples that write a proc tree to disk: fewer, and a deadline that allows for the disk.
FILES = settings(
    max_examples=150,
    deadline=timedelta(milliseconds=2000),
    suppress_health_check=[HealthCheck.too_slow],
)

HEX = "0123456789abcdef"
RUNTIMES = {None, "docker", "containerd", "cri-o", "podman"}
QOS = {None, "guaranteed", "burstable", "besteffort"}
_UID_FORM = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32}")
_ID_FORM = re.compile(r"[0-9a-f]{12,64}")


def _squash(text: str) -> str:
    """Text with case and UID separators ignored: where a normalized UID must occur."""
    return text.lower().replace("-", "").replace("_", "")


def _check_ref(text: str, ref: CgroupRef | None) -> None:
    """What any answer must look like, whatever the input."""
    if ref is None:
        return
    assert isinstance(ref, CgroupRef)
    assert ref.pod_uid is not None or ref.container_id is not None
    if ref.pod_uid is not None:
        assert _UID_FORM.fullmatch(ref.pod_uid), ref
        assert _squash(ref.pod_uid) in _squash(text)  # never invented
    if ref.container_id is not None:
        assert _ID_FORM.fullmatch(ref.container_id), ref
        assert ref.container_id in text
    assert ref.runtime in RUNTIMES
    assert ref.runtime is None or ref.container_id is not None
    assert ref.qos in QOS
    assert (ref.qos is None) == (ref.pod_uid is None)


# ------------------------------------------------------------------------- arbitrary input

# Tokens of real cgroup lines, so random files get past the first checks.
TOKENS = [
    "0", "1", "12", ":", "::", "/", "//", "..", "\n", "\r\n", " ", "\t", "\x00",
    "kubepods", "kubepods.slice", "kubepods-", "burstable", "besteffort", "-pod", "pod",
    ".slice", ".scope", "docker", "docker-", "cri-containerd-", "crio-", "containerd-",
    "libpod-", ":cri-containerd:", ":crio:", ":docker:", "kubelet-", "system.slice",
    "memory", "name=systemd", "cpu,cpuacct", "_", "-", "a", "G", "\u00e9", "\u2028",
    "3d274242-8ee0-11e9-a8a6-1e68d864ef1a", "7d4424e6_bb13_42f4_a47a_45a4828bf54d",
    "36b6d6be73b1065af369b3985edafa09", "0123456789ab", "0123456789abcdef" * 4, "ABCDEF",
]  # fmt: skip
cgroup_shaped = st.lists(st.sampled_from(TOKENS), max_size=60).map("".join)


@FUZZ
@given(st.text(max_size=2000))
def test_any_text_gives_none_or_a_well_formed_ref(text: str) -> None:
    _check_ref(text, parse_cgroup(text))


@FUZZ
@given(st.binary(max_size=2000))
def test_any_bytes_decoded_as_read_process_does(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    _check_ref(text, parse_cgroup(text))


@FUZZ
@given(st.lists(cgroup_shaped, max_size=12).map("\n".join))
def test_cgroup_shaped_text_gives_none_or_a_well_formed_ref(text: str) -> None:
    _check_ref(text, parse_cgroup(text))


def _peak_bytes(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# Pieces that make a long line expensive for a careless parser: segment separators,
# almost-matching slice names (regex backtracking), colons, separators in a UID.
LONG_PIECES = ["/", "-", "a", ":", ".", "_", "kubepods-", "-pod", ".slice", "0", "/..", "\x00"]


@settings(
    max_examples=25,
    deadline=timedelta(milliseconds=3000),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    st.lists(
        st.tuples(st.sampled_from(LONG_PIECES), st.sampled_from([1, 100, 10_000, 100_000])),
        min_size=1,
        max_size=6,
    ),
    st.sampled_from(["0::", "4:memory:", "", "0::/kubepods.slice/"]),
)
def test_huge_lines_and_deep_paths_are_linear(runs: list[tuple[str, int]], head: str) -> None:
    text = head + "".join(piece * count for piece, count in runs)
    text = text[:200_000]
    start = time.perf_counter()
    peak = _peak_bytes(lambda: _check_ref(text, parse_cgroup(text)))
    elapsed = time.perf_counter() - start
    # Linear work: under a second for 200 KB even under tracemalloc and load.
    assert elapsed < 2.5, (elapsed, len(text))
    # Memory: a few copies of the text plus one small object per path segment.
    assert peak <= 128 * len(text) + 256 * 1024, (peak, len(text))


def test_a_megabyte_of_lines_is_fast() -> None:
    one = (
        "4:memory:/kubepods.slice/kubepods-burstable.slice/"
        "kubepods-burstable-pod7d4424e6_bb13_42f4_a47a_45a4828bf54d.slice/"
        "docker-" + "d0" * 32 + ".scope\n"
    )
    text = one * (1_000_000 // len(one))
    start = time.perf_counter()
    ref = parse_cgroup(text)
    assert time.perf_counter() - start < 5
    assert ref is not None
    assert ref.pod_uid == "7d4424e6-bb13-42f4-a47a-45a4828bf54d"


# ------------------------------------------------------------------------------ round trip

SCOPE_PREFIXES = {
    "docker-": "docker",
    "cri-containerd-": "containerd",
    "containerd-": "containerd",
    "crio-": "cri-o",
    "libpod-": "podman",
}
COLON_RUNTIMES = {
    "cri-containerd": "containerd",
    "containerd": "containerd",
    "crio": "cri-o",
    "docker": "docker",
}
V1_CONTROLLERS = [
    "memory", "cpu,cpuacct", "cpuacct,cpu", "pids", "blkio", "devices", "freezer",
    "perf_event", "hugetlb", "cpuset", "net_cls,net_prio",
]  # fmt: skip
ROOT_CONTROLLERS = ["rdma", "name=systemd", "files", "misc"]  # often left at "/"

hex_text = st.text(alphabet=HEX, min_size=64, max_size=64)


class Built:
    """A cgroup file built from parts, the ref it must give, and where its UID sits."""

    def __init__(self, text: str, expected: CgroupRef, raw_uid: str, container_id: str | None):
        self.text = text
        self.expected = expected
        self.raw_uid = raw_uid  # the UID as written in the path
        self.container_id = container_id

    def __repr__(self) -> str:
        return f"Built({self.text!r}, {self.expected!r})"


@st.composite
def kubepods_paths(draw: st.DrawFn) -> tuple[str, CgroupRef, str, str | None]:
    """One cgroup path of a pod's container (or of the pod itself)."""
    qos = draw(st.sampled_from(["guaranteed", "burstable", "besteffort"]))
    static = draw(st.booleans())
    uid = draw(st.text(alphabet=HEX, min_size=32, max_size=32) if static else st.uuids().map(str))
    uid_written = uid.upper() if draw(st.integers(0, 4)) == 0 else uid  # normalized on the way
    cid = draw(hex_text)
    driver = draw(st.sampled_from(["systemd", "cgroupfs"]))
    segments: list[str]
    container: str | None = cid
    runtime: str | None
    if driver == "systemd":
        slice_uid = uid_written.replace("-", "_") if draw(st.integers(0, 3)) else uid_written
        root = draw(st.sampled_from(["", "kubelet"]))  # kind: --cgroup-root=/kubelet.slice
        base = f"{root}-kubepods" if root else "kubepods"
        qos_part = "" if qos == "guaranteed" else f"-{qos}"
        pod_segment = f"{base}{qos_part}-pod{slice_uid}.slice"
        chain = [*(["kubelet.slice"] if root else []), f"{base}.slice"]
        if qos != "guaranteed":
            chain.append(f"{base}{qos_part}.slice")
        form = draw(st.sampled_from(["scope", "scope", "colon", "pod only"]))
        if form == "colon":  # containerd's colon form: <pod slice>:<runtime>:<id>
            colon_rt = draw(st.sampled_from(sorted(COLON_RUNTIMES)))
            parents = draw(st.sampled_from([[], ["system.slice", "containerd.service"], chain]))
            segments = [*parents, f"{pod_segment}:{colon_rt}:{cid}"]
            runtime = COLON_RUNTIMES[colon_rt]
        else:
            # A reader in another cgroup namespace sees a suffix of the chain.
            keep = draw(st.integers(0, len(chain)))
            segments = [*chain[keep:], pod_segment]
            if form == "scope":
                prefix = draw(st.sampled_from(sorted(SCOPE_PREFIXES)))
                segments.append(f"{prefix}{cid}.scope")
                runtime = SCOPE_PREFIXES[prefix]
            else:
                container = runtime = None
    else:
        segments = ["kubepods", *([] if qos == "guaranteed" else [qos]), f"pod{uid_written}"]
        if draw(st.integers(0, 4)):
            segments.append(cid)
        else:
            container = None
        runtime = None
    nesting = draw(
        st.sampled_from(["", "docker/{node}", "../..", "../../..", "docker/{node}/../.."])
    )
    if nesting:
        segments = [*nesting.format(node=draw(hex_text)).split("/"), *segments]
    path = "/" + "/".join(segments) + draw(st.sampled_from(["", "", "/"]))
    return path, CgroupRef(uid, container, runtime, qos), uid_written, container


@st.composite
def kubepods_files(draw: st.DrawFn) -> Built:
    path, expected, raw_uid, container = draw(kubepods_paths())
    version = draw(st.sampled_from(["v1", "v2", "hybrid"]))
    lines: list[str] = []
    if version == "v2":
        lines.append(f"0::{path}")
    else:
        controllers = draw(st.lists(st.sampled_from(V1_CONTROLLERS), min_size=1, max_size=6))
        roots = draw(st.lists(st.sampled_from(ROOT_CONTROLLERS), max_size=2))
        numbered = [(c, path) for c in controllers] + [(c, "/") for c in roots]
        numbered = draw(st.permutations(numbered))
        lines += [f"{len(numbered) - i}:{c}:{p}" for i, (c, p) in enumerate(numbered)]
        if version == "hybrid":
            lines.append("0::/")
    end = draw(st.sampled_from(["\n", "\r\n", " \n", "\n\n"]))
    text = end.join(lines) + draw(st.sampled_from(["", end]))
    return Built(text, expected, raw_uid, container)


# The real lines of tests/collectors/workload/test_cgroup.py, as the generator writes them.
_GUARANTEED_V2 = (
    "0::/kubepods.slice/kubepods-poddc430cd3_34b7_4ea6_be26_ddfd88d7ddff.slice/"
    "cri-containerd-8564224395a4fbf7f2792baa22ee16dfc8f8e862e20342d3b2bcc211a3939af6.scope\n"
)


@ROUND_TRIP
@given(kubepods_files())
@example(
    Built(
        _GUARANTEED_V2,
        CgroupRef(
            "dc430cd3-34b7-4ea6-be26-ddfd88d7ddff",
            "8564224395a4fbf7f2792baa22ee16dfc8f8e862e20342d3b2bcc211a3939af6",
            "containerd",
            "guaranteed",
        ),
        "dc430cd3_34b7_4ea6_be26_ddfd88d7ddff",
        "8564224395a4fbf7f2792baa22ee16dfc8f8e862e20342d3b2bcc211a3939af6",
    )
)
def test_built_kubepods_files_round_trip(built: Built) -> None:
    assert parse_cgroup(built.text) == built.expected


# ------------------------------------------------------------------------------- mutations


def _non_hex_at(text: str, index: int, char: str) -> str:
    return text[:index] + char + text[index + 1 :]


@st.composite
def broken_pod_files(draw: st.DrawFn) -> tuple[Built, str]:
    """A built file and a mutation of it that no longer names the pod validly."""
    built = draw(kubepods_files())
    raw = built.raw_uid
    kind = draw(
        st.sampled_from(
            ["truncate uid", "non-hex uid", "kubepods", "slice", "non-hex id", "cut", "drop pod"]
        )
    )
    text = built.text
    if kind == "truncate uid":
        cut = draw(st.integers(0, len(raw) - 1))
        for written in {raw, raw.replace("-", "_")}:
            text = text.replace(written, written[:cut])
    elif kind == "non-hex uid":
        i = draw(st.integers(0, len(raw) - 1))
        bad = draw(st.sampled_from("gzGZ+~ -_"))
        for written in {raw, raw.replace("-", "_")}:
            text = text.replace(written, _non_hex_at(written, i, bad))
    elif kind == "kubepods":
        text = text.replace("kubepods", draw(st.sampled_from(["kubepod", "kube-pods", "Kubepods"])))
    elif kind == "slice":
        text = text.replace("pod" + raw.replace("-", "_") + ".slice", "pod" + raw + ".slic")
        text = text.replace("pod" + raw + ".slice", "pod" + raw + ".slic")
        text = text.replace("/pod" + raw, "/p0d" + raw)  # cgroupfs: the directory name
    elif kind == "non-hex id" and built.container_id is not None:
        i = draw(st.integers(0, 63))
        text = text.replace(built.container_id, _non_hex_at(built.container_id, i, "g"))
    elif kind == "cut":
        text = text[: draw(st.integers(0, len(text)))]
    else:  # the pod's own segment removed from every line
        text = "\n".join(
            "/".join(seg for seg in line.split("/") if _squash(raw) not in _squash(seg))
            for line in text.splitlines()
        )
    return built, text


@ROUND_TRIP
@given(broken_pod_files())
def test_mutated_files_never_give_a_wrong_uid(case: tuple[Built, str]) -> None:
    built, text = case
    ref = parse_cgroup(text)
    _check_ref(text, ref)
    if ref is not None and ref.pod_uid is not None:
        assert ref.pod_uid == built.expected.pod_uid, (text, ref)
    if ref is not None and ref.container_id is not None and built.container_id is not None:
        # The container ID is the one written, a prefix of it left by a cut, or, with the
        # pod gone, the kind/minikube node container the pod's tree hangs below.
        assert built.container_id.startswith(ref.container_id) or (
            f"/docker/{ref.container_id}" in text and ref.pod_uid is None
        ), (text, ref)


# ---------------------------------------------------------------------------- read_process

FILE_STATES = ["file", "file", "file", "missing", "directory", "dangling link", "link loop"]
contents = st.one_of(
    st.binary(max_size=600),
    kubepods_files().map(lambda b: b.text.encode()),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


def _make(path: Path, state: str, data: bytes) -> None:
    if state == "file":
        path.write_bytes(data)
    elif state == "directory":
        path.mkdir()
    elif state == "dangling link":
        path.symlink_to(path.parent / "no-such-target")
    elif state == "link loop":
        path.symlink_to(path)


def _decoded(data: bytes) -> str:
    return data[: 64 * 1024].decode("utf-8", errors="replace")


def _looks_like_cgroup(text: str) -> bool:
    return any(line.count(":") >= 2 for line in text.splitlines())


@FILES
@given(
    st.integers(1, 4_194_304),
    st.sampled_from(["dir", "dir", "dir", "missing", "file"]),
    st.tuples(*[st.tuples(st.sampled_from(FILE_STATES), contents)] * 3),
    st.booleans(),
)
def test_read_process_on_a_fuzzed_proc_tree(
    pid: int,
    pid_state: str,
    files: tuple[tuple[str, bytes], tuple[str, bytes], tuple[str, bytes]],
    with_cmdline: bool,
) -> None:
    (cg_state, cg), (comm_state, comm), (cmd_state, cmd) = files
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = root / str(pid)
        if pid_state == "dir":
            base.mkdir()
            for name, (state, data) in zip(("cgroup", "comm", "cmdline"), files, strict=True):
                _make(base / name, state, data)
        elif pid_state == "file":  # ENOTDIR: not a process directory
            base.write_bytes(cg)
        info = read_process(root, pid, cmdline=with_cmdline)

    if pid_state != "dir" or cg_state in ("missing", "dangling link"):
        assert info is None  # the process is gone
        return
    assert isinstance(info, ProcessInfo)
    assert info.pid == pid
    if cg_state in ("directory", "link loop"):  # EISDIR, ELOOP: there but unreadable
        assert (info.cgroup, info.problem, info.comm, info.cmdline) == (
            None,
            "unreadable",
            None,
            None,
        )
        return
    text = _decoded(cg)
    assert info.cgroup == parse_cgroup(text)
    _check_ref(text, info.cgroup)
    expected_problem = None if info.cgroup is not None or _looks_like_cgroup(text) else "unreadable"
    assert info.problem == expected_problem
    expected_comm = (_decoded(comm).rstrip("\n") or None) if comm_state == "file" else None
    assert info.comm == expected_comm
    if with_cmdline and cmd_state == "file":
        assert info.cmdline == (_decoded(cmd).replace("\x00", " ").strip() or None)
    else:
        assert info.cmdline is None


def _errors() -> st.SearchStrategy[OSError | None]:
    return st.sampled_from(
        [
            None,
            None,
            FileNotFoundError(errno.ENOENT, "gone"),
            ProcessLookupError(errno.ESRCH, "exited"),
            OSError(errno.ESRCH, "exited (plain OSError)"),
            NotADirectoryError(errno.ENOTDIR, "not a directory"),
            PermissionError(errno.EACCES, "denied"),
            PermissionError(errno.EPERM, "not permitted"),
            OSError(errno.EIO, "I/O error"),
            OSError(errno.EINVAL, "invalid"),
            IsADirectoryError(errno.EISDIR, "is a directory"),
            OSError(None, "no errno"),
        ]
    )


@FILES
@given(
    kubepods_files(),
    st.text(max_size=30),
    st.tuples(_errors(), _errors(), _errors()),
)
def test_read_process_when_the_process_vanishes_or_is_denied(
    built: Built, comm: str, faults: tuple[OSError | None, OSError | None, OSError | None]
) -> None:
    """Errors injected at open, file by file: the race with a process exiting between
    NVML's listing and our read, hidepid / LSM denials, a flaky procfs."""
    pid = 4242
    by_name = dict(zip(("cgroup", "comm", "cmdline"), faults, strict=True))
    real_open = Path.open

    def faulty_open(self: Path, *args: object, **kwargs: object) -> object:
        fault = by_name.get(self.name)
        if fault is not None and self.parent.name == str(pid):
            raise fault
        return real_open(self, *args, **kwargs)  # type: ignore[call-overload]

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / str(pid)
        base.mkdir()
        (base / "cgroup").write_text(built.text)
        (base / "comm").write_text(comm + "\n", encoding="utf-8")
        (base / "cmdline").write_bytes(b"python3\x00-m\x00vllm\x00")
        with mock.patch.object(Path, "open", faulty_open):
            info = read_process(Path(tmp), pid)

    cg_fault, comm_fault, cmd_fault = faults
    if cg_fault is not None and cg_fault.errno in (errno.ENOENT, errno.ESRCH, errno.ENOTDIR):
        assert info is None
        return
    assert info is not None
    expected_comm = comm.rstrip("\n") or None
    if isinstance(cg_fault, PermissionError):
        assert (info.cgroup, info.problem) == (None, "permission")
        assert info.comm == (None if comm_fault is not None else expected_comm)
    elif cg_fault is not None:
        assert (info.cgroup, info.problem, info.comm) == (None, "unreadable", None)
    else:
        assert info.cgroup == built.expected
        assert info.problem is None
        assert info.comm == (None if comm_fault is not None else expected_comm)
        assert info.cmdline == (None if cmd_fault is not None else "python3 -m vllm")


@pytest.mark.parametrize("size", [64 * 1024 - 1, 64 * 1024 + 1, 4 * 1024 * 1024])
def test_read_process_reads_at_most_64_kib_per_file(tmp_path: Path, size: int) -> None:
    line = (
        "0::/kubepods.slice/kubepods-poddc430cd3_34b7_4ea6_be26_ddfd88d7ddff.slice/"
        "cri-containerd-" + "ab" * 32 + ".scope\n"
    )
    base = tmp_path / "77"
    base.mkdir()
    (base / "cgroup").write_text((line * (size // len(line) + 1))[:size])
    (base / "comm").write_bytes(b"x" * size)
    (base / "cmdline").write_bytes(b"a\x00" * (size // 2))
    result: list[ProcessInfo | None] = []
    peak = _peak_bytes(lambda: result.append(read_process(tmp_path, 77)))
    info = result[0]
    assert info is not None
    assert info.cgroup is not None
    assert info.cgroup.pod_uid == "dc430cd3-34b7-4ea6-be26-ddfd88d7ddff"
    assert info.comm is not None
    assert len(info.comm) <= 64 * 1024
    assert info.cmdline is not None
    assert len(info.cmdline) <= 64 * 1024
    assert peak < 2 * 1024 * 1024, peak  # three capped reads and their copies, not 4 MiB


@pytest.mark.skipif(sys.platform != "linux", reason="reads the real /proc")
def test_read_process_over_the_real_proc_never_raises() -> None:
    # Processes come and go while we walk: each read gives None or a ProcessInfo.
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit()][:300]
    for pid in pids:
        info = read_process(Path("/proc"), pid)
        assert info is None or info.pid == pid
        if info is not None:
            assert info.cgroup is None or isinstance(info.cgroup, CgroupRef)
            assert info.problem in (None, "permission", "unreadable")
