"""This machine's GPUs and who holds them: a one-shot reading for scripts (like nvitop's `Device.all()`),
and the pieces a screen that refreshes keeps open (a probe, a CPU sampler, the GPU reservations)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gputui.engine.monitor import (
    CpuSampler,
    GpuProcessInfo,
    ghost_memory,
    gpu_processes,
    held_by_other_runs,
    reservations,
    simulated_holders,
)
from gputui.gpus.detect import describe, open_probe
from gputui.gpus.probe import GpuSnapshot
from gputui.gpus.reservations import Reservations
from gputui.gpus.simulated import TASK_MEMORY_GB
from gputui.gpus.table import gpu_table, snapshots_to_json

__all__ = [
    "TASK_MEMORY_GB",
    "CpuSampler",
    "GpuProcessInfo",
    "GpuReading",
    "Reservations",
    "describe",
    "ghost_memory",
    "gpu_processes",
    "gpus",
    "held_by_other_runs",
    "open_probe",
    "read_gpus",
    "reservations",
    "simulated_holders",
]


@dataclass(frozen=True)
class GpuReading:
    """The GPUs as read at one moment, and what read them ('NVML', 'SIMULATED (4 x 24 GB)', ...)."""

    source: str
    gpus: tuple[GpuSnapshot, ...]

    def to_json(self) -> dict[str, Any]:
        """What `gputui gpus --json` prints: bytes, percent, Celsius, watts; None where a GPU cannot tell."""
        return snapshots_to_json(self.gpus, self.source)

    def table(self):
        """What `gputui gpus` prints: a rich table, simulated GPUs labelled loudly."""
        return gpu_table(self.gpus, title=f"GPUs: {self.source}")


def read_gpus(simulate: str | None = None) -> GpuReading:
    """Probe once and close. `simulate`: None (real GPUs only; raises NoGpuError when there are none),
    "N" or "NxGB" (simulated), "auto[:NxGB]" (simulated only when no real GPU can be probed)."""
    probe = open_probe(simulate)
    try:
        return GpuReading(describe(probe), tuple(probe.snapshot()))
    finally:
        probe.close()


def gpus(simulate: str | None = None) -> list[GpuSnapshot]:
    """This machine's GPUs now (immutable snapshots: memory, utilisation, temperature, power, processes)."""
    return list(read_gpus(simulate).gpus)
