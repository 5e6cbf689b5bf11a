"""The reference node of the benchmarks: 8 simulated GPUs (MIG on two) with 32 GPU processes.

:class:`ReferenceNode` is the project's :class:`~gpuledger.sim.node.SimulatedNode`
(its 8-GPU layout holds 13 processes: a tensor-parallel LLM on four GPUs, a batch job, a
time-sliced GPU with two services, two MIG GPUs with three services each) plus small
time-sliced pods on the six whole GPUs until the node holds ``processes`` GPU processes:
a mix of five bench services (OCR, small embedders, a notebook, a guard model) at
1.5 % of a GPU's memory each. The MIG GPUs are left as the simulation makes them. Every
process gets a pod, a cgroup file and a service through the agent's real attribution
path, exactly as the simulation's own processes do.

``python -m bench.reference_node --config FILE [--processes N]`` runs ``gpuledger agent
--config FILE`` in this process with ``simulate.enabled`` nodes built as a
:class:`ReferenceNode` (the bench's only hook into the agent: the module-level
``gpuledger.agent.main._simulated_node``); nothing under ``gpuledger/`` changes.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable
from typing import Any

from gpuledger.sim.node import (
    _M64,
    LoadProfile,
    SimDevice,
    SimGpu,
    SimProcess,
    SimulatedNode,
    _mix,
    _Service,
)
from gpuledger.sim.nvml_fake import MIB, GpuModel

REFERENCE_PROCESSES = 32

_EXTRA_SERVICES = (
    _Service("batch", "ocr-worker", LoadProfile(0.06, 0.03, 10.0), 0.015),
    _Service("search", "embed-minilm", LoadProfile(0.05, 0.03, 14.0), 0.015),
    _Service("ml-dev", "notebook-gpu", LoadProfile(0.03, 0.02, 15.0), 0.015),
    _Service("safety", "guard-small", LoadProfile(0.04, 0.02, 16.0), 0.015),
    _Service("search", "rerank-mini", LoadProfile(0.04, 0.02, 13.0), 0.015),
)


class ReferenceNode(SimulatedNode):
    """A :class:`SimulatedNode` topped up with time-sliced pods to ``processes``."""

    def __init__(
        self, seed: int, gpus: int = 8, *, processes: int = REFERENCE_PROCESSES, **kw: Any
    ) -> None:
        self._target_processes = processes
        super().__init__(seed, gpus, **kw)

    def _build(self, n: int, model: GpuModel) -> tuple[SimGpu, ...]:
        gpus = list(super()._build(n, model))
        used = {p.pid for g in gpus for d in g.devices for p in d.processes}
        have = len(used)
        whole = [i for i, g in enumerate(gpus) if not g.mig]
        k = 0
        while have < self._target_processes and whole:
            i = whole[k % len(whole)]
            svc = _EXTRA_SERVICES[k % len(_EXTRA_SERVICES)]
            k += 1
            g = gpus[i]
            pid = self._rng.randrange(2_000, 4_000_000)
            while pid in used:
                pid = self._rng.randrange(2_000, 4_000_000)
            used.add(pid)
            mem_total = g.model.memory_mib * MIB
            proc = SimProcess(
                pid=pid, gpu_index=i, gpu_uuid=g.uuid, mig_instance=None, mig_device_uuid=None,
                namespace=svc.namespace, service=svc.service, pod=self._pod(svc.service),
                container="server", memory_bytes=int(svc.memory_fraction * mem_total) // MIB * MIB,
                load=svc.load, noise_key=_mix(_mix(self.seed & _M64) ^ pid),
            )  # fmt: skip
            device: SimDevice = g.devices[0]
            device = dataclasses.replace(device, processes=(*device.processes, proc))
            gpus[i] = dataclasses.replace(g, devices=(device,))
            have += 1
        return tuple(gpus)


def node_factory(processes: int) -> Callable[[Any], SimulatedNode | None]:
    """A stand-in for ``gpuledger.agent.main._simulated_node``."""

    def build(cfg: Any) -> SimulatedNode | None:
        if not cfg.simulate.enabled:
            return None
        return ReferenceNode(
            cfg.simulate.seed, cfg.simulate.gpus, processes=processes, clock=time.time
        )

    return build


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--config", required=True)
    ap.add_argument("--processes", type=int, default=REFERENCE_PROCESSES)
    args = ap.parse_args(argv)

    import gpuledger.agent.main as agent_main
    from gpuledger.cli import app

    agent_main._simulated_node = node_factory(args.processes)  # type: ignore[assignment]
    app(["agent", "--config", args.config])
    return 0


if __name__ == "__main__":
    sys.exit(main())
