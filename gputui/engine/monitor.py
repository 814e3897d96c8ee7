"""Who holds the GPUs: every GPU process with its user and command, ours marked, ghosts flagged.

Blocking (psutil reads /proc): call from a thread. Where NVML cannot see pids (a container without
the host's pid namespace), the app still attributes GPUs to our tasks through the GPUs it assigned.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import psutil

from gputui.executors.ownership import tags
from gputui.gpus.probe import GIB, GpuSnapshot
from gputui.gpus.reservations import Reservations, gpu_key, holder_text
from gputui.jobs.tasks import Status


@dataclass(frozen=True)
class GpuProcessInfo:
    gpu: int
    pid: int
    user: str
    used_memory: int | None
    command: str
    ours: bool  # launched by a gputui run (by this run, when one is open)
    task_id: str | None  # our task (of the open run, or of any gputui run when none is open)
    sm_util: float | None = None  # %SM, where NVML gives it
    cpu_percent: float | None = None  # of one core, since the previous sample (None: first sight)


class CpuSampler:
    """CPU% per process between two calls, as top shows it: psutil needs the same Process object twice."""

    def __init__(self) -> None:
        self._procs: dict[int, psutil.Process] = {}

    def percent(self, pid: int) -> float | None:
        proc = self._procs.get(pid)
        try:
            if proc is None or not proc.is_running():  # new, or the pid was reused
                self._procs[pid] = proc = psutil.Process(pid)
                proc.cpu_percent(None)
                return None
            return proc.cpu_percent(None)
        except (psutil.Error, OSError):
            self._procs.pop(pid, None)
            return None

    def forget_others(self, pids: set[int]) -> None:
        for pid in [p for p in self._procs if p not in pids]:
            del self._procs[pid]


def gpu_processes(
    snapshots: Sequence[GpuSnapshot], scheduler_id: str | None = None, cpu: CpuSampler | None = None
) -> list[GpuProcessInfo]:
    rows = []
    for g in snapshots:
        for proc in g.processes:
            user, command, sched, task = "?", "?", None, None
            try:
                p = psutil.Process(proc.pid)
                user = p.username()
                command = " ".join(p.cmdline()) or p.name()
                sched, task, _ = tags(proc.pid)
            except (psutil.Error, OSError):
                pass
            ours = sched is not None and (scheduler_id is None or sched == scheduler_id)
            rows.append(
                GpuProcessInfo(
                    g.index,
                    proc.pid,
                    user,
                    proc.used_memory,
                    command,
                    ours,
                    task if ours else None,
                    proc.sm_util,
                    cpu.percent(proc.pid) if cpu is not None else None,
                )
            )
    if cpu is not None:
        cpu.forget_others({r.pid for r in rows})
    return rows


def ghost_processes(processes: Sequence[GpuProcessInfo], task_status: Mapping[str, str]) -> list[GpuProcessInfo]:
    """Processes of our tasks still on a GPU though their task is not running (ended, or waiting again)."""
    ended = Status.FINAL | {Status.PENDING, Status.RETRYING}
    return [p for p in processes if p.task_id is not None and task_status.get(p.task_id) in ended]


def ghost_memory(processes: Sequence[GpuProcessInfo], task_status: Mapping[str, str]) -> dict[int, str]:
    """GPU index -> a warning, for memory still held by a process of one of our tasks that has ended."""
    return {p.gpu: describe_ghost(p) for p in ghost_processes(processes, task_status)}


def describe_ghost(p: GpuProcessInfo) -> str:
    held = f"{p.used_memory / GIB:.1f} GiB" if p.used_memory else "memory"
    return f"{held} held by ended task {p.task_id} (pid {p.pid})"


def reservations(snapshots: Sequence[GpuSnapshot], claims: Reservations | None = None) -> dict[int, dict]:
    """GPU index -> the note of the gputui run holding it, whoever's (user, job, run_dir, task, scheduler, pid,
    since). `claims`: the map to read (the machine's by default)."""
    keys = {gpu_key(g): g.index for g in snapshots}
    try:
        held = (claims or Reservations()).holders(list(keys))
    except OSError:
        return {}
    return {keys[key]: note for key, note in held.items()}


def held_by_other_runs(held: dict[int, dict], scheduler_id: str | None) -> dict[int, str]:
    """GPU index -> who holds it, for GPUs another gputui run holds (`held`: `reservations`), whoever's run it is:
    "held by alice: runs/sweep shard-3 since 14:02" (an older gputui's note: "run sweep (shard-3)")."""
    return {
        index: f"held by {holder_text(note)}" if note.get("user") else holder_text(note)
        for index, note in held.items()
        if note.get("scheduler_id") != scheduler_id or scheduler_id is None
    }


def simulated_holders(snapshots: Sequence[GpuSnapshot], held: dict[int, dict]) -> list[GpuProcessInfo]:
    """Rows for simulated GPUs held by a gputui run: no driver lists processes on them, so the run's
    reservation stands in (its scheduler's pid; the command says which run and task)."""
    simulated = {g.index for g in snapshots if g.simulated}
    rows = []
    for index, note in sorted(held.items()):
        if index in simulated and note.get("pid"):
            command = f"gputui run {note.get('job', '?')}: task {note.get('task') or '?'} (simulated GPU)"
            user = str(note.get("user") or "")
            rows.append(GpuProcessInfo(index, int(note["pid"]), user, None, command, True, note.get("task")))
    return rows


def draining(snapshots: Sequence[GpuSnapshot], scheduler_id: str, running: Collection[str]) -> set[int]:
    """Real GPUs not to hand to a new task yet: NVML still lists on them a process of ours whose task is not
    running (a killed trial's DataLoader worker or inference engine), or a process that has already exited
    (the driver is still releasing its memory). Simulated GPUs list only what gputui itself attributes."""
    held = set()
    for g in snapshots:
        if g.simulated:
            continue
        for proc in g.processes:
            if not psutil.pid_exists(proc.pid):
                held.add(g.index)
                continue
            sched, task, _ = tags(proc.pid)
            if sched == scheduler_id and task not in running:
                held.add(g.index)
    return held
