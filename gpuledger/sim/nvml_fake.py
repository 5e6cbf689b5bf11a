"""An in-process NVML that behaves like ``pynvml`` on a real GPU node, for tests and demos.

It implements :class:`~gpuledger.collectors.gpu.nvml_backend.NvmlApi` call for call and raises
the library's own exception classes (``pynvml.NVMLError(code)`` builds the matching
``NVMLError_*`` subclass), so code that is right against the fake is right against the
driver for every behaviour modelled here:

* every call but ``nvmlInit`` raises ``NVMLError_Uninitialized`` until ``nvmlInit`` (the
  library is reference counted: one ``nvmlShutdown`` per ``nvmlInit``);
* ``nvmlInit`` raises ``init_error`` when configured (``NVML_ERROR_LIBRARY_NOT_FOUND`` is
  what a host without the driver gives);
* handles are opaque; a GPU marked lost raises ``NVMLError_GpuIsLost`` on every call that
  names it (its MIG devices included), ``nvmlDeviceGetHandleByIndex`` too;
* a call listed in a GPU's ``unsupported`` raises ``NVMLError_NotSupported``; so do the
  calls NVML does not answer in MIG mode (GPU utilization and process utilization on a
  MIG-enabled GPU, board quantities on a MIG device handle);
* ``nvmlDeviceGetMigDeviceHandleByIndex`` raises ``NOT_FOUND`` for unused indices below
  ``nvmlDeviceGetMaxMigDeviceCount``, as the driver does;
* ``nvmlDeviceGetProcessUtilization`` raises ``NOT_FOUND`` when no sample is newer than
  the timestamp; ``nvmlEventSetWait`` raises ``NVMLError_Timeout`` when nothing is pending
  (it never blocks);
* any call can be made to fail with any code (:meth:`FakeNvml.fail`);
* MPS: a GPU's ``processes`` are what ``nvmlDeviceGetComputeRunningProcesses`` lists
  (under MPS, the ``nvidia-cuda-mps-server`` only) and its ``mps_clients`` what
  ``nvmlDeviceGetMPSComputeRunningProcesses`` lists; a driver without that call is
  ``missing_functions`` (``NVMLError_FunctionNotFound``, as pynvml raises when the symbol
  is absent), one that does not answer it lists it in ``unsupported``.

Structs come back with pynvml's attribute names and strings as ``str`` (nvidia-ml-py's
``convertStrBytes``). MIG profiles, memory sizes and SM counts are those NVIDIA documents
for A100 40GB/80GB and H100 80GB.
"""

from __future__ import annotations

import uuid as uuidlib
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import pynvml

from gpuledger.collectors.gpu.nvml_backend import (
    NVML_DEVICE_MIG_DISABLE,
    NVML_DEVICE_MIG_ENABLE,
    NVML_ERROR_FUNCTION_NOT_FOUND,
    NVML_ERROR_GPU_IS_LOST,
    NVML_ERROR_INVALID_ARGUMENT,
    NVML_ERROR_NO_PERMISSION,
    NVML_ERROR_NOT_FOUND,
    NVML_ERROR_NOT_SUPPORTED,
    NVML_ERROR_TIMEOUT,
    NVML_ERROR_UNINITIALIZED,
    NVML_VALUE_NOT_AVAILABLE_UINT,
    nvmlEventTypeXidCriticalError,
)

MIB = 1024 * 1024

# nvmlEventType* bits a datacenter GPU supports (single/double-bit ECC, P-state, XID, clock).
DEFAULT_SUPPORTED_EVENTS = 0x1 | 0x2 | 0x4 | nvmlEventTypeXidCriticalError | 0x10

# NVML_GPU_INSTANCE_PROFILE_* (the enum nvmlDeviceGetGpuInstanceProfileInfo takes)
_P1, _P2, _P3, _P4, _P7 = 0x0, 0x1, 0x2, 0x3, 0x4
_P1_REV1, _P1_REV2 = 0x7, 0x9


@dataclass(frozen=True, slots=True)
class MigProfile:
    name: str  # "1g.10gb", as in the MIG device name
    profile_id: int  # NVML_GPU_INSTANCE_PROFILE_*
    slices: int  # compute slices (gpuInstanceSliceCount)
    memory_mib: int
    multiprocessors: int
    max_instances: int


