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

The official ``kubernetes`` client is an optional extra (``gpuledger[kubernetes]``) and
is imported only when a directory is built without an explicit client factory. Responses
are read as raw JSON (``_preload_content=False``): the client's model deserialization
costs more than the rest of a sync and would tie us to its typing, which changed across
releases. RBAC needed: ``get``, ``list``, ``watch`` on ``pods`` (cluster-wide; the field
selector narrows what is returned, not what is authorized).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from gpuledger.collectors.base import CollectorDisabled
from gpuledger.collectors.workload.pods import PodInfo, strip_container_id_prefix

__all__ = ["KubernetesPodDirectory", "pod_from_api", "pods_from_list"]

log = logging.getLogger(__name__)

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
_EXTRA_HINT = "install the optional extra: pip install 'gpuledger[kubernetes]'"


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


# --- the one place the untyped client is touched ---------------------------------------
class _Api:
    """A thin adapter over ``kubernetes.client.CoreV1Api`` returning plain JSON."""

    def __init__(self, api_client: object) -> None:
        self._client: Any = api_client
        self._core: Any = importlib.import_module("kubernetes.client").CoreV1Api(api_client)
        self._lock = threading.Lock()
        self._active: Any = None

    def list_pods(self, field_selector: str, timeout_s: float) -> object:
        resp: Any = self._core.list_pod_for_all_namespaces(
            field_selector=field_selector,
            _preload_content=False,
            _request_timeout=(timeout_s, timeout_s),
        )
        try:
            data: bytes = resp.data
        finally:
            resp.release_conn()
        return json.loads(data)

    def watch_pods(
        self, field_selector: str, resource_version: str, timeout_seconds: int, connect_s: float
    ) -> Iterator[object]:
        resp: Any = self._core.list_pod_for_all_namespaces(
            field_selector=field_selector,
            watch=True,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout_seconds,
            _preload_content=False,
            _request_timeout=(connect_s, timeout_seconds + 15.0),
        )
        with self._lock:
            self._active = resp
        try:
            buffer = b""
            for chunk in resp.stream(amt=None, decode_content=False):
                buffer += chunk if isinstance(chunk, bytes) else str(chunk).encode()
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
            if buffer.strip():
                yield json.loads(buffer)
        finally:
            with self._lock:
                self._active = None
            resp.release_conn()

    def interrupt(self) -> None:
        """Unblock a watch that is waiting for the next event (from another thread)."""
        with self._lock:
            resp = self._active
        if resp is not None:
            shutdown = getattr(resp, "shutdown", None)  # urllib3 >= 2.3
            try:
                if shutdown is not None:
                    shutdown()
                else:
                    resp.close()
            except Exception:  # noqa: S110 -- best effort on the way out
                pass

    def close(self) -> None:
        self._client.close()


def _default_client_factory(kubeconfig: Path | None, host: str | None) -> Callable[[], Any]:
    def factory() -> Any:
        try:
            client: Any = importlib.import_module("kubernetes.client")
            config: Any = importlib.import_module("kubernetes.config")
        except ImportError as exc:
            raise CollectorDisabled(
                f"Kubernetes pod metadata needs the 'kubernetes' package: {_EXTRA_HINT}"
            ) from exc
        if host is not None:  # an explicit API server (tests, kubectl proxy)
            cfg = client.Configuration()
            cfg.host = host
            return client.ApiClient(cfg)
        if kubeconfig is not None:
            return config.new_client_from_config(config_file=str(kubeconfig))
        try:
            cfg = client.Configuration()
            config.load_incluster_config(client_configuration=cfg)
            return client.ApiClient(cfg)
        except config.ConfigException:
            return config.new_client_from_config()  # ~/.kube/config or $KUBECONFIG

    return factory


class KubernetesPodDirectory:
    """A :class:`~gpuledger.collectors.workload.pods.PodDirectory` of one node's pods.

    ``api_client_factory`` returns a ``kubernetes.client.ApiClient``; by default: an
    ``ApiClient`` for ``host`` if given, else for ``kubeconfig`` if given, else the
    in-cluster service account, else the default kubeconfig. The factory runs on the
    background thread, so a missing config shows up as :attr:`last_error`, not as an
    exception at construction. ``start=False`` leaves the thread to :meth:`start`.
    """

    def __init__(
        self,
        node_name: str,
        *,
        api_client_factory: Callable[[], object] | None = None,
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
        if api_client_factory is None and importlib.util.find_spec("kubernetes") is None:
            raise CollectorDisabled(
                f"Kubernetes pod metadata needs the 'kubernetes' package: {_EXTRA_HINT}"
            )
        self._factory = api_client_factory or _default_client_factory(kubeconfig, host)
        self._index = _Index()
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._api: _Api | None = None
        self._healthy = False
        self._last_error: str | None = None
        self._last_sync: float | None = None
        self.syncs = 0  # completed lists
        self.events = 0  # watch events applied
        self._thread = threading.Thread(
            target=self._run, name=f"pod-directory-{node_name}", daemon=True
        )
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

    # --- state ------------------------------------------------------------------------
    @property
    def healthy(self) -> bool:
        """True after a successful list, until the next failure."""
        return self._healthy

    @property
    def last_error(self) -> str | None:
        return self._last_error

    @property
    def last_sync(self) -> float | None:
        """Unix time of the last successful list or applied watch event."""
        return self._last_sync

    def wait_synced(self, timeout: float | None = None) -> bool:
        """Block until the first successful list (for start-up ordering and tests)."""
        return self._synced.wait(timeout)

    def start(self) -> None:
        if not self._thread.is_alive() and not self._stop.is_set():
            self._thread.start()

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
                    self._api = _Api(self._factory())
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
