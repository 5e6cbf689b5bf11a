"""vLLM stand-ins for the benchmarks, served from a process of their own.

Run from the repository root::

    python -m bench.vllm_standins --count 4 [--first-token-delay S] [--per-token-delay S]

starts ``--count`` :class:`tests.support.vllm_standin.VllmStandIn` servers (real streaming
``/v1/completions``, ``/v1/models`` and a ``/metrics`` whose counters move with what they
serve), prints one JSON line ``[{"url": ..., "model": ...}, ...]`` on stdout, and serves
until stdin is closed or the process is terminated. Serving from another process keeps
the servers' CPU out of both the agent under test and the bench's own load client.

``/metrics`` is the stand-in's live vLLM >= 0.11 page completed to the size of a real
single-engine page: every family of :func:`bench.pages.vllm_page` the stand-in does not
serve itself (the process and GC collectors, ``cache_config_info``, the prefix-cache
counters, the request-phase and token-count histograms, ...) is appended with the
stand-in's model name, about 470 lines in all.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from bench.pages import _VLLM_MODELS, vllm_page
from tests.support.vllm_standin import VllmBehaviour, VllmStandIn

_TYPE = re.compile(r"^# TYPE (\S+) ", re.M)


def _blocks(page: str) -> list[tuple[str, str]]:
    """``(family name, text)`` per family of an exposition page (HELP starts a block)."""
    out: list[tuple[str, str]] = []
    current: list[str] = []
    for line in page.splitlines():
        if line.startswith("# HELP ") and current:
            text = "\n".join(current) + "\n"
            found = _TYPE.search(text)
            out.append((found.group(1) if found else "", text))
            current = []
        current.append(line)
    if current:
        text = "\n".join(current) + "\n"
        found = _TYPE.search(text)
        out.append((found.group(1) if found else "", text))
    return out


class PaddedStandIn(VllmStandIn):
    """A :class:`VllmStandIn` whose ``/metrics`` also carries the families it lacks."""

    def __init__(self, behaviour: VllmBehaviour, *, seed: int) -> None:
        super().__init__(behaviour)
        live = set(_TYPE.findall(super().render_metrics()))
        model = behaviour.served_model
        template = vllm_page(1, 1, seed=seed).replace(
            f'model_name="{_VLLM_MODELS[0]}"', f'model_name="{model}"'
        )
        self._padding = "".join(text for name, text in _blocks(template) if name not in live)

    def render_metrics(self) -> str:
        return self._padding + super().render_metrics()


def serve(
    count: int,
    *,
    first_token_delay_s: float,
    per_token_delay_s: float,
    models: Sequence[str] | None = None,
) -> list[PaddedStandIn]:
    """``count`` started stand-ins (``models[i]`` served by the i-th)."""
    out: list[PaddedStandIn] = []
    for i in range(count):
        model = models[i] if models and i < len(models) else f"bench/model-{i}"
        behaviour = VllmBehaviour(
            served_model=model,
            first_token_delay_s=first_token_delay_s,
            per_token_delay_s=per_token_delay_s,
        )
        standin = PaddedStandIn(behaviour, seed=9000 + i)
        standin.__enter__()
        out.append(standin)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--count", type=int, default=4)
    ap.add_argument("--first-token-delay", type=float, default=0.02, help="seconds")
    ap.add_argument("--per-token-delay", type=float, default=0.005, help="seconds")
    ap.add_argument("--models", default="", help="comma-separated served model names")
    args = ap.parse_args(argv)
    standins = serve(
        args.count,
        first_token_delay_s=args.first_token_delay,
        per_token_delay_s=args.per_token_delay,
        models=[m for m in args.models.split(",") if m],
    )
    info: list[dict[str, Any]] = [
        {"url": s.url, "model": s.behaviour.served_model} for s in standins
    ]
    print(json.dumps(info), flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())

    def _stdin_closed() -> None:
        sys.stdin.read()
        done.set()

    threading.Thread(target=_stdin_closed, daemon=True).start()
    while not done.wait(0.5):
        pass
    for s in standins:
        s.__exit__(None, None, None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
