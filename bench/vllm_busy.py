"""vLLM ``/metrics`` pages that move between scrapes as a busy engine's do, served by
uvicorn (what vLLM's OpenAI server runs on) from a process of its own.

Run from the repository root::

    python -m bench.vllm_busy --port P [--endpoints 4] [--models 2] [--engines 3]
        [--static] [--close]

serves ``/metrics0`` .. ``/metrics{N-1}``: each request first advances that endpoint's
engines by one scrape interval of traffic (:meth:`BusyVllmPage.advance`), then answers
the page as :func:`bench.pages.vllm_page` lays it out (same families, same order, same
label sets, the ``_created`` gauges and the process preamble). ``--static`` serves the
first page every time (an idle engine); ``--close`` answers ``Connection: close``, so
every scrape opens a new connection, as against a vLLM whose idle connections uvicorn
closes before the next scrape (vLLM's keep-alive timeout is 5 s by default, the
agent's scrape interval 15 s; sources in ``gpuledger/collectors/keepalive.py``). Without
it uvicorn keeps the connection, as for scrapes less than 5 s apart.

What moves per interval, per (model, engine): 20-60 finished requests (1.3-4 requests
a second over 15 s), each observed into every histogram with the distribution below
(TTFT ~0.15 s, inter-token ~30 ms once per generated token, prefill ~0.1 s, decode =
tokens x inter-token, queue ~50 ms, ...), the token and prefix-cache counters grown by
its tokens, ``request_success`` by its finish reason, the gauges redrawn. A bucket's
line changes when an observation fell at or below its ``le``: the low buckets of the
latency histograms stay, the rest move. ``bench.bench_vllm`` counts and prints how many
of the lines it reads change from one scrape to the next.
"""

from __future__ import annotations

import argparse
import bisect
import math
import random
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from bench.pages import (
    _PROCESS_PREAMBLE,
    _VLLM_COUNTERS,
    _VLLM_GAUGES,
    _VLLM_HISTOGRAMS,
    _VLLM_MODELS,
    _go_float,
    _labels,
    vllm_info_and_gauges,
)

_CREATED = 1_732_116_545.0
_REASONS = ("abort", "length", "stop")


