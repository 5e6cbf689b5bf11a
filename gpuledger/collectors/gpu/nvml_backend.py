"""The seam between the NVML collector and the NVML library.

The collector talks to an :class:`NvmlApi`: exactly the ``pynvml`` (nvidia-ml-py)
functions it calls, with the library's own names and argument order, so the real module
satisfies it as it is and a fake (:class:`gpuledger.sim.nvml_fake.FakeNvml`) can stand in
for it on a machine without a GPU. Keeping the surface this small is what lets the fake behave like
the library call for call; anything the collector starts using must be added here first.

Only this module and the fake import ``pynvml``. The collector does not: it catches the
library's exceptions through ``api.NVMLError`` and compares their ``value`` with the
``NVML_*`` codes below, which are the C API's ABI values (``nvml.h``), stable across
driver releases; ``tests/collectors/gpu/test_nvml_collector.py`` checks them against the installed
library.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, cast

Handle = object
"""An opaque device handle (``c_nvmlDevice_t`` in the real library). Only ever passed back."""

EventSet = object
"""An opaque event-set handle (``c_nvmlEventSet_t``)."""

# --- return codes (nvmlReturn_t) -----------------------------------------------------
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_ERROR_UNKNOWN = 999

# --- enums and flags the collector passes or decodes ---------------------------------
NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_SM = 1
NVML_MEMORY_ERROR_TYPE_CORRECTED = 0
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_AGGREGATE_ECC = 1
NVML_DEVICE_MIG_DISABLE = 0
NVML_DEVICE_MIG_ENABLE = 1
NVML_GPU_INSTANCE_PROFILE_COUNT = 0x12
nvmlEventTypeXidCriticalError = 0x8
NVML_VALUE_NOT_AVAILABLE_UINT = 0xFFFFFFFF
"""What NVML puts in a process's GPU-/compute-instance id when the GPU is not in MIG mode."""


# --- the shapes of the structs the library returns (attribute names as in pynvml) -----
class MemoryInfo(Protocol):
    @property
    def total(self) -> int: ...
    @property
    def free(self) -> int: ...
    @property
    def used(self) -> int: ...


class Utilization(Protocol):
    @property
    def gpu(self) -> int: ...
    @property
    def memory(self) -> int: ...


class ProcessInfo(Protocol):
    """``c_nvmlProcessInfo_v3_t`` as pynvml hands it back (``usedGpuMemory`` None when the
    driver reports NVML_VALUE_NOT_AVAILABLE)."""

    @property
    def pid(self) -> int: ...
    @property
    def usedGpuMemory(self) -> int | None: ...
    @property
    def gpuInstanceId(self) -> int: ...
    @property
    def computeInstanceId(self) -> int: ...


class ProcessUtilizationSample(Protocol):
    @property
    def pid(self) -> int: ...
    @property
    def timeStamp(self) -> int: ...  # microseconds since the epoch
    @property
    def smUtil(self) -> int: ...
    @property
    def memUtil(self) -> int: ...
    @property
    def encUtil(self) -> int: ...
    @property
    def decUtil(self) -> int: ...


class DeviceAttributes(Protocol):
    @property
    def multiprocessorCount(self) -> int: ...
    @property
    def gpuInstanceSliceCount(self) -> int: ...
    @property
    def computeInstanceSliceCount(self) -> int: ...
    @property
    def memorySizeMB(self) -> int: ...


