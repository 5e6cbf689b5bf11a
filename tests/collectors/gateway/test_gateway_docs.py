"""The configuration shown in docs/tenants.md (gateways and the report's tenant keys) is
accepted by the agent's real config model, and the README's table names every
``gateways`` key."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from gpuledger.agent.config import AgentConfig
from gpuledger.collectors.gateway.config import GatewayConfig, GatewayEndpointConfig

ROOT = Path(__file__).resolve().parents[3]


def test_the_documented_example_validates(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "tenants.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    (block,) = [b for b in blocks if b.startswith("gateways:")]
    (report,) = [b for b in blocks if b.startswith("report:")]
    shown = AgentConfig(state_dir=tmp_path, **yaml.safe_load(report)).report
    assert (shown.headroom_policy, shown.token_weights.generation) == ("spread", 4.0)
    cfg = AgentConfig(state_dir=tmp_path, **yaml.safe_load(block))
    gateways = cfg.gateways
    assert isinstance(gateways, GatewayConfig)
    assert [e.preset for e in gateways.endpoints] == [
        "litellm", "envoy-ai-gateway", "gpuledger-meter", None,
    ]  # fmt: skip
    assert gateways.endpoints[3].metrics.prompt is not None
    assert gateways.endpoints[3].metrics.prompt.match == {"direction": "in"}


def test_the_readme_names_every_gateway_key() -> None:
    readme = (ROOT / "README.md").read_text()
    rows = "\n".join(line for line in readme.splitlines() if line.startswith("| `gateways."))
    for key in GatewayConfig.model_fields:
        if key != "endpoints":
            assert key in rows, key
    for key in GatewayEndpointConfig.model_fields:
        assert key in rows, key
