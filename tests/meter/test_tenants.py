"""Who a request is charged to: API key / header / user field, in the configured order,
the per-service cap, and the key file held as hashes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import openai
import pytest

from gpuledger.meter.keys import load_api_keys
from gpuledger.meter.tenants import OTHER, UNTENANTED, TenantCap, TenantIdentifier
from tests.support.meter_harness import MeterThread, meter_counters, tenant_labels, write_config
from tests.support.openai_standin import OpenAIBehaviour, OpenAIStandIn

MODEL = "m-1"
KEYS = {"sk-alpha-0001": "alpha", "sk-beta-0002": "beta"}
HASHES = {hashlib.sha256(k.encode()).hexdigest(): t for k, t in KEYS.items()}


def _ident(order: tuple[str, ...]) -> TenantIdentifier:
    return TenantIdentifier(order, "X-Team", HASHES, max_name_length=16)


@pytest.mark.parametrize(
    ("order", "headers", "body", "tenant"),
    [
        (("api_key", "header", "user"), {"authorization": "Bearer sk-alpha-0001",
                                         "x-team": "h"}, {"user": "u"}, "alpha"),
        (("header", "api_key", "user"), {"authorization": "Bearer sk-alpha-0001",
                                         "x-team": "h"}, {"user": "u"}, "h"),
        (("user", "header"), {"x-team": "h"}, {"user": "u"}, "u"),
        (("api_key", "header", "user"), {"authorization": "Bearer sk-unknown",
                                         "x-team": "h"}, {}, "h"),
        (("api_key", "user"), {"authorization": "Bearer sk-unknown"}, {"user": "u"}, "u"),
        (("api_key",), {"authorization": "Bearer sk-unknown"}, {"user": "u"}, UNTENANTED),
        (("api_key",), {"api-key": "sk-beta-0002"}, {}, "beta"),  # Azure-style header
        (("header",), {}, {}, UNTENANTED),
        (("header", "user"), {"x-team": "x" * 17}, {"user": "u"}, "u"),  # too long
        (("header", "user"), {"x-team": "a\nb"}, {"user": "u"}, "u"),  # control character
        (("header", "user"), {"x-team": "__other__"}, {"user": 7}, UNTENANTED),  # reserved
    ],
)  # fmt: skip
def test_identification_order(
    order: tuple[str, ...], headers: dict[str, str], body: dict[str, object], tenant: str
) -> None:
    assert _ident(order).identify(headers, body) == tenant


def test_the_cap_keeps_the_first_tenants_and_sends_the_rest_to_other() -> None:
    cap = TenantCap(2)
    got = [cap.admit(t) for t in ["a", "b", UNTENANTED, "c", "a", "d", "b"]]
    assert got == ["a", "b", UNTENANTED, OTHER, "a", OTHER, "b"]
    assert cap.overflowed == 2


def test_the_key_file_is_held_as_hashes(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text('{"sk-alpha-0001": "alpha", " sk-beta-0002 ": "beta"}')
    assert load_api_keys(path) == HASHES


def _client(meter: MeterThread, key: str, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=meter.url + "/v1", api_key=key, max_retries=0, default_headers=headers
    )


def _ask(client: openai.OpenAI, n: int, user: str | None = None, stream: bool = False) -> None:
    kwargs = {"user": user} if user else {}
    result = client.completions.create(model=MODEL, prompt="a b c d", max_tokens=n,
                                       stream=stream, **kwargs)  # fmt: skip
    if stream:
        list(result)


def test_tenants_through_the_meter_by_key_header_and_user(tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text("sk-alpha-0001: alpha\nsk-beta-0002: beta\n")
    with OpenAIStandIn(OpenAIBehaviour(model=MODEL)) as up:
        cfg = write_config(tmp_path, up.url, tenant={
            "order": ["api_key", "header", "user"], "header": "X-Team",
            "api_keys_file": str(keys)})  # fmt: skip
        with MeterThread(cfg) as meter:
            _ask(_client(meter, "sk-alpha-0001", **{"X-Team": "ignored"}), 2)
            _ask(_client(meter, "sk-alpha-0001"), 3, stream=True)
            _ask(_client(meter, "sk-beta-0002"), 4, user="ignored")
            _ask(_client(meter, "sk-nobody", **{"X-Team": "web"}), 5)
            _ask(_client(meter, "sk-nobody"), 6, user="mobile", stream=True)
            _ask(_client(meter, "sk-nobody"), 7)
            got = meter_counters(meter.url)
    gen = "gpuledger_meter_generation_tokens_total"
    expected = {"alpha": 5, "beta": 4, "web": 5, "mobile": 6, UNTENANTED: 7}
    for tenant, tokens in expected.items():
        assert got[(gen, tenant_labels(tenant, MODEL))] == tokens, tenant
    assert sum(v for (name, _), v in got.items() if name == gen) == sum(expected.values())


def test_tenants_beyond_the_cap_are_counted_as_other(tmp_path: Path) -> None:
    with OpenAIStandIn(OpenAIBehaviour(model=MODEL)) as up:
        cfg = write_config(tmp_path, up.url,
                           tenant={"order": ["header"], "max_tenants_per_service": 2})  # fmt: skip
        with MeterThread(cfg) as meter:
            for i, team in enumerate(["t1", "t2", "t3", "t4", "t1"]):
                _ask(_client(meter, "k", **{"X-Tenant": team}), 1 + i)
            got = meter_counters(meter.url)
    gen, req = "gpuledger_meter_generation_tokens_total", "gpuledger_meter_requests_total"
    assert got[(gen, tenant_labels("t1", MODEL))] == 1 + 5
    assert got[(gen, tenant_labels("t2", MODEL))] == 2
    assert got[(gen, tenant_labels(OTHER, MODEL))] == 3 + 4
    assert got[(req, tenant_labels(OTHER, MODEL))] == 2
    tenants = {dict(labels)["tenant"] for name, labels in got if name == gen}
    assert tenants == {"t1", "t2", OTHER}
