"""A read-only view of a run for screens (the app, status): everything from the run directory.

Blocking (SQLite, log tails, lock probe): call `snapshot` from a thread, never from a UI loop.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from gputui.engine.alerts import AlertReader
from gputui.engine.failures import read_tail
from gputui.engine.records import AttemptRecord
from gputui.engine.rundir import RunLock, RunPaths
from gputui.engine.store import Store
from gputui.executors.journal import JournalReader
from gputui.executors.ownership import AttemptProcesses, ProcessRef
from gputui.jobs.tasks import Status, TaskRecord
from gputui.views.progress import Progress, ProgressTracker


@dataclass(frozen=True)
class TaskView:
    task: TaskRecord
    attempt: AttemptRecord | None  # the latest
    progress: Progress | None = None
    history: tuple[AttemptRecord, ...] = ()  # every attempt, oldest first (the latest included)

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
    tasks: list[TaskView] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    taken_at: float = 0.0
    alerts: list[dict] = field(default_factory=list)  # appended to alerts.jsonl since the last snapshot
    active_s: float = 0.0  # how long the run has been running, as of `taken_at` (see `active_seconds`)

    @property
    def counts(self) -> Counter[str]:
        return Counter(v.task.status for v in self.tasks)

    @property
    def finished(self) -> bool:
        return bool(self.tasks) and all(v.task.status in Status.FINAL for v in self.tasks)

    def elapsed(self, now: float) -> float:
        """Running time at `now`: it moves only while the run is active (scheduler live, work left)."""
        moving = self.scheduler_live and not self.finished
        return self.active_s + (max(0.0, now - self.taken_at) if moving else 0.0)

    def gpu_holders(self) -> dict[int, list[str]]:
        """GPU index -> ids of our tasks running (or paused) on it."""
        held: dict[int, list[str]] = {}
        for v in self.tasks:
            if v.task.status in Status.LIVE:
                for g in v.task.gpus:
                    held.setdefault(g, []).append(v.task.id)
        return held


def attempt_spans(views: list[TaskView], now: float, bridge_s: float) -> list[tuple[float, float]]:
    """When each task was being worked on: its attempts, and the back-off between an attempt that
    failed and the automatic retry that followed (within `bridge_s`; a later retry by hand is not)."""
    spans = []
    for v in views:
        previous = None
        for a in v.history:
            end = a.ended_at if a.ended_at is not None else now
            start = a.started_at
            retried = previous is not None and previous.status in (Status.FAILED, Status.LOST)
            if retried and previous.ended_at and 0 <= start - previous.ended_at <= bridge_s:
                start = previous.ended_at
            spans.append((start, end))
            previous = a
    return spans


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def union_length(spans: list[tuple[float, float]]) -> float:
    """Total length covered by the spans, overlaps counted once: idle time between launches is not."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


@dataclass(frozen=True)
class Outlook:
    """The whole job's progress: work in ids (or tasks, when workers count something else)."""

    done: float
    total: float
    rate: float | None  # per second, summed over running tasks
    eta: float | None


def outlook(views: list[TaskView]) -> Outlook:
    """Overall rate and ETA. Each task's progress is weighted by its size (ids in its range), so
    workers counting rows, batches or steps add up; tasks with no progress line count as not started."""
    done = total = rate = 0.0
    measured = False
    for v in views:
        size = max(1, v.task.count)
        total += size
        p = v.progress
        if v.task.status == Status.DONE:
            done += size
        elif p is not None and p.total > 0:
            done += size * p.fraction
            if p.rate and v.task.status == Status.RUNNING:
                rate += size * p.rate / p.total
                measured = True
    left = total - done
    eta = left / rate if measured and rate > 0 else None
    return Outlook(done, total, rate if measured else None, eta)


class RunView:
    def __init__(self, run_dir: str | Path):
        self.paths = RunPaths(Path(run_dir).resolve())
        self._store: Store | None = None
        self._progress = ProgressTracker()
        self._alerts = AlertReader(self.paths.alerts, from_end=True)  # what happened before we looked is old
        self._tails: dict[str, tuple[tuple[int, int], str]] = {}
        self._state: tuple[dict, list[TaskRecord], dict[str, list[AttemptRecord]]] | None = None
        self._state_stamp: tuple = ()
        self._state_at = 0.0

    @property
    def exists(self) -> bool:
        return self.paths.db.exists()

    def snapshot(self) -> RunSnapshot | None:
        if self._store is None:
            if not self.exists:
                return None
            self._store = Store.open(self.paths.db, readonly=True)
        meta, tasks, history = self._read_state()
        live = RunLock(self.paths).is_live()
        views, keys = [], set()
        for t in tasks:
            attempts = tuple(sorted(history.get(t.id, ()), key=lambda a: a.number))
            a = attempts[-1] if attempts else None
            progress = None
            if a is not None and t.status in Status.LIVE:
                key = (t.id, a.number)
                keys.add(key)
                tail = self._tail(a.log_path)
                progress = self._progress.update(key, tail, paused=t.status == Status.PAUSED)
            views.append(TaskView(t, a, progress, attempts))
        self._progress.forget(keys)
        live_logs = {v.attempt.log_path for v in views if v.attempt is not None}
        self._tails = {path: tail for path, tail in self._tails.items() if path in live_logs}
        now = time.time()
        spans = attempt_spans(views, now, bridge_s=float(meta.get("backoff_max_s") or 300.0) + 5.0)
        if live and not all(v.task.status in Status.FINAL for v in views):
            spans.append((max((e for _, e in spans), default=now), now))  # waiting for GPUs or a retry
        return RunSnapshot(
            run_dir=self.paths.root,
            job_name=meta.get("job_name", ""),
            scheduler_id=meta.get("scheduler_id", ""),
            scheduler_live=live,
            tasks=views,
            meta=meta,
            taken_at=now,
            alerts=self._alerts.new(),
            active_s=union_length(spans),
        )

    def _read_state(self) -> tuple[dict, list[TaskRecord], dict[str, list[AttemptRecord]]]:
        """Meta, tasks and attempts by task; read again only when the database or its WAL changed (two
        stats instead of three queries, for a run that is idle or between commits), or every 10 s."""
        stamp = tuple(_stamp(p) for p in (self.paths.db, Path(f"{self.paths.db}-wal")))
        now = time.monotonic()
        if self._state is None or stamp != self._state_stamp or now - self._state_at >= 10.0:
            store = self._store
            history: dict[str, list[AttemptRecord]] = {}
            for a in store.attempts():
                history.setdefault(a.task_id, []).append(a)
            self._state = (store.all_meta(), store.tasks(), history)
            self._state_stamp, self._state_at = stamp, now
        return self._state

    def _tail(self, log_path: str) -> str:
        """The end of a log, read again only when the log changed (a stat, not a read, per quiet log)."""
        try:
            st = os.stat(log_path)
        except OSError:
            return ""
        stamp = (st.st_size, st.st_mtime_ns)
        cached = self._tails.get(log_path)
        if cached is None or cached[0] != stamp:
            cached = self._tails[log_path] = (stamp, read_tail(log_path, 4096))
        return cached[1]

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
        self._state = None
        if self._store is not None:
            self._store.close()
            self._store = None
