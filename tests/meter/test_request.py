"""What the meter sends upstream for a metered request: the client's body untouched,
except that a stream without ``include_usage`` asks for usage (and only the final chunk)."""

from __future__ import annotations

import json

from gpuledger.meter.proxy import _Request
from gpuledger.meter.tenants import TenantIdentifier

IDENT = TenantIdentifier(("header", "user"), "X-Tenant", {}, 64)


def _sent(body: object) -> tuple[dict[str, object] | None, _Request]:
    raw = json.dumps(body).encode()
    req = _Request(raw, {"x-tenant": "t"}, IDENT)
    if req.body is raw:
        return None, req  # forwarded as the client wrote it
    return json.loads(req.body), req


def test_a_request_without_a_stream_is_forwarded_byte_for_byte() -> None:
    sent, req = _sent({"model": "m", "prompt": "p", "stream": False})
    assert sent is None
    assert (req.stream, req.strip_usage, req.tenant, req.model) == (False, False, "t", "m")


def test_a_stream_that_asked_for_usage_is_forwarded_byte_for_byte() -> None:
    sent, req = _sent({"model": "m", "stream": True, "stream_options": {"include_usage": True}})
    assert sent is None
    assert (req.stream, req.strip_usage) == (True, False)


def test_a_stream_without_usage_asks_for_it() -> None:
    sent, req = _sent({"model": "m", "stream": True, "user": "u"})
    assert sent == {"model": "m", "stream": True, "user": "u",
                    "stream_options": {"include_usage": True}}  # fmt: skip
    assert req.strip_usage


def test_continuous_usage_is_kept_off_when_the_meter_asks() -> None:
    body = {"model": "m", "stream": True,
            "stream_options": {"include_usage": False, "continuous_usage_stats": True}}  # fmt: skip
    sent, req = _sent(body)
    assert sent is not None
    assert sent["stream_options"] == {"include_usage": True, "continuous_usage_stats": False}
    assert req.strip_usage


def test_a_body_that_is_not_an_object_is_malformed_and_forwarded() -> None:
    for raw in (b"[1, 2]", b"{nope", b""):
        req = _Request(raw, {}, IDENT)
        assert req.malformed
        assert req.body is raw
        assert req.tenant == "__untenanted__"
