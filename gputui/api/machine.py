"""This machine's GPUs and who holds them: a one-shot reading for scripts (like nvitop's `Device.all()`),
and the pieces a screen that refreshes keeps open (a probe, a CPU sampler, the GPU reservations)."""

from __future__ import annotations

from dataclasses import dataclass, field
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
from gputui.gpus.checkpoint import Verdict as PauseVerdict  # noqa: F401 - for the app's `p`
from gputui.gpus.checkpoint import verdict as pause_verdict  # noqa: F401 - whether a pause can free GPU memory
from gputui.gpus.detect import describe, open_probe
from gputui.gpus.probe import DriverInfo, GpuSnapshot, driver_of
from gputui.gpus.reservations import Reservations, holder_text
from gputui.gpus.simulated import TASK_MEMORY_GB
from gputui.gpus.table import gpu_table, snapshots_to_json
from gputui.jobs.box_policy import read_box_policy
from gputui.jobs.spec import JobSpecError

__all__ = [
    "TASK_MEMORY_GB",
    "CpuSampler",
    "GpuProcessInfo",
    "GpuReading",
    "Reservations",
    "describe",
    "driver_of",
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
    held: dict[int, dict] = field(default_factory=dict)  # GPU index -> the note of the gputui run holding it
    kept: frozenset[int] = frozenset()  # GPUs the box policy keeps for interactive use
    driver: DriverInfo = DriverInfo()  # the NVIDIA driver's version and its CUDA's (none: simulated GPUs)

    def to_json(self) -> dict[str, Any]:
        """What `gputui gpus --json` prints: bytes, percent, Celsius, watts; None where a GPU cannot tell; who
        holds each GPU (`held_by`: the note of the gputui run holding it, whoever's, or null)."""
        found = snapshots_to_json(self.gpus, self.source, self.driver)
        for gpu in found["gpus"]:
            gpu["held_by"] = self.held.get(gpu["index"])
            gpu["reserved_by_policy"] = gpu["index"] in self.kept
        return found

    def holders(self) -> dict[int, str]:
        """GPU index -> who holds it ("alice: runs/sweep shard-3 since 14:02"), or that the policy keeps it."""
        said = {i: "reserved for interactive use by policy" for i in self.kept}
        return said | {i: holder_text(note) for i, note in self.held.items()}

    def table(self):
        """What `gputui gpus` prints: a rich table, simulated GPUs labelled loudly, who holds each GPU."""
        return gpu_table(self.gpus, title=f"GPUs: {self.source}", holders=self.holders(), driver=self.driver)


def read_gpus(simulate: str | None = None) -> GpuReading:
    """Probe once and close. `simulate`: None (real GPUs only; raises NoGpuError when there are none),
    "N" or "NxGB" (simulated), "auto[:NxGB]" (simulated only when no real GPU can be probed)."""
    probe = open_probe(simulate)
    try:
        snaps = tuple(probe.snapshot())
        claims = Reservations.for_probe(probe, None)  # (private simulated GPUs: nobody else's)
        held = reservations(snaps, claims) if claims is not None else {}
        try:
            kept = read_box_policy().reserved_gpus
        except JobSpecError:
            kept = frozenset()  # (a broken policy refuses runs; it does not hide the GPUs)
        return GpuReading(describe(probe), snaps, held, kept, driver_of(probe))
    finally:
        probe.close()


def gpus(simulate: str | None = None) -> list[GpuSnapshot]:
    """This machine's GPUs now (immutable snapshots: memory, utilisation, temperature, power, processes)."""
    return list(read_gpus(simulate).gpus)
