"""Ground truth for the ledger's end-to-end tests, from the simulated node's layout alone
(not from the agent's code): with the ``equal`` split policy a MIG instance holds
slices/total of its GPU, split equally among the services running on it; a device no
process runs on is its idle-holding pod's (the simulated kubelet's allocation), and
whatever nobody holds is idle.
"""

from __future__ import annotations

from collections import defaultdict

from gpuledger.chargeback.attribution.claims import IDLE
from gpuledger.sim.attribution import idle_holders
from gpuledger.sim.node import SimulatedNode


def expected_shares(seed: int) -> dict[tuple[str, str], dict[str, float]]:
    """{(namespace, service): {gpu_uuid: share}} from the simulator's layout."""
    out: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    node = SimulatedNode(seed)
    holders = {h.device: (h.namespace, h.service) for h in idle_holders(node)}
    for gpu in node.gpus:
        held = 0.0
        for dev in gpu.devices:
            fraction = dev.slices / dev.total_slices if dev.slices and dev.total_slices else 1.0
            owners = sorted({(p.namespace, p.service) for p in dev.processes})
            if not owners and dev in holders:
                owners = [holders[dev]]
            for owner in owners:
                out[owner][gpu.uuid] = out[owner].get(gpu.uuid, 0.0) + fraction / len(owners)
                held += fraction / len(owners)
        if held < 1.0 - 1e-12:
            out[("", IDLE)][gpu.uuid] = 1.0 - held
    return out
