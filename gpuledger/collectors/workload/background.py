"""What a Kubernetes directory kept in sync by a background thread shows its callers.

The pod directory and the namespace directory list different objects and stop
differently (the pod directory interrupts a pending watch), but their health, last
error, last sync, the wait for the first sync and the thread's start are the same;
they live here once.
"""

from __future__ import annotations

import threading

from gpuledger.collectors.workload.kubeapi import KubeApi


class BackgroundSync:
    def __init__(self, thread_name: str) -> None:
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._api: KubeApi | None = None
        self._healthy = False
        self._last_error: str | None = None
        self._last_sync: float | None = None
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    @property
    def healthy(self) -> bool:
        """True after a successful list, until the next failure."""
        return self._healthy

    @property
    def last_error(self) -> str | None:
        return self._last_error

    @property
    def last_sync(self) -> float | None:
        """Unix time of the last successful list (or, for pods, applied watch event)."""
        return self._last_sync

    def wait_synced(self, timeout: float | None = None) -> bool:
        """Block until the first successful list (for start-up ordering and tests)."""
        return self._synced.wait(timeout)

    def start(self) -> None:
        if not self._thread.is_alive() and not self._stop.is_set():
            self._thread.start()
