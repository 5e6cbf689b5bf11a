"""Pods of this node from the Kubernetes API, cached in memory and refreshed in the background.

:class:`KubernetesPodDirectory` lists the pods scheduled on one node
(``fieldSelector=spec.nodeName=<node>``, so the API server filters and the agent holds a
node's worth of pods, not the cluster's), then optionally watches for changes from the
list's ``resourceVersion`` until the next resync. Every change builds a new immutable index
that replaces the old one in a single assignment, so :meth:`~KubernetesPodDirectory.by_uid`
never locks, never waits and never calls the API: a scrape or a collection only ever
reads memory. When the API fails (500, timeout, refused connection, RBAC) the last good
index stays in place, :attr:`~KubernetesPodDirectory.healthy` turns false with
:attr:`~KubernetesPodDirectory.last_error` saying why, and one log line is written per
change of state (not per retry).

The two API calls go through :mod:`~gpuledger.collectors.workload.kubeapi` (httpx, a
core dependency): the official ``kubernetes`` client weighed 126 MB of the agent's image
for them (issue 16). Responses are read as raw JSON into typed records here. RBAC
needed: ``get``, ``list``, ``watch`` on ``pods`` (cluster-wide; the field
selector narrows what is returned, not what is authorized).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from gpuledger.collectors.workload.background import BackgroundSync
from gpuledger.collectors.workload.kubeapi import ApiConnection, KubeApi, resolve_connection
from gpuledger.collectors.workload.pods import PodInfo, strip_container_id_prefix

__all__ = ["KubernetesPodDirectory", "pod_from_api", "pods_from_list"]

log = logging.getLogger(__name__)

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"


# --- JSON → PodInfo (typed; the API's JSON is checked, never trusted) ---------------------
def _obj(parent: Mapping[str, object], key: str) -> Mapping[str, object]:
    value = parent.get(key)
    return value if isinstance(value, dict) else {}


def _str(parent: Mapping[str, object], key: str) -> str | None:
    value = parent.get(key)
    return value if isinstance(value, str) and value else None


def _list(parent: Mapping[str, object], key: str) -> list[Mapping[str, object]]:
    value = parent.get(key)
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, dict)]


def pod_from_api(obj: object) -> PodInfo | None:
    """One item of a ``PodList`` (or a watch event's object) → :class:`PodInfo`;
    ``None`` for an object without uid/namespace/name."""
    if not isinstance(obj, dict):
        return None
    meta = _obj(obj, "metadata")
    uid, namespace, name = _str(meta, "uid"), _str(meta, "namespace"), _str(meta, "name")
    if uid is None or namespace is None or name is None:
        return None
    labels = {k: v for k, v in _obj(meta, "labels").items() if isinstance(v, str)}
    owners = _list(meta, "ownerReferences")
    owner = next((o for o in owners if o.get("controller") is True), owners[0] if owners else None)
    containers: dict[str, str] = {}
    status = _obj(obj, "status")
    for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
        for cs in _list(status, key):
            cid, cname = _str(cs, "containerID"), _str(cs, "name")
            if cid and cname:
                containers[strip_container_id_prefix(cid)] = cname
    annotations = {k: v for k, v in _obj(meta, "annotations").items() if isinstance(v, str)}
    mirror = _str(annotations, MIRROR_ANNOTATION)
    return PodInfo(
        uid=uid,
        namespace=namespace,
        name=name,
        labels=MappingProxyType(labels),
        owner_kind=_str(owner, "kind") if owner is not None else None,
        owner_name=_str(owner, "name") if owner is not None else None,
        node_name=_str(_obj(obj, "spec"), "nodeName"),
        container_ids=MappingProxyType(containers),
        static_uid=mirror.lower() if mirror else None,
        pod_ip=_str(status, "podIP"),
        annotations=MappingProxyType(annotations),
    )


def pods_from_list(body: object) -> tuple[dict[str, PodInfo], str | None]:
    """A ``PodList`` document → ``({api uid: pod}, list resourceVersion)``."""
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        raise ValueError("not a PodList (no items)")
    pods: dict[str, PodInfo] = {}
    for item in body["items"]:
        pod = pod_from_api(item)
        if pod is not None:
            pods[pod.uid] = pod
    return pods, _str(_obj(body, "metadata"), "resourceVersion")


@dataclass(frozen=True, slots=True)
class _Index:
    by_uid: Mapping[str, PodInfo] = field(default_factory=dict)
    by_name: Mapping[tuple[str, str], PodInfo] = field(default_factory=dict)
    by_container: Mapping[str, PodInfo] = field(default_factory=dict)

    @classmethod
    def build(cls, pods: Iterable[PodInfo]) -> _Index:
        by_uid: dict[str, PodInfo] = {}
        by_name: dict[tuple[str, str], PodInfo] = {}
        by_container: dict[str, PodInfo] = {}
        for p in pods:
            by_uid[p.uid] = p
            if p.static_uid:
                by_uid[p.static_uid] = p
            by_name[(p.namespace, p.name)] = p
            for cid in p.container_ids:
                by_container[cid] = p
        return cls(by_uid, by_name, by_container)


class _WatchExpired(Exception):
    """The watch's resourceVersion is too old (410 Gone): relist."""


class KubernetesPodDirectory(BackgroundSync):
    """A :class:`~gpuledger.collectors.workload.pods.PodDirectory` of one node's pods.

    The API server is ``host`` if given (no credentials), else ``kubeconfig``'s current
    context if given, else the in-cluster service account, else ``$KUBECONFIG`` or
    ``~/.kube/config`` (:func:`~gpuledger.collectors.workload.kubeapi.resolve_connection`);
    ``connection`` replaces that choice. The config is resolved on the background
    thread, so a missing one shows up as :attr:`last_error`, not as an exception at
    construction. ``start=False`` leaves the thread to :meth:`start`.
    """

    def __init__(
        self,
        node_name: str,
        *,
        connection: ApiConnection | None = None,
        kubeconfig: Path | None = None,
        host: str | None = None,
        resync_seconds: float = 60.0,
        watch: bool = True,
        request_timeout_seconds: float = 10.0,
        retry_seconds: float = 5.0,
        start: bool = True,
    ) -> None:
        if not node_name:
            raise ValueError("node_name is required (the field selector would match every pod)")
        if resync_seconds <= 0 or request_timeout_seconds <= 0 or retry_seconds <= 0:
            raise ValueError("resync, request timeout and retry must be positive")
        self.node_name = node_name
        self.field_selector = f"spec.nodeName={node_name}"
        self.resync_seconds = resync_seconds
        self.watch = watch
        self.request_timeout_seconds = request_timeout_seconds
        self.retry_seconds = retry_seconds
        self._connect: Callable[[], ApiConnection] = (
            (lambda: connection)
            if connection is not None
            else (lambda: resolve_connection(kubeconfig, host))
        )
        self._index = _Index()
        super().__init__(f"pod-directory-{node_name}")
        self.syncs = 0  # completed lists
        self.events = 0  # watch events applied
        if start:
            self.start()

    # --- lookups: memory only ----------------------------------------------------------
    def by_uid(self, uid: str) -> PodInfo | None:
        return self._index.by_uid.get(uid)

    def by_name(self, namespace: str, name: str) -> PodInfo | None:
        return self._index.by_name.get((namespace, name))

    def by_container_id(self, container_id: str) -> PodInfo | None:
        return self._index.by_container.get(container_id)

    def pods(self) -> tuple[PodInfo, ...]:
        return tuple(p for uid, p in self._index.by_uid.items() if uid == p.uid)

    # --- state: healthy, last_error, last_sync, wait_synced, start (BackgroundSync) ----
    def close(self, timeout: float = 5.0) -> None:
        """Stop the background thread (interrupting a pending watch) and the client."""
        self._stop.set()
        api = self._api
        if api is not None:
            api.interrupt()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if api is not None:
            try:
                api.close()
            except Exception as exc:
                log.debug("closing the Kubernetes client: %s", exc)

    def __enter__(self) -> KubernetesPodDirectory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the background loop ----------------------------------------------------------
    def _ok(self) -> None:
        self._last_sync = time.time()
        if not self._healthy:
            log.info(
                "pod directory for node %s: in sync, %d pods",
                self.node_name,
                len(self.pods()),
            )
        self._healthy = True
        self._last_error = None
        self._synced.set()

    def _failed(self, exc: BaseException) -> None:
        message = _describe(exc)
        if self._healthy or message != self._last_error:
            log.warning(
                "pod directory for node %s: Kubernetes API failed, keeping %d cached pods: %s",
                self.node_name,
                len(self.pods()),
                message,
            )
        self._healthy = False
        self._last_error = message

    def _install(self, pods: Mapping[str, PodInfo]) -> None:
        self._index = _Index.build(pods.values())  # one assignment: readers see old or new

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._api is None:
                    self._api = KubeApi(self._connect())
                body = self._api.list_pods(self.field_selector, self.request_timeout_seconds)
                pods, rv = pods_from_list(body)
            except Exception as exc:
                if self._stop.is_set():
                    break
                self._failed(exc)
                self._stop.wait(self.retry_seconds)
                continue
            self._install(pods)
            self.syncs += 1
            self._ok()
            if not self.watch or rv is None:
                self._stop.wait(self.resync_seconds)
                continue
            try:
                self._watch(pods, rv)
            except _WatchExpired:
                continue
            except Exception as exc:
                if self._stop.is_set():
                    break
                self._failed(exc)
                self._stop.wait(self.retry_seconds)

    def _watch(self, pods: dict[str, PodInfo], rv: str) -> None:
        """Apply watch events until the resync deadline; return to relist."""
        assert self._api is not None
        deadline = time.monotonic() + self.resync_seconds
        while not self._stop.is_set():
            remaining = int(deadline - time.monotonic())
            if remaining < 1:  # never a tight relist loop, however short the resync
                self._stop.wait(max(0.0, deadline - time.monotonic()))
                return
            for event in self._api.watch_pods(
                self.field_selector, rv, remaining, self.request_timeout_seconds
            ):
                if self._stop.is_set():
                    return
                if not isinstance(event, dict):
                    continue
                kind, obj = event.get("type"), event.get("object")
                if kind == "ERROR":
                    code = obj.get("code") if isinstance(obj, dict) else None
                    if code == 410:
                        raise _WatchExpired
                    raise RuntimeError(f"watch error event: {json.dumps(obj)[:200]}")
                if isinstance(obj, dict):
                    new_rv = _str(_obj(obj, "metadata"), "resourceVersion")
                    rv = new_rv or rv
                if kind == "BOOKMARK":
                    continue
                pod = pod_from_api(obj)
                if pod is None:
                    continue
                if kind == "DELETED":
                    pods.pop(pod.uid, None)
                elif kind in ("ADDED", "MODIFIED"):
                    pods[pod.uid] = pod
                else:
                    continue
                self._install(pods)
                self.events += 1
                self._ok()


def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None)
    if isinstance(status, int) and status:
        return f"HTTP {status} {reason or ''}".strip()
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__
