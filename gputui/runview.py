"""A read-only view of a run for screens (the app, status): everything from the run directory.

Blocking (SQLite, log tails, lock probe): call `snapshot` from a thread, never from a UI loop.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from gputui.executors.journal import JournalReader
from gputui.failures import read_tail
from gputui.ownership import AttemptProcesses, ProcessRef
from gputui.progress import Progress, ProgressTracker
from gputui.records import AttemptRecord, Status, TaskRecord
from gputui.rundir import RunLock, RunPaths
from gputui.store import Store


@dataclass(frozen=True)
class TaskView:
    task: TaskRecord
    attempt: AttemptRecord | None  # the latest
    progress: Progress | None = None

    @property
    def elapsed(self) -> float | None:
        a = self.attempt
        if a is None:
            return None
        return (a.ended_at or time.time()) - a.started_at


@dataclass(frozen=True)
class RunSnapshot:
    run_dir: Path
    job_name: str
    scheduler_id: str
    scheduler_live: bool
    scheduler_pid: int | None
    tasks: list[TaskView] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    taken_at: float = 0.0

    @property
    def counts(self) -> Counter[str]:
        return Counter(v.task.status for v in self.tasks)

    def gpu_holders(self) -> dict[int, list[str]]:
        """GPU index -> ids of our tasks running (or paused) on it."""
        held: dict[int, list[str]] = {}
        for v in self.tasks:
            if v.task.status in Status.LIVE:
                for g in v.task.gpus:
                    held.setdefault(g, []).append(v.task.id)
        return held


class RunView:
    def __init__(self, run_dir: str | Path):
        self.paths = RunPaths(Path(run_dir).resolve())
        self._store: Store | None = None
        self._progress = ProgressTracker()

    @property
    def exists(self) -> bool:
        return self.paths.db.exists()

    def snapshot(self) -> RunSnapshot | None:
        if self._store is None:
            if not self.exists:
                return None
            self._store = Store.open(self.paths.db, readonly=True)
        store = self._store
        meta = store.all_meta()
        last: dict[str, AttemptRecord] = {a.task_id: a for a in store.attempts()}
        lock = RunLock(self.paths)
        live = lock.is_live()
        holder = lock.holder() if live else None
        views, keys = [], set()
        for t in store.tasks():
            a = last.get(t.id)
            progress = None
            if a is not None and t.status in Status.LIVE:
                key = (t.id, a.number)
                keys.add(key)
                progress = self._progress.update(key, read_tail(a.log_path, 4096))
            views.append(TaskView(t, a, progress))
        self._progress.forget(keys)
        return RunSnapshot(
            run_dir=self.paths.root,
            job_name=meta.get("job_name", ""),
            scheduler_id=meta.get("scheduler_id", ""),
            scheduler_live=live,
            scheduler_pid=(holder or {}).get("pid"),
            tasks=views,
            meta=meta,
            taken_at=time.time(),
        )

    def processes(self, task_ids: list[str]) -> dict[str, list[ProcessRef]]:
        """What a kill of these tasks would signal now, by ownership's rule (a /proc scan: call it from a
        thread). The journal fills in a start the scheduler has not stored yet."""
        if self._store is None:
            self.snapshot()
        journal = JournalReader(self.paths.journal)
        found: dict[str, list[ProcessRef]] = {}
        for task_id in task_ids:
            task = self._store.task(task_id) if self._store else None
            a = self._store.attempt(task_id, task.attempts) if task else None
            if a is None or a.cleared_at is not None:
                found[task_id] = []
                continue
            ends = journal.get(task_id, a.number)
            found[task_id] = AttemptProcesses(
                a.waiter or ends.waiter, a.worker or ends.worker, a.cgroup or ends.cgroup
            ).tree()
        return found

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