class GpuInstanceProfileInfo(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def sliceCount(self) -> int: ...
    @property
    def instanceCount(self) -> int: ...
    @property
    def multiprocessorCount(self) -> int: ...
    @property
    def memorySizeMB(self) -> int: ...


class GpuInstancePlacement(Protocol):
    @property
    def start(self) -> int: ...
    @property
    def size(self) -> int: ...


class GpuInstanceInfo(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def profileId(self) -> int: ...
    @property
    def placement(self) -> GpuInstancePlacement: ...


class EventData(Protocol):
    @property
    def device(self) -> Handle: ...
    @property
    def eventType(self) -> int: ...
    @property
    def eventData(self) -> int: ...
    @property
    def gpuInstanceId(self) -> int: ...
    @property
    def computeInstanceId(self) -> int: ...


class NvmlApi(Protocol):
    """The ``pynvml`` functions the collector calls (module-level functions there)."""

    NVMLError: type[Exception]
    """The library's base exception; instances carry the NVML return code in ``.value``."""

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlSystemGetDriverVersion(self) -> str: ...
    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Handle: ...
    def nvmlDeviceGetUUID(self, handle: Handle) -> str: ...
    def nvmlDeviceGetName(self, handle: Handle) -> str: ...
    def nvmlDeviceGetMemoryInfo(self, handle: Handle, version: int | None = None) -> MemoryInfo: ...
    def nvmlDeviceGetUtilizationRates(self, handle: Handle) -> Utilization: ...
    def nvmlDeviceGetPowerUsage(self, handle: Handle) -> int: ...  # milliwatts
    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Handle) -> int: ...  # millijoules
    def nvmlDeviceGetTemperature(self, handle: Handle, sensor: int) -> int: ...  # degrees C
    def nvmlDeviceGetClockInfo(self, handle: Handle, type: int) -> int: ...  # MHz
    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Handle) -> int: ...
    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: Handle) -> int: ...  # pre-R535
    def nvmlDeviceGetTotalEccErrors(
        self, handle: Handle, errorType: int, counterType: int
    ) -> int: ...
    def nvmlDeviceGetRemappedRows(self, device: Handle) -> tuple[int, int, int, int]: ...
    def nvmlDeviceGetMigMode(self, device: Handle) -> Sequence[int]: ...  # [current, pending]
    def nvmlDeviceGetMaxMigDeviceCount(self, device: Handle) -> int: ...
    def nvmlDeviceGetMigDeviceHandleByIndex(self, device: Handle, index: int) -> Handle: ...
    def nvmlDeviceGetGpuInstanceId(self, device: Handle) -> int: ...
    def nvmlDeviceGetGpuInstanceProfileInfo(
        self, device: Handle, profile: int, version: int = 2
    ) -> GpuInstanceProfileInfo: ...
    def nvmlDeviceGetAttributes(self, device: Handle) -> DeviceAttributes: ...
    def nvmlDeviceGetMinorNumber(self, handle: Handle) -> int: ...
    def nvmlDeviceGetGpuInstanceById(self, device: Handle, gpuInstanceId: int) -> Handle:
        """ "Requires privileged user" (NVML API reference): NO_PERMISSION unless root."""
        ...

    def nvmlGpuInstanceGetInfo(self, gpuInstance: Handle) -> GpuInstanceInfo: ...
    def nvmlDeviceGetComputeRunningProcesses(self, handle: Handle) -> Sequence[ProcessInfo]: ...
    def nvmlDeviceGetMPSComputeRunningProcesses(self, handle: Handle) -> Sequence[ProcessInfo]:
        """MPS clients (``nvmlDeviceGetMPSComputeRunningProcesses_v3`` in nvidia-ml-py): under
        MPS the call above lists only the ``nvidia-cuda-mps-server``."""
        ...

    def nvmlDeviceGetProcessUtilization(
        self, handle: Handle, timeStamp: int
    ) -> Sequence[ProcessUtilizationSample]: ...
    def nvmlEventSetCreate(self) -> EventSet: ...
    def nvmlDeviceRegisterEvents(
        self, handle: Handle, eventTypes: int, eventSet: EventSet
    ) -> None: ...
    def nvmlDeviceGetSupportedEventTypes(self, handle: Handle) -> int: ...
    def nvmlEventSetWait(self, eventSet: EventSet, timeoutms: int) -> EventData: ...
    def nvmlEventSetFree(self, eventSet: EventSet) -> None: ...


def load_real() -> NvmlApi:
    """The installed ``pynvml`` module. Importing it needs no driver (it loads
    ``libnvidia-ml.so.1`` only in ``nvmlInit``), so this never fails on a GPU-less host;
    the collector turns the missing library into ``CollectorDisabled`` at its first cycle."""
    import pynvml

    return cast("NvmlApi", pynvml)
