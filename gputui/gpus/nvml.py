"""NVML backend: the preferred probe, because it reads driver counters without creating a CUDA context.

A GPU in MIG mode is listed as its MIG instances, one snapshot each (its own memory, UUID and processes; `parent`
names the GPU): CUDA sees each instance as a device and a task can be given one (CUDA_VISIBLE_DEVICES=MIG-<uuid>),
never the parent GPU whole. Snapshots are numbered in NVML's order of GPUs, then of instances, so on a machine with
MIG a whole GPU's `index` may differ from NVML's, and its `device` keeps NVML's for CUDA_VISIBLE_DEVICES. A GPU in
MIG mode with no instance (nothing CUDA can run on) is listed whole, as full, and says so in its name.

`pynvml` is imported lazily so that importing gputui never needs the NVIDIA library. Static facts
(name, uuid, total memory, power limit) are read once at init; `snapshot()` reads only what changes.
Any NVML error on an optional field becomes `None` ("cannot tell") instead of an exception, because
one flaky counter (e.g. power on a GPU that does not report it) must not blank the whole display.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gputui.gpus.probe import DriverInfo, GpuProcess, GpuSnapshot, NoGpuError, cuda_version_text

# NVML reports "not available" per-process memory as ULLONG_MAX on some drivers instead of failing.
_NVML_VALUE_NOT_AVAILABLE = 2**64 - 1
_GPU_IS_LOST = 15  # NVML_ERROR_GPU_IS_LOST: every call on the GPU fails so until the driver is reloaded


def _text(value: Any) -> str:
    # pynvml < 11.5 returned bytes for names and uuids; newer versions return str.
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


@dataclass
class _Device:
    handle: Any  # None: the GPU was lost before it could be opened (tried again at each snapshot)
    name: str
    uuid: str
    memory_total: int
    power_limit: float | None
    last_sample: int = 0  # NVML timestamp (µs) of the newest per-process utilisation sample read
    nvml_index: int = 0  # the GPU's own (NVML's) index; a MIG instance: its parent's
    mig: bool = False  # a MIG instance (`handle` is its MIG device handle)
    unusable: bool = False  # in MIG mode without instances: CUDA can run nothing on it


class NvmlProbe:
    """GPU snapshots straight from the NVIDIA driver through NVML."""

    name = "nvml"
    simulated = False

    def __init__(self) -> None:
        try:
            import pynvml
        except ImportError as exc:
            raise NoGpuError(f"pynvml (nvidia-ml-py) is not installed: {exc}") from exc
        self._nvml: Any = pynvml
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise NoGpuError(f"NVML init failed: {exc}") from exc
        self._closed = False
        version = self._call("nvmlSystemGetDriverVersion")
        cuda = self._call("nvmlSystemGetCudaDriverVersion_v2") or self._call("nvmlSystemGetCudaDriverVersion")
        self.driver = DriverInfo(
            version=_text(version) if version is not None else None,
            cuda=cuda_version_text(int(cuda)) if isinstance(cuda, int) else None,
        )
        try:
            count = pynvml.nvmlDeviceGetCount()
            if count <= 0:
                raise NoGpuError("NVML initialised but reports 0 GPUs")
            self._devices = [unit for i in range(count) for unit in self._units(i)]
        except pynvml.NVMLError as exc:
            self.close()
            raise NoGpuError(f"NVML could not list GPUs: {exc}") from exc
        except BaseException:
            self.close()
            raise

    def _call(self, fn_name: str, *args: Any) -> Any:
        """Call an optional NVML function; None when it fails or this pynvml lacks it."""
        fn = getattr(self._nvml, fn_name, None)
        if fn is None:
            return None
        try:
            return fn(*args)
        except self._nvml.NVMLError:
            return None

    def _lost(self, exc: Exception) -> bool:
        return getattr(exc, "value", None) == getattr(self._nvml, "NVML_ERROR_GPU_IS_LOST", _GPU_IS_LOST)

    def _open_or_lost(self, index: int) -> _Device:
        """The GPU, or a lost one (no handle) where the driver says it is lost: one GPU fallen off the bus must
        not hide the others."""
        try:
            return self._open_device(index)
        except self._nvml.NVMLError as exc:
            if not self._lost(exc):
                raise
            return _Device(
                handle=None, name=f"GPU {index}", uuid="", memory_total=0, power_limit=None, nvml_index=index
            )

    def _units(self, index: int) -> list[_Device]:
        """What GPU `index` gives to place on: itself, or its MIG instances where it is in MIG mode."""
        gpu = self._open_or_lost(index)
        if gpu.handle is None:
            return [gpu]
        mode = self._call("nvmlDeviceGetMigMode", gpu.handle)
        if not mode or mode[0] != getattr(self._nvml, "NVML_DEVICE_MIG_ENABLE", 1):
            return [gpu]
        slots = self._call("nvmlDeviceGetMaxMigDeviceCount", gpu.handle) or 0
        instances = []
        for slot in range(int(slots)):
            handle = self._call("nvmlDeviceGetMigDeviceHandleByIndex", gpu.handle, slot)
            if handle is None:  # no instance in this slot (NOT_FOUND): the slots need not be filled in order
                continue
            instances.append(self._describe(handle, index, f"{gpu.name} MIG {slot}", mig=True))
        if not instances:
            gpu.unusable = True
            gpu.name = f"{gpu.name} (MIG mode, no MIG instance)"
            return [gpu]
        return instances

    def _open_device(self, index: int) -> _Device:
        nv = self._nvml
        handle = nv.nvmlDeviceGetHandleByIndex(index)  # no handle, no GPU: let it raise
        try:
            nv.nvmlDeviceGetMemoryInfo(handle)  # a lost GPU gives a handle, then GPU_IS_LOST for everything
        except nv.NVMLError as exc:
            if self._lost(exc):
                raise
        return self._describe(handle, index, f"GPU {index}")

    def _describe(self, handle: Any, index: int, fallback: str, mig: bool = False) -> _Device:
        """A GPU's (or a MIG instance's) static facts. `index`: the GPU's (a MIG instance's parent's)."""
        name = self._call("nvmlDeviceGetName", handle)
        uuid = self._call("nvmlDeviceGetUUID", handle)
        mem = self._call("nvmlDeviceGetMemoryInfo", handle)
        limit_mw = None if mig else self._call("nvmlDeviceGetEnforcedPowerLimit", handle)
        if limit_mw is None and not mig:
            limit_mw = self._call("nvmlDeviceGetPowerManagementLimit", handle)
        return _Device(
            handle=handle,
            name=_text(name) if name is not None else fallback,
            uuid=_text(uuid) if uuid is not None else "",
            memory_total=int(mem.total) if mem is not None else 0,
            power_limit=limit_mw / 1000.0 if limit_mw is not None else None,
            nvml_index=index,
            mig=mig,
        )

    def _processes(self, dev: _Device) -> tuple[GpuProcess, ...]:
        procs = self._call("nvmlDeviceGetComputeRunningProcesses", dev.handle)
        if not procs:
            return ()
        sm = self._sm_utils(dev)
        out = []
        for p in procs:
            used = getattr(p, "usedGpuMemory", None)
            if used is not None and (used < 0 or used >= _NVML_VALUE_NOT_AVAILABLE):
                used = None
            pid = int(p.pid)
            out.append(GpuProcess(pid=pid, used_memory=None if used is None else int(used), sm_util=sm.get(pid)))
        return tuple(out)

    def _sm_utils(self, dev: _Device) -> dict[int, float]:
        """pid -> %SM from the samples NVML took since the last call (none on drivers or GPUs without
        per-process accounting: then the column shows a dash)."""
        samples = self._call("nvmlDeviceGetProcessUtilization", dev.handle, dev.last_sample)
        out: dict[int, float] = {}
        for sample in samples or ():
            out[int(sample.pid)] = float(sample.smUtil)
            dev.last_sample = max(dev.last_sample, int(sample.timeStamp))
        return out

    def snapshot(self) -> list[GpuSnapshot]:
        """One reading per GPU. Returns [] after close(), since NVML calls would then all fail."""
        if self._closed:
            return []
        temp_sensor = getattr(self._nvml, "NVML_TEMPERATURE_GPU", 0)
        snaps = []
        for index, dev in enumerate(self._devices):
            if dev.handle is None:  # lost when opened: back? (as a whole GPU: the units listed stay as they are)
                try:
                    dev = self._devices[index] = self._open_device(dev.nvml_index)
                except self._nvml.NVMLError:
                    snaps.append(self._lost_snapshot(index, dev))
                    continue
            h = dev.handle
            try:
                mem = self._nvml.nvmlDeviceGetMemoryInfo(h)
            except self._nvml.NVMLError as exc:
                if self._lost(exc):
                    snaps.append(self._lost_snapshot(index, dev))
                    continue
                mem = None
            total = int(mem.total) if mem is not None else dev.memory_total
            # Unknown usage is reported as full so that nothing gets scheduled onto a GPU we cannot see (nor onto
            # a GPU in MIG mode with no instance to run on).
            used = int(mem.used) if mem is not None and not dev.unusable else total
            util = self._call("nvmlDeviceGetUtilizationRates", h)
            temp = self._call("nvmlDeviceGetTemperature", h, temp_sensor)
            power_mw = self._call("nvmlDeviceGetPowerUsage", h)
            energy_mj = self._call("nvmlDeviceGetTotalEnergyConsumption", h)  # NOT_SUPPORTED before Volta: None
            snaps.append(
                GpuSnapshot(
                    index=index,
                    name=dev.name,
                    uuid=dev.uuid,
                    memory_total=total,
                    memory_used=used,
                    utilization=float(util.gpu) if util is not None else None,
                    temperature=float(temp) if temp is not None else None,
                    power=power_mw / 1000.0 if power_mw is not None else None,
                    power_limit=dev.power_limit,
                    processes=self._processes(dev),
                    simulated=False,
                    energy_mj=float(energy_mj) if energy_mj is not None else None,
                    parent=dev.nvml_index if dev.mig else None,
                    device=self._device_name(index, dev),
                )
            )
        return snaps

    @staticmethod
    def _device_name(index: int, dev: _Device) -> str:
        """What CUDA_VISIBLE_DEVICES calls the unit, where not its index (GpuSnapshot.device)."""
        if dev.mig:
            return dev.uuid
        return "" if dev.nvml_index == index else str(dev.nvml_index)

    @staticmethod
    def _lost_snapshot(index: int, dev: _Device) -> GpuSnapshot:
        """A GPU the driver says is lost: only what was read of it before, its memory all taken."""
        return GpuSnapshot(
            index=index,
            name=dev.name,
            uuid=dev.uuid,
            memory_total=dev.memory_total,
            memory_used=dev.memory_total,
            power_limit=dev.power_limit,
            simulated=False,
            lost=True,
            parent=dev.nvml_index if dev.mig else None,
            device=NvmlProbe._device_name(index, dev),
        )

    def close(self) -> None:
        """Shut NVML down exactly once; NVML reference-counts init/shutdown pairs."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        try:
            self._nvml.nvmlShutdown()
        except self._nvml.NVMLError:
            pass
