"""One line per run for `gputui ls`: its state, how far it got, when it last did something, where it is.

Read for hundreds of runs in a blink, so it reads as little as it can: the run lock (is a scheduler live?),
task counts summed by SQLite over the status index (the one query `Store.status_counts` makes, asked here
without importing the store, whose job kinds cost more to import than reading 200 runs), two meta keys, and
the modification times of the files a run writes as it moves. Nothing is written, locked or created.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gputui.jobs.tasks import Status
from gputui.rundir.paths import RunLock, RunPaths
from gputui.rundir.run_registry import Entry
from gputui.rundir.state_file import connect_readonly
from gputui.text_safety import visible

RUNNING, DETACHED, FINISHED, FAILED, STOPPED, UNREADABLE = (
    "running",  # a live scheduler holds the run
    "detached",  # no scheduler, tasks recorded as running: their workers may run on (`gputui run` re-attaches)
    "finished",  # every task done
    "failed",  # some task failed for good, or the job's rule says the run cannot succeed
    "stopped",  # no scheduler, work left (pending, retrying or killed tasks)
    "unreadable",  # its state database could not be read (see `problem`)
)
ACTIVE = frozenset({RUNNING, DETACHED})
SHOWN_COUNTS = (Status.RUNNING, Status.PAUSED, Status.RETRYING, Status.FAILED, Status.KILLED, Status.SKIPPED)
MOVING_FILES = ("state.db", "state.db-wal", "attempts.journal")  # what a run writes as it moves


@dataclass(frozen=True)
class RunRow:
    run_dir: Path
    job: str
    job_file: str | None
    state: str
    scheduler_id: str
    scheduler_pid: int | None
    created_at: float | None
    last_activity: float | None  # the latest change to the run's state or journal (epoch seconds)
    counts: Counter[str] = field(default_factory=Counter)  # tasks by status
    problem: str | None = None  # why the state could not be read

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def progress(self) -> str:
        """'37/40 done, 2 running, 1 failed': the statuses worth a look named only where some task has them."""
        if self.state == UNREADABLE:
            return "?"
        extra = [f"{self.counts[s]} {s}" for s in SHOWN_COUNTS if self.counts[s]]
        return ", ".join([f"{self.counts[Status.DONE]}/{self.total} done", *extra])

    def as_dict(self) -> dict:
        return {
            "run_dir": str(self.run_dir),
            "job": self.job or None,
            "job_file": self.job_file,
            "state": self.state,
            "scheduler_id": self.scheduler_id or None,
            "scheduler_live": self.state == RUNNING,
            "scheduler_pid": self.scheduler_pid,
            "created_at": self.created_at,
            "last_activity": self.last_activity,
            "tasks": {"total": self.total, **{s: self.counts[s] for s in Status.ALL}},
            "problem": self.problem,
        }


def read_row(entry: Entry) -> RunRow | None:
    """The run as it is now; None when its directory is gone (no state database left in it)."""
    paths = RunPaths(entry.run_dir)
    if not paths.db.is_file():
        return None
    holder = _scheduler(RunLock(paths))
    counts, job, run_failed, problem = _read_state(paths.db)
    state = UNREADABLE if problem else run_state(counts, run_failed)
    if holder is not None:
        state = RUNNING  # whatever a reader could make of its state
    pid = (holder or {}).get("pid")
    return RunRow(
        run_dir=entry.run_dir,
        job=job or entry.job,
        job_file=entry.job_file,
        state=state,
        scheduler_id=entry.scheduler_id,
        scheduler_pid=pid if isinstance(pid, int) else None,
        created_at=entry.created_at,
        last_activity=_last_change(paths.root) or entry.opened_at or None,
        counts=counts,
        problem=problem,
    )


def _read_state(db: Path) -> tuple[Counter[str], str, bool, str | None]:
    """(tasks by status, job name, whether the run cannot succeed, why the state could not be read)."""
    try:
        conn = connect_readonly(db, timeout=2.0, create_nothing=True)
        try:
            counts = Counter(dict(conn.execute("SELECT status, count(*) FROM tasks GROUP BY status").fetchall()))
            keys = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('job_name', 'run_failed')"))
        finally:
            conn.close()
        job = json.loads(keys.get("job_name") or "null")
        return counts, str(job or ""), bool(json.loads(keys.get("run_failed") or "null")), None
    except (sqlite3.Error, ValueError, OSError) as e:
        return Counter(), "", False, str(e)[:160] or type(e).__name__


def run_state(counts: Counter[str], run_failed: bool) -> str:
    """What a run no scheduler holds is: detached, failed, finished or stopped (the order they are asked in)."""
    if any(counts[s] for s in Status.LIVE):
        return DETACHED
    if run_failed or counts[Status.FAILED] or counts[Status.SKIPPED]:
        return FAILED
    if counts[Status.DONE] == sum(counts.values()):
        return FINISHED
    return STOPPED


def newest_first(rows: Iterable[RunRow]) -> list[RunRow]:
    return sorted(rows, key=lambda r: r.last_activity or 0.0, reverse=True)


def concise(rows: Sequence[RunRow], limit: int) -> tuple[list[RunRow], list[RunRow]]:
    """(listed, left out) of rows newest first: every active run, then the newest others up to `limit` in all."""
    room = max(limit - sum(r.state in ACTIVE for r in rows), 0)
    listed, left = [], []
    for r in rows:
        if r.state in ACTIVE or room > 0:
            room -= r.state not in ACTIVE
            listed.append(r)
        else:
            left.append(r)
    return listed, left


def table_lines(rows: Sequence[RunRow], now: float) -> list[str]:
    """A header and a line per run, columns aligned, the path last and whole (to be copied)."""
    cells = [("STATE", "JOB", "PROGRESS", "ACTIVE", "RUN DIR")]
    cells += [
        (r.state, visible(r.job or "?"), r.progress(), ago(r.last_activity, now), visible(str(r.run_dir)))
        for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(4)]
    return ["  ".join([*(c[i].ljust(widths[i]) for i in range(4)), c[4]]) for c in cells]


def left_out_line(left: Sequence[RunRow]) -> str:
    """'… and 180 older runs: 170 finished, 10 failed (--all lists every run)'."""
    by_state = Counter(r.state for r in left)
    parts = ", ".join(f"{n} {state}" for state, n in by_state.most_common())
    return f"… and {len(left)} older run{'s' if len(left) != 1 else ''}: {parts} (--all lists every run)"


def ago(when: float | None, now: float) -> str:
    """'12s ago', '5m ago', '3h ago', '2d ago' ('?' where nothing says when)."""
    if when is None:
        return "?"
    s = max(now - when, 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{int(s // size)}{unit} ago"
    return f"{int(s)}s ago"


def _scheduler(lock: RunLock) -> dict | None:
    """Who drives the run (its lock's note), or None when no scheduler does: a control verb that holds the lock
    for a moment, acting on a run no scheduler drives, leaves it as it is."""
    if not lock.is_live():
        return None
    holder = lock.holder() or {}
    return holder if holder.get("role", "scheduler") == "scheduler" else None


def _last_change(root: Path) -> float | None:
    times = []
    for name in MOVING_FILES:
        try:
            times.append(os.stat(root / name).st_mtime)
        except OSError:
            continue
    return max(times, default=None)
