"""GPU probing behind one protocol: NVML, a torch fallback, and a simulated backend."""

from gputui.gpus.probe import GIB, GpuProbe, GpuProcess, GpuSnapshot, NoGpuError

__all__ = ["GIB", "GpuProbe", "GpuProcess", "GpuSnapshot", "NoGpuError"]