class _Hist:
    """One histogram series: per-bucket counts (not cumulative) and the sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: list[float], rng: random.Random) -> None:
        self.bounds = [*bounds, math.inf]
        self.counts = [rng.randint(0, 5000) for _ in self.bounds]
        self.total = sum(c * b for c, b in zip(self.counts, bounds, strict=False)) * 0.7

    def observe(self, value: float, times: int = 1) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += times
        self.total += value * times


class BusyVllmPage:
    """The state of one vLLM server's engines, advanced an interval at a time."""

    def __init__(self, models: int, engines: int, *, seed: int) -> None:
        self.rng = rng = random.Random(seed)
        self.series = [
            _labels([("engine", str(e)), ("model_name", _VLLM_MODELS[m % len(_VLLM_MODELS)])])
            for m in range(models)
            for e in range(engines)
        ]
        n = len(self.series)
        self.gauges = {name: [float(rng.randint(0, 64))] * n for name, _ in _VLLM_GAUGES}
        self.counters = {name: [float(rng.randint(0, 10**9))] * n for name, _ in _VLLM_COUNTERS}
        self.success = [{r: float(rng.randint(0, 10**6)) for r in _REASONS} for _ in range(n)]
        self.hists = {
            name: [_Hist(bounds, rng) for _ in range(n)] for name, _, bounds in _VLLM_HISTOGRAMS
        }
        self.created = [[_CREATED + rng.random() for _ in range(n)] for _ in range(64)]
        self.cpu = 9731.52

    def advance(self) -> None:
        """One scrape interval of traffic on every engine."""
        rng = self.rng
        lognorm = rng.lognormvariate
        for i in range(len(self.series)):
            for name in self.gauges:
                self.gauges[name][i] = (
                    rng.random() if name.endswith("_perc") else float(rng.randint(0, 64))
                )
            for _ in range(rng.randint(20, 60)):
                prompt = max(1, int(lognorm(math.log(800), 1.0)))
                gen = max(1, int(lognorm(math.log(200), 0.8)))
                max_tokens = rng.choice((256, 512, 1024, 2048))
                ttft = lognorm(math.log(0.15), 0.8)
                itl = lognorm(math.log(0.03), 0.3)
                queue = lognorm(math.log(0.05), 1.2)
                prefill = lognorm(math.log(0.1), 0.7)
                decode = gen * itl
                h = self.hists
                h["vllm:time_to_first_token_seconds"][i].observe(ttft)
                h["vllm:time_per_output_token_seconds"][i].observe(itl, gen)
                h["vllm:inter_token_latency_seconds"][i].observe(itl, gen)
                h["vllm:e2e_request_latency_seconds"][i].observe(queue + prefill + decode)
                h["vllm:request_queue_time_seconds"][i].observe(queue)
                h["vllm:request_inference_time_seconds"][i].observe(prefill + decode)
                h["vllm:request_prefill_time_seconds"][i].observe(prefill)
                h["vllm:request_decode_time_seconds"][i].observe(decode)
                h["vllm:request_prompt_tokens"][i].observe(prompt)
                h["vllm:request_generation_tokens"][i].observe(gen)
                h["vllm:request_max_num_generation_tokens"][i].observe(max_tokens)
                h["vllm:request_params_n"][i].observe(1)
                h["vllm:request_params_max_tokens"][i].observe(max_tokens)
                h["vllm:iteration_tokens_total"][i].observe(rng.randint(1, 8192))
                c = self.counters
                hits = float(int(prompt * rng.uniform(0.0, 0.6)))
                c["vllm:prompt_tokens"][i] += prompt
                c["vllm:generation_tokens"][i] += gen
                c["vllm:prefix_cache_queries"][i] += prompt
                c["vllm:prefix_cache_hits"][i] += hits
                c["vllm:gpu_prefix_cache_queries"][i] += prompt
                c["vllm:gpu_prefix_cache_hits"][i] += hits
                if rng.random() < 0.02:
                    c["vllm:num_preemptions"][i] += 1
                reason = "stop" if rng.random() < 0.9 else rng.choice(("length", "abort"))
                self.success[i][reason] += 1
        self.cpu += rng.uniform(10, 20)

    def render(self) -> str:
        """The page, laid out as :func:`bench.pages.vllm_page` lays out its own."""
        out: list[str] = [
            _PROCESS_PREAMBLE.rstrip("\n").replace("9731.52", _go_float(round(self.cpu, 2)))
        ]
        created = iter(self.created)

        def created_family(name: str, help_text: str) -> None:
            out.append(f"# HELP {name}_created {help_text}")
            out.append(f"# TYPE {name}_created gauge")
            for labels, when in zip(self.series, next(created), strict=True):
                out.append(f"{name}_created{{{labels}}} {_go_float(when)}")

        vllm_info_and_gauges(out, self.series, lambda name, i: self.gauges[name][i])
        for name, help_text in _VLLM_COUNTERS:
            out.append(f"# HELP {name}_total {help_text}")
            out.append(f"# TYPE {name}_total counter")
            for labels, value in zip(self.series, self.counters[name], strict=True):
                out.append(f"{name}_total{{{labels}}} {_go_float(value)}")
            created_family(name, help_text)
        out.append("# HELP vllm:request_success_total Count of successfully processed requests.")
        out.append("# TYPE vllm:request_success_total counter")
        for labels, by_reason in zip(self.series, self.success, strict=True):
            for reason in _REASONS:
                value = _go_float(by_reason[reason])
                out.append(
                    f'vllm:request_success_total{{{labels},finished_reason="{reason}"}} {value}'
                )
        out.append("# HELP vllm:request_success_created Count of successfully processed requests.")
        out.append("# TYPE vllm:request_success_created gauge")
        for labels in self.series:
            for reason in _REASONS:
                when = _go_float(_CREATED + 0.5)
                out.append(
                    f'vllm:request_success_created{{{labels},finished_reason="{reason}"}} {when}'
                )
        for name, help_text, _ in _VLLM_HISTOGRAMS:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} histogram")
            for labels, hist in zip(self.series, self.hists[name], strict=True):
                cumulative = 0
                for le, count in zip(hist.bounds, hist.counts, strict=True):
                    cumulative += count
                    out.append(
                        f'{name}_bucket{{{labels},le="{_go_float(le)}"}} {_go_float(cumulative)}'
                    )
                out.append(f"{name}_count{{{labels}}} {_go_float(cumulative)}")
                out.append(f"{name}_sum{{{labels}}} {_go_float(hist.total)}")
            created_family(name, help_text)
        return "\n".join(out) + "\n"


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def app(pages: list[BusyVllmPage], *, static: bool, close: bool) -> Callable[..., Awaitable[None]]:
    """The ASGI app: ``/metrics{i}`` advances page ``i`` (unless static) and serves it."""
    fixed = [p.render().encode() for p in pages] if static else []
    headers = [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")]
    if close:
        headers.append((b"connection", b"close"))

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        index = path.removeprefix("/metrics")
        if not path.startswith("/metrics") or not index.isdigit() or int(index) >= len(pages):
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        i = int(index)
        if static:
            body = fixed[i]
        else:
            pages[i].advance()
            body = pages[i].render().encode()
        length = (b"content-length", str(len(body)).encode())
        await send({"type": "http.response.start", "status": 200, "headers": [*headers, length]})
        await send({"type": "http.response.body", "body": body})

    return serve


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--endpoints", type=int, default=4)
    ap.add_argument("--models", type=int, default=2)
    ap.add_argument("--engines", type=int, default=3)
    ap.add_argument("--static", action="store_true")
    ap.add_argument("--close", action="store_true")
    args = ap.parse_args(argv)
    pages = [BusyVllmPage(args.models, args.engines, seed=7000 + i) for i in range(args.endpoints)]
    uvicorn.run(
        app(pages, static=args.static, close=args.close),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        lifespan="off",
        access_log=False,
    )


if __name__ == "__main__":
    main()