@dataclass(frozen=True, slots=True)
class GpuModel:
    name: str  # what nvmlDeviceGetName returns
    memory_mib: int
    power_limit_w: float
    idle_power_w: float
    max_sm_clock_mhz: int
    idle_sm_clock_mhz: int
    multiprocessors: int
    mig_profiles: Mapping[str, MigProfile] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def mig_capable(self) -> bool:
        return bool(self.mig_profiles)

    @property
    def mig_total_slices(self) -> int:
        """Compute slices of the whole GPU: its largest GPU-instance profile's (7 here)."""
        return max((p.slices for p in self.mig_profiles.values()), default=0)

    @property
    def max_mig_devices(self) -> int:
        return max((p.max_instances for p in self.mig_profiles.values()), default=0)


def _profiles(*rows: tuple[str, int, int, int, int, int]) -> Mapping[str, MigProfile]:
    return MappingProxyType({r[0]: MigProfile(*r) for r in rows})


H100_80GB = GpuModel(
    "NVIDIA H100 80GB HBM3", 81559, 700.0, 72.0, 1980, 345, 132,
    _profiles(
        ("1g.10gb", _P1, 1, 9984, 16, 7),
        ("1g.10gb+me", _P1_REV1, 1, 9984, 16, 1),
        ("1g.20gb", _P1_REV2, 1, 20096, 26, 4),
        ("2g.20gb", _P2, 2, 20096, 32, 3),
        ("3g.40gb", _P3, 3, 40448, 60, 2),
        ("4g.40gb", _P4, 4, 40448, 64, 1),
        ("7g.80gb", _P7, 7, 81152, 132, 1),
    ),
)  # fmt: skip
A100_40GB = GpuModel(
    "NVIDIA A100-SXM4-40GB", 40960, 400.0, 55.0, 1410, 210, 108,
    _profiles(
        ("1g.5gb", _P1, 1, 4864, 14, 7),
        ("1g.5gb+me", _P1_REV1, 1, 4864, 14, 1),
        ("1g.10gb", _P1_REV2, 1, 9856, 14, 4),
        ("2g.10gb", _P2, 2, 9856, 28, 3),
        ("3g.20gb", _P3, 3, 19968, 42, 2),
        ("4g.20gb", _P4, 4, 19968, 56, 1),
        ("7g.40gb", _P7, 7, 40192, 98, 1),
    ),
)  # fmt: skip
A100_80GB = GpuModel(
    "NVIDIA A100-SXM4-80GB", 81920, 400.0, 60.0, 1410, 210, 108,
    _profiles(
        ("1g.10gb", _P1, 1, 9728, 14, 7),
        ("1g.10gb+me", _P1_REV1, 1, 9728, 14, 1),
        ("1g.20gb", _P1_REV2, 1, 19968, 14, 4),
        ("2g.20gb", _P2, 2, 19968, 28, 3),
        ("3g.40gb", _P3, 3, 40192, 42, 2),
        ("4g.40gb", _P4, 4, 40192, 56, 1),
        ("7g.80gb", _P7, 7, 81152, 98, 1),
    ),
)  # fmt: skip
L40S = GpuModel("NVIDIA L40S", 46068, 350.0, 32.0, 2520, 210, 142)

MODELS: Mapping[str, GpuModel] = MappingProxyType(
    {m.name: m for m in (H100_80GB, A100_40GB, A100_80GB, L40S)}
)


# --- what the test or simulation configures ------------------------------------------
@dataclass(frozen=True, slots=True)
class ProcessSpec:
    pid: int
    used_memory_bytes: int | None = None  # None: the driver reports "not available"


@dataclass(frozen=True, slots=True)
class MigInstanceSpec:
    profile: str  # a key of the model's mig_profiles, e.g. "1g.10gb"
    gpu_instance_id: int
    compute_instance_id: int = 0
    uuid: str | None = None  # default: derived from the parent's uuid and the GI id
    processes: tuple[ProcessSpec, ...] = ()
    mps_clients: tuple[ProcessSpec, ...] = ()  # MPS clients of a server in ``processes``
    memory_used_bytes: int | None = None  # default: the processes' memory
    # the GPU instance's first slice; default: the slices of the instances listed before it
    # (a plausible layout; the driver's own placement rules are not modelled)
    placement_start: int | None = None


