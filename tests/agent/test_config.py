"""Config: defaults, precedence, and refusal of bad keys with their path named."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpuledger.agent.config import ConfigError, load_config
from gpuledger.cli import app


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "agent.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_defaults_follow_the_issue() -> None:
    cfg = load_config(None, environ={"NODE_NAME": "gpu-node-7"})
    assert (cfg.listen.host, cfg.listen.port) == ("127.0.0.1", 9835)
    assert cfg.collection.interval_seconds == 15.0
    assert cfg.node_name == "gpu-node-7"
    assert cfg.dcgm.url == "http://127.0.0.1:9400/metrics"
    assert cfg.interval_for(cfg.nvml) == 15.0


def test_hostname_is_the_fallback_node_name() -> None:
    import socket

    assert load_config(None, environ={}).node_name == socket.gethostname()


def test_yaml_values_and_env_precedence(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "node_name: a\ndcgm:\n  enabled: true\n  url: http://10.0.0.1:9400/metrics\n"
        "  interval_seconds: 30\n",
    )
    cfg = load_config(path, environ={"GPULEDGER_DCGM__TIMEOUT_SECONDS": "2.5"})
    assert cfg.node_name == "a"
    assert cfg.dcgm.enabled is True
    assert cfg.dcgm.url == "http://10.0.0.1:9400/metrics"
    assert cfg.dcgm.timeout_seconds == 2.5
    assert cfg.interval_for(cfg.dcgm) == 30.0
    env_wins = load_config(path, environ={"GPULEDGER_NODE_NAME": "from-env"})
    assert env_wins.node_name == "from-env"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("dcgm:\n  urll: http://x\n", "dcgm.urll"),
        ("listen:\n  port: 70000\n", "listen.port"),
        ("collection:\n  interval_seconds: -1\n", "collection.interval_seconds"),
        ("log:\n  format: xml\n", "log.format"),
        ("dcgm:\n  url: ftp://x\n", "dcgm.url"),
        ("nvmll: {}\n", "nvmll"),
        ("cluster: 'prod eu; DROP TABLE x'\n", "cluster"),
        ("cluster: -east\n", "cluster"),
    ],
)
def test_bad_keys_are_named(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ={})
    assert key in [k for k, _ in info.value.problems]


def test_cluster_from_the_file_or_the_environment(tmp_path: Path) -> None:
    """Issue 18: ``cluster`` defaults to "default"; GPULEDGER_CLUSTER wins over the file."""
    assert load_config(None, environ={}).cluster == "default"
    path = write(tmp_path, "cluster: prod-eu\n")
    assert load_config(path, environ={}).cluster == "prod-eu"
    assert load_config(path, environ={"GPULEDGER_CLUSTER": "us-west.2"}).cluster == "us-west.2"
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={"GPULEDGER_CLUSTER": "east/1"})
    assert [k for k, _ in info.value.problems] == ["cluster"]


def test_unknown_environment_variable_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={"GPULEDGER_DCGM__URLL": "http://x"})
    assert info.value.problems == [("GPULEDGER_DCGM__URLL", "no such setting")]


def test_bad_environment_value_names_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={"GPULEDGER_LISTEN__PORT": "http"})
    assert [k for k, _ in info.value.problems] == ["listen.port"]


def test_yaml_that_is_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- a\n- b\n"), environ={})


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="line 2"):
        load_config(write(tmp_path, "a: 1\nb: [unclosed\n"), environ={})


def test_check_config_exit_codes(tmp_path: Path) -> None:
    runner = CliRunner()
    bad = runner.invoke(app, ["check-config", str(write(tmp_path, "dcgm:\n  urll: x\n"))])
    assert bad.exit_code == 2
    assert "dcgm.urll" in bad.output
    good_path = tmp_path / "good.yaml"
    good_path.write_text("node_name: n1\n", encoding="utf-8")
    good = runner.invoke(app, ["check-config", str(good_path)])
    assert good.exit_code == 0, good.output
    assert '"node_name": "n1"' in good.output


def test_version_flag() -> None:
    from gpuledger import __version__

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"gpuledger {__version__}"


def test_check_config_masks_the_ledger_password(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "ledger:\n  url: postgresql://gpuledger:hunter2-secret@db.internal:5432/ledger\n",
    )
    result = CliRunner().invoke(app, ["check-config", str(path)])
    assert result.exit_code == 0, result.output
    assert "hunter2-secret" not in result.output
    assert "postgresql://gpuledger:***@db.internal:5432/ledger" in result.output


def test_ledger_url_and_url_file_are_exclusive(tmp_path: Path) -> None:
    secret = tmp_path / "dsn"
    secret.write_text("postgresql://u:p@h/db\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not both"):
        load_config(
            write(tmp_path, f"ledger:\n  url: sqlite:///x.db\n  url_file: {secret}\n"), environ={}
        )
    cfg = load_config(write(tmp_path, f"ledger:\n  url_file: {secret}\n"), environ={})
    assert cfg.ledger_url() == "postgresql://u:p@h/db"
    default = load_config(None, environ={"GPULEDGER_STATE_DIR": str(tmp_path / "st")})
    assert default.ledger_url() == f"sqlite:///{tmp_path / 'st' / 'ledger.db'}"
    assert default.spool_path() == tmp_path / "st" / "spool.db"
