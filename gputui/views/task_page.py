"""The job table's rows a page at a time, over the run's store: a run of 100,000 tasks is shown by counting
what a filter and a sort give and reading the few hundred tasks around what is on screen, never every task (the
order's segments: rundir/task_order.py). Before launch the same pages come from the job's plan (`plan_page`),
nothing stored.

`TaskPages` has its own read-only connection, so a key's page is read in a thread while a refresh reads the
rest of the run in another; each page from one snapshot of the store. Counts are read again once the store
changed (SQLite's data_version), the tasks ever started sorted by elapsed time once a second at most.
"""

from __future__ import annotations

import threading
import time
from array import array
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from gputui.jobs.tasks import Status, TaskRecord
from gputui.rundir import task_order
from gputui.rundir.records import AttemptRecord
from gputui.rundir.store import Store
from gputui.rundir.task_order import Segment
from gputui.views.runview import PlanTasks, TaskView

FILTERS: dict[str, tuple[str, ...] | None] = {  # what each view of the table shows (None: every task)
    "all": None,
    "active": (Status.RUNNING, Status.PAUSED, Status.RETRYING),
    "failed": (Status.FAILED, Status.KILLED, Status.RETRYING, Status.SKIPPED),
    "done": (Status.DONE,),
    "pending": (Status.PENDING, Status.RETRYING),
}
SORTS = ("id", "status", "elapsed")
STATUS_ORDER = (  # the status sort: what needs a look first
    Status.FAILED,
    Status.RETRYING,
    Status.RUNNING,
    Status.PAUSED,
    Status.PENDING,
    Status.KILLED,
    Status.SKIPPED,
    Status.DONE,
)


@dataclass(frozen=True)
class TableQuery:
    """Which rows the table shows, and in what order."""

    filter: str = "all"
    sort: str = "id"


@dataclass(frozen=True)
class TableWindow:
    """The rows a table wants (`limit` from `offset`), with its selected task and the cursor's row."""

    query: TableQuery = TableQuery()
    offset: int = 0
    limit: int = 400
    selected: str | None = None
    cursor: int | None = None


@dataclass(frozen=True)
class TaskPage:
    """Rows `offset` on of the `total` the window's query shows. `selected_at`: its selected task's row in
    this order (None: not shown); `statuses`: the status of each task a row waits for (a step's `after`)."""

    window: TableWindow
    total: int
    offset: int
    views: tuple[TaskView, ...]
    selected_at: int | None = None
    statuses: Mapping[str, str] = field(default_factory=dict)

    @property
    def query(self) -> TableQuery:
        return self.window.query

    @property
    def ids(self) -> list[str]:
        return [v.task.id for v in self.views]


