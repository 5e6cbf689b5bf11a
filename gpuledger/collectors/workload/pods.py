"""Pod metadata for attribution, and the rules that turn a pod into a service name.

A :class:`PodDirectory` answers "which pod has this UID / this name / this container" from
memory only; the Kubernetes-backed one (:mod:`gpuledger.collectors.workload.kubernetes`) fills its
cache in the background, :class:`StaticPodDirectory` is built from a list (the simulated
node, tests).

Service naming (:func:`service_name`), first match wins:

1. the first non-empty label among ``label_keys`` (default ``app.kubernetes.io/name``, then
   ``app``);
2. the owning workload, from the pod's controller ``ownerReference``:
   ReplicaSet ``<deployment>-<pod-template-hash>`` → the Deployment name (the hash is
   stripped only when it equals the pod's ``pod-template-hash`` label or looks like one:
   8–10 characters of the kube "safe encoding" alphabet); a Job named
   ``<cronjob>-<minutes since epoch>`` → the CronJob name; StatefulSet, DaemonSet, other
   Jobs and any other controller kind → its name as is; a static pod's mirror (owner kind
   ``Node``) → the pod name without its ``-<node name>`` suffix;
3. the pod name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

__all__ = [
    "DEFAULT_LABEL_KEYS",
    "PodDirectory",
    "PodInfo",
    "StaticPodDirectory",
    "service_from_pod_name",
    "service_name",
    "strip_container_id_prefix",
]

DEFAULT_LABEL_KEYS: tuple[str, ...] = ("app.kubernetes.io/name", "app")

_EMPTY: Mapping[str, str] = MappingProxyType({})

# k8s.io/apimachinery/pkg/util/rand.SafeEncodeString's alphabet (no vowels, no 0/1/3):
# what pod-template-hash values and generated pod name suffixes are made of.
_SAFE = "bcdfghjklmnpqrstvwxz2456789"
_RS_HASH = re.compile(rf"^(?P<base>.+)-[{_SAFE}]{{8,10}}$")
_POD_OF_RS = re.compile(rf"^(?P<base>.+)-[{_SAFE}]{{8,10}}-[{_SAFE}]{{5}}$")
_CRONJOB_JOB = re.compile(r"^(?P<base>.+)-(?P<minutes>\d{8,9})$")
# The CronJob controller names a Job "<cronjob>-<scheduled time in minutes since the
# epoch>"; accept 2010-01-01 .. 2100-01-01 so that e.g. "backup-12345678" is left alone.
_CRON_MIN, _CRON_MAX = 21_038_400, 68_374_080


@dataclass(frozen=True, slots=True)
class PodInfo:
    """What attribution needs to know about one pod."""

    uid: str
    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    owner_kind: str | None = None  # the controller ownerReference's kind
    owner_name: str | None = None
    node_name: str | None = None
    container_ids: Mapping[str, str] = field(
        default_factory=lambda: _EMPTY
    )  # id (no runtime://) → name
    # A static pod's kubelet-side UID (the 32-hex config hash its cgroup carries); its
    # mirror pod in the API has another UID and holds this one in the
    # ``kubernetes.io/config.mirror`` annotation.
    static_uid: str | None = None
    pod_ip: str | None = None  # status.podIP
    annotations: Mapping[str, str] = field(default_factory=lambda: _EMPTY)


class PodDirectory(Protocol):
    """Pod lookups that read memory only: never a network call on the caller's thread."""

    def by_uid(self, uid: str) -> PodInfo | None: ...

    def by_name(self, namespace: str, name: str) -> PodInfo | None: ...

    def by_container_id(self, container_id: str) -> PodInfo | None: ...


def strip_container_id_prefix(raw: str) -> str:
    """``containerd://<id>``, ``cri-o://<id>``, ``docker://<id>`` → ``<id>``."""
    _, sep, rest = raw.partition("://")
    return rest if sep else raw


def _strip_rs_hash(rs_name: str, template_hash: str | None) -> str:
    if (
        template_hash
        and rs_name.endswith("-" + template_hash)
        and len(rs_name) > len(template_hash) + 1
    ):
        return rs_name[: -len(template_hash) - 1]
    m = _RS_HASH.match(rs_name)
    return m.group("base") if m is not None else rs_name


def _strip_cron_suffix(job_name: str) -> str:
    m = _CRONJOB_JOB.match(job_name)
    if m is not None and _CRON_MIN <= int(m.group("minutes")) <= _CRON_MAX:
        return m.group("base")
    return job_name


def service_name(pod: PodInfo, label_keys: Sequence[str] = DEFAULT_LABEL_KEYS) -> str:
    """The service a pod is billed to (see the module docstring for the rules)."""
    for key in label_keys:
        value = pod.labels.get(key)
        if value:
            return value
    kind, owner = pod.owner_kind, pod.owner_name
    if kind and owner:
        if kind == "ReplicaSet":
            return _strip_rs_hash(owner, pod.labels.get("pod-template-hash"))
        if kind == "Job":
            return _strip_cron_suffix(owner)
        if kind == "Node":  # a static pod's mirror: "<manifest name>-<node name>"
            suffix = "-" + (pod.node_name or owner)
            if pod.name.endswith(suffix) and len(pod.name) > len(suffix):
                return pod.name[: -len(suffix)]
            return pod.name
        return owner  # StatefulSet, DaemonSet, and controllers we do not know
    return pod.name


def service_from_pod_name(pod_name: str) -> str:
    """A best guess from a pod name alone (dcgm-exporter's labels, no pod metadata):
    ``<deployment>-<rs hash>-<5 chars>`` → ``<deployment>``; anything else as is."""
    m = _POD_OF_RS.match(pod_name)
    return m.group("base") if m is not None else pod_name


class StaticPodDirectory:
    """A :class:`PodDirectory` over a fixed list of pods."""

    def __init__(self, pods: Iterable[PodInfo]) -> None:
        self.pods: tuple[PodInfo, ...] = tuple(pods)
        self._by_uid = {p.uid: p for p in self.pods}
        self._by_uid.update({p.static_uid: p for p in self.pods if p.static_uid})
        self._by_name = {(p.namespace, p.name): p for p in self.pods}
        self._by_container = {cid: p for p in self.pods for cid in p.container_ids}

    def by_uid(self, uid: str) -> PodInfo | None:
        return self._by_uid.get(uid)

    def by_name(self, namespace: str, name: str) -> PodInfo | None:
        return self._by_name.get((namespace, name))

    def by_container_id(self, container_id: str) -> PodInfo | None:
        return self._by_container.get(container_id)

    def __len__(self) -> int:
        return len(self.pods)
