"""Benchmark: CPU per collection cycle of the vLLM collector, against prometheus_client.

Run from the repository root::

    python -m bench.bench_vllm [--cycles N] [--models M] [--engines E] [--static]
        [--close] [--json FILE]

Four vLLM >= 0.11 pages of about 2,000 lines each (laid out as ``bench.pages.vllm_page``:
several models x data-parallel engines, ``_created`` series, the full V1 histogram set)
are served by uvicorn (what vLLM serves with) in a separate process
(:mod:`bench.vllm_busy`), so that serving costs this process nothing. By default every
scrape finds the page moved by one interval of a busy engine's traffic (counters,
gauges and most histogram buckets change; the bench prints how many of the lines the
collector reads changed per scrape) and the connection kept alive; ``--static`` serves
the same page every time (an idle engine), ``--close`` makes the server close every
connection after its answer (vLLM's uvicorn closes idle connections after 5 s, before
the next scrape at the default 15 s interval). Each cycle:

- **gpuledger**: ``VllmCollector.collect()`` -- four parallel bounded fetches, the
  project's exposition parser, :func:`gpuledger.collectors.vllm.scrape.normalize`;
- **prometheus_client**: the same four fetches (same kept-alive client and bounds, same
  thread pool), then ``text_string_to_metric_families`` and an
  equivalent normalization loop over its output (same dispatch: newest spelling wins,
  ``server`` samples skipped, histograms rebuilt from ``_bucket``/``_sum``/``_count``).

CPU is ``time.process_time`` around each cycle (all threads of this process); the figures
are the mean and p90 over ``--cycles`` cycles after a warm-up, both paths in the same run,
interleaved. Target: gpuledger <= 10 ms CPU per cycle. This is a report: the exit status
is 0 whatever the figures.

The gpuledger cycle is then taken apart on ten successive scrapes of the four pages
(replayed in order, each endpoint with its parse cache and page layout as in the
collector), in this process and without HTTP, mean per cycle over ``--cycles``: ``select``
(the collector's pre-selection of the families it reads,
:func:`gpuledger.collectors.vllm.select.select_families`) and ``read`` (a busy page read
through the layout learnt from an earlier scrape, :mod:`gpuledger.collectors.vllm.layout`)
are the steady cycle; ``fetch + threads`` is the cycle's mean minus those two (the
bounded HTTP fetches, the thread pool, the telemetry objects). What a page whose layout
changed costs is printed beside: ``parse`` (the exposition parser on what was selected:
owned by ``collectors/textformat/``), ``normalize`` (:func:`scrape_page`: the vLLM
collector's own reading of the parsed families), ``learn`` (the four layouts, once), and
the first cycle of a fresh collector, which does all of that.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bench.bench_agent import _free_port, _stop, _wait_http
from bench.results import Row, command, row
from gpuledger.collectors.keepalive import KeepAliveClient
from gpuledger.collectors.textformat.parse import DEFAULT_MAX_SAMPLES, ParseCache, parse
from gpuledger.collectors.vllm.layout import LayoutState
from gpuledger.collectors.vllm.scrape import VllmCollector, _series_and_hint, scrape_page
from gpuledger.collectors.vllm.select import select_families
from gpuledger.collectors.vllm.spellings import DISPATCH
from gpuledger.collectors.vllm.types import Histogram, VllmEndpoint, VllmSeries

TARGET_MS = 10.0
ENDPOINTS = 4
MAX_BYTES = 16 * 1024 * 1024
REPLAYED = 10  # successive scrapes per endpoint replayed by the phase breakdown


def _serve(args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    cmd = [sys.executable, "-m", "bench.vllm_busy", "--port", str(port)]
    cmd += ["--endpoints", str(ENDPOINTS), "--models", str(args.models)]
    cmd += ["--engines", str(args.engines)]
    cmd += ["--static"] * args.static + ["--close"] * args.close
    root = Path(__file__).resolve().parents[1]  # where ``bench`` imports from
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_http(port, "/metrics0")
    return proc, port


def _changed_lines(scrapes: list[bytes]) -> float:
    """Mean number of the selected lines that differ from the previous scrape's."""
    selected = [select_families(b).split(b"\n") for b in scrapes]
    diffs = [
        sum(a != b for a, b in zip(x, y, strict=False)) + abs(len(x) - len(y))
        for x, y in itertools.pairwise(selected)
    ]
    return statistics.fmean(diffs) if diffs else 0.0


