"""GPU telemetry read in-process through NVML (nvidia-ml-py).

One :class:`NvmlCollector` per agent. It initializes NVML on its first cycle, not at
construction, so that building the agent never touches the driver and a host without one
is reported once, as :class:`CollectorDisabled`, by the runtime that owns logging.

Every value is read through ``nvml_fields.FieldReader``, which turns NVML's answers into what
``readings.py`` promises, in the spirit of nvitop's typed wrappers: NOT_SUPPORTED is an
absent field (``None``, never 0); GPU_IS_LOST abandons that GPU for this cycle and reports
it as ``lost`` (the others carry on); any other error costs one field and leaves a note.
An NVML that stops answering as a whole (uninitialized, driver unloaded) fails the cycle
and is initialized afresh on the next one. Nothing here logs: notes travel in the
reading, so an expected condition never becomes a traceback per cycle.

Units are converted on the way in: mW -> W, mJ -> J, MHz -> Hz, percent -> ratio.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

from gpuledger.collectors.base import CollectorDisabled, CollectorError
from gpuledger.collectors.gpu.nvml_backend import (
    NVML_AGGREGATE_ECC,
    NVML_CLOCK_SM,
    NVML_DEVICE_MIG_ENABLE,
    NVML_ERROR_DRIVER_NOT_LOADED,
    NVML_ERROR_FUNCTION_NOT_FOUND,
    NVML_ERROR_GPU_IS_LOST,
    NVML_ERROR_LIB_RM_VERSION_MISMATCH,
    NVML_ERROR_LIBRARY_NOT_FOUND,
    NVML_ERROR_NO_PERMISSION,
    NVML_ERROR_NOT_FOUND,
    NVML_ERROR_NOT_SUPPORTED,
    NVML_ERROR_TIMEOUT,
    NVML_GPU_INSTANCE_PROFILE_COUNT,
    NVML_MEMORY_ERROR_TYPE_CORRECTED,
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
    NVML_TEMPERATURE_GPU,
    NVML_VALUE_NOT_AVAILABLE_UINT,
    Handle,
    NvmlApi,
    ProcessInfo,
    nvmlEventTypeXidCriticalError,
)
from gpuledger.collectors.gpu.nvml_fields import (
    NVML_GONE,
    FieldReader,
    GpuLost,
    GpuState,
    NvmlGone,
    error_code,
)
from gpuledger.collectors.gpu.readings import (
    GpuReading,
    GpuTelemetry,
    ProcessReading,
    decode_throttle_reasons,
)

T = TypeVar("T")

MAX_EVENTS_PER_CYCLE = 1024
"""XID events drained per cycle; an event storm must not hold the cycle past its timeout."""

_CHECK_HOST = (
    "check that the NVIDIA driver is installed and loaded on the node (nvidia-smi works "
    "there) and, in a container, that the NVIDIA container runtime injects it: "
    "runtimeClassName: nvidia (or the nvidia default runtime), a GPU resource request or "
    "NVIDIA_VISIBLE_DEVICES=all, and NVIDIA_DRIVER_CAPABILITIES including utility"
)

_DISABLING = {
    NVML_ERROR_LIBRARY_NOT_FOUND: "the NVML library (libnvidia-ml.so.1) was not found",
    NVML_ERROR_DRIVER_NOT_LOADED: "the NVIDIA kernel driver is not loaded",
    NVML_ERROR_NO_PERMISSION: "no permission to open the GPU devices (/dev/nvidia*)",
    NVML_ERROR_LIB_RM_VERSION_MISMATCH: (
        "the NVML library and the loaded kernel driver are different versions "
        "(driver upgraded without a reboot?)"
    ),
}
"""nvmlInit failures that no retry can fix: the collector is disabled with this reason."""


def handle_key(handle: object) -> Hashable:
    """A key equal for two handles of the same device. pynvml returns a new ctypes pointer
    object per call (``==`` compares identity), so real handles are keyed by address."""
    try:
        address = ctypes.cast(handle, ctypes.c_void_p).value  # type: ignore[arg-type]
    except (ctypes.ArgumentError, TypeError):
        return ("object", handle)
    return ("address", address)


def mig_profile_from_name(name: str) -> str:
    """ "NVIDIA H100 80GB HBM3 MIG 1g.10gb" -> "1g.10gb" ("1c.3g.40gb" for a compute
    instance smaller than its GPU instance); "" when the name carries no profile."""
    _, sep, profile = name.rpartition(" MIG ")
    return profile.strip() if sep else ""


class NvmlCollector:
    """Reads every GPU of the node through ``api`` (``load_real()`` or a fake)."""

    def __init__(self, api: NvmlApi, *, name: str = "nvml") -> None:
        self.name = name
        self._api = api
        self._lock = threading.Lock()
        self._initialized = False
        self._disabled: str | None = None
        self._driver: str | None = None
        self._gpus: list[GpuState] = []
        self._unidentified: list[int] = []  # indices whose identity could not be read yet
        self._by_handle: dict[Hashable, GpuState] = {}
        self._event_set: object | None = None
        self._init_notes: list[str] = []
        self._missing_functions: set[str] = set()
        self._use_legacy_throttle = False

    # --- lifecycle -------------------------------------------------------------------------
    def _init(self) -> None:
        api = self._api
        try:
            api.nvmlInit()
        except api.NVMLError as exc:
            code = error_code(exc)
            if code in _DISABLING:
                self._disabled = f"NVML unavailable: {_DISABLING[code]}; {_CHECK_HOST}"
                raise CollectorDisabled(self._disabled) from None
            raise CollectorError(f"nvmlInit failed: {exc}") from None
        self._initialized = True
        notes: list[str] = []
        try:
            try:
                self._driver = api.nvmlSystemGetDriverVersion()
            except api.NVMLError as exc:
                if error_code(exc) in NVML_GONE:
                    raise
                self._driver = None
                notes.append(f"driver version: {exc}")
            count = api.nvmlDeviceGetCount()
        except api.NVMLError as exc:
            self._teardown()
            raise CollectorError(f"NVML initialized but cannot enumerate GPUs: {exc}") from None
        if count == 0:
            self._teardown()
            self._disabled = f"NVML sees no GPU on this host; {_CHECK_HOST}"
            raise CollectorDisabled(self._disabled)
        self._gpus = []
        self._by_handle = {}
        self._unidentified = list(range(count))
        self._event_set = None
        try:
            self._event_set = api.nvmlEventSetCreate()
        except api.NVMLError as exc:
            if error_code(exc) != NVML_ERROR_NOT_SUPPORTED:
                notes.append(f"XID events will not be counted: nvmlEventSetCreate: {exc}")
        self._identify(notes)
        self._init_notes = notes

    def _identify(self, notes: list[str]) -> None:
        """Reads the identity of GPUs not yet identified (all of them at init; later only
        those that were lost or failing then) and registers them for XID events."""
        api = self._api
        still: list[int] = []
        for index in self._unidentified:
            try:
                handle = api.nvmlDeviceGetHandleByIndex(index)
                uuid = api.nvmlDeviceGetUUID(handle)
                model = api.nvmlDeviceGetName(handle)
            except api.NVMLError as exc:
                if error_code(exc) in NVML_GONE:
                    raise NvmlGone(str(exc)) from exc
                still.append(index)
                lost = error_code(exc) == NVML_ERROR_GPU_IS_LOST
                why = "is lost (fell off the bus?)" if lost else f"cannot be identified: {exc}"
                notes.append(f"GPU {index} {why}; it is not reported until it answers")
                continue
            gpu = GpuState(index=index, handle=handle, uuid=uuid, model=model)
            gpu.minor = self._minor_number(gpu, notes)
            self._register_xid(gpu, notes)
            self._gpus.append(gpu)
            self._by_handle[handle_key(handle)] = gpu
        self._gpus.sort(key=lambda g: g.index)
        self._unidentified = still

    def _minor_number(self, gpu: GpuState, notes: list[str]) -> int | None:
        """The device's minor number, which NVIDIA's DRA driver names it by
        (``gpu-<minor>``). Usually equal to the NVML index, not always: NVML orders by
        PCI bus id, the kernel numbers devices as it probes them."""
        api = self._api
        try:
            return int(api.nvmlDeviceGetMinorNumber(gpu.handle))
        except api.NVMLError as exc:
            code = error_code(exc)
            if code in NVML_GONE:
                raise NvmlGone(str(exc)) from exc
            if code not in (NVML_ERROR_NOT_SUPPORTED, NVML_ERROR_FUNCTION_NOT_FOUND):
                notes.append(f"GPU {gpu.index}: minor number: {exc}")
            return None

    def _register_xid(self, gpu: GpuState, notes: list[str]) -> None:
        if self._event_set is None:
            return
        api = self._api
        try:
            supported = api.nvmlDeviceGetSupportedEventTypes(gpu.handle)
            if not supported & nvmlEventTypeXidCriticalError:
                return
            api.nvmlDeviceRegisterEvents(gpu.handle, nvmlEventTypeXidCriticalError, self._event_set)
        except api.NVMLError as exc:
            if error_code(exc) in NVML_GONE:
                raise NvmlGone(str(exc)) from exc
            if error_code(exc) != NVML_ERROR_NOT_SUPPORTED:
                notes.append(f"GPU {gpu.index} ({gpu.uuid}): XID events not counted: {exc}")
            return
        gpu.xid_registered = True

    def _teardown(self) -> None:
        """Frees what NVML gave us, ignoring its errors: this runs when it may be gone."""
        api = self._api
        if self._event_set is not None:
            with contextlib.suppress(api.NVMLError):
                api.nvmlEventSetFree(self._event_set)
            self._event_set = None
        if self._initialized:
            with contextlib.suppress(api.NVMLError):
                api.nvmlShutdown()
            self._initialized = False
        self._gpus = []
        self._by_handle = {}
        self._unidentified = []

    def close(self) -> None:
        with self._lock:
            self._teardown()

    # --- one cycle -------------------------------------------------------------------------
    def collect(self) -> GpuTelemetry:
        with self._lock:
            if self._disabled is not None:
                raise CollectorDisabled(self._disabled)
            notes: list[str] = []
            try:
                if not self._initialized:
                    self._init()
                    notes.extend(self._init_notes)
                elif self._unidentified:
                    self._identify(notes)
                self._drain_events(notes)
                readings: list[GpuReading] = []
                for gpu in self._gpus:
                    readings.extend(self._read_gpu(gpu, notes))
            except NvmlGone as exc:
                self._teardown()
                raise CollectorError(
                    f"NVML stopped answering ({exc}); it is initialized again next cycle"
                ) from None
            return GpuTelemetry(
                source="nvml", gpus=tuple(readings), driver=self._driver, notes=tuple(notes)
            )

    def _drain_events(self, notes: list[str]) -> None:
        """Takes every pending event without waiting (timeout 0): a collection cycle must
        never block on the driver."""
        if self._event_set is None:
            return
        api = self._api
        for _ in range(MAX_EVENTS_PER_CYCLE):
            try:
                event = api.nvmlEventSetWait(self._event_set, 0)
            except api.NVMLError as exc:
                code = error_code(exc)
                if code == NVML_ERROR_TIMEOUT:
                    return
                if code in NVML_GONE:
                    raise NvmlGone(str(exc)) from exc
                notes.append(f"reading XID events: {exc}")
                return
            if not event.eventType & nvmlEventTypeXidCriticalError:
                continue
            gpu = self._by_handle.get(handle_key(event.device))
            if gpu is None:
                notes.append(f"XID {event.eventData} on a device this collector does not know")
                continue
            gpu.xid_count += 1
            gpu.last_xid = event.eventData
        notes.append(f"more than {MAX_EVENTS_PER_CYCLE} XID events pending; the rest next cycle")

    def _read_gpu(self, gpu: GpuState, notes: list[str]) -> list[GpuReading]:
        r = FieldReader(self._api, self._missing_functions, f"GPU {gpu.index} ({gpu.uuid})", notes)
        try:
            mode = r.get("MIG mode", self._api.nvmlDeviceGetMigMode, gpu.handle)
            if mode is not None and mode[0] == NVML_DEVICE_MIG_ENABLE:
                return self._read_mig_gpu(gpu, r)
            return [self._read_whole_gpu(gpu, r)]
        except GpuLost:
            return [
                GpuReading(
                    uuid=gpu.uuid, index=gpu.index, model=gpu.model, driver=self._driver, lost=True
                )
            ]

    def _board(self, gpu: GpuState, r: FieldReader) -> dict[str, Any]:
        """The board-level quantities, shared by a whole GPU and a MIG-enabled GPU's board."""
        api, h = self._api, gpu.handle
        power = r.get("power", api.nvmlDeviceGetPowerUsage, h)
        energy = r.get("energy", api.nvmlDeviceGetTotalEnergyConsumption, h)
        temp = r.get("temperature", api.nvmlDeviceGetTemperature, h, NVML_TEMPERATURE_GPU)
        clock = r.get("SM clock", api.nvmlDeviceGetClockInfo, h, NVML_CLOCK_SM)
        reasons = self._throttle(gpu, r)
        call = "nvmlDeviceGetTotalEccErrors"
        ecc = r.get("ECC corrected", self._ecc, h, NVML_MEMORY_ERROR_TYPE_CORRECTED, name=call)
        if ecc is not None:
            unc = r.get(
                "ECC uncorrected", self._ecc, h, NVML_MEMORY_ERROR_TYPE_UNCORRECTED, name=call
            )
            ecc_errors = None if unc is None else {"corrected": ecc, "uncorrected": unc}
        else:
            ecc_errors = None
        rows = r.get("remapped rows", api.nvmlDeviceGetRemappedRows, h)
        return {
            "power_watts": None if power is None else power / 1000.0,
            "energy_joules": None if energy is None else energy / 1000.0,
            "temperature_celsius": None if temp is None else float(temp),
            "sm_clock_hertz": None if clock is None else clock * 1e6,
            "throttle_reasons": None if reasons is None else decode_throttle_reasons(reasons),
            "xid_errors": gpu.xid_count if gpu.xid_registered else None,
            # 0 = "none seen" once the event set watches this GPU (the schema's meaning),
            # absent when XID events are not supported here
            "last_xid": gpu.last_xid
            if gpu.last_xid is not None
            else (0 if gpu.xid_registered else None),
            "ecc_errors": ecc_errors,
            "remapped_rows": (
                None if rows is None else {"correctable": rows[0], "uncorrectable": rows[1]}
            ),
            "row_remap_pending": None if rows is None else bool(rows[2]),
            "row_remap_failed": None if rows is None else bool(rows[3]),
        }

    def _ecc(self, handle: Handle, error_type: int) -> int:
        """Lifetime (aggregate) count: the volatile one resets with the driver."""
        return self._api.nvmlDeviceGetTotalEccErrors(handle, error_type, NVML_AGGREGATE_ECC)

    def _throttle(self, gpu: GpuState, r: FieldReader) -> int | None:
        """Clocks-event reasons; the pre-R535 name only where the newer call is missing
        (from the bindings, or from the driver: FUNCTION_NOT_FOUND)."""
        api = self._api
        newer = getattr(api, "nvmlDeviceGetCurrentClocksEventReasons", None)
        if newer is not None and not self._use_legacy_throttle:
            try:
                mask: int = newer(gpu.handle)
            except api.NVMLError as exc:
                if error_code(exc) != NVML_ERROR_FUNCTION_NOT_FOUND:
                    r.error("throttle reasons", exc, "nvmlDeviceGetCurrentClocksEventReasons")
                    return None
                self._use_legacy_throttle = True
            else:
                return mask
        return r.get("throttle reasons", api.nvmlDeviceGetCurrentClocksThrottleReasons, gpu.handle)

    def _read_whole_gpu(self, gpu: GpuState, r: FieldReader) -> GpuReading:
        api, h = self._api, gpu.handle
        mem = r.get("memory", api.nvmlDeviceGetMemoryInfo, h)
        util = r.get("utilization", api.nvmlDeviceGetUtilizationRates, h)
        board = self._board(gpu, r)
        processes = self._processes(gpu, h, None, r)
        return GpuReading(
            uuid=gpu.uuid,
            index=gpu.index,
            model=gpu.model,
            minor_number=gpu.minor,
            driver=self._driver,
            memory_used_bytes=None if mem is None else mem.used,
            memory_total_bytes=None if mem is None else mem.total,
            utilization_ratio=None if util is None else util.gpu / 100.0,
            processes=processes,
            **board,
        )

    def _read_mig_gpu(self, gpu: GpuState, r: FieldReader) -> list[GpuReading]:
        """One board reading, then one per MIG device. Memory, utilization and processes
        live on the instances only, so that a sum over readings never counts them twice."""
        api, h = self._api, gpu.handle
        total_slices = self._total_slices(gpu, r)
        board = GpuReading(
            uuid=gpu.uuid,
            index=gpu.index,
            model=gpu.model,
            minor_number=gpu.minor,
            driver=self._driver,
            mig_enabled=True,
            mig_total_slices=total_slices,
            **self._board(gpu, r),
        )
        out = [board]
        count = r.get("MIG device count", api.nvmlDeviceGetMaxMigDeviceCount, h) or 0
        for i in range(count):
            try:
                mh = api.nvmlDeviceGetMigDeviceHandleByIndex(h, i)
            except api.NVMLError as exc:
                code = error_code(exc)
                if code == NVML_ERROR_NOT_FOUND:  # an unused index: normal
                    continue
                if code == NVML_ERROR_GPU_IS_LOST:
                    raise GpuLost from exc
                if code in NVML_GONE:
                    raise NvmlGone(str(exc)) from exc
                r.note(f"MIG device {i}: {exc}")
                continue
            instance = self._read_mig_device(gpu, mh, i, total_slices, r)
            if instance is not None:
                out.append(instance)
        out[1:] = sorted(out[1:], key=lambda g: g.mig_instance or 0)
        return out

    def _read_mig_device(
        self, gpu: GpuState, mh: Handle, i: int, total_slices: int | None, r: FieldReader
    ) -> GpuReading | None:
        api = self._api
        gi = r.get(f"MIG device {i} GPU-instance id", api.nvmlDeviceGetGpuInstanceId, mh)
        if gi is None:  # without it the device has no identity across sources
            r.note(f"MIG device {i} skipped: no GPU-instance id")
            return None
        mr = r.child(f"GPU {gpu.index} ({gpu.uuid}) MIG {gi}")
        mig_uuid = mr.get("MIG uuid", api.nvmlDeviceGetUUID, mh)
        name = mr.get("name", api.nvmlDeviceGetName, mh)
        attrs = mr.get("attributes", api.nvmlDeviceGetAttributes, mh)
        mem = mr.get("memory", api.nvmlDeviceGetMemoryInfo, mh)
        util = mr.get("utilization", api.nvmlDeviceGetUtilizationRates, mh)
        processes = self._processes(gpu, mh, gi, mr)
        return GpuReading(
            uuid=gpu.uuid,
            index=gpu.index,
            model=gpu.model,
            minor_number=gpu.minor,
            mig_placement_start=self._placement_start(gpu, gi, mig_uuid, mr),
            driver=self._driver,
            mig_instance=gi,
            mig_profile="" if name is None else mig_profile_from_name(name),
            mig_device_uuid=mig_uuid,
            mig_slices=None if attrs is None else attrs.gpuInstanceSliceCount,
            mig_total_slices=total_slices,
            memory_used_bytes=None if mem is None else mem.used,
            memory_total_bytes=None if mem is None else mem.total,
            utilization_ratio=None if util is None else util.gpu / 100.0,
            processes=processes,
        )

    def _placement_start(
        self, gpu: GpuState, gi: int, mig_uuid: str | None, r: FieldReader
    ) -> int | None:
        """The GPU instance's first slice, which NVIDIA's DRA driver puts in a MIG
        device's name. Read once per instance (it only changes when MIG is reconfigured,
        which also changes the MIG UUID); NVML gives it to root only."""
        key = (gi, mig_uuid)
        if key in gpu.placements:
            return gpu.placements[key]
        if gpu.placement_unreadable:
            return None
        api = self._api
        try:
            info = api.nvmlGpuInstanceGetInfo(api.nvmlDeviceGetGpuInstanceById(gpu.handle, gi))
        except api.NVMLError as exc:
            code = error_code(exc)
            if code in (NVML_ERROR_NO_PERMISSION, NVML_ERROR_NOT_SUPPORTED):
                gpu.placement_unreadable = True
                if code == NVML_ERROR_NO_PERMISSION:
                    r.note(
                        "MIG placements need root (nvmlDeviceGetGpuInstanceById): DRA MIG "
                        "devices are matched by profile only (docs/attribution.md)"
                    )
                return None
            r.error("MIG placement", exc, "nvmlDeviceGetGpuInstanceById")
            if code == NVML_ERROR_FUNCTION_NOT_FOUND:
                gpu.placement_unreadable = True
            return None
        if len(gpu.placements) > 64:  # reconfigured many times: forget the old layouts
            gpu.placements.clear()
        gpu.placements[key] = start = int(info.placement.start)
        return start

    def _total_slices(self, gpu: GpuState, r: FieldReader) -> int | None:
        """The GPU's compute slices (7 on A100/H100, 4 on A30): the largest GPU-instance
        profile it offers. Read once per GPU; it only changes with the hardware."""
        if gpu.total_slices_known:
            return gpu.total_slices
        best: int | None = None
        for profile in range(NVML_GPU_INSTANCE_PROFILE_COUNT):
            try:
                info = self._api.nvmlDeviceGetGpuInstanceProfileInfo(gpu.handle, profile)
            except self._api.NVMLError as exc:
                code = error_code(exc)
                if code == NVML_ERROR_GPU_IS_LOST:
                    raise GpuLost from exc
                if code in NVML_GONE:
                    raise NvmlGone(str(exc)) from exc
                continue  # a profile this GPU does not have (NOT_SUPPORTED/INVALID_ARGUMENT)
            best = info.sliceCount if best is None else max(best, info.sliceCount)
        if best is None:
            r.note("no GPU-instance profile readable; MIG total slices unknown")
        gpu.total_slices, gpu.total_slices_known = best, best is not None
        return best

    def _processes(
        self, gpu: GpuState, handle: Handle, gi: int | None, r: FieldReader
    ) -> tuple[ProcessReading, ...]:
        api = self._api
        procs: Sequence[ProcessInfo] | None = r.get(
            "processes", api.nvmlDeviceGetComputeRunningProcesses, handle
        )
        if not procs:
            return ()
        # under MPS the call above lists the server only; its clients come from the MPS call
        clients = {p.pid: p for p in self._mps_clients(gpu, handle, r)}
        listed = [p for p in procs if p.pid not in clients] + list(clients.values())
        sm = self._sm_utilization(gpu, handle, gi, r)
        na = NVML_VALUE_NOT_AVAILABLE_UINT
        return tuple(
            ProcessReading(
                pid=p.pid,
                used_memory_bytes=p.usedGpuMemory,
                sm_utilization_ratio=sm.get(p.pid),
                gpu_instance_id=None if p.gpuInstanceId == na else p.gpuInstanceId,
                compute_instance_id=None if p.computeInstanceId == na else p.computeInstanceId,
                mps_client=p.pid in clients,
            )
            for p in listed
        )

    def _mps_clients(self, gpu: GpuState, handle: Handle, r: FieldReader) -> Sequence[ProcessInfo]:
        """MPS client processes, where the driver lists them. NOT_SUPPORTED (no MPS listing
        on this GPU or driver) is remembered per GPU and noted once; FUNCTION_NOT_FOUND (a
        driver older than the call) once per collector: either way the call is not made
        again and the processes of the ordinary list are all there is (today's attribution:
        an MPS server's GPU time stays with the server's pod). ``mps_support`` shows which."""
        fname = "nvmlDeviceGetMPSComputeRunningProcesses"
        if gpu.mps_support == "not_supported" or fname in self._missing_functions:
            return ()
        fn: Callable[[Handle], Sequence[ProcessInfo]] | None = getattr(self._api, fname, None)
        if fn is None:  # bindings older than the call
            self._missing_functions.add(fname)
            r.note(f"{fname} is not in these NVML bindings; MPS clients are not listed")
            return ()
        try:
            clients = fn(handle)
        except self._api.NVMLError as exc:
            if error_code(exc) == NVML_ERROR_NOT_SUPPORTED:
                gpu.mps_support = "not_supported"
                r.note(
                    f"{fname}: not supported here; MPS clients are not listed, an MPS "
                    "server's GPU time stays with the server's pod"
                )
                return ()
            r.error("MPS client processes", exc, fname)
            return ()
        gpu.mps_support = "listed"
        return clients

    @property
    def mps_support(self) -> dict[str, str]:
        """Per GPU uuid: ``listed`` (the MPS call answers), ``not_supported``,
        ``function_not_found`` (not in this driver or these bindings), or ``unknown`` (not
        asked yet: the MPS call is made only when a GPU has processes)."""
        missing = "nvmlDeviceGetMPSComputeRunningProcesses" in self._missing_functions
        return {
            g.uuid: "function_not_found"
            if missing and g.mps_support == "unknown"
            else g.mps_support
            for g in self._gpus
        }

    def _sm_utilization(
        self, gpu: GpuState, handle: Handle, gi: int | None, r: FieldReader
    ) -> dict[int, float]:
        """Mean SM utilization per pid over the samples the driver took since the last
        cycle. The driver's own timestamps are remembered, not the host clock, so a clock
        step cannot skip or repeat samples. No sample newer (NOT_FOUND): no value."""
        api = self._api
        seen = gpu.proc_util_seen_us.get(gi, 0)
        fname = "nvmlDeviceGetProcessUtilization"
        if fname in self._missing_functions:
            return {}
        try:
            samples = api.nvmlDeviceGetProcessUtilization(handle, seen)
        except api.NVMLError as exc:
            if error_code(exc) != NVML_ERROR_NOT_FOUND:
                r.error("process utilization", exc, fname)
            return {}
        sums: dict[int, tuple[int, int]] = {}
        newest = seen
        for s in samples:
            if s.pid == 0 or s.timeStamp <= seen:  # unused slots of the driver's buffer
                continue
            total, n = sums.get(s.pid, (0, 0))
            sums[s.pid] = (total + s.smUtil, n + 1)
            newest = max(newest, s.timeStamp)
        gpu.proc_util_seen_us[gi] = newest
        return {pid: total / n / 100.0 for pid, (total, n) in sums.items()}
