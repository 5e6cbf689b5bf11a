"""An OpenAI-compatible stand-in that writes what vLLM writes, for the metering proxy.

A real threaded HTTP server on 127.0.0.1. ``POST /v1/chat/completions`` and
``POST /v1/completions``, streamed or not, in vLLM's serialization (pydantic's compact
JSON, ``data: {json}\\n\\n`` events, a chat stream opening with a role-only delta, the
last content chunk carrying ``finish_reason``, then -- only when the request set
``stream_options.include_usage`` -- the usage chunk ``"choices": []`` with ``usage``,
then ``data: [DONE]``; vllm/entrypoints/openai/serving_chat.py and
serving_completion.py). ``GET /v1/models`` and ``GET /health`` as vLLM answers them.

Deterministic: the response's ``id`` is a hash of the request body without its
``stream_options``, and ``created`` is fixed, so the same request asked directly and
through the meter gets the same bytes (that is what the byte-for-byte tests compare).

Every completion served is recorded (:class:`Served`) with the usage it reported, so a
test sums the tokens per tenant it sent from the stand-in's side, not the meter's.
Misbehaviours (:class:`OpenAIBehaviour`): an error status, a hang before the status
line, a stream cut after N tokens, malformed JSON mid-stream, usage never sent.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CHAT_TEMPLATE_TOKENS = 7
CREATED = 1_764_000_000


def dumps(obj: object) -> str:
    """pydantic's ``model_dump_json`` layout: compact separators, unicode kept."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


@dataclass
class OpenAIBehaviour:
    model: str = "meta-llama/Llama-3.1-8B-Instruct"
    cached_tokens: int | None = None  # report prompt_tokens_details.cached_tokens
    status: int = 200
    headers_delay_s: float = 0.0  # before the status line (a hang)
    per_token_delay_s: float = 0.0
    cut_after_tokens: int | None = None  # abort the connection (no final chunk)
    malformed_after_tokens: int | None = None
    omit_usage: bool = False  # ignore include_usage (an upstream without usage)


@dataclass(frozen=True)
class Served:
    path: str
    stream: bool
    include_usage: bool
    authorization: str | None
    tenant_header: str | None
    user: str | None
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    complete: bool  # the whole response went out


def _prompt_tokens(body: dict[str, Any], chat: bool) -> int:
    if chat:
        text = " ".join(str(m.get("content", "")) for m in body.get("messages", []))
        return max(1, len(text.split())) + CHAT_TEMPLATE_TOKENS
    return max(1, len(str(body.get("prompt", "")).split()))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # listen() backlog: the default of 5 drops SYNs under a few hundred concurrent
    # streams, and a dropped SYN costs the client a 1 s retransmit
    request_queue_size = 1024


