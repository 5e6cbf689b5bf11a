"""Structured logs: one JSON object per line with the extra fields as keys."""

from __future__ import annotations

import json
import logging

from gpuledger.agent.logs import JsonFormatter, TextFormatter


def record(msg: str, *args: object, fields: dict[str, object] | None = None) -> logging.LogRecord:
    rec = logging.LogRecord("gpuledger.agent", logging.WARNING, __file__, 1, msg, args, None)
    if fields is not None:
        rec.fields = fields
    return rec


def test_json_line_has_message_level_and_fields() -> None:
    line = JsonFormatter().format(
        record("collector %s down: %s", "dcgm", "HTTP 500", fields={"node": "n1"})
    )
    doc = json.loads(line)
    assert "\n" not in line
    assert doc["msg"] == "collector dcgm down: HTTP 500"
    assert doc["level"] == "warning"
    assert doc["logger"] == "gpuledger.agent"
    assert doc["node"] == "n1"
    assert doc["ts"].endswith("Z")


def test_text_line_appends_fields() -> None:
    line = TextFormatter().format(record("serving", fields={"node": "n1", "simulated": True}))
    assert line.endswith("WARNING gpuledger.agent: serving node=n1 simulated=True")
