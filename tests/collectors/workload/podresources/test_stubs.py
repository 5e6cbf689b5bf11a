"""The checked-in stubs are what ``make podresources-stubs`` generates from the vendored
upstream api.proto (grpcio-tools, a test dependency), and the .proto is the upstream text
under its provenance header."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
PACKAGE = Path("gpuledger/collectors/workload/podresources")
GENERATED = ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py")


def test_generated_stubs_are_fresh(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", ".", f"--python_out={tmp_path}",
         f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}", str(PACKAGE / "api.proto")],
        cwd=ROOT, check=True,
    )  # fmt: skip
    for name in GENERATED:
        fresh = (tmp_path / PACKAGE / name).read_text(encoding="utf-8")
        committed = (ROOT / PACKAGE / name).read_text(encoding="utf-8")
        assert fresh == committed, f"{name} is stale: run make podresources-stubs"


def test_the_proto_names_its_upstream_source() -> None:
    text = (ROOT / PACKAGE / "api.proto").read_text(encoding="utf-8")
    assert (
        "github.com/kubernetes/kubelet/blob/63b3249724f7d89a8aa48f9acb3811f193c9aa68/"
        "pkg/apis/podresources/v1/api.proto" in text
    )
    assert "service PodResourcesLister {" in text
    assert "package v1;" in text