class OpenAIStandIn:
    """``with OpenAIStandIn() as up: ...``; ``up.url`` is the base URL (no ``/v1``)."""

    def __init__(self, behaviour: OpenAIBehaviour | None = None) -> None:
        self.behaviour = behaviour or OpenAIBehaviour()
        self.served: list[Served] = []
        self.raw_requests: list[bytes] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _send(self, status: int, payload: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                if self.path == "/health":
                    self._send(200, b"", "application/json")
                elif self.path == "/v1/models":
                    data = {"object": "list", "data": [{"id": outer.behaviour.model,
                            "object": "model", "created": CREATED, "owned_by": "vllm",
                            "root": outer.behaviour.model, "parent": None,
                            "max_model_len": 8192, "permission": []}]}  # fmt: skip
                    self._send(200, dumps(data).encode(), "application/json")
                else:
                    self._send(404, b'{"detail":"Not Found"}', "application/json")

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                with outer._lock:
                    outer.raw_requests.append(raw)
                b = outer.behaviour
                if b.headers_delay_s and outer._stop.wait(b.headers_delay_s):
                    return
                if self.path not in ("/v1/chat/completions", "/v1/completions"):
                    self._send(404, b'{"detail":"Not Found"}', "application/json")
                    return
                try:
                    body = json.loads(raw)
                except ValueError:
                    self._error(400, "Expecting value: line 1 column 1 (char 0)")
                    return
                if b.status != 200:
                    self._error(b.status, "stand-in told to fail")
                    return
                if body.get("model") != b.model:
                    self._error(404, f"The model `{body.get('model')}` does not exist.")
                    return
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self._complete(body, chat=self.path.endswith("/chat/completions"))

            def _error(self, status: int, message: str) -> None:
                err = {"object": "error", "message": message, "type": "BadRequestError",
                       "param": None, "code": status}  # fmt: skip
                self._send(status, dumps(err).encode(), "application/json")

            def _event(self, text: str) -> None:
                data = f"data: {text}\n\n".encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _complete(self, body: dict[str, Any], *, chat: bool) -> None:
                b = outer.behaviour
                options = body.get("stream_options") or {}
                stream = body.get("stream") is True
                include_usage = stream and bool(options.get("include_usage"))
                key = {k: v for k, v in body.items() if k != "stream_options"}
                digest = hashlib.sha256(dumps(key).encode()).hexdigest()[:24]
                rid = ("chatcmpl-" if chat else "cmpl-") + digest
                n_prompt = _prompt_tokens(body, chat)
                cached = min(b.cached_tokens, n_prompt) if b.cached_tokens is not None else 0
                n_out = int(body.get("max_tokens") or 16)
                usage: dict[str, Any] = {"prompt_tokens": n_prompt, "total_tokens":
                                         n_prompt + n_out, "completion_tokens": n_out}  # fmt: skip
                usage["prompt_tokens_details"] = (
                    {"cached_tokens": cached} if b.cached_tokens is not None else None
                )

                def record(sent: int, complete: bool) -> None:
                    served = Served(
                        path=self.path, stream=stream, include_usage=include_usage,
                        authorization=self.headers.get("authorization"),
                        tenant_header=self.headers.get("x-tenant"),
                        user=body.get("user") if isinstance(body.get("user"), str) else None,
                        prompt_tokens=n_prompt, cached_tokens=cached,
                        completion_tokens=sent, complete=complete,
                    )  # fmt: skip
                    with outer._lock:
                        outer.served.append(served)

                words = [f" w{i}" for i in range(n_out)]
                if not stream:
                    if chat:
                        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant",
                            "content": "".join(words), "refusal": None, "tool_calls": []},
                            "logprobs": None, "finish_reason": "length",
                            "stop_reason": None}  # fmt: skip
                    else:
                        choice = {"index": 0, "text": "".join(words), "logprobs": None,
                                  "finish_reason": "length", "stop_reason": None,
                                  "prompt_logprobs": None}  # fmt: skip
                    obj = "chat.completion" if chat else "text_completion"
                    resp = {"id": rid, "object": obj, "created": CREATED, "model": b.model,
                            "choices": [choice], "usage": usage,
                            "prompt_logprobs": None}  # fmt: skip
                    if b.omit_usage:
                        del resp["usage"]
                    # recorded before the last byte goes out: a client that has its whole
                    # response finds it in ``served``
                    record(n_out, True)
                    self._send(200, dumps(resp).encode(), "application/json")
                    return
                obj = "chat.completion.chunk" if chat else "text_completion"

                def chunk(choices: list[dict[str, Any]]) -> dict[str, Any]:
                    return {"id": rid, "object": obj, "created": CREATED, "model": b.model,
                            "choices": choices}  # fmt: skip

                self.send_response(200)
                self.send_header("content-type", "text/event-stream; charset=utf-8")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                if chat:
                    self._event(dumps(chunk([{"index": 0, "delta": {"role": "assistant",
                        "content": ""}, "logprobs": None, "finish_reason": None}])))  # fmt: skip
                sent = 0
                for i, word in enumerate(words):
                    if i and b.per_token_delay_s and outer._stop.wait(b.per_token_delay_s):
                        return
                    if b.cut_after_tokens is not None and sent >= b.cut_after_tokens:
                        record(sent, False)
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    if b.malformed_after_tokens is not None and sent >= b.malformed_after_tokens:
                        self._event('{"id":"x","choices":[')
                        self._event("[DONE]")
                        record(sent, True)
                        self.wfile.write(b"0\r\n\r\n")
                        return
                    finish = "length" if i == n_out - 1 else None
                    if chat:
                        choice = {"index": 0, "delta": {"content": word}, "logprobs": None,
                                  "finish_reason": finish}  # fmt: skip
                    else:
                        choice = {"index": 0, "text": word, "logprobs": None,
                                  "finish_reason": finish, "stop_reason": None}  # fmt: skip
                    if finish:
                        choice["stop_reason"] = None
                    self._event(dumps(chunk([choice])))
                    sent += 1
                if include_usage and not b.omit_usage:
                    self._event(dumps({**chunk([]), "usage": usage}))
                self._event("[DONE]")
                record(sent, True)
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> OpenAIStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
