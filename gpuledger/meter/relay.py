"""The streaming relay: SSE bytes in from the upstream, the same bytes out to the client.

Sans-IO, so the byte-level promises are testable without sockets. Two modes:

- ``strip_usage=False`` (the client asked for ``stream_options.include_usage``): every
  piece is forwarded the moment it arrives, untouched; a copy is split into events to
  find the usage chunk.
- ``strip_usage=True`` (the meter asked for usage on the client's behalf): the upstream
  now sends one event the client did not ask for, the final chunk with ``"choices": []``
  and a ``usage``. Complete events are forwarded as they complete, except that one; a
  partial event is held only until its terminating blank line arrives (vLLM writes one
  event per write, so in practice nothing waits). The client receives exactly the bytes
  it would have received without the meter.

What the relay saw decides how the request is counted (:meth:`SseRelay.outcome`).
"""

from __future__ import annotations

import json
import re

from gpuledger.meter.usage import MalformedUsage, Usage, event_data, usage_of

_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


class SseRelay:
    def __init__(self, *, strip_usage: bool) -> None:
        self._strip = strip_usage
        self._buffer = b""
        self.usage: Usage | None = None
        self.malformed = False
        self.done = False  # saw data: [DONE]

    def _inspect(self, event: bytes) -> bool:
        """Read one complete event; True when it is the usage-only chunk."""
        data = event_data(event)
        if data is None:
            return False
        if data.strip() == b"[DONE]":
            self.done = True
            return False
        try:
            obj = json.loads(data)
            usage = usage_of(obj)
        except (ValueError, MalformedUsage):
            self.malformed = True
            return False
        if usage is None:
            return False
        self.usage = usage
        return bool(obj.get("choices") == [])

    @property
    def strips(self) -> bool:
        """True when the relay may drop an event (the body's length can change)."""
        return self._strip

    def feed(self, piece: bytes) -> bytes:
        """Bytes to send to the client now for this piece of the upstream's body."""
        buffer = self._buffer + piece
        out: list[bytes] = []
        start = 0
        for match in _EVENT_END.finditer(buffer):
            event = buffer[start : match.end()]
            start = match.end()
            usage_only = self._inspect(event)
            if not (self._strip and usage_only):
                out.append(event)
        self._buffer = buffer[start:]
        if not self._strip:
            return piece
        return b"".join(out)

    def finish(self) -> bytes:
        """The upstream's body ended: what is held goes out as it came (a trailing
        partial event is the upstream's, and the client sees it as sent)."""
        tail, self._buffer = self._buffer, b""
        usage_only = bool(tail.strip()) and self._inspect(tail)
        return tail if self._strip and not usage_only else b""
