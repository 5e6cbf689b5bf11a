"""Ground truth for the ledger's end-to-end tests, from the simulated node's layout alone
(not from the agent's code): with the ``equal`` split policy a MIG instance holds
slices/total of its GPU, split equally among the services running on it, and whatever
nobody holds is idle.
"""

from __future__ import annotations

from collections import defaultdict

from gpuledger.chargeback.attribution.claims import IDLE
from gpuledger.sim.node import SimulatedNode


def expected_shares(seed: int) -> dict[tuple[str, str], dict[str, float]]:
    """{(namespace, service): {gpu_uuid: share}} from the simulator's layout."""
    out: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for gpu in SimulatedNode(seed).gpus:
        held = 0.0
        for dev in gpu.devices:
            fraction = dev.slices / dev.total_slices if dev.slices and dev.total_slices else 1.0
            owners = sorted({(p.namespace, p.service) for p in dev.processes})
            for owner in owners:
                out[owner][gpu.uuid] = out[owner].get(gpu.uuid, 0.0) + fraction / len(owners)
                held += fraction / len(owners)
        if held < 1.0 - 1e-12:
            out[("", IDLE)][gpu.uuid] = 1.0 - held
    return out
