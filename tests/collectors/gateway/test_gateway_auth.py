"""A gateway page behind a bearer token (LiteLLM's ``require_auth_for_metrics_endpoint``):
the token is read once from a file or variable, sent, and never shown -- not in
``/metrics``, not in a collector error, not in the logs; a token that cannot be read stops
the agent at start naming the key."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from gpuledger.agent.config import AgentConfig, ConfigError
from gpuledger.agent.main import Agent
from tests.support import paths as support_paths

TOKEN = "sk-planted-gateway-token-7f3b"  # a planted secret: searched for below
PAGE = (support_paths.FIXTURES / "gateways" / "litellm-1.prom").read_bytes()
MODELS = {"llama-70b": "llm-prod/chat-llama-70b", "mistral-7b": "llm-prod/mistral"}


@pytest.fixture
def locked_gateway() -> Iterator[tuple[str, list[str | None]]]:
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            auth = self.headers.get("Authorization")
            seen.append(auth)
            ok = auth == f"Bearer {TOKEN}"
            body = PAGE if ok else b"unauthorized"
            self.send_response(200 if ok else 401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics", seen
    finally:
        server.shutdown()
        server.server_close()


def _agent(tmp_path: Path, url: str, **auth: Any) -> Agent:
    endpoint = {"url": url, "preset": "litellm", "models": MODELS, **auth}
    return Agent(AgentConfig(state_dir=tmp_path, nvml={"enabled": False}, gateways={
        "enabled": True, "timeout_seconds": 2.0, "endpoints": [endpoint]}))  # fmt: skip


def test_the_token_is_sent_and_never_shown(
    tmp_path: Path, locked_gateway: tuple[str, list[str | None]], caplog: pytest.LogCaptureFixture
) -> None:
    url, seen = locked_gateway
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    caplog.set_level(logging.DEBUG)
    agent = _agent(tmp_path, url, bearer_token_file=str(token_file))
    try:
        (runner,) = [r for r in agent.runtime.runners if r.name == "gateway"]
        assert runner.run_once().up
        body = agent.runtime.store.rendered.body.decode()
    finally:
        agent.stop()
    assert seen == [f"Bearer {TOKEN}"]
    assert 'tenant="search/search-prod"' in body
    assert TOKEN not in body
    assert TOKEN not in caplog.text


def test_without_the_token_the_run_fails_without_naming_it(
    tmp_path: Path, locked_gateway: tuple[str, list[str | None]], caplog: pytest.LogCaptureFixture
) -> None:
    url, _ = locked_gateway
    caplog.set_level(logging.DEBUG)
    agent = _agent(tmp_path, url)
    try:
        (runner,) = [r for r in agent.runtime.runners if r.name == "gateway"]
        state = runner.run_once()
    finally:
        agent.stop()
    assert not state.up
    assert "HTTP 401" in (state.last_error or "")


def test_a_missing_token_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _agent(tmp_path, "http://127.0.0.1:1/metrics", bearer_token_file=str(tmp_path / "nope"))
    ((key, message),) = caught.value.problems
    assert key == "gateways.endpoints[0].bearer_token_file"
    assert "cannot read" in message


def test_an_empty_token_variable_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GW_TOKEN", "  ")
    with pytest.raises(ConfigError) as caught:
        _agent(tmp_path, "http://127.0.0.1:1/metrics", bearer_token_env="GW_TOKEN")
    assert caught.value.problems == [
        (
            "gateways.endpoints[0].bearer_token_env",
            "environment variable GW_TOKEN is not set or empty",
        )
    ]
