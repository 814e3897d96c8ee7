"""The one protocol every GPU backend speaks, and the immutable snapshots it returns.

`None` in a snapshot field means "this GPU cannot tell" (like nvitop's NA), never an exception.
Memory is in bytes; "GB" in job files means GiB.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

GIB = 1024**3


class NoGpuError(RuntimeError):
    """No backend could see a GPU; the message says why and suggests --simulate."""


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    used_memory: int | None  # bytes; None when the driver does not say
    sm_util: float | None = None  # percent of the GPU's SMs this process used lately (NVML samples)


@dataclass(frozen=True)
class GpuSnapshot:
    index: int
    name: str
    uuid: str
    memory_total: int  # bytes
    memory_used: int  # bytes
    utilization: float | None = None  # percent 0..100
    temperature: float | None = None  # Celsius
    power: float | None = None  # watts
    power_limit: float | None = None  # watts
    processes: tuple[GpuProcess, ...] = field(default_factory=tuple)
    simulated: bool = False
    where: str = ""  # a cluster's GPU: its node and index there ("node-3 GPU 1"); `index` then only orders
    # The GPU's energy counter: millijoules used since the driver loaded (NVML's total energy consumption; it
    # starts again from 0 when the driver reloads). None: this GPU has none (before Volta) or cannot tell.
    energy_mj: float | None = None
    # The driver says the GPU is lost (NVML's GPU_IS_LOST: fallen off the bus, an Xid that needs a reset): nothing
    # else about it is known, and its memory counts as full, so nothing is placed on it.
    lost: bool = False
    # A MIG instance (a slice of a GPU in MIG mode, which CUDA sees as a device of its own and gputui lists,
    # reserves and places on as one): the NVML index of the GPU it is a slice of. None: a whole GPU.
    parent: int | None = None
    # What CUDA_VISIBLE_DEVICES calls this unit where that is not `index`: a MIG instance's "MIG-..." UUID (CUDA
    # needs it: the parent's index would give a task the whole GPU, which CUDA refuses in MIG mode), or a whole
    # GPU's NVML index where MIG instances listed before it shifted `index`.
    device: str = ""

    @property
    def memory_free(self) -> int:
        return max(0, self.memory_total - self.memory_used)

    @property
    def cuda_visible(self) -> str:
        """This unit as CUDA_VISIBLE_DEVICES names it."""
        return self.device or str(self.index)


def cuda_visible_devices(gpus: Sequence[int], snapshots: Sequence[GpuSnapshot]) -> str:
    """CUDA_VISIBLE_DEVICES for a task placed on these GPU indices: each as CUDA names it (a MIG instance by its
    UUID), its index where the snapshots do not know it."""
    named = {s.index: s.cuda_visible for s in snapshots}
    return ",".join(named.get(i, str(i)) for i in gpus)


@dataclass(frozen=True)
class DriverInfo:
    """What drives the GPUs: the NVIDIA driver's version ("550.54.15") and the newest CUDA it supports ("12.4"),
    as NVML says; None where the backend cannot tell (torch) or there is no driver (simulated GPUs)."""

    version: str | None = None
    cuda: str | None = None
    simulated: bool = False

    def text(self) -> str:
        """One line for headers and `gputui gpus`: "driver 550.54.15, CUDA 12.4"."""
        if self.simulated:
            return "driver: none (simulated)"
        if self.version is None and self.cuda is None:
            return "driver: N/A"
        cuda = f", CUDA {self.cuda}" if self.cuda else ""
        return f"driver {self.version or 'N/A'}{cuda}"


def cuda_version_text(version: int | None) -> str | None:
    """12.4 of NVML's 12040 (1000 x major + 10 x minor); None for None or a nonsense value."""
    if version is None or version <= 0:
        return None
    return f"{version // 1000}.{version % 1000 // 10}"


def driver_of(probe: object) -> DriverInfo:
    """A probe's driver (its `driver` where it reads one), simulated GPUs saying they have none."""
    if getattr(probe, "simulated", False):
        return DriverInfo(simulated=True)
    found = getattr(probe, "driver", None)
    return found if isinstance(found, DriverInfo) else DriverInfo()


@runtime_checkable
class GpuProbe(Protocol):
    """A source of GPU snapshots. Implementations are blocking: never call them on a UI loop."""

    name: str  # "nvml", "torch", "simulated"
    simulated: bool

    def snapshot(self) -> list[GpuSnapshot]: ...

    def close(self) -> None: ...
