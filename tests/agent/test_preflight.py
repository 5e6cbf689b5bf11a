"""The agent's start-up checks (agent/preflight.py): an unwritable state directory, a
container-id node name and a reporter without the report extra are refused before
anything is built, each with one message that names the path or key and the way out.

Before them: ``--simulate`` with an unwritable state directory died in a
``NotADirectoryError``/``PermissionError`` traceback from the simulator, the spool's
error named neither the variable nor the key that moves it, and a plain container's node
label was its id.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from gpuledger.agent import preflight
from gpuledger.agent.config import AgentConfig, ConfigError, load_config
from gpuledger.chargeback.report.writers import files
from gpuledger.cli import app

CONTAINER_ID = "3f2a9c1b7d4e"


def _config(tmp_path: Path, data: dict[str, Any]) -> AgentConfig:
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_config(path, environ={})


def _run_agent(
    tmp_path: Path, data: dict[str, Any], *args: str
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump({"listen": {"port": 0}, **data}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPULEDGER_")}
    return subprocess.run(
        [sys.executable, "-m", "gpuledger", "agent", "--config", str(path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


# --- the state directory -----------------------------------------------------------------
def test_simulate_with_an_unwritable_state_dir_names_it_and_the_variable(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    state = blocker / "state"  # below a regular file: no directory can be made there
    proc = _run_agent(tmp_path, {"state_dir": str(state)}, "--simulate")
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2, text
    assert "Traceback" not in text
    assert f"{state} is not writable (Not a directory)" in " ".join(text.split())
    assert "GPULEDGER_STATE_DIR" in text
    assert "gpuledger-state:/var/lib/gpuledger" in text


@pytest.mark.parametrize(
    ("section", "key", "variable"),
    [
        ({"ledger": {"spool_path": "{bad}/spool.db"}}, "ledger.spool_path", None),
        ({"roles": ["reporter"], "report": {"out_dir": "{bad}"}}, "report.out_dir", None),
        ({"state_dir": "{bad}"}, "state_dir", "GPULEDGER_STATE_DIR"),
    ],
)
def test_each_directory_is_named_with_the_key_that_moves_it(
    tmp_path: Path, section: dict[str, Any], key: str, variable: str | None
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    bad = str(blocker / "x")
    data = yaml.safe_load(yaml.safe_dump(section).replace("{bad}", bad))
    data.setdefault("state_dir", str(tmp_path / "state"))
    data.setdefault("report", {}).setdefault("formats", ["csv"])
    cfg = _config(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        preflight.check_writable_dirs(cfg)
    ((got_key, message),) = info.value.problems
    assert got_key == key
    assert f"{bad} is not writable" in message
    assert (variable or "GPULEDGER_" + key.upper().replace(".", "__")) in message


def test_writable_dirs_pass_and_leave_nothing_behind(tmp_path: Path) -> None:
    cfg = _config(tmp_path, {"state_dir": str(tmp_path / "state"), "simulate": {"enabled": True}})
    preflight.check_writable_dirs(cfg)
    assert list((tmp_path / "state").iterdir()) == []


def test_demo_out_not_writable_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = CliRunner().invoke(app, ["demo", "--no-serve", "--out", str(blocker / "demo")])
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "is not writable (Not a directory)" in " ".join(result.output.split())


# --- the node name -----------------------------------------------------------------------
def _node_cfg(tmp_path: Path, **data: Any) -> AgentConfig:
    return _config(tmp_path, {"state_dir": str(tmp_path), "node_name": CONTAINER_ID, **data})


def test_container_id_as_node_name_is_refused(tmp_path: Path) -> None:
    cfg = _node_cfg(tmp_path)
    with pytest.raises(ConfigError) as info:
        preflight.check_node_name(
            cfg, hostname=lambda: CONTAINER_ID, containerized=lambda: True, environ={}
        )
    ((key, message),) = info.value.problems
    assert key == "node_name"
    assert CONTAINER_ID in message
    assert 'GPULEDGER_NODE_NAME="$(hostname)"' in message
    assert "--hostname" in message


@pytest.mark.parametrize(
    ("hostname", "containerized", "environ", "data"),
    [
        ("gpu-node-7", True, {}, {"node_name": "gpu-node-7"}),  # --hostname gpu-node-7
        (CONTAINER_ID, False, {}, {}),  # a host named like that, not a container
        (CONTAINER_ID, True, {"NODE_NAME": CONTAINER_ID}, {}),  # chosen, via NODE_NAME
        (CONTAINER_ID, True, {}, {"node_name": "gpu-node-7"}),  # GPULEDGER_NODE_NAME/file
        (CONTAINER_ID, True, {}, {"simulate": {"enabled": True}}),  # no real node
        (CONTAINER_ID, True, {}, {"roles": ["reporter"]}),  # no node role
    ],
)
def test_chosen_or_stable_node_names_pass(
    tmp_path: Path,
    hostname: str,
    containerized: bool,
    environ: dict[str, str],
    data: dict[str, Any],
) -> None:
    cfg = _node_cfg(tmp_path, **data)
    preflight.check_node_name(
        cfg, hostname=lambda: hostname, containerized=lambda: containerized, environ=environ
    )


def test_in_container_markers(tmp_path: Path) -> None:
    assert not preflight.in_container(tmp_path, {})
    assert preflight.in_container(tmp_path, {"container": "podman"})
    (tmp_path / ".dockerenv").write_text("")
    assert preflight.in_container(tmp_path, {})
    (tmp_path / ".dockerenv").unlink()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".containerenv").write_text("")
    assert preflight.in_container(tmp_path, {})


# --- the reporter without the report extra -----------------------------------------------
@pytest.fixture
def no_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "matplotlib" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


@pytest.mark.usefixtures("no_matplotlib")
def test_reporter_role_without_the_report_extra_says_what_to_install(tmp_path: Path) -> None:
    cfg = _config(tmp_path, {"state_dir": str(tmp_path), "roles": ["reporter"]})
    with pytest.raises(ConfigError) as info:
        preflight.check_report_packages(cfg)
    ((key, message),) = info.value.problems
    assert key == "report.formats"
    assert "needs matplotlib" in message
    assert "pip install 'gpuledger[report]'" in message
    assert "--target reporter" in message
    # without html it needs nothing more
    csv_only = _config(
        tmp_path,
        {"state_dir": str(tmp_path), "roles": ["reporter"], "report": {"formats": ["csv"]}},
    )
    preflight.check_report_packages(csv_only)


@pytest.mark.usefixtures("no_matplotlib")
def test_report_command_without_the_report_extra(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["report", "--ledger", f"sqlite:///{tmp_path}/none.db", "--month", "2026-10"]
    )
    assert result.exit_code == 2
    output = " ".join(result.output.split())
    assert "pip install 'gpuledger[report]'" in output  # not eaten as console markup
    assert "--target reporter" in output


@pytest.mark.usefixtures("no_matplotlib")
def test_write_report_refuses_html_before_writing_anything(tmp_path: Path) -> None:
    with pytest.raises(files.ReportDependencyError, match=r"gpuledger\[report\]"):
        files.write_report(None, tmp_path, ("csv", "html"))  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