class TaskPages:
    """Pages of a run's task table, read from any thread (one at a time), each from one snapshot of the store."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self._store: Store | None = None
        self._lock = threading.Lock()
        self._version: int | None = None  # the store's data_version the counts below were read at
        self._counts: dict[Segment, int] = {}
        self._started: tuple[tuple, array] | None = None  # ((filter, version, second), started tasks by elapsed)

    def read(self, window: TableWindow) -> TaskPage:
        """The window's rows in its query's order now; rows around its selected task instead where that
        moved away from the cursor's row, out of them (the cursor follows it)."""
        offset, limit, selected = window.offset, max(1, window.limit), window.selected
        with self._lock, self._snapshot() as store:
            parts = self._parts(store, window.query)
            total = sum(n for _, n in parts)
            at = self._place(store, parts, task_order.rowid_of(store, selected) if selected else None)
            if at is not None and at != window.cursor and not offset <= at < offset + limit:
                offset = at - limit // 2
            offset = max(0, min(offset, total - limit))
            tasks = task_order.tasks_at(store, self._rows(store, parts, offset, limit))
            history = store.attempts_of([t.id for t in tasks])
            views = tuple(_view(t, history.get(t.id, ())) for t in tasks)
            waits = {d for t in tasks for d in t.after}
            statuses = task_order.statuses_of(store, waits) if waits else {}
            return TaskPage(window, total, offset, views, at, statuses)

    def statuses(self, task_ids: list[str]) -> dict[str, str]:
        with self._lock:
            return task_order.statuses_of(self._open(), task_ids)

    def ids(self, statuses: Sequence[str]) -> list[str]:
        """Ids of the tasks in these statuses, in plan order."""
        with self._lock:
            return task_order.ids_where(self._open(), statuses)

    def unfinished(self) -> tuple[list[str], list[str]]:
        """(ids of every task not finished, those of them ever tried)."""
        unfinished = [s for s in Status.ALL if s not in Status.FINAL]
        with self._lock, self._snapshot() as store:
            return task_order.ids_where(store, unfinished), task_order.ids_where(store, unfinished, tried=True)

    def _open(self) -> Store:
        if self._store is None:
            self._store = Store.open(self.db, readonly=True)
        return self._store

    @contextmanager
    def _snapshot(self) -> Iterator[Store]:
        """One read transaction: counts, ranks and rows all of one commit."""
        store = self._open()
        store.read("BEGIN")
        try:
            yield store
        finally:
            store.read("COMMIT")

    def _parts(self, store: Store, query: TableQuery) -> list[tuple[Segment | array, int]]:
        """The query's order as segments, each with how many rows it has (counted once per commit)."""
        version = task_order.data_version(store)
        if version != self._version:
            self._version, self._counts = version, {}
        statuses = FILTERS.get(query.filter)
        if query.sort == "status":
            ranked = [s for s in STATUS_ORDER if statuses is None or s in statuses]
            parts: list = [Segment.of([s]) for s in ranked]
            if statuses is None:  # a status of none of those (from a later gputui)
                parts.append(Segment(f"t.status NOT IN ({','.join('?' * len(ranked))})", tuple(ranked)))
        elif query.sort == "elapsed":
            key = (query.filter, version, int(time.monotonic()))  # elapsed moves without a commit: each second
            if self._started is None or self._started[0] != key:
                self._started = key, task_order.by_elapsed(store, statuses, time.time())
            parts = [self._started[1], Segment.of(statuses, unstarted=True)]
        else:
            parts = [Segment.of(statuses)]
        return [(part, len(part) if isinstance(part, array) else self._count(store, part)) for part in parts]

    def _count(self, store: Store, segment: Segment) -> int:
        if segment not in self._counts:
            self._counts[segment] = task_order.count(store, segment)
        return self._counts[segment]

    def _place(self, store: Store, parts: list[tuple[Segment | array, int]], rowid: int | None) -> int | None:
        """The row's place in the order (None: not in it)."""
        if rowid is None:
            return None
        before = 0
        for part, n in parts:
            rank = _index(part, rowid) if isinstance(part, array) else task_order.rank_in(store, part, rowid)
            if rank is not None:
                return before + rank
            before += n
        return None

    def _rows(self, store: Store, parts: list[tuple[Segment | array, int]], offset: int, limit: int) -> list[int]:
        """Row ids `offset` to `offset + limit` of the order, from the segments they fall in."""
        rows: list[int] = []
        for part, n in parts:
            if offset < n and len(rows) < limit:
                want = min(limit - len(rows), n - offset)
                got = part[offset : offset + want] if isinstance(part, array) else None
                rows += list(got) if got is not None else task_order.rows_of(store, part, offset, want)
            offset = max(0, offset - n)
        return rows

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None
            self._counts, self._started = {}, None


def plan_page(tasks: PlanTasks, window: TableWindow) -> TaskPage:
    """The window's rows of a plan before launch, as `TaskPages.read` gives a run's: every task is pending and
    none started, so a filter shows every task or none, and every sort is launch order (ties by index)."""
    statuses = FILTERS.get(window.query.filter)
    total = len(tasks) if statuses is None or Status.PENDING in statuses else 0
    offset, limit, selected, cursor = window.offset, max(1, window.limit), window.selected, window.cursor
    at = None
    if selected is not None and total:
        held = tasks.in_order(cursor, cursor + 1) if cursor is not None and 0 <= cursor < total else []
        at = cursor if held and held[0].task.id == selected else tasks.position(selected)
    if at is not None and at != cursor and not offset <= at < offset + limit:
        offset = at - limit // 2
    offset = max(0, min(offset, total - limit))
    views = tuple(tasks.in_order(offset, min(total, offset + limit)))
    waits = {d: Status.PENDING for v in views for d in v.task.after}  # planned, so pending, as the run's start
    return TaskPage(window, total, offset, views, at, waits)


def fresher(read: TaskView, seen: TaskView | None) -> TaskView:
    """A row read on a key, or what the last snapshot saw of its task (progress, metrics, where it runs) where
    that still holds (same status, same attempt)."""
    if seen is None or (seen.task.status, seen.task.attempts) != (read.task.status, read.task.attempts):
        return read
    return seen


def _view(task: TaskRecord, history: Sequence[AttemptRecord]) -> TaskView:
    return TaskView(task, history[-1] if history else None, None, tuple(history))


def _index(rows: array, rowid: int) -> int | None:
    try:
        return rows.index(rowid)
    except ValueError:
        return None
