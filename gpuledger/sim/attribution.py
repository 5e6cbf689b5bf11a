"""The simulated node attributed through the real path: a proc tree, a pod directory and
the kubelet's device allocations.

The agent does not read the simulation's model to know who holds a GPU: it is handed the
same kind of evidence a real node gives (``/proc/<pid>/cgroup`` files, pod metadata, and
the pod-resources answers of :mod:`gpuledger.sim.kubelet`), so a demo exercises cgroup
parsing, pod lookup, the kubelet client and the naming rules for real.

Besides the pods of its processes, the node has one **idle-holding pod**
(:func:`idle_holders`): a notebook that holds the empty MIG instance of MIG layout A and
runs no process on it. Only the kubelet knows it, so it is billed (busy 0) only where the
pod-resources source reads the simulated kubelet.
"""

from __future__ import annotations

import hashlib
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path

from gpuledger.collectors.workload.pods import PodInfo, StaticPodDirectory
from gpuledger.sim import mps
from gpuledger.sim.costcenters import POD_ANNOTATIONS
from gpuledger.sim.node import SimDevice, SimulatedNode

_SIM_UID_NAMESPACE = uuidlib.UUID("6f1c2a4e-2d0b-4c55-9a57-0b8f3c1d2e90")


def _sim_pod_uid(namespace: str, pod: str) -> str:
    return str(uuidlib.uuid5(_SIM_UID_NAMESPACE, f"{namespace}/{pod}"))


def _sim_container_id(namespace: str, pod: str, container: str) -> str:
    return hashlib.sha256(f"{namespace}/{pod}/{container}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class IdleHolder:
    """A pod the kubelet allocated a device to, with no process on it."""

    namespace: str
    service: str
    pod: str
    container: str
    device: SimDevice


NOTEBOOK_NAMESPACE, NOTEBOOK_SERVICE = "research", "notebook"


def idle_holders(node: SimulatedNode) -> tuple[IdleHolder, ...]:
    """The node's idle-holding pods: a notebook on the first MIG instance no process runs
    on (none on a node without such an instance)."""
    for d in node.devices:
        if d.mig_device_uuid is not None and not d.processes:
            pod = f"{NOTEBOOK_SERVICE}-{d.mig_device_uuid[4:14].lower()}-0"
            return (IdleHolder(NOTEBOOK_NAMESPACE, NOTEBOOK_SERVICE, pod, "jupyter", d),)
    return ()


def simulated_sources(
    node: SimulatedNode, root: Path, *, node_name: str = "simulated-node"
) -> tuple[Path, StaticPodDirectory]:
    """Write a proc tree for the simulated node's processes under ``root`` and build the
    matching pod directory, so that the simulated node is attributed by the real path
    (cgroup parsing, pod lookup, naming rules) rather than by reading the model.

    Each process gets ``<root>/<pid>/cgroup`` in the cgroup-v2 systemd layout of a
    containerd node, ``comm`` and ``cmdline``. Every pod is owned by a ReplicaSet and
    carries ``app.kubernetes.io/name``, except the first pod (by namespace, name), which
    has no name label so that its service comes from the ReplicaSet owner rule; the pods of
    the namespaces in :data:`~gpuledger.sim.costcenters.POD_ANNOTATIONS` carry their
    cost-center annotation. An MPS GPU's
    server gets its entry and its pod from :func:`gpuledger.sim.mps.write_servers`. Returns
    ``(proc_root, pods)``.
    """
    pods: dict[tuple[str, str], tuple[str, dict[str, str]]] = {}  # (ns, pod) → (service, cids)
    for p in node.processes:
        cid = _sim_container_id(p.namespace, p.pod, p.container)
        uid = _sim_pod_uid(p.namespace, p.pod)
        service, containers = pods.setdefault((p.namespace, p.pod), (p.service, {}))
        containers[cid] = p.container
        qos_uid = uid.replace("-", "_")
        cgroup = (
            "0::/kubepods.slice/kubepods-burstable.slice/"
            f"kubepods-burstable-pod{qos_uid}.slice/cri-containerd-{cid}.scope\n"
        )
        d = root / str(p.pid)
        d.mkdir(parents=True, exist_ok=True)
        (d / "cgroup").write_text(cgroup, encoding="utf-8")
        comm = "python3" if p.container == "vllm" else "text-embedding"
        (d / "comm").write_text(comm + "\n", encoding="utf-8")
        args = ["python3", "-m", "vllm.entrypoints.openai.api_server", "--served-model-name"]
        (d / "cmdline").write_text("\x00".join([*args, p.service]) + "\x00", encoding="utf-8")
    infos: list[PodInfo] = []
    by_owner_rule = min(pods) if pods else None
    for (namespace, pod_name), (service, containers) in sorted(pods.items()):
        rs_name, _, _ = pod_name.rpartition("-")  # "<deployment>-<hash>-<suffix>"
        template_hash = rs_name.rpartition("-")[2]
        labels = {"pod-template-hash": template_hash}
        if (namespace, pod_name) != by_owner_rule:
            labels["app.kubernetes.io/name"] = service
        infos.append(
            PodInfo(
                uid=_sim_pod_uid(namespace, pod_name),
                namespace=namespace,
                name=pod_name,
                labels=labels,
                owner_kind="ReplicaSet",
                owner_name=rs_name,
                node_name=node_name,
                container_ids=containers,
                annotations=dict(POD_ANNOTATIONS.get(namespace, {})),
            )
        )
    mps_gpus = [g.index for g in node.gpus if g.role == "mps"]
    infos += mps.write_servers(root, mps_gpus, node_name)  # the MPS GPU's server and its pod
    for h in idle_holders(node):  # a StatefulSet's pod: its service from the name label
        infos.append(
            PodInfo(
                uid=_sim_pod_uid(h.namespace, h.pod),
                namespace=h.namespace,
                name=h.pod,
                labels={"app.kubernetes.io/name": h.service},
                owner_kind="StatefulSet",
                owner_name=h.pod.rpartition("-")[0],
                node_name=node_name,
                container_ids={_sim_container_id(h.namespace, h.pod, h.container): h.container},
            )
        )
    return root, StaticPodDirectory(infos)
