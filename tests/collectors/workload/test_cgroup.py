"""``/proc/PID/cgroup`` → pod UID and container ID, on contents seen on real nodes.

The lines below are copied from public bug reports and projects' test tables (sources in
the comments); expectations are written by hand from reading each path.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gpuledger.collectors.workload.cgroup import (
    CgroupRef,
    normalize_pod_uid,
    parse_cgroup,
    read_process,
)

# cgroup v1, cgroupfs driver, BestEffort (DataDog / Qard container-info test table).
V1_CGROUPFS_BESTEFFORT = "\n".join(
    f"{n}:{c}:/kubepods/besteffort/pod3d274242-8ee0-11e9-a8a6-1e68d864ef1a/"
    "3e74d3fd9db4c9dd921ae05c2502fb984d0cde1b36e581b13f79c639da4518a1"
    for n, c in [
        (11, "perf_event"),
        (10, "pids"),
        (9, "memory"),
        (8, "cpu,cpuacct"),
        (7, "blkio"),
        (6, "cpuset"),
        (5, "devices"),
        (4, "freezer"),
        (3, "net_cls,net_prio"),
        (2, "hugetlb"),
        (1, "name=systemd"),
    ]
)

# cgroup v1, cgroupfs, Burstable (a Rust crate's table of lines from minikube).
V1_CGROUPFS_BURSTABLE = (
    "10:hugetlb:/kubepods/burstable/podfd52ef25-a87d-11e9-9423-0800271a638e/"
    "8c046cb0b72cd4c99f51b5591cd5b095967f58ee003710a45280c28ee1a9c7fa\n"
)

# cgroup v1, cgroupfs, Guaranteed: the pod directly under /kubepods.
V1_CGROUPFS_GUARANTEED = "\n".join(
    f"{n}:{c}:/kubepods/pod87a5b680-98ab-4850-9f2b-df5062206b0d/"
    "4d1e4a9860ffb2ca715726deefa957557e7d269762fb1ec83954cd173220fbbd"
    for n, c in [(12, "pids"), (11, "blkio"), (10, "memory"), (9, "devices")]
)

# cgroup v1, systemd driver, Docker (lxc/lxc#3890); rdma stays at "/".
V1_SYSTEMD_DOCKER = "12:rdma:/\n" + "\n".join(
    f"{n}:{c}:/kubepods.slice/kubepods-burstable.slice/"
    "kubepods-burstable-pod7d4424e6_bb13_42f4_a47a_45a4828bf54d.slice/"
    "docker-d0b3604b67ac7930dd34ba3a796627e3e4717d12309e90a4afe3f38b6816ac98.scope"
    for n, c in [(11, "freezer"), (10, "pids"), (9, "blkio"), (8, "cpuset"), (7, "perf_event")]
)

# cgroup v1, systemd driver, CRI-O (opencontainers/runc#4620); "files" stays at "/".
V1_SYSTEMD_CRIO = "\n".join(
    [
        "13:freezer:/kubepods.slice/kubepods-burstable.slice/"
        "kubepods-burstable-poda5c1f8d5_1919_434d_add7_4afaafdaef89.slice/"
        "crio-5eed917563583925ffdbd40a64efb2aaffe58638e57add8becaf460fe74f5b1c.scope",
        "12:cpuset:/kubepods.slice/kubepods-burstable.slice/"
        "kubepods-burstable-poda5c1f8d5_1919_434d_add7_4afaafdaef89.slice/"
        "crio-5eed917563583925ffdbd40a64efb2aaffe58638e57add8becaf460fe74f5b1c.scope",
        "11:files:/",
    ]
)

# cgroup v1, systemd driver, containerd (kubernetes/kubernetes#106514).
V1_SYSTEMD_CONTAINERD = (
    "4:memory:/kubepods.slice/kubepods-burstable.slice/"
    "kubepods-burstable-pod2fc932ce_fdcc_454b_97bd_aadfdeb4c340.slice/"
    "cri-containerd-aaefb9d8feed2d453b543f6d928cede7a4dbefa6a0ae7c9b990dd234c56e93b9.scope\n"
)

# containerd's colon form, controllers disagreeing on the prefix
# (open-telemetry/opentelemetry-java#4507).
_COLON = (
    "kubepods-besteffort-pod0125ec2f_b64a_4868_8f5b_94b56cbab864.slice:cri-containerd:"
    "ee4b20e90ac7f42a10bd004d05646b13d8ab5e2c5e7cbc01abf8006bac016459"
)
V1_COLON_FORM = "\n".join(
    [
        f"11:perf_event:/{_COLON}",
        f"10:blkio:/system.slice/containerd.service/{_COLON}",
        f"9:cpuacct,cpu:/system.slice/containerd.service/{_COLON}",
        f"8:cpuset:/{_COLON}",
        f"7:hugetlb:/{_COLON}",
        f"6:devices:/system.slice/containerd.service/{_COLON}",
        f"5:pids:/system.slice/containerd.service/{_COLON}",
    ]
)

# Static pod (32-hex config hash UID) in the colon form (kubernetes/kubernetes#106514).
V1_STATIC_COLON = (
    "3:memory:/system.slice/containerd.service/"
    "kubepods-burstable-pod36b6d6be73b1065af369b3985edafa09.slice:cri-containerd:"
    "79fedb3bd23ca77c9d9ccb41909038316f713df22b54b7d942b71d3812e7c74e\n"
)

# cgroup v2 with Docker (a Java agent's comment quoting a node).
V2_DOCKER = (
    "0::/kubepods.slice/kubepods-besteffort.slice/"
    "kubepods-besteffort-podf9f89fd9_f49f_4cbe_b04b_cae5c9043de2.slice/"
    "docker-6f80e1af790e2290283e473b56cc6e5d9d113d135e39416822ec4af6fd5fd72d.scope\n"
)

# cgroup v2, kind node with --cgroup-root=/kubelet.slice (containerd/nri#227).
V2_KIND_KUBELET_SLICE = (
    "0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
    "kubelet-kubepods-besteffort-pod1e597579_417e_482f_bf65_5fe170c3aebd.slice/"
    "cri-containerd-a09bc17f5aa29b0dbdec9ede5f46cf1396d2405917ab02e6f1eb1019f388396e.scope\n"
)

# cgroup v2, Guaranteed pod with systemd (kata-containers/kata-containers#11598).
V2_GUARANTEED = (
    "0::/kubepods.slice/kubepods-poddc430cd3_34b7_4ea6_be26_ddfd88d7ddff.slice/"
    "cri-containerd-8564224395a4fbf7f2792baa22ee16dfc8f8e862e20342d3b2bcc211a3939af6.scope\n"
)

# cgroup v2, static pod (netdata/netdata#4868 systemd-cgls tree, as a 0:: line).
V2_STATIC = (
    "0::/kubepods.slice/kubepods-burstable.slice/"
    "kubepods-burstable-pod8daa50c3a64c9ff60bb9eab7b44b56fd.slice/"
    "cri-containerd-2884d57c0e100d7a9a2f9487ce0bc2986bca3430e988af7a4865aff061f51ac5.scope\n"
)

# cgroup v2, CRI-O in minikube, the kubepods tree nested under the node container
# (kubernetes/minikube#11280).
V2_NESTED_CRIO = (
    "0::/docker/d6701ec289c56e4391acb11d07474b3139466857a305490575508a8b7a9fcf22/"
    "kubepods.slice/kubepods-besteffort.slice/"
    "kubepods-besteffort-podae7a96fb_2bdc_46b0_96e2_78e4af94847b.slice/"
    "crio-89e8f450417b56acf3089925dfd8f050dd50e950e18cfe83ea923269df601102.scope\n"
)

# A reader in a private cgroup namespace sees host paths relative to its own root.
V2_OTHER_CGROUP_NS = (
    "0::/../../kubepods-besteffort-pod2ca4a155_3599_498d_bb9d_4446693fa3ea.slice/"
    "crio-358607a37e7ada357032e7f5729c9ae6a3efdb7962acbcbe47ff6a3c5506cb1c.scope\n"
)

# Hybrid: v1 controllers plus the unified 0:: line (which stays at "/").
HYBRID = (
    "12:memory:/kubepods/burstable/podfd52ef25-a87d-11e9-9423-0800271a638e/"
    "8c046cb0b72cd4c99f51b5591cd5b095967f58ee003710a45280c28ee1a9c7fa\n"
    "1:name=systemd:/\n"
    "0::/\n"
)

# Docker outside Kubernetes: a container but no pod (DataDog's table).
V1_PLAIN_DOCKER = (
    "13:name=systemd:/docker/3726184226f5d3147c25fdeab5b60097e378e8a720503a5e19ecfdf29f869860\n"
    "12:pids:/docker/3726184226f5d3147c25fdeab5b60097e378e8a720503a5e19ecfdf29f869860\n"
)

# A host process on a v1 host (kontena/pharos-cluster#440).
V1_HOST = (
    "11:cpuacct,cpu:/system.slice\n10:perf_event:/system.slice\n9:pids:/system.slice\n"
    "1:name=systemd:/system.slice\n"
)

CASES: list[tuple[str, str, CgroupRef | None]] = [
    (
        "v1 cgroupfs besteffort, 11 controllers",
        V1_CGROUPFS_BESTEFFORT,
        CgroupRef(
            "3d274242-8ee0-11e9-a8a6-1e68d864ef1a",
            "3e74d3fd9db4c9dd921ae05c2502fb984d0cde1b36e581b13f79c639da4518a1",
            None,
            "besteffort",
        ),
    ),
    (
        "v1 cgroupfs burstable",
        V1_CGROUPFS_BURSTABLE,
        CgroupRef(
            "fd52ef25-a87d-11e9-9423-0800271a638e",
            "8c046cb0b72cd4c99f51b5591cd5b095967f58ee003710a45280c28ee1a9c7fa",
            None,
            "burstable",
        ),
    ),
    (
        "v1 cgroupfs guaranteed",
        V1_CGROUPFS_GUARANTEED,
        CgroupRef(
            "87a5b680-98ab-4850-9f2b-df5062206b0d",
            "4d1e4a9860ffb2ca715726deefa957557e7d269762fb1ec83954cd173220fbbd",
            None,
            "guaranteed",
        ),
    ),
    (
        "v1 systemd docker- scope",
        V1_SYSTEMD_DOCKER,
        CgroupRef(
            "7d4424e6-bb13-42f4-a47a-45a4828bf54d",
            "d0b3604b67ac7930dd34ba3a796627e3e4717d12309e90a4afe3f38b6816ac98",
            "docker",
            "burstable",
        ),
    ),
    (
        "v1 systemd crio- scope",
        V1_SYSTEMD_CRIO,
        CgroupRef(
            "a5c1f8d5-1919-434d-add7-4afaafdaef89",
            "5eed917563583925ffdbd40a64efb2aaffe58638e57add8becaf460fe74f5b1c",
            "cri-o",
            "burstable",
        ),
    ),
    (
        "v1 systemd cri-containerd- scope",
        V1_SYSTEMD_CONTAINERD,
        CgroupRef(
            "2fc932ce-fdcc-454b-97bd-aadfdeb4c340",
            "aaefb9d8feed2d453b543f6d928cede7a4dbefa6a0ae7c9b990dd234c56e93b9",
            "containerd",
            "burstable",
        ),
    ),
    (
        "containerd colon form",
        V1_COLON_FORM,
        CgroupRef(
            "0125ec2f-b64a-4868-8f5b-94b56cbab864",
            "ee4b20e90ac7f42a10bd004d05646b13d8ab5e2c5e7cbc01abf8006bac016459",
            "containerd",
            "besteffort",
        ),
    ),
    (
        "static pod, colon form",
        V1_STATIC_COLON,
        CgroupRef(
            "36b6d6be73b1065af369b3985edafa09",
            "79fedb3bd23ca77c9d9ccb41909038316f713df22b54b7d942b71d3812e7c74e",
            "containerd",
            "burstable",
        ),
    ),
    (
        "v2 docker",
        V2_DOCKER,
        CgroupRef(
            "f9f89fd9-f49f-4cbe-b04b-cae5c9043de2",
            "6f80e1af790e2290283e473b56cc6e5d9d113d135e39416822ec4af6fd5fd72d",
            "docker",
            "besteffort",
        ),
    ),
    (
        "v2 kind kubelet.slice root",
        V2_KIND_KUBELET_SLICE,
        CgroupRef(
            "1e597579-417e-482f-bf65-5fe170c3aebd",
            "a09bc17f5aa29b0dbdec9ede5f46cf1396d2405917ab02e6f1eb1019f388396e",
            "containerd",
            "besteffort",
        ),
    ),
    (
        "v2 guaranteed",
        V2_GUARANTEED,
        CgroupRef(
            "dc430cd3-34b7-4ea6-be26-ddfd88d7ddff",
            "8564224395a4fbf7f2792baa22ee16dfc8f8e862e20342d3b2bcc211a3939af6",
            "containerd",
            "guaranteed",
        ),
    ),
    (
        "v2 static pod",
        V2_STATIC,
        CgroupRef(
            "8daa50c3a64c9ff60bb9eab7b44b56fd",
            "2884d57c0e100d7a9a2f9487ce0bc2986bca3430e988af7a4865aff061f51ac5",
            "containerd",
            "burstable",
        ),
    ),
    (
        "v2 nested node (minikube, cri-o)",
        V2_NESTED_CRIO,
        CgroupRef(
            "ae7a96fb-2bdc-46b0-96e2-78e4af94847b",
            "89e8f450417b56acf3089925dfd8f050dd50e950e18cfe83ea923269df601102",
            "cri-o",
            "besteffort",
        ),
    ),
    (
        "v2 seen from another cgroup namespace",
        V2_OTHER_CGROUP_NS,
        CgroupRef(
            "2ca4a155-3599-498d-bb9d-4446693fa3ea",
            "358607a37e7ada357032e7f5729c9ae6a3efdb7962acbcbe47ff6a3c5506cb1c",
            "cri-o",
            "besteffort",
        ),
    ),
    (
        "hybrid v1 + empty unified line",
        HYBRID,
        CgroupRef(
            "fd52ef25-a87d-11e9-9423-0800271a638e",
            "8c046cb0b72cd4c99f51b5591cd5b095967f58ee003710a45280c28ee1a9c7fa",
            None,
            "burstable",
        ),
    ),
    (
        "plain docker, no pod",
        V1_PLAIN_DOCKER,
        CgroupRef(
            None, "3726184226f5d3147c25fdeab5b60097e378e8a720503a5e19ecfdf29f869860", "docker", None
        ),
    ),
    ("v2 init.scope", "0::/init.scope\n", None),
    ("v2 containerd daemon", "0::/system.slice/containerd.service\n", None),
    ("v2 user session", "0::/user.slice/user-1000.slice/session-3.scope\n", None),
    ("v1 host process", V1_HOST, None),
    ("v2 root", "0::/\n", None),
    ("empty", "", None),
    ("not a cgroup file", "hello world\n\x00\x01binary", None),
]


@pytest.mark.parametrize(
    ("text", "expected"), [(t, e) for _, t, e in CASES], ids=[n for n, _, _ in CASES]
)
def test_parse_cgroup(text: str, expected: CgroupRef | None) -> None:
    assert parse_cgroup(text) == expected


def test_crlf_and_trailing_whitespace_are_tolerated() -> None:
    assert parse_cgroup(V2_DOCKER.replace("\n", "\r\n")) == parse_cgroup(V2_DOCKER)


def test_v1_lines_that_disagree_pick_the_majority() -> None:
    # One controller left behind in an older pod's cgroup: the path most lines name wins.
    stale = (
        "9:freezer:/kubepods/besteffort/pod11111111-2222-3333-4444-555555555555/" + "a" * 64 + "\n"
    )
    assert parse_cgroup(stale + V1_SYSTEMD_DOCKER) == CASES[3][2]


def test_a_pod_segment_without_a_container_still_names_the_pod() -> None:
    # The pod's own cgroup (e.g. a process placed there by a sidecar injector).
    ref = parse_cgroup(
        "0::/kubepods.slice/kubepods-burstable.slice/"
        "kubepods-burstable-pod7d4424e6_bb13_42f4_a47a_45a4828bf54d.slice\n"
    )
    assert ref == CgroupRef("7d4424e6-bb13-42f4-a47a-45a4828bf54d", None, None, "burstable")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0125ec2f_b64a_4868_8f5b_94b56cbab864", "0125ec2f-b64a-4868-8f5b-94b56cbab864"),
        ("0125EC2F-B64A-4868-8F5B-94B56CBAB864", "0125ec2f-b64a-4868-8f5b-94b56cbab864"),
        ("36b6d6be73b1065af369b3985edafa09", "36b6d6be73b1065af369b3985edafa09"),
        ("1234", None),
        ("0125ec2f_b64a_4868_8f5b_94b56cbab86", None),
    ],
)
def test_normalize_pod_uid(raw: str, expected: str | None) -> None:
    assert normalize_pod_uid(raw) == expected


# --- read_process ---------------------------------------------------------------------------
def _proc(root: Path, pid: int, cgroup: str, comm: str = "python3", cmdline: str = "") -> None:
    d = root / str(pid)
    d.mkdir(parents=True)
    (d / "cgroup").write_text(cgroup)
    (d / "comm").write_text(comm + "\n")
    (d / "cmdline").write_text(cmdline)


def test_read_process(tmp_path: Path) -> None:
    _proc(tmp_path, 4242, V2_GUARANTEED, "python3", "python3\x00-m\x00vllm.entrypoints\x00")
    info = read_process(tmp_path, 4242)
    assert info is not None
    assert info.pid == 4242
    assert info.cgroup == CASES[10][2]
    assert info.comm == "python3"
    assert info.cmdline == "python3 -m vllm.entrypoints"
    assert info.problem is None
    no_cmd = read_process(tmp_path, 4242, cmdline=False)
    assert no_cmd is not None
    assert no_cmd.cmdline is None


def test_read_process_host_process_and_garbage(tmp_path: Path) -> None:
    _proc(tmp_path, 1, "0::/init.scope\n", "systemd")
    _proc(tmp_path, 2, "\x00\x01 not a cgroup file")
    host = read_process(tmp_path, 1)
    assert host is not None
    assert (host.cgroup, host.comm, host.problem) == (None, "systemd", None)
    garbage = read_process(tmp_path, 2)
    assert garbage is not None
    assert (garbage.cgroup, garbage.problem) == (None, "unreadable")


def test_read_process_exited_and_missing_root(tmp_path: Path) -> None:
    assert read_process(tmp_path, 999_999) is None
    assert read_process(tmp_path / "no-such-proc", 1) is None
    (tmp_path / "7").write_text("a file where a directory should be")
    assert read_process(tmp_path, 7) is None


def test_read_process_comm_gone_between_reads(tmp_path: Path) -> None:
    _proc(tmp_path, 5, V2_DOCKER)
    (tmp_path / "5" / "comm").unlink()
    (tmp_path / "5" / "cmdline").unlink()
    info = read_process(tmp_path, 5)
    assert info is not None
    assert info.cgroup is not None
    assert (info.comm, info.cmdline) == (None, None)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files regardless of their mode")
def test_read_process_permission_denied(tmp_path: Path) -> None:
    _proc(tmp_path, 6, V2_DOCKER)
    (tmp_path / "6" / "cgroup").chmod(0)
    try:
        info = read_process(tmp_path, 6)
    finally:
        (tmp_path / "6" / "cgroup").chmod(0o644)
    assert info is not None
    assert (info.cgroup, info.problem, info.comm) == (None, "permission", "python3")


def test_read_own_process_from_the_real_proc() -> None:
    # Whatever this machine's layout, reading ourselves never raises and names us.
    info = read_process(Path("/proc"), os.getpid())
    assert info is not None
    assert info.comm is not None


def test_read_process_cgroup_unreadable(tmp_path: Path) -> None:
    (tmp_path / "8" / "cgroup").mkdir(parents=True)  # EISDIR: neither gone nor parseable
    info = read_process(tmp_path, 8)
    assert info is not None
    assert (info.cgroup, info.problem) == (None, "unreadable")
