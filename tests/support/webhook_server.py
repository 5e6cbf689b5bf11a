"""A Slack-compatible incoming webhook stand-in on 127.0.0.1: it answers each POST with
the next status of a script (``500`` then ``200``, say), or holds the connection open
(``"hang"``) past the client's timeout; every body it read is kept."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN_PATH = "/services/T0001/B0002/very-secret-token-xyz"


@dataclass
class Hook:
    script: list[int | str]  # statuses, or "hang"; the last one repeats
    bodies: list[dict[str, Any]] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)
    posts: int = 0
    release: threading.Event = field(default_factory=threading.Event)

    def next(self) -> int | str:
        step = self.script[min(self.posts, len(self.script) - 1)]
        self.posts += 1
        return step


@contextmanager
def webhook_server(hook: Hook) -> Iterator[str]:
    """Serve ``hook``; yields its URL (with the secret path)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            step = hook.next()
            if step == "hang":
                hook.release.wait(30)  # until the test ends: the client must time out
                return
            if step == 200 and self.path == TOKEN_PATH:
                hook.bodies.append(json.loads(body))
                hook.content_types.append(self.headers.get("Content-Type", ""))
            self.send_response(int(step) if self.path == TOKEN_PATH else 404)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok" if step == 200 else b"error")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{TOKEN_PATH}"
    finally:
        hook.release.set()
        server.shutdown()
        server.server_close()
