"""The agent's in-memory state: an immutable snapshot, replaced whole on every change.

Collectors run in background threads; HTTP handlers only read. Replacing an immutable
value under a lock (copy-on-write) means a reader never sees half of an update and never
waits for a collection. The exposition text is rendered once per snapshot change, in the
collector's thread, so a scrape costs a memory copy and nothing else -- the lesson of
dcgm-exporter issues 599/607, whose scrapes did pod-mapping work inline and timed out.
"""

from __future__ import annotations

import gzip
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CollectorState:
    name: str
    enabled: bool = True
    up: bool = False
    runs: int = 0
    failures: int = 0
    duration_s: float | None = None
    last_success_unix: float | None = None
    last_error: str | None = None
    # The last successful reading, dropped when a run fails: stale values would be
    # exported as if current, and the other source (if any) should stand alone instead.
    reading: object | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int = 0
    collectors: Mapping[str, CollectorState] = field(default_factory=lambda: MappingProxyType({}))

    # Values derived from this snapshot (the merged device list), computed once and shared
    # by the exporter and the ledger; never part of equality.
    memo: dict[str, object] = field(default_factory=dict, compare=False, repr=False)

    def reading(self, name: str, kind: type[T]) -> T | None:
        state = self.collectors.get(name)
        if state is None or not state.up or not isinstance(state.reading, kind):
            return None
        return state.reading


@dataclass(frozen=True, slots=True)
class Rendered:
    """A snapshot's exposition, plain and gzip-compressed (Prometheus asks for gzip)."""

    body: bytes
    gzipped: bytes

    @classmethod
    def of(cls, body: bytes) -> Rendered:
        return cls(body=body, gzipped=gzip.compress(body, compresslevel=1, mtime=0))


Listener = Callable[[Snapshot, CollectorState], None]


class SnapshotStore:
    def __init__(self, render: Callable[[Snapshot], bytes]) -> None:
        self._render = render
        self._lock = threading.Lock()
        self._snapshot = Snapshot()
        self._rendered = Rendered.of(render(self._snapshot))
        self._listeners: list[Listener] = []

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    @property
    def rendered(self) -> Rendered:
        return self._rendered

    def subscribe(self, listener: Listener) -> None:
        """Called (in the collector's thread) after each update, e.g. by the ledger."""
        self._listeners.append(listener)

    def register(self, state: CollectorState) -> None:
        self.update(state)

    def refresh(self) -> None:
        """Render the current snapshot again: for state kept outside it (the reporter's
        runs) that changed without any collector update."""
        with self._lock:
            self._rendered = Rendered.of(self._render(self._snapshot))

    def update(self, state: CollectorState) -> Snapshot:
        with self._lock:
            collectors = dict(self._snapshot.collectors)
            collectors[state.name] = state
            snap = replace(
                self._snapshot,
                version=self._snapshot.version + 1,
                collectors=MappingProxyType(collectors),
                memo={},
            )
            rendered = Rendered.of(self._render(snap))
            self._snapshot, self._rendered = snap, rendered
        for listener in self._listeners:
            try:
                listener(snap, state)
            except Exception:  # a consumer's bug must not stop collection
                log.exception("snapshot listener %r failed", listener)
        return snap
