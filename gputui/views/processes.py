"""A task's processes as a tree (worker, its children, daemons in its cgroup), with what each uses.

Only processes ownership's rule attributes to the task are listed (see `RunView.processes`); a process
whose parent is not among them is a root (a daemon that left the worker's tree, found in the cgroup).
Blocking (/proc): call from a thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import psutil

from gputui.engine.monitor import CpuSampler
from gputui.executors.ownership import ProcessRef
from gputui.text_safety import visible


@dataclass(frozen=True)
class TreeRow:
    depth: int
    pid: int
    command: str
    cpu_percent: float | None
    rss: int | None  # bytes
    gpu_memory: int | None  # bytes on GPUs, where the driver lists the pid


def process_tree(
    refs: Sequence[ProcessRef], gpu_memory: Mapping[int, int], cpu: CpuSampler | None = None
) -> list[TreeRow]:
    """Rows parents first, children indented under them (depth), in start order."""
    info: dict[int, tuple[int, str, int | None]] = {}
    for ref in refs:
        try:
            p = psutil.Process(ref.pid)
            with p.oneshot():
                command = visible(" ".join(p.cmdline()) or p.name())  # a worker may rewrite its argv
                info[ref.pid] = (p.ppid(), command, p.memory_info().rss)
        except (psutil.Error, OSError):
            continue
    children: dict[int, list[int]] = {}
    roots = []
    for pid in (r.pid for r in refs if r.pid in info):
        parent = info[pid][0]
        (children.setdefault(parent, []) if parent in info else roots).append(pid)
    rows: list[TreeRow] = []

    def walk(pid: int, depth: int) -> None:
        _, command, rss = info[pid]
        percent = cpu.percent(pid) if cpu is not None else None
        rows.append(TreeRow(depth, pid, command, percent, rss, gpu_memory.get(pid)))
        for child in children.get(pid, []):
            walk(child, depth + 1)

    for pid in roots:
        walk(pid, 0)
    return rows