@dataclass(slots=True)
class GpuSpec:
    """One GPU. The fake keeps its own copy; the dynamic fields of that copy (reached with
    :meth:`FakeNvml.gpu`) are the device's live state, which a test or the simulation
    changes between calls."""

    model: str = H100_80GB.name
    uuid: str | None = None  # default: derived from the index
    minor_number: int | None = None  # /dev/nvidia<minor>; default: the index
    mig: tuple[MigInstanceSpec, ...] | None = None  # None: MIG mode disabled
    mig_pending: bool | None = None  # pending MIG mode; default: same as current
    processes: tuple[ProcessSpec, ...] = ()  # on a whole GPU (MIG disabled)
    mps_clients: tuple[ProcessSpec, ...] = ()  # MPS clients of the server in ``processes``
    unsupported: frozenset[str] = frozenset()  # nvml* names that raise NOT_SUPPORTED
    supported_events: int = DEFAULT_SUPPORTED_EVENTS
    memory_total_bytes: int | None = None  # default: the model's
    # --- live state ------------------------------------------------------------------
    memory_used_bytes: int | None = None  # default: the processes' memory
    utilization_gpu: int = 0  # percent
    utilization_memory: int = 0  # percent
    power_mw: int | None = None  # default: the model's idle power
    energy_mj: int = 0
    temperature_c: int = 35
    sm_clock_mhz: int | None = None  # default: the model's idle clock
    clocks_event_reasons: int = 0
    ecc_corrected: int = 0
    ecc_uncorrected: int = 0
    remapped_rows: tuple[int, int, int, int] = (0, 0, 0, 0)  # corr, unc, pending, failed


# --- what the library returns (pynvml's attribute names) -----------------------------
@dataclass(frozen=True, slots=True)
class FakeHandle:
    """Opaque, like ``c_nvmlDevice_t``; equal for the same device as its address would be."""

    gpu: int
    mig_index: int | None = None

    def __repr__(self) -> str:
        return f"<FakeHandle gpu={self.gpu} mig={self.mig_index}>"


@dataclass(frozen=True, slots=True)
class FakeGpuInstance:
    """Like ``c_nvmlGpuInstance_t``: a GPU instance of a MIG-enabled GPU."""

    gpu: int
    gpu_instance_id: int


@dataclass(frozen=True, slots=True)
class GpuInstancePlacementT:
    start: int
    size: int


@dataclass(frozen=True, slots=True)
class GpuInstanceInfoT:
    device: FakeHandle
    id: int
    profileId: int
    placement: GpuInstancePlacementT


class FakeEventSet:
    __slots__ = ("freed", "pending", "registered")

    def __init__(self) -> None:
        self.pending: deque[EventDataT] = deque()
        self.registered: dict[int, int] = {}  # gpu index -> event type mask
        self.freed = False


@dataclass(frozen=True, slots=True)
class MemoryT:
    total: int
    free: int
    used: int


@dataclass(frozen=True, slots=True)
class UtilizationT:
    gpu: int
    memory: int


@dataclass(frozen=True, slots=True)
class ProcessInfoT:
    pid: int
    usedGpuMemory: int | None
    gpuInstanceId: int
    computeInstanceId: int


@dataclass(frozen=True, slots=True)
class ProcessUtilizationSampleT:
    pid: int
    timeStamp: int
    smUtil: int
    memUtil: int
    encUtil: int
    decUtil: int


@dataclass(frozen=True, slots=True)
class DeviceAttributesT:
    multiprocessorCount: int
    sharedCopyEngineCount: int
    sharedDecoderCount: int
    sharedEncoderCount: int
    sharedJpegCount: int
    sharedOfaCount: int
    gpuInstanceSliceCount: int
    computeInstanceSliceCount: int
    memorySizeMB: int


@dataclass(frozen=True, slots=True)
class GpuInstanceProfileInfoT:
    version: int
    id: int
    isP2pSupported: int
    sliceCount: int
    instanceCount: int
    multiprocessorCount: int
    copyEngineCount: int
    decoderCount: int
    encoderCount: int
    jpegCount: int
    ofaCount: int
    memorySizeMB: int
    name: bytes  # a raw c_char array in pynvml (not converted to str)


@dataclass(frozen=True, slots=True)
class EventDataT:
    device: FakeHandle
    eventType: int
    eventData: int
    gpuInstanceId: int
    computeInstanceId: int


def _error(code: int) -> Exception:
    err: Exception = pynvml.NVMLError(code)
    return err


def default_gpu_uuid(index: int) -> str:
    return f"GPU-{uuidlib.uuid5(uuidlib.NAMESPACE_OID, f'gpuledger-fake-gpu-{index}')}"


def default_mig_uuid(gpu_uuid: str, gpu_instance_id: int) -> str:
    return f"MIG-{uuidlib.uuid5(uuidlib.NAMESPACE_OID, f'{gpu_uuid}/{gpu_instance_id}')}"


