"""Reading the upstream's ``usage`` out of a JSON response or one SSE event.

The meter counts only what the upstream itself reports: ``usage.prompt_tokens``,
``usage.completion_tokens`` and, when present, ``usage.prompt_tokens_details.
cached_tokens`` (vLLM fills it with ``--enable-prompt-tokens-details``). A usage object
that is not made of non-negative integers is malformed, never guessed at.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


class MalformedUsage(ValueError):
    """The body or event is not JSON, or its ``usage`` is not what the API defines."""


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    cached_prompt_tokens: int
    completion_tokens: int
    model: str | None


def _count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MalformedUsage(f"usage.{what} is not a non-negative integer")
    return value


def usage_of(obj: Any) -> Usage | None:
    """The usage of a parsed response or chunk; None when it carries none."""
    if not isinstance(obj, dict):
        raise MalformedUsage("not a JSON object")
    usage = obj.get("usage")
    if usage is None:
        return None
    if not isinstance(usage, dict):
        raise MalformedUsage("usage is not an object")
    prompt = _count(usage.get("prompt_tokens"), "prompt_tokens")
    completion = _count(usage.get("completion_tokens", 0), "completion_tokens")
    details = usage.get("prompt_tokens_details")
    cached = 0
    if isinstance(details, dict) and details.get("cached_tokens") is not None:
        cached = _count(details["cached_tokens"], "prompt_tokens_details.cached_tokens")
    model = obj.get("model")
    return Usage(prompt, min(cached, prompt), completion, model if isinstance(model, str) else None)


def usage_of_body(body: bytes) -> Usage | None:
    """The usage of a whole (non-streamed) JSON response body."""
    try:
        obj = json.loads(body)
    except ValueError:
        raise MalformedUsage("the response is not JSON") from None
    return usage_of(obj)


def event_data(event: bytes) -> bytes | None:
    """The ``data`` of one SSE event (its lines joined by ``\\n``), None if it has none."""
    if event.startswith(b"data:") and event.endswith(b"\n\n"):
        # what vLLM writes: one data line, LF-terminated (no splitting needed)
        line = event[5:-2]
        if b"\n" not in line and b"\r" not in line:
            return line.lstrip(b" ")
    lines = [
        line[5:].lstrip(b" ") if line.startswith(b"data:") else None
        for line in event.replace(b"\r\n", b"\n").split(b"\n")
    ]
    data = [d for d in lines if d is not None]
    return b"\n".join(data) if data else None
