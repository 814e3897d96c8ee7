"""One-shot GPU views (an nvidia-smi/gpustat-like table and JSON) for `gputui gpus`-style commands.

`None` fields print as "N/A" rather than 0, so "cannot tell" never reads as "idle". Simulated
snapshots are labelled loudly, so a demo is never mistaken for real hardware.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from gputui.gpus.probe import GIB, DriverInfo, GpuSnapshot

NA = "N/A"


def _gib(nbytes: int) -> str:
    return f"{nbytes / GIB:.1f}"


def _num(value: float | None, unit: str) -> str:
    return NA if value is None else f"{value:.0f}{unit}"


def _power(s: GpuSnapshot) -> str:
    if s.power is None and s.power_limit is None:
        return NA
    if s.power_limit is None:
        return f"{s.power:.0f} W"
    return f"{_num(s.power, '')} / {s.power_limit:.0f} W"


def gpu_table(
    snapshots: Sequence[GpuSnapshot],
    *,
    title: str | None = None,
    holders: Mapping[int, str] | None = None,
    driver: DriverInfo | None = None,
) -> Table:
    """`holders`: GPU index -> who holds it (a gputui run's user, run, task and since when), shown in a last
    column where any GPU is held; `driver`: the driver's versions, said in the title."""
    simulated = any(s.simulated for s in snapshots)
    title = title or "GPUs"
    if driver is not None:
        title = f"{title} · {driver.text()}"
    caption = "SIMULATED GPUs: not real hardware" if simulated else (None if snapshots else "no GPUs")
    if said := mig_caption(snapshots):
        caption = f"{caption}\n{said}" if caption else said
    table = Table(
        title=f"{title} (SIMULATED)" if simulated and "SIMULATED" not in title else title,
        caption=caption,
        caption_style="bold yellow" if simulated else None,
        box=box.SIMPLE_HEAD,  # no vertical rules: fits 80 columns
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("Name", no_wrap=True)
    table.add_column("Memory (GiB)", justify="right", no_wrap=True)
    table.add_column("Mem %", justify="right", no_wrap=True)
    table.add_column("Util", justify="right", no_wrap=True)
    table.add_column("Temp", justify="right", no_wrap=True)
    table.add_column("Power", justify="right", no_wrap=True)
    table.add_column("Procs", justify="right", no_wrap=True)
    holders = holders or {}
    if holders:
        table.add_column("Held by")
    for s in snapshots:
        mem_pct = f"{100 * s.memory_used / s.memory_total:.0f}%" if s.memory_total > 0 else NA
        table.add_row(
            str(s.index),
            _name(s),
            f"{_gib(s.memory_used)} / {_gib(s.memory_total)}",
            mem_pct,
            _num(s.utilization, "%"),
            _num(s.temperature, "°C"),
            _power(s),
            str(len(s.processes)),
            *([Text(holders.get(s.index, ""))] if holders else []),
        )
    return table


def _name(s: GpuSnapshot) -> Text:
    # Text, not markup: GPU names may contain "[" characters
    name = Text(s.name)
    if s.parent is not None:
        name += Text(f" (MIG of GPU {s.parent})", style="dim")
    return name + Text(" LOST", style="bold red") if s.lost else name


def mig_caption(snapshots: Sequence[GpuSnapshot]) -> str | None:
    """Which GPUs are in MIG mode, listed (and given to tasks) as their MIG instances; None: none is."""
    parents = sorted({s.parent for s in snapshots if s.parent is not None})
    if not parents:
        return None
    gpus = f"GPU {parents[0]} is" if len(parents) == 1 else f"GPUs {', '.join(map(str, parents))} are"
    return (
        f"{gpus} in MIG mode: each MIG instance is listed, reserved and given to one task as a GPU of its own "
        "(CUDA_VISIBLE_DEVICES=MIG-<uuid>)"
    )


def snapshots_to_json(
    snapshots: Sequence[GpuSnapshot], backend: str, driver: DriverInfo | None = None
) -> dict[str, Any]:
    """A JSON-able dict (bytes, percent, Celsius, watts) for scripts that poll gputui. `driver_version` and
    `cuda_driver_version` ("550.54.15", "12.4") are null where not known, and for simulated GPUs."""
    driver = driver or DriverInfo()
    return {
        "backend": backend,
        "simulated": any(s.simulated for s in snapshots) or backend.lower().startswith("simulated"),
        "driver_version": driver.version,
        "cuda_driver_version": driver.cuda,
        "gpus": [
            {
                "index": s.index,
                "name": s.name,
                "uuid": s.uuid,
                "memory_total": s.memory_total,
                "memory_used": s.memory_used,
                "memory_free": s.memory_free,
                "utilization": s.utilization,
                "temperature": s.temperature,
                "power": s.power,
                "power_limit": s.power_limit,
                "energy_mj": s.energy_mj,  # the driver's energy counter since it loaded (None: not counted)
                "processes": [{"pid": p.pid, "used_memory": p.used_memory} for p in s.processes],
                "simulated": s.simulated,
                "lost": s.lost,  # the driver cannot reach it (fallen off the bus): nothing else is known
                "mig_parent": s.parent,  # a MIG instance: the (NVML) index of its GPU; null: a whole GPU
                "cuda_visible_devices": s.cuda_visible,  # what a task given it sees in CUDA_VISIBLE_DEVICES
            }
            for s in snapshots
        ],
    }
