"""``gpuledger meter --config FILE``: a bad configuration or key file stops it at start
with exit 2 and the key named; a running meter never writes an API key to its logs or
``/metrics`` (planted keys, searched for)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from typer.testing import CliRunner

from gpuledger.cli import app
from tests.support.meter_harness import MeterProcess, write_config
from tests.support.openai_standin import OpenAIBehaviour, OpenAIStandIn
from tests.support.paths import REPO_ROOT

PLANTED = "sk-planted-7f3c9a1e5b2d4c6f8a0b"
UPSTREAM_KEY = "sk-upstream-c0ffee5eed1dea5"


def _cli(config: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["meter", "--config", str(config)])
    return result.exit_code, result.output


def test_a_missing_key_file_is_exit_2_naming_the_key_as_a_process(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "http://127.0.0.1:9", tenant={
        "order": ["api_key"], "api_keys_file": str(tmp_path / "absent.yaml")})  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "gpuledger", "meter", "--config", str(cfg)],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "COLUMNS": "200"},
    )  # fmt: skip
    assert proc.returncode == 2
    assert "tenant.api_keys_file" in proc.stderr
    assert "absent.yaml" in proc.stderr


@pytest.mark.parametrize(
    "text",
    [
        f"- {PLANTED}\n",  # a list, not a mapping
        f"{PLANTED}: [team]\n",  # tenant not a string
        f'{{"{PLANTED}": "team",\n',  # broken JSON
        f"{PLANTED}: team\n  bad: : indent\n",  # broken YAML quoting the key's line
        "",  # empty
    ],
)
def test_a_malformed_key_file_is_exit_2_and_its_keys_are_not_shown(
    tmp_path: Path, text: str
) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text(text)
    cfg = write_config(tmp_path, "http://127.0.0.1:9",
                       tenant={"api_keys_file": str(keys)})  # fmt: skip
    code, output = _cli(cfg)
    assert code == 2
    assert "tenant.api_keys_file" in output
    assert PLANTED not in output


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"upstrem": "x"}, "upstrem"),
        ({"upstream": "ftp://x"}, "upstream"),
        ({"tenant": {"order": ["api_key", "cookie"]}}, "tenant.order"),
        ({"tenant": {"order": ["api_key"]}}, "tenant.order names api_key"),
        ({"tenant": {"max_tenants_per_service": 0}}, "tenant.max_tenants_per_service"),
        ({"timeouts": {"response_seconds": -1}}, "timeouts.response_seconds"),
        ({"upstream_api_key_file": "/nonexistent/key"}, "upstream_api_key_file"),
        ({"cluster": "prod eu"}, "cluster"),
    ],
)
def test_bad_keys_are_refused_by_name(
    tmp_path: Path, overrides: dict[str, object], key: str
) -> None:
    upstream = str(overrides.pop("upstream", "http://127.0.0.1:9"))
    code, output = _cli(write_config(tmp_path, upstream, **overrides))
    assert code == 2
    assert key in " ".join(output.split())


def test_no_key_reaches_the_logs_or_metrics(tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text(yaml.safe_dump({PLANTED: "alpha", "sk-other-1234567890": "beta"}))
    upstream_key = tmp_path / "upstream.key"
    upstream_key.write_text(UPSTREAM_KEY + "\n")
    with OpenAIStandIn(OpenAIBehaviour(model="m")) as up:
        cfg = write_config(tmp_path, up.url, log_level="debug", upstream_api_key_file=str(
            upstream_key), tenant={"order": ["api_key"], "api_keys_file": str(keys)})  # fmt: skip
        with MeterProcess(cfg, tmp_path / "meter.log") as meter:
            client = openai.OpenAI(base_url=meter.url + "/v1", api_key=PLANTED, max_retries=0)
            client.completions.create(model="m", prompt="hello", max_tokens=2)
            list(client.completions.create(model="m", prompt="hi", max_tokens=2, stream=True))
            up.behaviour.status = 500
            with pytest.raises(openai.InternalServerError):
                client.completions.create(model="m", prompt="x", max_tokens=2)
            up.behaviour.status = 200
            up.behaviour.cut_after_tokens = 1
            with pytest.raises(openai.APIError):
                list(client.completions.create(model="m", prompt="x", max_tokens=4, stream=True))
            bad = httpx.post(meter.url + "/v1/completions", content=b"{oops",
                             headers={"authorization": f"Bearer {PLANTED}"})  # fmt: skip
            assert bad.status_code == 400
            metrics = httpx.get(meter.url + "/metrics").text
        log = meter.log()
    # the upstream got the meter's own key, never the client's
    assert {s.authorization for s in up.served} == {f"Bearer {UPSTREAM_KEY}"}
    assert 'tenant="alpha"' in metrics
    assert "metering llm/chat" in log
    for secret in (PLANTED, UPSTREAM_KEY, "sk-other-1234567890"):
        assert secret not in log
        assert secret not in metrics


def test_the_cluster_label_is_the_configs() -> None:
    """Issue 18: every series of the meter carries its config's ``cluster``."""
    from prometheus_client.parser import text_string_to_metric_families

    from gpuledger.meter.metrics import MeterMetrics, Uncounted

    metrics = MeterMetrics(node="n1", service="chat", namespace="llm", max_tenants=4,
                           cluster="prod-eu")  # fmt: skip
    metrics.miss(next(iter(Uncounted)))
    text = metrics.render().decode()
    series = [s for fam in text_string_to_metric_families(text) for s in fam.samples]
    assert series
    assert {s.labels["cluster"] for s in series} == {"prod-eu"}
