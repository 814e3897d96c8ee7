"""The job table's rows a page at a time, over the run's store: a run of 100,000 tasks is shown by reading the
order a filter and a sort give (one integer per task) and the few hundred tasks around what is on screen,
never every task (see rundir/task_order.py).

`TaskPages` has its own read-only connection, so a key's page is read in a thread while a refresh reads the
rest of the run in another. An order is read again only once the store changed (SQLite's data_version); in
plan order with every task shown, only once tasks were added.
"""

from __future__ import annotations

import threading
import time
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gputui.jobs.tasks import Status, TaskRecord
from gputui.rundir import task_order
from gputui.rundir.records import AttemptRecord
from gputui.rundir.store import Store
from gputui.views.runview import TaskView

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
_BY = {"id": task_order.BY_PLAN, "status": task_order.BY_STATUS, "elapsed": task_order.BY_ELAPSED}


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
    """Pages of a run's task table, read from any thread (one at a time)."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self._store: Store | None = None
        self._lock = threading.Lock()
        self._orders: dict[TableQuery, tuple[object, array]] = {}  # query -> (what it was read at, row ids)

    def read(self, window: TableWindow) -> TaskPage:
        """The window's rows in its query's order now; rows around its selected task instead where that
        moved away from the cursor's row, out of them (the cursor follows it)."""
        offset, limit, selected = window.offset, max(1, window.limit), window.selected
        with self._lock:
            store = self._open()
            order = self._order(store, window.query)
            at = _position(order, task_order.rowid_of(store, selected) if selected else None)
            if at is not None and at != window.cursor and not offset <= at < offset + limit:
                offset = max(0, at - limit // 2)
            offset = max(0, min(offset, len(order) - limit))
            tasks = task_order.tasks_at(store, order[offset : offset + limit])
            history: dict[str, list] = {}
            for a in store.attempts_of([t.id for t in tasks]):
                history.setdefault(a.task_id, []).append(a)
            views = tuple(_view(t, history.get(t.id, ())) for t in tasks)
            waits = {d for t in tasks for d in t.after}
            statuses = task_order.statuses_of(store, waits) if waits else {}
            return TaskPage(window, len(order), offset, views, at, statuses)

    def order(self, query: TableQuery) -> array:
        """Every row id the query shows, in order (read again only once the store changed)."""
        with self._lock:
            return self._order(self._open(), query)

    def statuses(self, task_ids: list[str]) -> dict[str, str]:
        with self._lock:
            return task_order.statuses_of(self._open(), task_ids)

    def unfinished(self) -> tuple[list[str], list[str]]:
        """(ids of every task not finished, those of them ever tried)."""
        unfinished = [s for s in Status.ALL if s not in Status.FINAL]
        with self._lock:
            store = self._open()
            return task_order.ids_where(store, unfinished), task_order.ids_where(store, unfinished, tried=True)

    def _open(self) -> Store:
        if self._store is None:
            self._store = Store.open(self.db, readonly=True)
        return self._store

    def _order(self, store: Store, query: TableQuery) -> array:
        statuses = FILTERS.get(query.filter)
        steady = query.sort == "id" and statuses is None  # plan order changes only when tasks are added
        if steady:
            version: object = task_order.task_count(store)
        else:  # elapsed time moves without a commit: an order by it is read again each second at most
            version = (task_order.data_version(store), int(time.monotonic()) if query.sort == "elapsed" else 0)
        cached = self._orders.get(query)
        if cached is not None and cached[0] == version:
            return cached[1]
        by = _BY.get(query.sort, task_order.BY_PLAN)
        order = task_order.row_order(store, statuses, by, STATUS_ORDER, time.time())
        self._orders = {query: (version, order)}  # one order held at a time: the table shows one
        return order

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None
            self._orders.clear()


def fresher(read: TaskView, seen: TaskView | None) -> TaskView:
    """A row read on a key, or what the last snapshot saw of its task (progress, metrics, where it runs) where
    that still holds (same status, same attempt)."""
    if seen is None or (seen.task.status, seen.task.attempts) != (read.task.status, read.task.attempts):
        return read
    return seen


def _view(task: TaskRecord, history: Sequence[AttemptRecord]) -> TaskView:
    return TaskView(task, history[-1] if history else None, None, tuple(history))


def _position(order: array, rowid: int | None) -> int | None:
    if rowid is None:
        return None
    try:
        return order.index(rowid)
    except ValueError:
        return None