_BOARD_ONLY = frozenset(
    {
        "nvmlDeviceGetUtilizationRates",
        "nvmlDeviceGetPowerUsage",
        "nvmlDeviceGetTotalEnergyConsumption",
        "nvmlDeviceGetTemperature",
        "nvmlDeviceGetClockInfo",
        "nvmlDeviceGetCurrentClocksEventReasons",
        "nvmlDeviceGetCurrentClocksThrottleReasons",
        "nvmlDeviceGetTotalEccErrors",
        "nvmlDeviceGetRemappedRows",
        "nvmlDeviceGetMigMode",
        "nvmlDeviceGetMaxMigDeviceCount",
        "nvmlDeviceGetMigDeviceHandleByIndex",
        "nvmlDeviceGetGpuInstanceProfileInfo",
        "nvmlDeviceGetProcessUtilization",
        "nvmlDeviceRegisterEvents",
        "nvmlDeviceGetSupportedEventTypes",
    }
)
"""Calls a MIG device handle does not answer (NOT_SUPPORTED): they are about the board."""


class FakeNvml:
    """A node's NVML. ``gpus`` are copied; use :meth:`gpu` to change a GPU's live state."""

    NVMLError: type[Exception] = pynvml.NVMLError

    def __init__(
        self,
        gpus: Sequence[GpuSpec],
        *,
        driver_version: str = "550.127.05",
        init_error: int | None = None,
        before_call: Callable[[], None] | None = None,
        process_samples_kept: int = 64,
        missing_functions: frozenset[str] = frozenset(),
        privileged: bool = True,
    ) -> None:
        self._gpus: list[GpuSpec] = []
        for i, spec in enumerate(gpus):
            model = MODELS.get(spec.model)
            if model is None:
                raise ValueError(f"unknown GPU model {spec.model!r}; known: {sorted(MODELS)}")
            g = replace(spec)
            g.uuid = g.uuid or default_gpu_uuid(i)
            if g.mig is not None:
                if not model.mig_capable:
                    raise ValueError(f"{model.name} does not support MIG")
                g.mig = self._place(
                    model, tuple(self._check_instance(model, g.uuid, m) for m in g.mig)
                )
            if g.minor_number is None:
                g.minor_number = i
            self._gpus.append(g)
        self.driver_version = driver_version
        self.init_error = init_error
        self._before_call = before_call
        self.missing_functions = missing_functions  # calls this "driver" lacks
        self.privileged = privileged  # root: the GPU-instance calls answer
        self._refcount = 0
        self._lost: set[int] = set()
        self._failures: dict[tuple[str, int | None], list[int | None]] = {}
        self._samples: list[deque[ProcessUtilizationSampleT]] = [
            deque(maxlen=process_samples_kept) for _ in self._gpus
        ]
        self._event_sets: list[FakeEventSet] = []
        self.calls: Counter[str] = Counter()
        self.wait_timeouts: list[int] = []  # every timeoutms nvmlEventSetWait was given

    @staticmethod
    def _check_instance(model: GpuModel, gpu_uuid: str, m: MigInstanceSpec) -> MigInstanceSpec:
        if m.profile not in model.mig_profiles:
            raise ValueError(f"{model.name} has no MIG profile {m.profile!r}")
        return m if m.uuid else replace(m, uuid=default_mig_uuid(gpu_uuid, m.gpu_instance_id))

    @staticmethod
    def _place(
        model: GpuModel, instances: tuple[MigInstanceSpec, ...]
    ) -> tuple[MigInstanceSpec, ...]:
        out: list[MigInstanceSpec] = []
        start = 0
        for m in instances:
            if m.placement_start is None:
                m = replace(m, placement_start=start)
            assert m.placement_start is not None
            start = m.placement_start + model.mig_profiles[m.profile].slices
            out.append(m)
        return tuple(out)

    # --- control (not part of NVML) ----------------------------------------------------
    def gpu(self, index: int) -> GpuSpec:
        return self._gpus[index]

    @property
    def refcount(self) -> int:
        """nvmlInit calls not yet matched by nvmlShutdown (0: uninitialized)."""
        return self._refcount

    @property
    def live_event_sets(self) -> int:
        return sum(1 for s in self._event_sets if not s.freed)

    def fail(
        self, function: str, gpu_index: int | None, code: int, *, times: int | None = None
    ) -> None:
        """Make ``function`` raise ``NVMLError(code)`` for calls about ``gpu_index`` (any
        GPU, and calls naming no GPU, when None), ``times`` times or until cleared."""
        if not hasattr(self, function) or not function.startswith("nvml"):
            raise ValueError(f"not an NVML call of this fake: {function}")
        self._failures[(function, gpu_index)] = [code, times]

    def clear_failures(self) -> None:
        self._failures.clear()

    def mark_lost(self, gpu_index: int) -> None:
        """The GPU fell off the bus: every call naming it now raises GpuIsLost."""
        self._lost.add(gpu_index)

    def recover(self, gpu_index: int) -> None:
        """The GPU answers again (after a reset)."""
        self._lost.discard(gpu_index)

    def inject_xid(self, gpu_index: int, xid: int, *, gpu_instance_id: int | None = None) -> None:
        """An XID error on a GPU, delivered to every event set registered for XIDs on it."""
        gi = NVML_VALUE_NOT_AVAILABLE_UINT if gpu_instance_id is None else gpu_instance_id
        data = EventDataT(
            FakeHandle(gpu_index), nvmlEventTypeXidCriticalError, xid, gi,
            NVML_VALUE_NOT_AVAILABLE_UINT,
        )  # fmt: skip
        for s in self._event_sets:
            if not s.freed and s.registered.get(gpu_index, 0) & nvmlEventTypeXidCriticalError:
                s.pending.append(data)

    def add_process_sample(
        self, gpu_index: int, pid: int, timestamp_us: int, sm_util: int, mem_util: int = 0
    ) -> None:
        self._samples[gpu_index].append(
            ProcessUtilizationSampleT(pid, timestamp_us, sm_util, mem_util, 0, 0)
        )

    # --- the gates every NVML call passes ---------------------------------------------
    def _enter(self, name: str) -> None:
        """What every call checks first: the library is initialized."""
        self.calls[name] += 1
        if self._before_call is not None:
            self._before_call()
        if self._refcount == 0:
            raise _error(NVML_ERROR_UNINITIALIZED)
        if name in self.missing_functions:
            raise _error(NVML_ERROR_FUNCTION_NOT_FOUND)

    def _device(self, name: str, handle: object) -> tuple[GpuSpec, MigInstanceSpec | None, int]:
        """Checks what the driver checks for a call about a device, in its order, and
        returns the GPU, the MIG instance the handle names (if any) and the GPU's index."""
        self._enter(name)
        if not isinstance(handle, FakeHandle) or not 0 <= handle.gpu < len(self._gpus):
            raise _error(NVML_ERROR_INVALID_ARGUMENT)
        index = handle.gpu
        if index in self._lost:
            raise _error(NVML_ERROR_GPU_IS_LOST)
        g = self._gpus[index]
        mig: MigInstanceSpec | None = None
        if handle.mig_index is not None:
            instances = g.mig or ()
            if handle.mig_index >= len(instances):  # MIG reconfigured under the handle
                raise _error(NVML_ERROR_INVALID_ARGUMENT)
            mig = instances[handle.mig_index]
        self._maybe_fail(name, index)
        if name in g.unsupported or (mig is not None and name in _BOARD_ONLY):
            raise _error(NVML_ERROR_NOT_SUPPORTED)
        return g, mig, index

    def _maybe_fail(self, name: str, gpu_index: int | None) -> None:
        for key in ((name, gpu_index), (name, None)):
            entry = self._failures.get(key)
            if entry is None:
                continue
            code, times = entry
            if times is not None:
                if times <= 1:
                    del self._failures[key]
                else:
                    entry[1] = times - 1
            assert code is not None
            raise _error(code)

    @staticmethod
    def _model(g: GpuSpec) -> GpuModel:
        return MODELS[g.model]

    # --- NVML ----------------------------------------------------------------------------
    def nvmlInit(self) -> None:
        self.calls["nvmlInit"] += 1
        if self.init_error is not None:
            raise _error(self.init_error)
        self._refcount += 1

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown")
        self._maybe_fail("nvmlShutdown", None)
        self._refcount -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._enter("nvmlSystemGetDriverVersion")
        self._maybe_fail("nvmlSystemGetDriverVersion", None)
        return self.driver_version

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        self._maybe_fail("nvmlDeviceGetCount", None)
        return len(self._gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeHandle:
        self._enter("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self._gpus):
            raise _error(NVML_ERROR_INVALID_ARGUMENT)
        if index in self._lost:
            raise _error(NVML_ERROR_GPU_IS_LOST)
        self._maybe_fail("nvmlDeviceGetHandleByIndex", index)
        return FakeHandle(index)

    def nvmlDeviceGetUUID(self, handle: object) -> str:
        g, mig, _ = self._device("nvmlDeviceGetUUID", handle)
        if mig is not None:
            assert mig.uuid is not None
            return mig.uuid
        assert g.uuid is not None
        return g.uuid

    def nvmlDeviceGetName(self, handle: object) -> str:
        g, mig, _ = self._device("nvmlDeviceGetName", handle)
        return g.model if mig is None else f"{g.model} MIG {mig.profile}"

    def nvmlDeviceGetMemoryInfo(self, handle: object, version: int | None = None) -> MemoryT:
        g, mig, _ = self._device("nvmlDeviceGetMemoryInfo", handle)
        if mig is not None:
            total = self._model(g).mig_profiles[mig.profile].memory_mib * MIB
            used = mig.memory_used_bytes
            if used is None:
                used = sum(p.used_memory_bytes or 0 for p in mig.processes + mig.mps_clients)
        else:
            total = g.memory_total_bytes or self._model(g).memory_mib * MIB
            used = g.memory_used_bytes
            if used is None:
                used = sum(p.used_memory_bytes or 0 for p in self._all_processes(g))
        return MemoryT(total=total, free=max(total - used, 0), used=used)

    def nvmlDeviceGetUtilizationRates(self, handle: object) -> UtilizationT:
        g, _, _ = self._device("nvmlDeviceGetUtilizationRates", handle)
        if g.mig is not None:  # not reported in MIG mode
            raise _error(NVML_ERROR_NOT_SUPPORTED)
        return UtilizationT(gpu=g.utilization_gpu, memory=g.utilization_memory)

    def nvmlDeviceGetPowerUsage(self, handle: object) -> int:
        g, _, _ = self._device("nvmlDeviceGetPowerUsage", handle)
        if g.power_mw is None:
            return round(self._model(g).idle_power_w * 1000)
        return g.power_mw

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: object) -> int:
        g, _, _ = self._device("nvmlDeviceGetTotalEnergyConsumption", handle)
        return g.energy_mj

    def nvmlDeviceGetTemperature(self, handle: object, sensor: int) -> int:
        g, _, _ = self._device("nvmlDeviceGetTemperature", handle)
        if sensor != pynvml.NVML_TEMPERATURE_GPU:
            raise _error(NVML_ERROR_INVALID_ARGUMENT)
        return g.temperature_c

    def nvmlDeviceGetClockInfo(self, handle: object, type: int) -> int:
        g, _, _ = self._device("nvmlDeviceGetClockInfo", handle)
        if type == pynvml.NVML_CLOCK_SM:
            return g.sm_clock_mhz or self._model(g).idle_sm_clock_mhz
        if type in (pynvml.NVML_CLOCK_GRAPHICS, pynvml.NVML_CLOCK_MEM):
            return self._model(g).idle_sm_clock_mhz
        raise _error(NVML_ERROR_INVALID_ARGUMENT)

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: object) -> int:
        g, _, _ = self._device("nvmlDeviceGetCurrentClocksEventReasons", handle)
        return g.clocks_event_reasons

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: object) -> int:
        g, _, _ = self._device("nvmlDeviceGetCurrentClocksThrottleReasons", handle)
        return g.clocks_event_reasons

    def nvmlDeviceGetTotalEccErrors(self, handle: object, errorType: int, counterType: int) -> int:
        g, _, _ = self._device("nvmlDeviceGetTotalEccErrors", handle)
        if counterType not in (pynvml.NVML_VOLATILE_ECC, pynvml.NVML_AGGREGATE_ECC):
            raise _error(NVML_ERROR_INVALID_ARGUMENT)
        if errorType == pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED:
            return g.ecc_corrected
        if errorType == pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED:
            return g.ecc_uncorrected
        raise _error(NVML_ERROR_INVALID_ARGUMENT)

    def nvmlDeviceGetRemappedRows(self, device: object) -> tuple[int, int, int, int]:
        g, _, _ = self._device("nvmlDeviceGetRemappedRows", device)
        return g.remapped_rows

    def nvmlDeviceGetMigMode(self, device: object) -> list[int]:
        g, _, _ = self._device("nvmlDeviceGetMigMode", device)
        if not self._model(g).mig_capable:
            raise _error(NVML_ERROR_NOT_SUPPORTED)
        current = g.mig is not None
        pending = current if g.mig_pending is None else g.mig_pending
        on, off = NVML_DEVICE_MIG_ENABLE, NVML_DEVICE_MIG_DISABLE
        return [on if current else off, on if pending else off]

    def nvmlDeviceGetMaxMigDeviceCount(self, device: object) -> int:
        g, _, _ = self._device("nvmlDeviceGetMaxMigDeviceCount", device)
        if not self._model(g).mig_capable:
            raise _error(NVML_ERROR_NOT_SUPPORTED)
        return self._model(g).max_mig_devices

    def nvmlDeviceGetMigDeviceHandleByIndex(self, device: object, index: int) -> FakeHandle:
        g, _, gpu_index = self._device("nvmlDeviceGetMigDeviceHandleByIndex", device)
        model = self._model(g)
        if not model.mig_capable:
            raise _error(NVML_ERROR_NOT_SUPPORTED)
        if not 0 <= index < model.max_mig_devices:
            raise _error(NVML_ERROR_INVALID_ARGUMENT)
        if g.mig is None or index >= len(g.mig):
            raise _error(NVML_ERROR_NOT_FOUND)
        return FakeHandle(gpu_index, index)

    def nvmlDeviceGetGpuInstanceId(self, device: object) -> int:
        _, mig, _ = self._device("nvmlDeviceGetGpuInstanceId", device)
        if mig is None:  # only a MIG device handle has one
            raise _error(NVML_ERROR_INVALID_ARGUMENT)
        return mig.gpu_instance_id

    def nvmlDeviceGetGpuInstanceProfileInfo(
        self, device: object, profile: int, version: int = 2
    ) -> GpuInstanceProfileInfoT:
        g, _, _ = self._device("nvmlDeviceGetGpuInstanceProfileInfo", device)
        if g.mig is None:
            raise _error(NVML_ERROR_NOT_SUPPORTED)
        for p in self._model(g).mig_profiles.values():
            if p.profile_id == profile:
                return GpuInstanceProfileInfoT(
                    version=version, id=p.profile_id, isP2pSupported=0, sliceCount=p.slices,
                    instanceCount=p.max_instances, multiprocessorCount=p.multiprocessors,
                    copyEngineCount=p.slices, decoderCount=p.slices, encoderCount=0,
                    jpegCount=p.slices, ofaCount=1 if p.slices == 7 else 0,
                    memorySizeMB=p.memory_mib, name=f"MIG {p.name}".encode(),
                )  # fmt: skip
        raise _error(NVML_ERROR_NOT_SUPPORTED)

    def nvmlDeviceGetMinorNumber(self, handle: object) -> int:
        g, mig, _ = self._device("nvmlDeviceGetMinorNumber", handle)
        if mig is not None:
            raise _error(NVML_ERROR_INVALID_ARGUMENT)
        assert g.minor_number is not None
        return g.minor_number

    def nvmlDeviceGetGpuInstanceById(self, device: object, gpuInstanceId: int) -> FakeGpuInstance:
        g, mig, index = self._device("nvmlDeviceGetGpuInstanceById", device)
        if mig is not None:  # a parent GPU's handle is wanted
            raise _error(NVML_ERROR_INVALID_ARGUMENT)
        if not self.privileged:  # "Requires privileged user"
            raise _error(NVML_ERROR_NO_PERMISSION)
        if g.mig is None:
            raise _error(NVML_ERROR_NOT_SUPPORTED)
        if not any(m.gpu_instance_id == gpuInstanceId for m in g.mig):
            raise _error(NVML_ERROR_NOT_FOUND)
        return FakeGpuInstance(index, gpuInstanceId)

    def nvmlGpuInstanceGetInfo(self, gpuInstance: object) -> GpuInstanceInfoT:
        self._enter("nvmlGpuInstanceGetInfo")
        if not isinstance(gpuInstance, FakeGpuInstance):
            raise _error(NVML_ERROR_INVALID_ARGUMENT)
        g = self._gpus[gpuInstance.gpu]
        for m in g.mig or ():
            if m.gpu_instance_id == gpuInstance.gpu_instance_id:
                p = self._model(g).mig_profiles[m.profile]
                assert m.placement_start is not None
                return GpuInstanceInfoT(
                    device=FakeHandle(gpuInstance.gpu),
                    id=m.gpu_instance_id,
                    profileId=p.profile_id,
                    placement=GpuInstancePlacementT(m.placement_start, p.slices),
                )
        raise _error(NVML_ERROR_INVALID_ARGUMENT)  # the instance was destroyed

    def nvmlDeviceGetAttributes(self, device: object) -> DeviceAttributesT:
        g, mig, _ = self._device("nvmlDeviceGetAttributes", device)
        if mig is None:  # "currently only supports MIG device handles"
            raise _error(NVML_ERROR_NOT_SUPPORTED)
        p = self._model(g).mig_profiles[mig.profile]
        return DeviceAttributesT(
            multiprocessorCount=p.multiprocessors, sharedCopyEngineCount=p.slices,
            sharedDecoderCount=p.slices, sharedEncoderCount=0, sharedJpegCount=p.slices,
            sharedOfaCount=1 if p.slices == 7 else 0, gpuInstanceSliceCount=p.slices,
            computeInstanceSliceCount=p.slices, memorySizeMB=p.memory_mib,
        )  # fmt: skip

    def _all_processes(self, g: GpuSpec) -> tuple[ProcessSpec, ...]:
        if g.mig is None:
            return g.processes + g.mps_clients
        return tuple(p for m in g.mig for p in m.processes + m.mps_clients)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: object) -> list[ProcessInfoT]:
        g, mig, _ = self._device("nvmlDeviceGetComputeRunningProcesses", handle)
        na = NVML_VALUE_NOT_AVAILABLE_UINT
        if g.mig is None:
            return [ProcessInfoT(p.pid, p.used_memory_bytes, na, na) for p in g.processes]
        instances = g.mig if mig is None else (mig,)  # the parent sees every instance's
        return [
            ProcessInfoT(p.pid, p.used_memory_bytes, m.gpu_instance_id, m.compute_instance_id)
            for m in instances
            for p in m.processes
        ]

    def nvmlDeviceGetMPSComputeRunningProcesses(self, handle: object) -> list[ProcessInfoT]:
        g, mig, _ = self._device("nvmlDeviceGetMPSComputeRunningProcesses", handle)
        na = NVML_VALUE_NOT_AVAILABLE_UINT
        if g.mig is None:
            return [ProcessInfoT(p.pid, p.used_memory_bytes, na, na) for p in g.mps_clients]
        instances = g.mig if mig is None else (mig,)  # an MPS server per MIG instance
        return [
            ProcessInfoT(p.pid, p.used_memory_bytes, m.gpu_instance_id, m.compute_instance_id)
            for m in instances
            for p in m.mps_clients
        ]

    def nvmlDeviceGetProcessUtilization(
        self, handle: object, timeStamp: int
    ) -> list[ProcessUtilizationSampleT]:
        g, _, gpu_index = self._device("nvmlDeviceGetProcessUtilization", handle)
        if g.mig is not None:
            raise _error(NVML_ERROR_NOT_SUPPORTED)
        newer = [s for s in self._samples[gpu_index] if s.timeStamp > timeStamp]
        if not newer:
            raise _error(NVML_ERROR_NOT_FOUND)
        return newer

    def nvmlEventSetCreate(self) -> FakeEventSet:
        self._enter("nvmlEventSetCreate")
        self._maybe_fail("nvmlEventSetCreate", None)
        s = FakeEventSet()
        self._event_sets.append(s)
        return s

    def _event_set(self, event_set: object) -> FakeEventSet:
        if not isinstance(event_set, FakeEventSet) or event_set.freed:
            raise _error(NVML_ERROR_INVALID_ARGUMENT)
        return event_set

    def nvmlDeviceRegisterEvents(self, handle: object, eventTypes: int, eventSet: object) -> None:
        g, _, gpu_index = self._device("nvmlDeviceRegisterEvents", handle)
        s = self._event_set(eventSet)
        if eventTypes & ~g.supported_events:
            raise _error(NVML_ERROR_NOT_SUPPORTED)
        s.registered[gpu_index] = s.registered.get(gpu_index, 0) | eventTypes

    def nvmlDeviceGetSupportedEventTypes(self, handle: object) -> int:
        g, _, _ = self._device("nvmlDeviceGetSupportedEventTypes", handle)
        return g.supported_events

    def nvmlEventSetWait(self, eventSet: object, timeoutms: int) -> EventDataT:
        self._enter("nvmlEventSetWait")
        self._maybe_fail("nvmlEventSetWait", None)
        s = self._event_set(eventSet)
        self.wait_timeouts.append(timeoutms)
        if not s.pending:
            raise _error(NVML_ERROR_TIMEOUT)
        return s.pending.popleft()

    def nvmlEventSetFree(self, eventSet: object) -> None:
        self._enter("nvmlEventSetFree")
        self._maybe_fail("nvmlEventSetFree", None)
        self._event_set(eventSet).freed = True
