"""torch backend: a fallback for machines where torch sees CUDA but NVML cannot be loaded.

It is only a fallback because `torch.cuda.mem_get_info` creates a CUDA context on every device it
touches, which pins a few hundred MB of GPU memory per device for as long as this process lives;
NVML reads the same numbers from the driver for free. torch also cannot tell utilisation,
temperature, power or processes, so those stay None / empty. Indices follow CUDA_VISIBLE_DEVICES.
"""

from __future__ import annotations

from typing import Any

from gputui.gpus.probe import GpuSnapshot, NoGpuError


class TorchProbe:
    """Memory-only GPU snapshots through torch.cuda."""

    name = "torch"
    simulated = False

    def __init__(self) -> None:
        try:
            import torch
        except Exception as exc:  # ImportError, or OSError from a broken CUDA install
            raise NoGpuError(f"torch is not importable: {exc}") from exc
        self._torch: Any = torch
        try:
            available = torch.cuda.is_available()
            count = torch.cuda.device_count() if available else 0
        except Exception as exc:
            raise NoGpuError(f"torch.cuda failed: {exc}") from exc
        if not available:
            raise NoGpuError("torch.cuda.is_available() is False")
        if count <= 0:
            raise NoGpuError("torch.cuda reports 0 GPUs")
        self._static: list[tuple[str, str, int]] = []
        for i in range(count):
            props = torch.cuda.get_device_properties(i)
            uuid = str(getattr(props, "uuid", "") or "")
            if uuid and not uuid.startswith("GPU-"):
                uuid = f"GPU-{uuid}"  # match NVML's spelling so uuids compare across backends
            self._static.append((str(props.name), uuid, int(props.total_memory)))

    def snapshot(self) -> list[GpuSnapshot]:
        snaps = []
        for i, (name, uuid, static_total) in enumerate(self._static):
            try:
                free, total = self._torch.cuda.mem_get_info(i)
                used = int(total) - int(free)
                total = int(total)
            except Exception:
                # Unknown usage is reported as full so that nothing gets scheduled onto it.
                total = used = static_total
            snaps.append(GpuSnapshot(index=i, name=name, uuid=uuid, memory_total=total, memory_used=used))
        return snaps

    def close(self) -> None:
        """Nothing to release: torch keeps its CUDA contexts until the process exits."""
