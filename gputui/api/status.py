"""A run's status read once: its tasks, their attempts, whether its scheduler is live, and the GPU totals;
what `gputui status` prints, and its `--json` form for tools."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gputui import clock
from gputui.executors.registry import recorded_executor
from gputui.files.atomic import finite_or_null, json_default
from gputui.jobs.tasks import Status, TaskRecord
from gputui.results.report import gpu_totals
from gputui.rundir.opening import open_existing
from gputui.rundir.paths import RunLock
from gputui.rundir.records import AttemptRecord
from gputui.views.kinds import ranked_by
from gputui.views.status_view import latest_attempts


@dataclass(frozen=True)
class RunStatus:
    """The run as its state said at one moment (read-only: reading it never writes or locks anything)."""

    run_dir: Path
    meta: Mapping
    tasks: list[TaskRecord]
    attempts: list[AttemptRecord]
    scheduler_live: bool
    scheduler_pid: int | None
    taken_at: float  # when it was read (`clock.now()`: attempts' elapsed times are measured to it)

    @property
    def job_name(self) -> str | None:
        return self.meta.get("job_name")

    @property
    def scheduler_id(self) -> str | None:
        return self.meta.get("scheduler_id")

    @property
    def all_done(self) -> bool:
        return all(t.status == Status.DONE for t in self.tasks)

    @property
    def metric(self) -> str | None:
        """What the run ranks its tasks by, as its kind recorded it (a sweep's metric; None for other jobs)."""
        return ranked_by(self.meta)

    def gpu_totals(self) -> dict:
        """The run's GPU-seconds (summed) and peak memory (the largest of any task), and whether simulated."""
        return gpu_totals(self.tasks)

    def spent(self) -> float:
        """Seconds from the first attempt's start to the last one's end (or to when it was read): never
        negative."""
        first, now = min((a.started_at for a in self.attempts), default=None), self.taken_at
        return max((clock.between(first, a.started_at) + a.elapsed(now) for a in self.attempts), default=0.0)

    def placed(self) -> dict[str, str]:
        """Where each live task runs on its cluster (`node:GPUs`), or that it is queued and the backend's
        word on it; empty where tasks run on this machine (the GPUs column says which)."""
        recorded = recorded_executor(self.run_dir, self.meta.get)
        if recorded.places_gpus:
            return {}
        last = latest_attempts(self.attempts)
        shown = {}
        for t in (t for t in self.tasks if t.status in Status.LIVE and t.id in last):
            a = last[t.id]
            found = recorded.placement(t.id, a.number, a.log_path)
            word = "" if found is not None else recorded.standing(t.id, a.number)
            shown[t.id] = found.shown if found is not None else (f"queued: {word}" if word else "queued")
        return shown

    def as_dict(self) -> dict:
        """What `gputui status --json` prints: the run, its GPU totals, every task with its latest log."""
        last = latest_attempts(self.attempts)
        return {
            "run_dir": str(self.run_dir),
            "job": self.job_name,
            "scheduler_id": self.scheduler_id,
            "scheduler_live": self.scheduler_live,
            "scheduler_pid": self.scheduler_pid,
            "all_done": self.all_done,
            **self.gpu_totals(),
            "tasks": [_task_json(t, last.get(t.id)) for t in self.tasks],
        }

    def to_json(self) -> str:
        """Strict JSON (a NaN metric is null), all ASCII: a reason from old state may hold C1 or bidi controls,
        which reach the terminal unless escaped (DEL too, which JSON would leave as it is)."""
        text = json.dumps(
            finite_or_null(self.as_dict()),
            indent=2,
            allow_nan=False,
            default=lambda o: finite_or_null(json_default(o)),
        )
        return text.replace("\x7f", "\\u007f")


def read_status(run_dir: str | Path) -> RunStatus:
    """Raises FileNotFoundError when `run_dir` holds no run."""
    paths, store = open_existing(run_dir, readonly=True)
    try:
        lock = RunLock(paths)
        live = lock.is_live()
        holder = (lock.holder() if live else None) or {}
        meta, tasks, attempts = store.all_meta(), store.tasks(), store.attempts()
        return RunStatus(paths.root, meta, tasks, attempts, live, holder.get("pid"), clock.now())
    finally:
        store.close()


def _task_json(t: TaskRecord, last: AttemptRecord | None) -> dict:
    """A task as `status --json` shows it: its record, its range, its latest attempt's log, its GPU figures."""
    return t.__dict__ | {
        "range": [t.low, t.high],
        "log_path": None if last is None else last.log_path,
        "duration": None if last is None or last.duration is None else round(last.duration, 3),  # latest attempt
        "gpu_hours": None if t.gpu_seconds is None else round(t.gpu_seconds / 3600, 2),
        "peak_memory_gib": None if t.peak_memory is None else round(t.peak_memory / 2**30, 2),
    }
