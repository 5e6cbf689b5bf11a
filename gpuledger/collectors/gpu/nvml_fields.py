"""The per-field error policy of the NVML collector, and what it remembers per GPU.

:class:`FieldReader` reads one field at a time: NOT_SUPPORTED is an absent field (``None``,
never 0); GPU_IS_LOST abandons that GPU for this cycle (:class:`GpuLost`); a library
that stopped answering as a whole fails the cycle (:class:`NvmlGone`);
FUNCTION_NOT_FOUND marks the call missing from this driver, once; any other error costs
one field and leaves a note. Kept apart from ``nvml.py`` so that the collector reads as
what it reads, and this as how a failure is taken.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from gpuledger.collectors.gpu.nvml_backend import (
    NVML_ERROR_DRIVER_NOT_LOADED,
    NVML_ERROR_FUNCTION_NOT_FOUND,
    NVML_ERROR_GPU_IS_LOST,
    NVML_ERROR_LIB_RM_VERSION_MISMATCH,
    NVML_ERROR_NOT_SUPPORTED,
    NVML_ERROR_UNINITIALIZED,
    Handle,
    NvmlApi,
)

T = TypeVar("T")

NVML_GONE = frozenset(
    {NVML_ERROR_UNINITIALIZED, NVML_ERROR_DRIVER_NOT_LOADED, NVML_ERROR_LIB_RM_VERSION_MISMATCH}
)
"""Codes that mean the whole library stopped answering, not one field."""


class GpuLost(Exception):
    """Internal: abandon the GPU being read; it is reported as lost."""


class NvmlGone(Exception):
    """Internal: NVML as a whole stopped answering; fail this cycle, re-init the next."""


def error_code(exc: BaseException) -> int | None:
    value = getattr(exc, "value", None)
    return value if isinstance(value, int) else None


@dataclass(slots=True)
class GpuState:
    """What is known about one physical GPU across cycles."""

    index: int
    handle: Handle
    uuid: str
    model: str
    xid_registered: bool = False
    xid_count: int = 0
    last_xid: int | None = None
    total_slices: int | None = None
    total_slices_known: bool = False
    proc_util_seen_us: dict[int | None, int] = field(default_factory=dict)  # by GI id
    mps_support: str = "unknown"  # see NvmlCollector.mps_support
    minor: int | None = None  # /dev/nvidia<minor>, read once
    placements: dict[tuple[int, str | None], int] = field(default_factory=dict)  # (GI, uuid)
    placement_unreadable: bool = False  # NO_PERMISSION/NOT_SUPPORTED once: not asked again


class FieldReader:
    """Reads one field at a time with the error policy above, for one device."""

    __slots__ = ("_api", "_label", "_missing", "_notes")

    def __init__(self, api: NvmlApi, missing: set[str], label: str, notes: list[str]) -> None:
        self._api = api
        self._missing = missing  # NVML functions this driver lacks, shared by every reader
        self._label = label
        self._notes = notes

    def get(
        self, what: str, fn: Callable[..., T], *args: object, name: str | None = None
    ) -> T | None:
        """``fn(*args)``, or None per the policy. ``name``: the NVML call behind ``fn``
        when ``fn`` is a helper (it names the call in the FUNCTION_NOT_FOUND note)."""
        fname: str = name or str(getattr(fn, "__name__", what))
        if fname in self._missing:
            return None
        try:
            return fn(*args)
        except self._api.NVMLError as exc:
            self.error(what, exc, fname)
            return None

    def error(self, what: str, exc: Exception, fname: str) -> None:
        """Applies the policy to an NVML error already caught (the field is then None)."""
        code = error_code(exc)
        if code == NVML_ERROR_NOT_SUPPORTED:
            return
        if code == NVML_ERROR_GPU_IS_LOST:
            raise GpuLost from exc
        if code in NVML_GONE:
            raise NvmlGone(f"{what}: {exc}") from exc
        if code == NVML_ERROR_FUNCTION_NOT_FOUND:
            self._missing.add(fname)
            self._notes.append(f"{fname} is not in this driver; {what} is not reported")
            return
        self._notes.append(f"{self._label}: {what}: {exc}")

    def note(self, text: str) -> None:
        self._notes.append(f"{self._label}: {text}")

    def child(self, label: str) -> FieldReader:
        return FieldReader(self._api, self._missing, label, self._notes)
