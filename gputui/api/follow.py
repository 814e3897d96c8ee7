"""A task's log read, or followed as it grows, and a wait for tasks to end: what `gputui log [-f]` and
`gputui wait` do (pueue's `log`/`follow`/`wait`, `tail -f slurm-N.out`, `sbatch --wait`), for scripts too.

Both only read: the state through a read-only connection, the logs through the one reader of growing files
(`files.tail.LogTail`), the run lock through a shared probe (as `gputui status` says whether the scheduler is
live). A log's lines come raw, as the worker wrote them: `LogEvent.shown` is what a terminal may be sent.

`wait` polls cheaply however many tasks the run has: each poll asks SQLite for the counts by status (the
status index, no row read), and reads task ids only when the count of ended tasks changed.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gputui.api.errors import NoSuchAttempt, UnknownTask
from gputui.files.tail import LogTail
from gputui.jobs.tasks import Status, TaskRecord
from gputui.rundir.opening import open_existing
from gputui.rundir.paths import RunLock, RunPaths
from gputui.rundir.records import AttemptRecord
from gputui.rundir.store import Store
from gputui.text_safety import log_line, one_line

POLL = 0.25  # seconds between two looks at a log caught up with, or at the run's state
GONE_AFTER = 2.0  # seconds the run lock must stay free before its scheduler is said to have stopped
TIMED_OUT = 124  # `wait`'s exit status at its timeout, as timeout(1)'s


class NotStarted(LookupError):
    """The task has no attempt yet, so no log."""


@dataclass(frozen=True)
class LogEvent:
    """One thing `follow_log` says: a line of the log (`kind` "line"), that it moved on to the next attempt's
    log ("attempt"), or that it ended ("end": `status` is the task's final status, or None when the task
    cannot end because the run's scheduler has stopped)."""

    kind: str
    text: str
    attempt: int
    status: str | None = None

    def shown(self, *, colour: bool) -> str:
        """The text as a terminal may be sent it: a line as its log pane shows it (colours at most, reset at
        its end), a note with every control character visible."""
        if self.kind != "line":
            return one_line(self.text)
        shown = log_line(self.text, colour=colour)
        return shown + "\x1b[0m" if "\x1b" in shown else shown


def follow_log(
    run_dir: str | Path,
    task_id: str,
    *,
    attempt: int | None = None,
    follow: bool = False,
    poll: float = POLL,
) -> Iterator[LogEvent]:
    """The task's log, line by line: its latest attempt's, or attempt number `attempt`'s. `follow`: go on as it
    grows, onto the next attempt's log when the task is retried (unless `attempt` names one), until the task
    ends for good (or that attempt ends), or its scheduler stops with the task unfinished; the last event is
    then an "end". Raises UnknownTask, NoSuchAttempt, NotStarted (no attempt yet, and not following), and
    FileNotFoundError when `run_dir` holds no run."""
    paths, store = open_existing(run_dir, readonly=True)
    try:
        task = _task(store, task_id)
        attempts = store.attempts(task_id)
        if attempt is not None and not any(a.number == attempt for a in attempts):
            have = f"attempts 1 to {len(attempts)}" if attempts else "no attempt yet"
            raise NoSuchAttempt(f"{task_id} has no attempt {attempt} (it has {have})")
        if not attempts and not follow:
            raise NotStarted(f"{task_id} has not started yet ({task.status}): it has no log")
        yield from _Follower(paths, store, task_id, attempt, follow, poll).events(attempts)
    finally:
        store.close()


def read_log(path: str | Path) -> Iterator[str]:
    """Every line of a log file as it is now, read in bounded steps (a log of any size), raw."""
    tail = LogTail(path)
    yield from _drain(tail)


def _drain(tail: LogTail) -> Iterator[str]:
    """What the file holds now, its unended last line too."""
    while True:
        before = tail.offset
        yield from tail.read_lines()
        if tail.offset == before:
            break
    yield from tail.read_lines(flush=True)


class _Follower:
    def __init__(
        self, paths: RunPaths, store: Store, task_id: str, fixed: int | None, follow: bool, poll: float
    ) -> None:
        self.store, self.task_id, self.fixed, self.follow, self.poll = store, task_id, fixed, follow, poll
        self.root = paths.root
        self.live = _Liveness(RunLock(paths))

    def events(self, attempts: list[AttemptRecord]) -> Iterator[LogEvent]:
        current = self._first(attempts)
        if current is None:  # following a task not started yet
            task = _task(self.store, self.task_id)
            yield LogEvent("attempt", f"{self.task_id} is {task.status}: waiting for its first attempt", 0)
            while current is None:
                if (end := self._settled(None)) is not None:
                    yield end
                    return
                time.sleep(self.poll)
                current = self._first(self.store.attempts(self.task_id))
            started = f"{self.task_id} attempt {current.number} started: {current.log_path}"
            yield LogEvent("attempt", started, current.number)
        tail = LogTail(current.log_path)
        while True:
            before = tail.offset
            for line in tail.read_lines():
                yield LogEvent("line", line, current.number)
            if tail.offset != before:
                continue  # more may be there already
            if not self.follow:
                yield from (LogEvent("line", line, current.number) for line in tail.read_lines(flush=True))
                return
            nxt = None if self.fixed is not None else self._after(current.number)
            if nxt is not None:
                yield from (LogEvent("line", line, current.number) for line in _drain(tail))
                ended = self.store.attempt(self.task_id, current.number) or current
                yield LogEvent(
                    "attempt",
                    f"{self.task_id} attempt {current.number} {_ended(ended)}; following attempt {nxt.number}: "
                    f"{nxt.log_path}",
                    nxt.number,
                )
                current, tail = nxt, LogTail(nxt.log_path)
                continue
            end = self._settled(current.number)
            if end is not None:
                yield from (LogEvent("line", line, current.number) for line in _drain(tail))
                yield end
                return
            time.sleep(self.poll)

    def _first(self, attempts: list[AttemptRecord]) -> AttemptRecord | None:
        if self.fixed is not None:
            return next(a for a in attempts if a.number == self.fixed)
        return attempts[-1] if attempts else None

    def _after(self, number: int) -> AttemptRecord | None:
        latest = self.store.attempts(self.task_id)
        return latest[-1] if latest and latest[-1].number > number else None

    def _settled(self, number: int | None) -> LogEvent | None:
        """The end, when the followed attempt (`fixed`) or the task has ended for good, or cannot end."""
        task = _task(self.store, self.task_id)
        if self.fixed is not None and number is not None:
            a = self.store.attempt(self.task_id, number)
            if a is not None and a.ended_at is not None:
                status = a.status if a.status in Status.FINAL else Status.FAILED
                return LogEvent("end", f"{self.task_id} attempt {number} {_ended(a)}", number, status)
        elif task.status in Status.FINAL and (number is None or number >= task.attempts):
            return LogEvent("end", f"{self.task_id} {_task_ended(task)}", number or 0, task.status)
        if self.live.gone():
            return LogEvent(
                "end",
                f"{self.task_id} is {task.status} but the run's scheduler is not running, so it will not end: "
                f"start it again with `gputui run --run-dir {self.root}`",
                number or 0,
                None,
            )
        return None


@dataclass(frozen=True)
class TaskEnd:
    """A task found ended by `wait`."""

    id: str
    status: str
    exit_code: int | None
    reason: str | None

    def line(self) -> str:
        """`shard-1 failed (exit 3): its reason`, safe to print."""
        code = f" (exit {self.exit_code})" if self.exit_code not in (None, 0) else ""
        why = f": {one_line(self.reason)}" if self.reason and self.status != Status.DONE else ""
        return f"{one_line(self.id)} {self.status}{code}{why}"


@dataclass(frozen=True)
class WaitOutcome:
    """How `wait` ended: `code` is its exit status (0 every task waited for is done, 1 some ended otherwise or
    cannot end, 124 timed out); `counts`: the tasks waited for, by status, at the end."""

    code: int
    counts: Counter[str] = field(default_factory=Counter)
    timed_out: bool = False
    stalled: bool = False  # the run's scheduler is not running and some task waited for is unfinished
    message: str = ""


def wait(
    run_dir: str | Path,
    task_ids: Sequence[str] | None = None,
    *,
    timeout: float | None = None,
    poll: float = 0.5,
    on_end: Callable[[TaskEnd], None] | None = None,
    on_start: Callable[[str], None] | None = None,
) -> WaitOutcome:
    """Until the tasks named (None: every task of the run) are final (done, failed, killed or skipped), the
    run's scheduler is found stopped with some unfinished, or `timeout` seconds have passed. `on_end` is told of
    each task as it ends (and of the named ones already ended); `on_start`, once the first look found some
    unfinished, of what it is waiting for. Raises UnknownTask, FileNotFoundError."""
    paths, store = open_existing(run_dir, readonly=True)
    try:
        named = list(dict.fromkeys(task_ids)) if task_ids else None
        if named:
            found = {r[0] for r in _rows(store, "SELECT id FROM tasks WHERE id IN ({})", named)}
            for task_id in named:
                if task_id not in found:
                    _task(store, task_id)  # raises UnknownTask
        live = _Liveness(RunLock(paths))
        deadline = None if timeout is None else time.monotonic() + timeout
        ended: dict[str, str] | None = None  # task id -> final status, as last read
        last_counts: Counter[str] | None = None
        while True:
            with store.snapshot():  # the counts and the ids of one moment
                if named:
                    statuses = dict(_rows(store, "SELECT id, status FROM tasks WHERE id IN ({})", named))
                    counts = Counter(statuses.values())
                    now_final = {i: s for i, s in statuses.items() if s in Status.FINAL}
                else:
                    counts = store.status_counts()
                    now_final = None
                    if counts != last_counts and on_end is not None:  # read ids only when something changed
                        marks = ",".join("?" * len(Status.FINAL))
                        query = f"SELECT id, status FROM tasks WHERE status IN ({marks})"
                        now_final = dict(store.read(query, tuple(Status.FINAL)).fetchall())
                    last_counts = counts
                new_ends: list[TaskEnd] = []
                if now_final is not None and on_end is not None:
                    report_all = ended is not None or named is not None  # every task: not those ended before
                    new = [i for i, s in now_final.items() if (ended or {}).get(i) != s] if report_all else []
                    new_ends = _ends(store, new)
                    ended = now_final
            for end in new_ends:
                on_end(end)
            total = sum(counts.values())
            unfinished = total - sum(n for s, n in counts.items() if s in Status.FINAL)
            if not unfinished:
                done = counts[Status.DONE] == total
                return WaitOutcome(0 if done else 1, counts, message=_tally(counts))
            if on_start is not None:
                on_start(f"waiting for {unfinished} of {total} task(s): {_tally(counts)}")
                on_start = None
            if live.gone():
                return WaitOutcome(
                    1,
                    counts,
                    stalled=True,
                    message=f"the run's scheduler is not running: {unfinished} of {total} task(s) unfinished "
                    f"will not end until it is started again (`gputui run --run-dir {paths.root}`); "
                    f"{_tally(counts)}",
                )
            if deadline is not None and time.monotonic() >= deadline:
                return WaitOutcome(
                    TIMED_OUT,
                    counts,
                    timed_out=True,
                    message=f"timed out after {timeout:g}s with {unfinished} of {total} task(s) unfinished; "
                    f"{_tally(counts)}",
                )
            pause = poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic()))
            time.sleep(pause)
    finally:
        store.close()


