"""What in the scheduler's GPU samples deserves an alert: GPUs our running tasks hold but leave idle, memory our
ended tasks' processes still hold, and GPUs the driver lost. Decisions only; the scheduler raises the alerts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from gputui.engine.monitor import describe_ghost, ghost_processes, gpu_processes
from gputui.gpus.probe import GpuSnapshot

IDLE_BELOW = 1.0  # percent: NVML reports whole percents, so this is "0 %"
GHOST_CHECK_S = 10.0  # looking costs a few /proc reads per GPU process: not every sample
GHOST_AFTER_S = 60.0  # a leftover the scheduler is still ending (stop_grace_s) is not a ghost yet


Running = tuple[tuple[str, int], tuple[int, ...]]


@dataclass(frozen=True)
class Finding:
    kind: str  # the alert's kind: "gpu_idle" | "ghost_memory" | "gpu_lost"
    task_id: str | None
    gpu: int
    message: str


class IdleWatch:
    """A GPU held by a running task at 0 % utilisation for `minutes`: one finding per task per idle stretch
    (the stretch ends when none of its GPUs is idle any more). A GPU that cannot tell is never idle."""

    def __init__(self, minutes: float) -> None:
        self.after = minutes * 60.0
        self.since: dict[tuple[tuple[str, int], int], float] = {}  # ((task, attempt), gpu) -> idle since
        self.told: set[tuple[str, int]] = set()

    def sample(self, snapshots: Sequence[GpuSnapshot], running: Iterable[Running], now: float) -> list[Finding]:
        """`running`: (task id, attempt number) and GPUs of each task running now (not paused)."""
        util = {g.index: g.utilization for g in snapshots}
        found, seen = [], set()
        for key, gpus in running:
            seen.add(key)
            idle = []
            for gpu in gpus:
                u = util.get(gpu)
                if u is not None and u < IDLE_BELOW:
                    idle.append((now - self.since.setdefault((key, gpu), now), gpu))
                else:
                    self.since.pop((key, gpu), None)
            if not idle:
                self.told.discard(key)
                continue
            longest, gpu = max(idle)
            if longest >= self.after and key not in self.told:
                self.told.add(key)
                message = (
                    f"GPU {gpu} of {key[0]} (attempt {key[1]}) has been at 0% utilisation for "
                    f"{longest / 60:.0f} min while the task runs"
                )
                found.append(Finding("gpu_idle", key[0], gpu, message))
        self.since = {k: v for k, v in self.since.items() if k[0] in seen}
        self.told &= seen
        return found


class GhostWatch:
    """Memory held on a GPU by a process of one of our tasks that is no longer running (see
    monitor.ghost_processes), still there GHOST_AFTER_S later: one finding per process."""

    def __init__(self, scheduler_id: str) -> None:
        self.scheduler_id = scheduler_id
        self.first_seen: dict[tuple[int, int], float] = {}  # (gpu, pid) -> when first seen
        self.told: set[tuple[int, int]] = set()
        self._checked_at = float("-inf")

    def sample(
        self, snapshots: Sequence[GpuSnapshot], task_status: Mapping[str, str], now: float
    ) -> list[Finding]:
        if now - self._checked_at < GHOST_CHECK_S:
            return []
        self._checked_at = now
        if not any(g.processes for g in snapshots):
            self.first_seen.clear()
            return []
        ghosts = ghost_processes(gpu_processes(snapshots, self.scheduler_id), task_status)
        current = {(p.gpu, p.pid): p for p in ghosts}
        self.first_seen = {k: self.first_seen.get(k, now) for k in current}
        found = []
        for k, p in current.items():
            if k not in self.told and now - self.first_seen[k] >= GHOST_AFTER_S:
                self.told.add(k)
                message = f"GPU {p.gpu}: {describe_ghost(p)}, seen for {now - self.first_seen[k]:.0f}s"
                found.append(Finding("ghost_memory", p.task_id, p.gpu, message))
        return found


class LostWatch:
    """A GPU the driver says is lost (NVML's GPU_IS_LOST: fallen off the bus, an Xid that needs a reset): one
    finding when it is first seen lost, naming the running tasks on it (each keeps running, and ends as its
    worker does: a worker that loses its GPU fails on its own), and one more if it comes back."""

    def __init__(self) -> None:
        self.lost: set[int] = set()

    def sample(self, snapshots: Sequence[GpuSnapshot], running: Iterable[Running]) -> list[Finding]:
        on: dict[int, list[str]] = {}
        for (task_id, _), gpus in running:
            for gpu in gpus:
                on.setdefault(gpu, []).append(task_id)
        found = []
        for g in snapshots:
            tasks = sorted(set(on.get(g.index, [])))
            if g.lost and g.index not in self.lost:
                self.lost.add(g.index)
                what = f"GPU {g.index} ({g.name}{', ' + g.uuid if g.uuid else ''})"
                held = f"; running on it: {', '.join(tasks)}" if tasks else ""
                message = f"{what} is lost: the driver cannot reach it (fallen off the bus?){held}"
                found.append(Finding("gpu_lost", tasks[0] if len(tasks) == 1 else None, g.index, message))
            elif not g.lost and g.index in self.lost:
                self.lost.discard(g.index)
                found.append(Finding("gpu_lost", None, g.index, f"GPU {g.index} ({g.name}) answers again"))
        return found
