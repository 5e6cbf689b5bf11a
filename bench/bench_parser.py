"""Benchmark: gpuledger's exposition parser against prometheus_client's text parser.

Run from the repository root::

    python -m bench.bench_parser [--repeats N] [--json FILE]

For each page (:mod:`bench.pages`) both parsers read the same text in the same process;
each figure is the best of ``--repeats`` timed runs (``time.perf_counter``), and
prometheus_client's generator is drained down to every sample so that both do the whole
job. The ratio is ours / theirs in lines per second; the target is 5x. This is a report:
the exit status is 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from prometheus_client.parser import text_string_to_metric_families

from bench.pages import dcgm_page, vllm_page
from bench.results import Row, command, row
from gpuledger.collectors.textformat.parse import parse

TARGET_RATIO = 5.0


@dataclass
class Result:
    page: str
    lines: int
    bytes: int
    ours_lines_per_s: float
    prometheus_client_lines_per_s: float
    ratio: float
    target: float
    passed: bool


def _ours(text: str) -> int:
    return sum(len(f.samples) for f in parse(text).values())


def _theirs(text: str) -> int:
    n = 0
    for family in text_string_to_metric_families(text):
        for _sample in family.samples:
            n += 1
    return n


def _best_time(fn: Callable[[str], int], text: str, repeats: int, inner: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn(text)
        best = min(best, (time.perf_counter() - t0) / inner)
    return best


def run(repeats: int = 7) -> list[Result]:
    results: list[Result] = []
    for label, text in (
        ("dcgm-exporter, 8x H100", dcgm_page()),
        ("vLLM, ~5,000 lines", vllm_page()),
    ):
        lines = text.count("\n")
        ours_n, theirs_n = _ours(text), _theirs(text)
        if ours_n != theirs_n:
            print(f"warning: {label}: {ours_n} samples from us, {theirs_n} from prometheus_client")
        # Enough inner iterations that one timed run lasts roughly 50 ms for our parser.
        probe = _best_time(_ours, text, 1, 1)
        inner = max(1, int(0.05 / max(probe, 1e-6)))
        ours_s = _best_time(_ours, text, repeats, inner)
        theirs_s = _best_time(_theirs, text, repeats, max(1, inner // 5))
        ours_lps, theirs_lps = lines / ours_s, lines / theirs_s
        ratio = ours_lps / theirs_lps
        results.append(
            Result(
                page=label,
                lines=lines,
                bytes=len(text.encode()),
                ours_lines_per_s=round(ours_lps),
                prometheus_client_lines_per_s=round(theirs_lps),
                ratio=round(ratio, 2),
                target=TARGET_RATIO,
                passed=ratio >= TARGET_RATIO,
            )
        )
    return results


def _table(results: list[Result]) -> str:
    header = ("page", "lines", "ours lines/s", "prometheus_client lines/s", "ratio", "target", "")
    rows = [
        (
            r.page,
            f"{r.lines:,}",
            f"{r.ours_lines_per_s:,.0f}",
            f"{r.prometheus_client_lines_per_s:,.0f}",
            f"{r.ratio:.2f}x",
            f"{r.target:.0f}x",
            "PASS" if r.passed else "FAIL",
        )
        for r in results
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*row) for row in rows]
    return "\n".join(out)


def rows(results: list[Result], cmd: str) -> list[Row]:
    return [
        row(
            f"parser: {r.page}",
            f"{r.ours_lines_per_s:,.0f} lines/s",
            r.ours_lines_per_s,
            target=f"≥ {r.target:.0f}× prometheus_client",
            passed=r.passed,
            peer=f"prometheus_client {r.prometheus_client_lines_per_s:,.0f} lines/s",
            peer_value=r.prometheus_client_lines_per_s,
            ratio=f"{r.ratio:.1f}×",
            command=cmd,
        )
        for r in results
    ]


def main(argv: list[str] | None = None) -> list[Row]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--repeats", type=int, default=7, help="timed runs per figure (best kept)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON here")
    args = ap.parse_args(argv)

    results = run(max(1, args.repeats))
    print(f"Python {platform.python_version()} on {platform.machine()}, best of {args.repeats}")
    print(_table(results))
    verdict = "all pages meet" if all(r.passed for r in results) else "NOT every page meets"
    print(f"\n{verdict} the {TARGET_RATIO:.0f}x target")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(
                {
                    "python": platform.python_version(),
                    "machine": platform.machine(),
                    "repeats": args.repeats,
                    "results": [asdict(r) for r in results],
                },
                fh,
                indent=2,
            )
            fh.write("\n")
    return rows(results, command("bench.bench_parser", argv))


if __name__ == "__main__":
    main()
    sys.exit(0)