class _Liveness:
    """Whether the run's scheduler has stopped: the run lock free on every look for GONE_AFTER seconds (a
    scheduler starting or between two holders is not taken for a stopped one)."""

    def __init__(self, lock: RunLock) -> None:
        self.lock = lock
        self.free_since: float | None = None

    def gone(self) -> bool:
        if self.lock.is_live():
            self.free_since = None
            return False
        now = time.monotonic()
        if self.free_since is None:
            self.free_since = now
        return now - self.free_since >= GONE_AFTER


def _task(store: Store, task_id: str) -> TaskRecord:
    task = store.task(task_id)
    if task is None:
        count = store.task_count()
        first = [t.id for t in store.tasks_page(limit=3)]
        some = ", ".join(first) + (", ..." if count > len(first) else "")
        raise UnknownTask(
            f"no task {one_line(task_id)!r} in this run; it has {count} task(s) ({some}): "
            "`gputui status --run-dir DIR --all` lists them"
        )
    return task


def _rows(store: Store, query: str, ids: Collection[str]) -> list:
    ids, rows = list(ids), []
    for i in range(0, len(ids), 500):
        part = ids[i : i + 500]
        rows += store.read(query.format(",".join("?" * len(part))), part).fetchall()
    return rows


def _ends(store: Store, ids: list[str]) -> list[TaskEnd]:
    query = "SELECT id, status, exit_code, reason, idx FROM tasks WHERE id IN ({})"
    rows = sorted(_rows(store, query, ids), key=lambda r: r[4])
    return [TaskEnd(r[0], r[1], r[2], r[3]) for r in rows]


def _ended(a: AttemptRecord) -> str:
    code = f", exit {a.exit_code}" if a.exit_code is not None else ""
    return f"ended ({a.status}{code})"


def _task_ended(task: TaskRecord) -> str:
    code = f" (exit {task.exit_code})" if task.exit_code not in (None, 0) else ""
    why = f": {task.reason}" if task.reason and task.status != Status.DONE else ""
    return f"{task.status}{code}{why}"


def _tally(counts: Counter[str]) -> str:
    total = sum(counts.values())
    words = [f"{n} {s}" for s in Status.ALL if (n := counts.get(s)) and s != Status.DONE]
    return ", ".join([f"{counts.get(Status.DONE, 0)}/{total} done", *words])
