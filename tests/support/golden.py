"""The golden ``/metrics`` of a seeded simulated node (node_exporter's ``e2e-output.txt``).

Every change to the exported surface -- a metric added, renamed or dropped, a label
changed, a value computed differently -- changes this text, so it shows up in review as
a diff of ``tests/support/fixtures/golden/simulated-node.prom`` rather than being found
later on a dashboard. ``tests/e2e/test_golden_metrics.py`` regenerates it in memory and
compares; ``make golden`` (``python -m tests.support.golden``) rewrites the file.

The text comes from the agent's real path, not a copy of it: the simulated node's fake
NVML read by the collector the NVML source's registry record builds, run by the real
:class:`CollectorRunner` into a :class:`SnapshotStore` that renders with the real
:class:`SnapshotExporter` (every registered source's export), and the real ledger
(resolver over the simulated proc tree and pod directory, accumulator, spool) fed by the
source's own ledger hook after each update, as the agent's wiring calls it. Only the clocks are
fixed: the node, the runner's last-success time and the ledger all read a wall and a
monotonic clock that this module steps, so the output is the same on every machine.

One value is inherently wall-clock: a run's duration, which the runner measures with
``time.monotonic()`` around the collector's thread. Exactly that series'
(``gpuledger_collector_duration_seconds``) value is replaced by
:data:`DURATION_PLACEHOLDER` in :func:`normalise`; the test compares the output of
:func:`generate`, so the generator and the test normalise identically. The version
label of ``gpuledger_build_info`` is pinned to :data:`VERSION` so that a release bump is
not an exported-surface change.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import threading
from pathlib import Path

GOLDEN_PATH = Path(__file__).resolve().parent / "fixtures" / "golden" / "simulated-node.prom"

SEED = 7
GPUS = 8
NODE = "simulated-node"
VERSION = "0.0.0-golden"
START_UNIX = 1_736_157_600.0
"""2025-01-06 10:00:00 UTC, a Monday morning: the simulated services are busy."""
MONO_START = 10_000.0
INTERVAL_S = 15.0
"""The agent's default collection interval (the NVML section's timeout is its default)."""
CYCLES = 8
"""Collection cycles: the first gives the ledger its baseline, the other seven integrate."""
DURATION_PLACEHOLDER = "0.001"


class FixedClocks:
    """A wall and a monotonic clock that move only when :meth:`advance` is called."""

    def __init__(self, wall: float, mono: float) -> None:
        self._wall = wall
        self._mono = mono

    def wall(self) -> float:
        return self._wall

    def mono(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._wall += seconds
        self._mono += seconds


def normalise(text: str) -> str:
    """Replace the value of each run-duration sample (measured by the runtime on the
    real monotonic clock) with :data:`DURATION_PLACEHOLDER`; nothing else is touched."""
    from gpuledger import schema

    name = re.escape(schema.COLLECTOR_DURATION.name)
    pattern = re.compile(rf"^({name}\{{[^}}]*\}}) \S+$", re.MULTILINE)
    return pattern.sub(rf"\1 {DURATION_PLACEHOLDER}", text)


def generate() -> str:
    """The exposition after :data:`CYCLES` NVML collections of the seeded node, with the
    ledger's allocations and service seconds as the agent would export them."""
    from gpuledger.agent.exporter import SnapshotExporter
    from gpuledger.agent.runtime import CollectorRunner
    from gpuledger.agent.snapshot import CollectorState, Snapshot, SnapshotStore
    from gpuledger.chargeback.attribution.resolver import WorkloadResolver
    from gpuledger.chargeback.ledger.flusher import Ledger
    from gpuledger.chargeback.ledger.spool import Spool
    from gpuledger.collectors.gpu.config import NvmlConfig
    from gpuledger.collectors.gpu.source import NVML_SOURCE
    from gpuledger.collectors.source import BuildContext
    from gpuledger.sim.attribution import simulated_sources
    from gpuledger.sim.node import SimulatedNode

    clocks = FixedClocks(START_UNIX, MONO_START)
    with tempfile.TemporaryDirectory(prefix="gpuledger-golden-") as tmp:
        root = Path(tmp)
        node = SimulatedNode(SEED, GPUS, clock=clocks.wall, mono=clocks.mono)
        proc_root, pods = simulated_sources(node, root / "simulated-proc", node_name=NODE)
        resolver = WorkloadResolver(proc_root=proc_root, pods=pods, static=None)
        spool = Spool(root / "spool.db")
        ledger = Ledger(
            NODE,
            spool=spool,
            store=None,  # the flusher's store is not part of the exposition
            claims_for=resolver.claims,
            policy="usage",
            max_gap_s=4 * INTERVAL_S,
            wall=clocks.wall,
            mono=clocks.mono,
        )
        exporter = SnapshotExporter(node=NODE, version=VERSION, ledger=ledger.status)
        store = SnapshotStore(exporter.render)
        # the NVML source's own record builds its collector and feeds the ledger, as the
        # agent's wiring calls them (the simulated node's NVML in place of the library's)
        built = NVML_SOURCE.build(
            NvmlConfig(),
            BuildContext(
                node_name=NODE,
                default_interval_s=INTERVAL_S,
                snapshot=lambda: store.snapshot,
                pods=pods,
                nvml=node.nvml,
                ledger=ledger,
            ),
        )
        hook = NVML_SOURCE.ledger
        assert hook is not None
        assert len(built.collectors) == 1
        (collector, schedule), live = built.collectors[0], built.live

        def feed_ledger(snap: Snapshot, state: CollectorState) -> None:
            if state.name == collector.name:
                hook(ledger, snap, live)

        store.subscribe(feed_ledger)
        runner = CollectorRunner(collector, schedule, store, threading.Event(), clock=clocks.wall)
        ledger.start()
        try:
            for _ in range(CYCLES):
                clocks.advance(INTERVAL_S)
                runner.run_once()
            # what /metrics serves after the last cycle: rendered in the collector's
            # thread, before the listener, so the ledger series lag one cycle, as served
            text = store.rendered.body.decode("utf-8")
        finally:
            collector.close()
            ledger.stop()
            spool.close()
            resolver.close()
    return normalise(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.golden",
        description="Regenerate the golden /metrics of the seeded simulated node.",
    )
    parser.add_argument("--out", type=Path, default=GOLDEN_PATH, help="where to write it")
    args = parser.parse_args(argv)
    import gpuledger

    text = generate()
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out} ({len(text.splitlines())} lines) from {Path(gpuledger.__file__).parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
