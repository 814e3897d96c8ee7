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
    table = Table(
        title=f"{title} (SIMULATED)" if simulated and "SIMULATED" not in title else title,
        caption="SIMULATED GPUs: not real hardware" if simulated else (None if snapshots else "no GPUs"),
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
            # Text, not markup: GPU names may contain "[" characters
            Text(s.name) + Text(" LOST", style="bold red") if s.lost else Text(s.name),
            f"{_gib(s.memory_used)} / {_gib(s.memory_total)}",
            mem_pct,
            _num(s.utilization, "%"),
            _num(s.temperature, "°C"),
            _power(s),
            str(len(s.processes)),
            *([Text(holders.get(s.index, ""))] if holders else []),
        )
    return table


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
            }
            for s in snapshots
        ],
    }
