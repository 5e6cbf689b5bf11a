"""A vLLM stand-in: a real threaded HTTP server on 127.0.0.1 that speaks enough of vLLM.

It serves what the probes and the vLLM collector read, in the shapes vLLM emits
(``docs/probes.md`` records the upstream sources):

- ``GET /v1/models``: ``{"object": "list", "data": [{"id": ..., "object": "model", ...}]}``
- ``POST /v1/completions`` and ``POST /v1/chat/completions`` with ``"stream": true``:
  a chunked ``text/event-stream`` of ``data: {json}\\n\\n`` events, one per token, then
  (when ``stream_options.include_usage`` is set) a usage event with ``"choices": []``,
  then ``data: [DONE]\\n\\n``. Chat streams start with a role-only delta
  (``{"role": "assistant", "content": ""}``), as vLLM does.
- ``POST /v1/embeddings``, ``/score``, ``/v1/score``, ``/rerank``, ``/v1/rerank``,
  ``/v2/rerank`` where ``VllmBehaviour.tasks`` registers them (``tests/support/vllm_pooling.py``):
  JSON responses shaped like vLLM's, with ``usage`` token counts; a route the model's
  tasks do not register is a 404, as in vLLM.
- ``GET /metrics``: vLLM >= 0.11 (V1 engine) exposition with ``model_name`` and
  ``engine`` labels and the upstream TTFT / inter-token / e2e bucket boundaries. The
  counters and histograms move when a completion is served, the way vLLM's do: prompt
  tokens and the TTFT observation when the first token is produced, one generation
  token per streamed token, e2e and request_success when the request finishes.

Everything it does is set through :class:`VllmBehaviour` (mutable; switch it mid-test):
delays, the served and streamed model names, and the misbehaviours a probe must
classify -- a hang before the status line, an HTTP 500, a stream cut mid-way, a stream
without usage or without ``[DONE]``, malformed JSON, an error event, a wrong model name.
``lie_tokens`` makes the engine stop counting tokens, ``ttft_report_scale`` makes it
record a different TTFT from the one it served, ``restart()`` resets every counter.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import MappingProxyType
from typing import Any

from gpuledger.collectors.vllm.types import Histogram, VllmSeries
from tests.support.vllm_pooling import POOLING_PATHS, pooling_reply, serves

# vllm/v1/metrics/loggers.py (PrometheusStatLogger), vLLM 0.11.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
               7.5, 10.0, 20.0, 40.0, 80.0)  # fmt: skip
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
               60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)  # fmt: skip

CHAT_TEMPLATE_TOKENS = 7  # what a chat template adds around one user message, roughly


@dataclass
class VllmBehaviour:
    served_model: str = "stand-in/model"
    # what the model does, as vLLM's supported tasks: "generate", "embed", "score"
    tasks: tuple[str, ...] = ("generate",)
    pooling_delay_s: float = 0.0  # arrival -> a pooling request's single output
    stream_model: str | None = None  # model name written in chunks; None: served_model
    first_token_delay_s: float = 0.0  # request arrival -> first token event
    per_token_delay_s: float = 0.0  # between token events
    tokens: int | None = None  # tokens generated; None: the request's max_tokens
    headers_delay_s: float = 0.0  # before the status line ("slow first byte", a hang)
    status: int = 200  # anything else: a JSON error body with this status
    fail_first: int = 0  # the first N completion requests get HTTP 500, then healthy
    cut_after_tokens: int | None = None  # abort the connection after N token events
    omit_usage: bool = False  # ignore stream_options.include_usage
    omit_done: bool = False  # end the body cleanly without "data: [DONE]"
    malformed_after_tokens: int | None = None  # then send "data: {not json"
    error_event_after_tokens: int | None = None  # then a vLLM error event + [DONE]
    early_role_chunk: bool = False  # chat: send the role-only delta before the first token
    require_api_key: str | None = None  # 401 unless "Authorization: Bearer <key>"
    # engine-side accounting
    lie_tokens: bool = False  # serve tokens but do not count them in /metrics
    count_ttft: bool = True  # observe TTFT into the histogram
    ttft_report_scale: float = 1.0  # record TTFT x this (an engine whose clock lies)
    requests_waiting: float = 0.0  # the vllm:num_requests_waiting gauge
    # V1's engine-time families (off by default: the page stays what other tests expect)
    engine_time: bool = False  # request_{prefill,decode}_time_seconds, prefix_cache_*
    prefix_hit_tokens: int = 0  # per request, prompt tokens "found" in the prefix cache


@dataclass
class _Hist:
    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.bounds)

    def observe(self, v: float) -> None:
        self.n += 1
        self.total += v
        for i, le in enumerate(self.bounds):
            if v <= le:
                self.counts[i] += 1

    def frozen(self) -> Histogram:
        buckets = (*zip(self.bounds, map(float, self.counts), strict=True), (float("inf"), self.n))
        return Histogram(buckets=tuple((le, float(c)) for le, c in buckets), sum=self.total,
                         count=float(self.n))  # fmt: skip


class _Engine:
    """The counters one (model_name, engine) exposes."""

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.running = 0
        self.success: Counter[str] = Counter()
        self.ttft = _Hist(TTFT_BUCKETS)
        self.itl = _Hist(ITL_BUCKETS)
        self.e2e = _Hist(E2E_BUCKETS)
        self.queue = _Hist(E2E_BUCKETS)  # vLLM uses its request-latency buckets here too
        self.prefill = _Hist(E2E_BUCKETS)  # ... and for prefill and decode time
        self.decode = _Hist(E2E_BUCKETS)
        self.prefix_queries = 0
        self.prefix_hits = 0
        self.created = time.time()


def _fmt(v: float) -> str:
    if v == float("inf"):
        return "+Inf"
    return repr(float(v))


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # a probe's watchdog or a closing client resets idle keep-alive connections:
        # expected here, not worth a traceback on stderr
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class VllmStandIn:
    """``with VllmStandIn() as vllm: ...`` -- ``vllm.url`` is the base URL."""

    def __init__(self, behaviour: VllmBehaviour | None = None, *, engine: str = "0") -> None:
        self.behaviour = behaviour or VllmBehaviour()
        self.engine_label = engine
        self.requests: Counter[str] = Counter()  # "METHOD /path" -> count
        self.bodies: list[dict[str, Any]] = []  # request bodies received on the API
        self.auth_headers: list[str | None] = []
        self._lock = threading.Lock()
        self._engine = _Engine()
        self._stop = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                # as uvicorn does: without it Nagle + delayed ACKs batch small SSE
                # events and the client sees tokens arrive in bursts
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                with outer._lock:
                    outer.requests[f"GET {path}"] += 1
                if path == "/metrics":
                    self._send(200, outer.render_metrics().encode(), "text/plain; version=0.0.4")
                elif path == "/v1/models":
                    b = outer.behaviour
                    models = {"object": "list", "data": [{
                        "id": b.served_model, "object": "model", "created": int(time.time()),
                        "owned_by": "vllm", "root": b.served_model, "parent": None,
                        "max_model_len": 4096, "permission": [],
                    }]}  # fmt: skip
                    self._send(200, json.dumps(models).encode(), "application/json")
                else:
                    self._send(404, b'{"detail":"Not Found"}', "application/json")

            def do_POST(self) -> None:
                path = self.path.split("?", 1)[0]
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                with outer._lock:
                    outer.requests[f"POST {path}"] += 1
                    outer.auth_headers.append(self.headers.get("Authorization"))
                b = outer.behaviour
                if b.headers_delay_s:
                    outer._stop.wait(b.headers_delay_s)
                if not serves(b.tasks, path):
                    self._send(404, b'{"detail":"Not Found"}', "application/json")
                    return
                try:
                    body = json.loads(raw)
                except ValueError:
                    self._error(400, "invalid JSON body")
                    return
                with outer._lock:
                    outer.bodies.append(body)
                if (
                    b.require_api_key is not None
                    and self.headers.get("Authorization") != f"Bearer {b.require_api_key}"
                ):
                    self._error(401, "Unauthorized")
                    return
                with outer._lock:
                    failing = b.fail_first > 0
                    if failing:
                        b.fail_first -= 1
                if b.status != 200 or failing:
                    self._error(500 if failing else b.status, "stand-in told to fail")
                    return
                if body.get("model") != b.served_model:
                    # vLLM's _check_model: 404 NotFoundError
                    self._error(404, f"The model `{body.get('model')}` does not exist.")
                    return
                if path in POOLING_PATHS:
                    self._pooling(path, body)
                    return
                if not body.get("stream"):
                    self._error(400, "the stand-in only streams")
                    return
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self._stream(body, chat=path.endswith("/chat/completions"))

            # -- helpers -------------------------------------------------------------

            def _send(self, status: int, payload: bytes, ctype: str) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _error(self, status: int, message: str) -> None:
                err = {"error": {"message": message, "type": "BadRequestError",
                                 "param": None, "code": status}}  # fmt: skip
                self._send(status, json.dumps(err).encode(), "application/json")

            def _pooling(self, path: str, body: dict[str, Any]) -> None:
                b = outer.behaviour
                arrival = time.perf_counter()
                try:
                    reply, n_prompt = pooling_reply(path, body, b.stream_model or b.served_model)
                except (KeyError, TypeError, ValueError, IndexError):
                    self._error(400, "malformed pooling request")
                    return
                if outer._stop.wait(b.pooling_delay_s):
                    return
                with outer._lock:
                    eng = outer._engine
                    if not b.lie_tokens:
                        eng.prompt_tokens += n_prompt
                    if b.count_ttft:
                        eng.ttft.observe((time.perf_counter() - arrival) * b.ttft_report_scale)
                    eng.success["stop"] += 1
                    eng.e2e.observe(time.perf_counter() - arrival)
                self._send(200, json.dumps(reply).encode(), "application/json")

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _event(self, obj: object) -> None:
                text = obj if isinstance(obj, str) else json.dumps(obj)
                self._chunk(f"data: {text}\n\n".encode())

            def _stream(self, body: dict[str, Any], *, chat: bool) -> None:
                b = outer.behaviour
                arrival = time.perf_counter()
                prompt = (
                    " ".join(str(m.get("content", "")) for m in body.get("messages", []))
                    if chat
                    else str(body.get("prompt", ""))
                )
                n_prompt = max(1, len(prompt.split())) + (CHAT_TEMPLATE_TOKENS if chat else 0)
                n_tokens = b.tokens if b.tokens is not None else int(body.get("max_tokens", 16))
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                model = b.stream_model or b.served_model
                rid = ("chatcmpl-" if chat else "cmpl-") + f"{time.time_ns():x}"
                created = int(time.time())
                obj_type = "chat.completion.chunk" if chat else "text_completion"

                def chunk(choices: list[dict[str, Any]]) -> dict[str, Any]:
                    return {"id": rid, "object": obj_type, "created": created,
                            "model": model, "choices": choices}  # fmt: skip

                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream; charset=utf-8")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.flush()
                with outer._lock:
                    outer._engine.running += 1
                role_sent = False
                if chat and b.early_role_chunk:
                    self._event(chunk([{"index": 0, "delta": {"role": "assistant", "content": ""},
                                        "logprobs": None, "finish_reason": None}]))  # fmt: skip
                    role_sent = True
                sent = 0
                last = arrival
                first_token = arrival
                try:
                    if outer._stop.wait(b.first_token_delay_s):
                        return
                    for i in range(n_tokens):
                        if i and outer._stop.wait(b.per_token_delay_s):
                            return
                        if b.cut_after_tokens is not None and sent >= b.cut_after_tokens:
                            self.close_connection = True
                            self.wfile.flush()
                            # abort: no terminating zero-length chunk
                            self.connection.shutdown(2)
                            return
                        if (
                            b.malformed_after_tokens is not None
                            and sent >= b.malformed_after_tokens
                        ):
                            self._chunk(b'data: {"id": "x", "choices": [\n\n')
                            self._chunk(b"data: [DONE]\n\n")
                            self._chunk(b"")
                            return
                        if (
                            b.error_event_after_tokens is not None
                            and sent >= b.error_event_after_tokens
                        ):
                            self._event({"error": {"message": "Internal server error",
                                                   "type": "InternalServerError",
                                                   "param": None, "code": 500}})  # fmt: skip
                            self._event("[DONE]")
                            self._chunk(b"")
                            return
                        now = time.perf_counter()
                        finish = "length" if i == n_tokens - 1 else None
                        if chat:
                            if i == 0 and not role_sent:
                                self._event(chunk([{"index": 0, "delta": {
                                    "role": "assistant", "content": ""},
                                    "logprobs": None, "finish_reason": None}]))  # fmt: skip
                            choice = {"index": 0, "delta": {"content": f" tok{i}"},
                                      "logprobs": None, "finish_reason": finish}  # fmt: skip
                        else:
                            choice = {"index": 0, "text": f" tok{i}", "logprobs": None,
                                      "finish_reason": finish, "stop_reason": None}  # fmt: skip
                        with outer._lock:
                            eng = outer._engine
                            if i == 0:
                                first_token = now
                                if not b.lie_tokens:
                                    eng.prompt_tokens += n_prompt
                                if b.count_ttft:
                                    eng.ttft.observe((now - arrival) * b.ttft_report_scale)
                            else:
                                eng.itl.observe(now - last)
                            if not b.lie_tokens:
                                eng.generation_tokens += 1
                        last = now
                        self._event(chunk([choice]))
                        sent += 1
                    if include_usage and not b.omit_usage:
                        usage = {"prompt_tokens": n_prompt, "completion_tokens": sent,
                                 "total_tokens": n_prompt + sent}  # fmt: skip
                        self._event({**chunk([]), "usage": usage})
                    with outer._lock:
                        outer._engine.success["length"] += 1
                        outer._engine.e2e.observe(time.perf_counter() - arrival)
                        outer._engine.queue.observe(0.0)  # the stand-in never queues
                        if b.engine_time:  # as V1 does for a finished request
                            eng = outer._engine
                            eng.prefill.observe(first_token - arrival)
                            eng.decode.observe(last - first_token)
                            eng.prefix_queries += n_prompt
                            eng.prefix_hits += min(b.prefix_hit_tokens, n_prompt)
                    if not b.omit_done:
                        self._event("[DONE]")
                    self._chunk(b"")
                finally:
                    with outer._lock:
                        outer._engine.running -= 1

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # -- control -------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def restart(self) -> None:
        """The engine restarted: every counter and histogram starts again from zero."""
        with self._lock:
            self._engine = _Engine()

    def completions_served(self) -> int:
        with self._lock:
            return (
                self.requests["POST /v1/completions"] + self.requests["POST /v1/chat/completions"]
            )

    def series(self) -> VllmSeries:
        """What a correct vLLM collector would make of ``/metrics`` right now."""
        with self._lock:
            e = self._engine
            return VllmSeries(
                model_name=self.behaviour.served_model,
                engine=self.engine_label,
                requests_running=float(e.running),
                requests_waiting=float(self.behaviour.requests_waiting),
                kv_cache_usage_ratio=0.0,
                prompt_tokens=float(e.prompt_tokens),
                generation_tokens=float(e.generation_tokens),
                preemptions=0.0,
                request_success=MappingProxyType({k: float(v) for k, v in e.success.items()}),
                ttft=e.ttft.frozen(),
                inter_token_latency=e.itl.frozen(),
                e2e_latency=e.e2e.frozen(),
                queue_time=e.queue.frozen(),
                **(
                    {}
                    if not self.behaviour.engine_time
                    else {
                        "prefix_cache_queries": float(e.prefix_queries),
                        "prefix_cache_hits": float(e.prefix_hits),
                        "prefill_time": e.prefill.frozen(),
                        "decode_time": e.decode.frozen(),
                    }
                ),
            )

    def engine_totals(self) -> tuple[float, float, float, float, float, float]:
        """What the engine has observed so far: prefill and decode seconds (the histogram
        sums), their request counts, prefix-cache queries and hits."""
        with self._lock:
            e = self._engine
            return (e.prefill.total, e.decode.total, float(e.prefill.n), float(e.decode.n),
                    float(e.prefix_queries), float(e.prefix_hits))  # fmt: skip

    def render_metrics(self) -> str:
        """vLLM >= 0.11 text, as prometheus_client writes it (labels model_name, engine)."""
        with self._lock:
            e = self._engine
            lab = f'model_name="{self.behaviour.served_model}",engine="{self.engine_label}"'
            out: list[str] = []

            def family(name: str, kind: str, help_: str) -> None:
                out.append(f"# HELP {name} {help_}")
                out.append(f"# TYPE {name} {kind}")

            def created(name: str, help_: str) -> None:
                # prometheus_client's 0.0.4 text: _created as a gauge family of its own
                family(f"{name}_created", "gauge", help_)
                out.append(f"{name}_created{{{lab}}} {_fmt(e.created)}")

            family("vllm:num_requests_running", "gauge",
                   "Number of requests in model execution batches.")  # fmt: skip
            out.append(f"vllm:num_requests_running{{{lab}}} {_fmt(e.running)}")
            family(
                "vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed."
            )
            out.append(
                f"vllm:num_requests_waiting{{{lab}}} {_fmt(self.behaviour.requests_waiting)}"
            )
            family(
                "vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage."
            )
            out.append(f"vllm:kv_cache_usage_perc{{{lab}}} 0.0")
            for name, value, help_ in (
                ("vllm:num_preemptions", 0, "Cumulative number of preemption from the engine."),
                ("vllm:prompt_tokens", e.prompt_tokens, "Number of prefill tokens processed."),
                ("vllm:generation_tokens", e.generation_tokens,
                 "Number of generation tokens processed."),
                *(() if not self.behaviour.engine_time else (
                    ("vllm:prefix_cache_queries", e.prefix_queries,
                     "Prefix cache queries, in terms of number of queried tokens."),
                    ("vllm:prefix_cache_hits", e.prefix_hits,
                     "Prefix cache hits, in terms of number of cached tokens."),
                )),
            ):  # fmt: skip
                family(f"{name}_total", "counter", help_)
                out.append(f"{name}_total{{{lab}}} {_fmt(value)}")
                created(name, help_)
            family(
                "vllm:request_success_total", "counter", "Count of successfully processed requests."
            )
            for reason in ("stop", "length", "abort"):
                out.append(
                    f'vllm:request_success_total{{{lab},finished_reason="{reason}"}} '
                    f"{_fmt(e.success[reason])}"
                )
            family(
                "vllm:request_success_created", "gauge", "Count of successfully processed requests."
            )
            for reason in ("stop", "length", "abort"):
                out.append(
                    f'vllm:request_success_created{{{lab},finished_reason="{reason}"}} '
                    f"{_fmt(e.created)}"
                )
            for name, hist, help_ in (
                ("vllm:time_to_first_token_seconds", e.ttft,
                 "Histogram of time to first token in seconds."),
                ("vllm:inter_token_latency_seconds", e.itl,
                 "Histogram of inter-token latency in seconds."),
                ("vllm:e2e_request_latency_seconds", e.e2e,
                 "Histogram of e2e request latency in seconds."),
                ("vllm:request_queue_time_seconds", e.queue,
                 "Histogram of time spent in WAITING phase for request."),
                *(() if not self.behaviour.engine_time else (
                    ("vllm:request_prefill_time_seconds", e.prefill,
                     "Histogram of time spent in PREFILL phase for request."),
                    ("vllm:request_decode_time_seconds", e.decode,
                     "Histogram of time spent in DECODE phase for request."),
                )),
            ):  # fmt: skip
                family(name, "histogram", help_)
                for le, c in zip(hist.bounds, hist.counts, strict=True):
                    out.append(f'{name}_bucket{{{lab},le="{_fmt(le)}"}} {_fmt(c)}')
                out.append(f'{name}_bucket{{{lab},le="+Inf"}} {_fmt(hist.n)}')
                out.append(f"{name}_count{{{lab}}} {_fmt(hist.n)}")
                out.append(f"{name}_sum{{{lab}}} {_fmt(hist.total)}")
                created(name, help_)
            return "\n".join(out) + "\n"

    def __enter__(self) -> VllmStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
