"""Real HTTP servers on 127.0.0.1 that stand in for upstream exporters in tests.

A :class:`StandIn` serves whatever :class:`Behaviour` it is told to, and can be switched
mid-test (healthy page -> 500 -> hang -> truncated -> huge body) to exercise the agent's
fault handling against a real socket, not a mocked client.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Behaviour:
    body: bytes = b""
    status: int = 200
    content_type: str = "text/plain; version=0.0.4; charset=utf-8"
    delay_s: float = 0.0  # before the status line (a hang when large)
    repeat_body_bytes: int = 0  # stream `body` repeatedly until this many bytes were sent


class StandIn:
    def __init__(self, behaviour: Behaviour | None = None) -> None:
        self.behaviour = behaviour or Behaviour()
        self.requests = 0
        self.request_headers: list[dict[str, str]] = []  # each request's, in order
        self._stop = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                outer.requests += 1
                outer.request_headers.append({k.lower(): v for k, v in self.headers.items()})
                b = outer.behaviour
                if b.delay_s:
                    outer._stop.wait(b.delay_s)
                try:
                    self.send_response(b.status)
                    self.send_header("Content-Type", b.content_type)
                    if b.repeat_body_bytes:
                        self.send_header("Content-Length", str(b.repeat_body_bytes))
                        self.end_headers()
                        sent = 0
                        chunk = b.body or b"x" * 65536
                        while sent < b.repeat_body_bytes and not outer._stop.is_set():
                            part = chunk[: b.repeat_body_bytes - sent]
                            self.wfile.write(part)
                            sent += len(part)
                    else:
                        self.send_header("Content-Length", str(len(b.body)))
                        self.end_headers()
                        self.wfile.write(b.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def __enter__(self) -> StandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()


def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def serving(behaviour: Behaviour) -> Iterator[StandIn]:
    with StandIn(behaviour) as s:
        yield s
