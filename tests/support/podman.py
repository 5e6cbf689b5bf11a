"""podman as ``make image-test`` runs it: the flags that work on a root, cgroup v1 host
without systemd or a Docker daemon, found on the machine this was written on (Debian
bookworm's podman 4.3.1) and recorded in docs/deploy.md:

- ``--runtime runc`` where runc is installed: crun 1.8 refuses a hybrid cgroup v1/v2
  host ("cgroups in hybrid mode not supported");
- ``--cgroup-manager cgroupfs``: no systemd;
- ``--storage-driver overlay`` with a root and runroot of our own under the cache
  directory: the host's containers are not touched, and layers survive for the next run;
- ``--ulimit nofile=<hard>:<hard> --ulimit nproc=4096:4096``: podman's defaults
  (1048576 open files, 32768 processes) exceed the hard limits of a sandboxed root,
  which runc may not raise ("setrlimit: operation not permitted");
- ``--network host`` for the build (pip reaches PyPI as the host does) and the runs (a
  free port picked here; bridge networking is not needed to check the image).

``IMAGE_TEST_PODMAN`` replaces the whole prefix (e.g. ``podman`` on a systemd host).
"""

from __future__ import annotations

import os
import resource
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.paths import REPO_ROOT

BASE_TAG = "localhost/gpuledger-base:bookworm"
IMAGE_TAG = "localhost/gpuledger:image-test"
REPORTER_TAG = "localhost/gpuledger:image-test-reporter"
BASE_SCRIPT = REPO_ROOT / "deploy" / "image-test" / "base.sh"


def cache_dir() -> Path:
    env = os.environ.get("GPULEDGER_IMAGE_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "gpuledger" / "image-test"


def podman_prefix() -> list[str]:
    override = os.environ.get("IMAGE_TEST_PODMAN")
    if override:
        return shlex.split(override)
    cache = cache_dir()
    prefix = ["podman", "--cgroup-manager", "cgroupfs", "--storage-driver", "overlay"]
    prefix += ["--root", str(cache / "storage"), "--runroot", str(cache / "run")]
    if shutil.which("runc"):
        prefix += ["--runtime", "runc"]
    return prefix


def ulimits() -> list[str]:
    hard_files = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    files = 65536 if hard_files == resource.RLIM_INFINITY else min(hard_files, 65536)
    return ["--ulimit", f"nofile={files}:{files}", "--ulimit", "nproc=4096:4096"]


@dataclass(frozen=True)
class Podman:
    prefix: tuple[str, ...]

    def run(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*self.prefix, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{shlex.join(args[:3])} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
            )
        return proc

    def container(self, image: str, *args: str, opts: Sequence[str] = ()) -> str:
        """``podman run -d`` with the image's hardening: no capabilities, no privilege
        escalation, a read-only root; returns the container id."""
        out = self.run(
            "run",
            "-d",
            "--network",
            "host",
            "--read-only",
            "--cap-drop",
            "all",
            "--security-opt",
            "no-new-privileges",
            *ulimits(),
            *opts,
            image,
            *args,
        )
        return out.stdout.strip().splitlines()[-1]


def why_no_engine() -> str | None:
    """None when podman can run a container here, else why not (the skip's reason)."""
    for tool in ("podman", "debootstrap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make image-test installs it from Debian)"
    if os.geteuid() != 0:
        return "building the Debian base (debootstrap, chroot) needs root"
    try:
        proc = subprocess.run(
            [*podman_prefix(), "info", "--format", "{{.Host.OCIRuntime.Name}}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"podman info failed: {exc}"
    if proc.returncode != 0:
        return f"podman cannot run here: {proc.stderr.strip()[-500:]}"
    return None
