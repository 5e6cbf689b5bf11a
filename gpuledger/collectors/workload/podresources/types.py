"""What the pod-resources collector hands the agent: allocations of GPU devices to pods.

A device is named the way the allocating component named it: a GPU or MIG UUID (the
NVIDIA device plugin's default ``deviceIDStrategy: uuid``), an NVML index (its ``index``
strategy), a device minor number (NVIDIA's DRA driver's ``gpu-<minor>`` names), or a MIG
profile and placement on a GPU minor number (the DRA driver's MIG names).
:class:`AllocationIndex` answers, for one device reading, which pods hold it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

Via = Literal["device_plugin", "dra"]


@dataclass(frozen=True, slots=True, order=True)
class Holder:
    """A container the kubelet says holds a device."""

    namespace: str
    pod: str
    container: str


@dataclass(frozen=True, slots=True)
class DeviceTarget:
    """Which device an allocation names. Exactly one of the forms is set:
    ``uuid`` (``GPU-…`` or ``MIG-…``), ``index`` alone (a whole GPU by NVML index),
    ``minor`` alone (a whole GPU by device minor number), or ``minor`` + ``mig_profile``
    [+ ``mig_placement``] (a MIG instance of that profile, starting at that slice, on that
    GPU; the profile normalized by :func:`normalize_profile`)."""

    uuid: str | None = None
    index: int | None = None
    mig_profile: str | None = None
    minor: int | None = None
    mig_placement: int | None = None


@dataclass(frozen=True, slots=True)
class Allocation:
    holder: Holder
    target: DeviceTarget
    resource: str  # the extended resource (nvidia.com/gpu) or the DRA driver name
    via: Via
    device_id: str  # as the kubelet reported it (device id or CDI name)
    replica: int | None = None  # a time-sliced replica (the device plugin's "::N")
    claim: str | None = None  # DRA: "<claim namespace>/<claim name>"


@dataclass(frozen=True, slots=True)
class PodResourcesReading:
    """One ``List`` (and ``GetAllocatableResources``) of the kubelet."""

    allocations: tuple[Allocation, ...] = ()
    allocatable: tuple[str, ...] = ()  # GPU device ids the kubelet can allocate
    unmapped: tuple[str, ...] = ()  # GPU device ids / CDI names no device could be named from
    pods: int = 0  # pods listed (with or without GPUs)


def normalize_profile(profile: str) -> str:
    """``1g.10gb`` and the DRA driver's ``1g10gb`` → ``1g10gb``."""
    return profile.replace(".", "").replace("+", "").lower()


@dataclass(frozen=True, slots=True)
class AllocationIndex:
    """Allocations looked up by device: built once per reading, read lock-free."""

    by_uuid: Mapping[str, tuple[Allocation, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    by_index: Mapping[int, tuple[Allocation, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    by_mig: Mapping[tuple[int, str], tuple[Allocation, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )  # (minor, profile)
    by_minor: Mapping[int, tuple[Allocation, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )

    @classmethod
    def of(cls, reading: PodResourcesReading) -> AllocationIndex:
        by_uuid: dict[str, list[Allocation]] = {}
        by_index: dict[int, list[Allocation]] = {}
        by_mig: dict[tuple[int, str], list[Allocation]] = {}
        by_minor: dict[int, list[Allocation]] = {}
        for a in reading.allocations:
            t = a.target
            if t.uuid is not None:
                by_uuid.setdefault(t.uuid, []).append(a)
            elif t.minor is not None and t.mig_profile is not None:
                by_mig.setdefault((t.minor, t.mig_profile), []).append(a)
            elif t.minor is not None:
                by_minor.setdefault(t.minor, []).append(a)
            elif t.index is not None:
                by_index.setdefault(t.index, []).append(a)

        def frozen(d: Mapping[Any, list[Allocation]]) -> Mapping[Any, tuple[Allocation, ...]]:
            return MappingProxyType({k: tuple(v) for k, v in d.items()})

        return cls(frozen(by_uuid), frozen(by_index), frozen(by_mig), frozen(by_minor))

    def holding(
        self,
        *,
        gpu_uuid: str,
        index: int,
        mig_device_uuid: str | None,
        mig_profile: str = "",
        minor: int | None = None,
        mig_placement: int | None = None,
    ) -> tuple[Allocation, ...]:
        """The allocations of one device reading: a MIG instance by its MIG UUID, else by
        its profile and placement on its GPU's minor number (NVIDIA's DRA names); a whole
        GPU by its UUID, its NVML index (the device plugin's ``index`` strategy) or its
        minor number (DRA). A minor number NVML did not give is taken to be the index, and
        a placement it did not give matches every instance of the profile
        (docs/attribution.md)."""
        minor_key = index if minor is None else minor
        if mig_device_uuid is not None:
            found = self.by_uuid.get(mig_device_uuid, ())
            if not found and mig_profile:
                candidates = self.by_mig.get((minor_key, normalize_profile(mig_profile)), ())
                found = tuple(
                    a
                    for a in candidates
                    if mig_placement is None
                    or a.target.mig_placement is None
                    or a.target.mig_placement == mig_placement
                )
            return found
        return (
            self.by_uuid.get(gpu_uuid, ())
            + self.by_index.get(index, ())
            + self.by_minor.get(minor_key, ())
        )


class PodResourcesBoard:
    """The latest allocations, shared by the collector (writer) and the attribution
    (reader). ``None`` until a first successful ``List``. After a failed one the last
    answer keeps deciding for ``keep_last_s`` seconds from when it was read (a kubelet
    restarting, or one ``List`` past its deadline on a loaded node, must not bill an
    allocated device to idle), then ``None``: a kubelet that cannot be asked decides
    nothing (the other sources still do)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._index: AllocationIndex | None = None
        self._read_at = 0.0
        self._expires_at: float | None = None  # set by a failure: the last answer's end

    def update(self, reading: PodResourcesReading) -> None:
        index = AllocationIndex.of(reading)
        with self._lock:
            self._index = index
            self._read_at = self._clock()
            self._expires_at = None

    def failed(self, keep_last_s: float) -> None:
        """The kubelet did not answer: the last answer decides until it is
        ``keep_last_s`` old (0: from now on nothing decides)."""
        with self._lock:
            if self._index is not None and self._expires_at is None:
                self._expires_at = self._read_at + keep_last_s

    def clear(self) -> None:
        with self._lock:
            self._index = None
            self._expires_at = None

    def current(self) -> AllocationIndex | None:
        index, expires = self._index, self._expires_at
        if index is not None and expires is not None and self._clock() >= expires:
            return None
        return index