def _prometheus_client_normalize(text: str) -> list[VllmSeries]:
    """What collect() does after the fetch, written over prometheus_client's parser."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("vllm:"):
            continue
        for s in family.samples:
            target = DISPATCH.get(s.name)
            labels = s.labels
            if target is None or "server" in labels or math.isnan(s.value):
                continue
            key = (labels.get("model_name", ""), labels.get("engine") or "0")
            g = groups.setdefault(key, {"scalars": {}, "success": {}, "hists": {}})
            if target.kind == 0:
                held = g["scalars"].get(target.field)
                if held is None or target.rank < held[0]:
                    g["scalars"][target.field] = (target.rank, s.value)
            elif target.kind == 1:
                reason = labels.get("finished_reason", "")
                g["success"][reason] = g["success"].get(reason, 0.0) + s.value
            else:
                h = g["hists"].setdefault((target.field, target.rank), [{}, None, None])
                if target.kind == 2:
                    h[0][float(labels["le"])] = s.value
                elif target.kind == 3:
                    h[1] = s.value
                else:
                    h[2] = s.value
    out = []
    for (model, engine), g in sorted(groups.items()):
        values: dict[str, Any] = {f: v for f, (_, v) in g["scalars"].items()}
        for (fld, _rank), (buckets, total, count) in sorted(g["hists"].items()):
            if fld not in values and total is not None and count is not None:
                values[fld] = Histogram(tuple(sorted(buckets.items())), total, count)
        out.append(
            VllmSeries(model_name=model, engine=engine, request_success=g["success"], **values)
        )
    return out


def _measure(fn: Callable[[], object]) -> float:
    start = time.process_time()
    fn()
    return (time.process_time() - start) * 1000.0


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)]


def _phases(
    scrapes: list[list[bytes]], endpoints: list[VllmEndpoint], cycles: int
) -> dict[str, float]:
    """Mean CPU ms per cycle (all pages) of select, the layout read, parse and normalize,
    measured apart, over each endpoint's successive scrapes replayed in order
    (``scrapes[i][k]``: the ``k``-th scrape of endpoint ``i``), each endpoint with its own
    parse cache and layout; ``learn``: learning the four layouts once."""
    selected = [[select_families(b) for b in bodies] for bodies in scrapes]
    parsed = [[parse(s) for s in bodies] for bodies in selected]
    caches = [ParseCache() for _ in endpoints]
    layouts = [LayoutState() for _ in endpoints]
    start = time.process_time()
    for state, bodies, families in zip(layouts, selected, parsed, strict=True):
        state.missed(bodies[0], _series_and_hint(families[0])[0], _series_and_hint,
                     max_samples=DEFAULT_MAX_SAMPLES)  # fmt: skip
        assert state.read(bodies[1]) is not None, "a busy page must be read by its layout"
    out: dict[str, float] = {"learn": (time.process_time() - start) * 1000.0}
    steps: dict[str, Callable[[int, int], object]] = {
        "select": lambda i, k: select_families(scrapes[i][k]),
        "read": lambda i, k: layouts[i].read(selected[i][k]),
        "parse": lambda i, k: parse(selected[i][k], cache=caches[i]),
        "normalize": lambda i, k: scrape_page(parsed[i][k], endpoints[i], vllm_page=True),
    }
    for name, step in steps.items():

        def cycle(k: int, step: Callable[[int, int], object] = step) -> object:
            return [step(i, k % len(scrapes[i])) for i in range(len(scrapes))]

        cycle(0)  # warm: the parse cache as the collector has it after its first cycle
        out[name] = statistics.fmean(_measure(functools.partial(cycle, k)) for k in range(cycles))
    return out


def main(argv: list[str] | None = None) -> list[Row]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=200)
    ap.add_argument("--models", type=int, default=2)
    ap.add_argument("--engines", type=int, default=3)
    ap.add_argument("--static", action="store_true", help="the same page every scrape")
    ap.add_argument("--close", action="store_true", help="a new connection every scrape")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    proc, port = _serve(args)
    endpoints = [
        VllmEndpoint(url=f"http://127.0.0.1:{port}", service=f"svc{i}", metrics_path=f"/metrics{i}")
        for i in range(ENDPOINTS)
    ]
    collector = VllmCollector(lambda: endpoints, timeout_s=5.0, max_bytes=MAX_BYTES)
    client = KeepAliveClient()
    pool = ThreadPoolExecutor(max_workers=8)

    def ours() -> object:
        t = collector.collect()
        assert all(s.up for s in t.endpoints)
        return t

    def fetch_one(ep: VllmEndpoint) -> list[VllmSeries]:
        body = client.fetch(ep.metrics_url, timeout_s=5.0, max_bytes=MAX_BYTES)
        return _prometheus_client_normalize(body.decode("utf-8"))

    def theirs() -> object:
        return list(pool.map(fetch_one, endpoints))

    try:
        # Same answers first (from the same bytes: a busy page moves between two
        # fetches): the comparison is only fair if both do the whole job.
        first = [
            client.fetch(ep.metrics_url, timeout_s=5.0, max_bytes=MAX_BYTES) for ep in endpoints
        ]
        lines = [b.count(b"\n") for b in first]
        for body, ep in zip(first, endpoints, strict=True):
            got = scrape_page(parse(select_families(body)), ep, vllm_page=True).series
            want = _prometheus_client_normalize(body.decode("utf-8"))
            assert got == tuple(want), "gpuledger and prometheus_client read the page differently"
        # the first cycle: every page parsed, normalized and its layout learnt
        first_ms = _measure(ours)
        for _ in range(10):  # warm-up: connections, caches
            ours()
            theirs()
        ours_ms: list[float] = []
        theirs_ms: list[float] = []
        for _ in range(args.cycles):
            ours_ms.append(_measure(ours))
            theirs_ms.append(_measure(theirs))
        scrapes = [
            [
                client.fetch(ep.metrics_url, timeout_s=5.0, max_bytes=MAX_BYTES)
                for _ in range(REPLAYED)
            ]
            for ep in endpoints
        ]
        phases = _phases(scrapes, endpoints, args.cycles)
        bodies = [s[0] for s in scrapes]
    finally:
        collector.close()
        client.close()
        pool.shutdown()
        _stop(proc)

    result = {
        "endpoints": ENDPOINTS,
        "lines_per_page": lines,
        "series_per_page": args.models * args.engines,
        "pages": "static" if args.static else "busy",
        "connections": "closed after each scrape" if args.close else "kept alive",
        "changed_lines_per_page": statistics.fmean(_changed_lines(s) for s in scrapes),
        "cycles": args.cycles,
        "gpuledger_ms_mean": statistics.fmean(ours_ms),
        "gpuledger_ms_p90": _p90(ours_ms),
        "prometheus_client_ms_mean": statistics.fmean(theirs_ms),
        "prometheus_client_ms_p90": _p90(theirs_ms),
        "target_ms": TARGET_MS,
        "first_cycle_ms": first_ms,
        "select_ms_mean": phases["select"],
        "layout_read_ms_mean": phases["read"],
        "parse_ms_mean": phases["parse"],
        "normalize_ms_mean": phases["normalize"],
        "learn_ms": phases["learn"],
        "selected_lines_per_page": [select_families(b).count(b"\n") + 1 for b in bodies],
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    result["ratio"] = result["prometheus_client_ms_mean"] / result["gpuledger_ms_mean"]
    verdict = "PASS" if result["gpuledger_ms_mean"] <= TARGET_MS else "FAIL"
    print(
        f"vLLM collector, {ENDPOINTS} endpoints x {lines[0]:,} lines "
        f"({args.models} models x {args.engines} engines each), {args.cycles} cycles, "
        f"{result['pages']} pages ({result['changed_lines_per_page']:.0f} of "
        f"{result['selected_lines_per_page'][0]:,} read lines changed per scrape), "
        f"connections {result['connections']}, CPU per cycle (time.process_time):"
    )
    print(
        f"  gpuledger           mean {result['gpuledger_ms_mean']:6.2f} ms   "
        f"p90 {result['gpuledger_ms_p90']:6.2f} ms"
    )
    print(
        f"  prometheus_client   mean {result['prometheus_client_ms_mean']:6.2f} ms   "
        f"p90 {result['prometheus_client_ms_p90']:6.2f} ms"
    )
    print(f"  prometheus_client / gpuledger: {result['ratio']:.2f}x")
    rest = result["gpuledger_ms_mean"] - phases["select"] - phases["read"]
    print(
        f"  gpuledger's cycle apart (mean, {ENDPOINTS} pages): "
        f"select {phases['select']:.2f} ms, read through the learnt layouts "
        f"{phases['read']:.2f} ms ({result['selected_lines_per_page'][0]:,} selected lines "
        f"a page), fetch + threads {rest:.2f} ms"
    )
    print(
        f"  a page whose layout changed takes the full path: parse {phases['parse']:.2f} ms + "
        f"normalize {phases['normalize']:.2f} ms for {ENDPOINTS} pages, learning their "
        f"layouts {phases['learn']:.2f} ms once; the first cycle took {first_ms:.2f} ms"
    )
    print(f"  target: gpuledger mean <= {TARGET_MS:g} ms per cycle: {verdict}")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    mean, peer_ms = result["gpuledger_ms_mean"], result["prometheus_client_ms_mean"]
    return [
        row(f"vLLM collector CPU per cycle ({ENDPOINTS} endpoints × {lines[0]:,} lines, "
            f"{result['pages']} pages{', new connections' if args.close else ''})",
            f"{mean:.1f} ms (p90 {result['gpuledger_ms_p90']:.1f})", mean,
            target=f"≤ {TARGET_MS:g} ms", passed=mean <= TARGET_MS,
            peer=f"prometheus_client {peer_ms:.1f} ms", peer_value=peer_ms,
            ratio=f"{result['ratio']:.1f}× less CPU", command=command("bench.bench_vllm", argv))
    ]  # fmt: skip


if __name__ == "__main__":
    main()
    sys.exit(0)
