"""Namespace labels from the Kubernetes API, cached in memory and refreshed in the
background.

A cost center is often said once per namespace (``team: ml-platform`` on the namespace,
not on every Deployment in it), so the agent reads namespaces' labels beside its pods
(issue 18, ``docs/cost-centers.md``). Like the pod directory
(:mod:`~gpuledger.collectors.workload.kubernetes`), a lookup reads memory only: a
background thread lists ``/api/v1/namespaces`` every ``resync_seconds`` and swaps the
whole index in one assignment. There is no watch: namespace labels change rarely, and a
list of a cluster's namespaces is small (a few hundred objects). When the API fails the
last good index stays, :attr:`~KubernetesNamespaceDirectory.healthy` turns false with
:attr:`~KubernetesNamespaceDirectory.last_error` saying why, and one log line is written
per change of state. RBAC needed: ``get``, ``list`` on ``namespaces``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Protocol

from gpuledger.collectors.workload.background import BackgroundSync
from gpuledger.collectors.workload.kubeapi import ApiConnection, KubeApi, resolve_connection

__all__ = [
    "KubernetesNamespaceDirectory",
    "NamespaceDirectory",
    "StaticNamespaceDirectory",
    "namespaces_from_list",
]

log = logging.getLogger(__name__)


class NamespaceDirectory(Protocol):
    """Namespace labels from memory only: never a network call on the caller's thread."""

    def labels(self, namespace: str) -> Mapping[str, str] | None: ...


def namespaces_from_list(body: object) -> dict[str, Mapping[str, str]]:
    """A ``NamespaceList`` document → ``{name: labels}`` (string values only: the API's
    JSON is checked, never trusted)."""
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        raise ValueError("not a NamespaceList (no items)")
    out: dict[str, Mapping[str, str]] = {}
    for item in body["items"]:
        meta = item.get("metadata") if isinstance(item, dict) else None
        name = meta.get("name") if isinstance(meta, dict) else None
        if not isinstance(meta, dict) or not isinstance(name, str) or not name:
            continue
        raw = meta.get("labels")
        labels = (
            {k: v for k, v in raw.items() if isinstance(v, str)} if isinstance(raw, dict) else {}
        )
        out[name] = MappingProxyType(labels)
    return out


class StaticNamespaceDirectory:
    """A :class:`NamespaceDirectory` over a fixed mapping (the simulated node, tests)."""

    def __init__(self, labels: Mapping[str, Mapping[str, str]]) -> None:
        self._labels = {k: MappingProxyType(dict(v)) for k, v in labels.items()}

    def labels(self, namespace: str) -> Mapping[str, str] | None:
        return self._labels.get(namespace)


class KubernetesNamespaceDirectory(BackgroundSync):
    """Every namespace's labels, listed every ``resync_seconds`` on a background thread.

    The API server is chosen as the pod directory chooses it (``connection``, else
    ``host``, else ``kubeconfig``, else in-cluster, else ``$KUBECONFIG``), resolved on the
    background thread. ``start=False`` leaves the thread to :meth:`start`."""

    def __init__(
        self,
        *,
        connection: ApiConnection | None = None,
        kubeconfig: Path | None = None,
        host: str | None = None,
        resync_seconds: float = 300.0,
        request_timeout_seconds: float = 10.0,
        retry_seconds: float = 5.0,
        start: bool = True,
    ) -> None:
        if resync_seconds <= 0 or request_timeout_seconds <= 0 or retry_seconds <= 0:
            raise ValueError("resync, request timeout and retry must be positive")
        self.resync_seconds = resync_seconds
        self.request_timeout_seconds = request_timeout_seconds
        self.retry_seconds = retry_seconds
        self._connect: Callable[[], ApiConnection] = (
            (lambda: connection)
            if connection is not None
            else (lambda: resolve_connection(kubeconfig, host))
        )
        self._index: Mapping[str, Mapping[str, str]] = {}
        super().__init__("namespace-directory")
        self.syncs = 0
        if start:
            self.start()

    def labels(self, namespace: str) -> Mapping[str, str] | None:
        return self._index.get(namespace)

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._api is not None:
            try:
                self._api.close()
            except Exception as exc:
                log.debug("closing the Kubernetes client: %s", exc)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._api is None:
                    self._api = KubeApi(self._connect())
                index = namespaces_from_list(
                    self._api.list_namespaces(self.request_timeout_seconds)
                )
            except Exception as exc:
                if self._stop.is_set():
                    break
                self._failed(exc)
                self._stop.wait(self.retry_seconds)
                continue
            self._index = index  # one assignment: readers see the old or the new
            self.syncs += 1
            self._last_sync = time.time()
            if not self._healthy:
                log.info("namespace directory: in sync, %d namespaces", len(index))
            self._healthy, self._last_error = True, None
            self._synced.set()
            self._stop.wait(self.resync_seconds)

    def _failed(self, exc: BaseException) -> None:
        status = getattr(exc, "status", None)
        message = f"HTTP {status}" if isinstance(status, int) else f"{type(exc).__name__}: {exc}"
        message = message.splitlines()[0][:300] if message else type(exc).__name__
        if self._healthy or message != self._last_error:
            log.warning(
                "namespace directory: Kubernetes API failed, keeping %d cached namespaces: %s",
                len(self._index),
                message,
            )
        self._healthy, self._last_error = False, message
