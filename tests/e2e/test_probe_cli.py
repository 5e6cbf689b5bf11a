"""``gpuledger probe URL`` against the vLLM stand-in."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from gpuledger.cli import app
from tests.support.vllm_standin import VllmBehaviour, VllmStandIn


@pytest.fixture
def vllm() -> Iterator[VllmStandIn]:
    with VllmStandIn() as server:
        server.behaviour.first_token_delay_s = 0.02
        server.behaviour.per_token_delay_s = 0.002
        yield server


def test_prints_percentiles_and_exits_zero(vllm: VllmStandIn) -> None:
    result = CliRunner().invoke(app, ["probe", vllm.url, "--n", "4", "--max-tokens", "8"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "4/4 probes succeeded" in out
    for word in ("TTFT", "TPOT", "e2e", "output tokens/s", "p50", "p90", "p99"):
        assert word in out
    assert vllm.completions_served() == 4
    assert all(b["max_tokens"] == 8 for b in vllm.bodies)


def test_chat_api_and_model_option(vllm: VllmStandIn) -> None:
    result = CliRunner().invoke(
        app,
        ["probe", vllm.url + "/v1", "--n", "2", "--api", "chat", "--model", "stand-in/model"],
    )
    assert result.exit_code == 0, result.output
    assert vllm.requests["POST /v1/chat/completions"] == 2
    assert vllm.requests["GET /v1/models"] == 0


def test_auto_probes_an_embedding_model() -> None:
    """Issue 16: ``--api auto`` finds that the endpoint serves embeddings (its completions
    route is a 404) and probes those; the table has e2e but no TTFT values."""
    with VllmStandIn(VllmBehaviour(served_model="BAAI/bge-m3", tasks=("embed",))) as server:
        result = CliRunner().invoke(app, ["probe", server.url, "--n", "3", "--api", "auto"])
        assert result.exit_code == 0, result.output
        assert "3/3 probes succeeded" in result.output
        assert server.requests["POST /v1/embeddings"] == 3
        assert server.requests["POST /v1/completions"] == 1


def test_every_probe_failing_exits_one(vllm: VllmStandIn) -> None:
    vllm.behaviour.status = 500
    result = CliRunner().invoke(app, ["probe", vllm.url, "--n", "3"])
    assert result.exit_code == 1
    assert "0/3 probes succeeded" in result.output
    assert "http_status" in result.output


def test_some_failing_exits_zero(vllm: VllmStandIn) -> None:
    vllm.behaviour.fail_first = 2
    result = CliRunner().invoke(app, ["probe", vllm.url, "--n", "4"])
    assert result.exit_code == 0, result.output
    assert "2/4 probes succeeded" in result.output
    assert "http_status" in result.output
    assert "TTFT" in result.output


def test_connection_refused_exits_one() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    result = CliRunner().invoke(app, ["probe", f"http://127.0.0.1:{port}", "--n", "2"])
    assert result.exit_code == 1
    assert "connect" in result.output


def test_api_key_from_env_is_used_and_never_printed(
    vllm: VllmStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "sk-cli-secret-9876"
    vllm.behaviour.require_api_key = key
    monkeypatch.setenv("PROBE_KEY", key)
    ok = CliRunner().invoke(app, ["probe", vllm.url, "--n", "2", "--api-key-env", "PROBE_KEY"])
    assert ok.exit_code == 0, ok.output
    assert vllm.auth_headers[-1] == f"Bearer {key}"
    assert key not in ok.output
    # a server that echoes the key into its answer still does not get it printed
    vllm.behaviour.stream_model = key
    bad = CliRunner().invoke(app, ["probe", vllm.url, "--n", "1", "--api-key-env", "PROBE_KEY"])
    assert bad.exit_code == 1
    assert "model_mismatch" in bad.output
    assert key not in bad.output
    without = CliRunner().invoke(app, ["probe", vllm.url, "--n", "1"])
    assert without.exit_code == 1
    assert "http_status" in without.output


def test_bad_arguments_exit_two() -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["probe", "ftp://x"]).exit_code == 2
    assert (
        runner.invoke(app, ["probe", "http://x", "--api-key-env", "NOPE_UNSET_VAR"]).exit_code == 2
    )
    assert runner.invoke(app, ["probe", "http://x", "--n", "0"]).exit_code == 2
    assert runner.invoke(app, ["probe", "http://x", "--api", "classify"]).exit_code == 2
