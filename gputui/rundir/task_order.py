"""Reads of part of a large run: a filtered, sorted order of its tasks a page at a time, the tasks on a page,
and every task's status counted. A view (the app's table) shows 100,000 tasks through these without holding
them.

An order is a list of segments, each the tasks a condition selects in plan order: an index serves it (by
status: tasks_by_status; every task: tasks_by_idx), so its count, a row's rank in it and a page at any offset
are each one index walk in SQLite, not a sort of every task. Only the tasks ever started, by elapsed time,
are sorted (`by_elapsed`). A database from before those indexes is read all the same, more slowly."""

from __future__ import annotations

from array import array
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from gputui.clock import Stamp
from gputui.jobs.tasks import TaskRecord
from gputui.rundir.store import Store


def _marks(values: Collection) -> str:
    return ",".join("?" * len(values))


@dataclass(frozen=True)
class Segment:
    """The tasks an SQL condition on `t` (the tasks table) selects, in plan order."""

    where: str = "1"
    params: tuple = ()

    @classmethod
    def of(cls, statuses: Collection[str] | None, *, unstarted: bool = False) -> Segment:
        """Tasks in these statuses (None: any), or only those of them never started."""
        where, params = ("1", ()) if statuses is None else (f"t.status IN ({_marks(statuses)})", tuple(statuses))
        return cls(f"{where} AND t.attempts = 0", params) if unstarted else cls(where, params)


def count(store: Store, segment: Segment) -> int:
    return store.read(f"SELECT COUNT(*) FROM tasks t WHERE {segment.where}", segment.params).fetchone()[0]


def rows_of(store: Store, segment: Segment, offset: int, limit: int) -> list[int]:
    """Row ids `offset` to `offset + limit` of the segment."""
    query = f"SELECT t.rowid FROM tasks t WHERE {segment.where} ORDER BY t.idx LIMIT ? OFFSET ?"
    return [r[0] for r in store.read(query, (*segment.params, limit, offset))]


def rank_in(store: Store, segment: Segment, rowid: int) -> int | None:
    """The row's place in the segment (None: not in it)."""
    query = f"SELECT t.idx FROM tasks t WHERE t.rowid = ? AND {segment.where}"
    row = store.read(query, (rowid, *segment.params)).fetchone()
    if row is None:
        return None
    query = f"SELECT COUNT(*) FROM tasks t WHERE {segment.where} AND t.idx < ?"
    return store.read(query, (*segment.params, row[0])).fetchone()[0]


def by_elapsed(store: Store, statuses: Collection[str] | None, now: float) -> array:
    """Row ids of the tasks ever started (in these statuses; None: any), by their latest attempt's elapsed
    time on the wall clock to `now`, longest first (ties in plan order)."""
    where = Segment.of(statuses)
    query = (
        "SELECT t.rowid FROM tasks t JOIN attempts a ON a.task_id = t.id AND a.number = t.attempts "
        f"WHERE t.attempts > 0 AND {where.where} ORDER BY COALESCE(a.ended_at, ?) - a.started_at DESC, t.idx"
    )
    return array("q", (r[0] for r in store.read(query, (*where.params, now))))


def tasks_at(store: Store, rowids: Sequence[int]) -> list[TaskRecord]:
    """The tasks at these row ids, in their order (one gone since is left out)."""
    found: list[TaskRecord] = []
    for i in range(0, len(rowids), 500):  # within SQLite's bound on parameters
        part = list(rowids[i : i + 500])
        ids = dict(store.read(f"SELECT rowid, id FROM tasks WHERE rowid IN ({_marks(part)})", part).fetchall())
        records = {t.id: t for t in store.tasks_where(f"t.rowid IN ({_marks(part)})", part)}
        found += [records[ids[r]] for r in part if ids.get(r) in records]
    return found


def rowid_of(store: Store, task_id: str) -> int | None:
    row = store.read("SELECT rowid FROM tasks WHERE id = ?", (task_id,)).fetchone()
    return None if row is None else row[0]


def status_counts(store: Store) -> dict[str, int]:
    """Status -> how many tasks have it (down the status index alone)."""
    return dict(store.read("SELECT status, COUNT(*) FROM tasks GROUP BY status").fetchall())


def status_sizes(store: Store) -> dict[str, int]:
    """Status -> the ids its tasks cover (each task at least one: a trial or a step counts one)."""
    return dict(store.read("SELECT status, SUM(MAX(1, count)) FROM tasks GROUP BY status").fetchall())


def one_id_each(store: Store) -> bool:
    """Whether every task covers one id (or none): then a status's tasks are its size."""
    return store.read("SELECT COUNT(*) FROM tasks WHERE count > 1").fetchone()[0] == 0


def task_count(store: Store) -> tuple[int, int]:
    """(tasks, the largest row id): what changes when tasks are added, cheaply."""
    count = store.read("SELECT COUNT(*) FROM tasks").fetchone()[0]  # apart: each has its shortcut in SQLite
    return count, store.read("SELECT COALESCE(MAX(rowid), 0) FROM tasks").fetchone()[0]


def first_ids(store: Store, status: str, limit: int) -> list[str]:
    """The first `limit` task ids in plan order with this status."""
    rows = store.read("SELECT id FROM tasks WHERE status = ? ORDER BY idx LIMIT ?", (status, limit))
    return [r[0] for r in rows]


def ids_where(store: Store, statuses: Collection[str], *, tried: bool = False) -> list[str]:
    """Ids of the tasks in these statuses, in plan order; `tried`: only those with an attempt."""
    more = " AND attempts > 0" if tried else ""
    query = f"SELECT id FROM tasks WHERE status IN ({_marks(statuses)}){more} ORDER BY idx"
    return [r[0] for r in store.read(query, tuple(statuses))]


def statuses_of(store: Store, task_ids: Collection[str]) -> dict[str, str]:
    ids, found = list(task_ids), {}
    for i in range(0, len(ids), 500):  # within SQLite's bound on parameters
        part = ids[i : i + 500]
        found.update(store.read(f"SELECT id, status FROM tasks WHERE id IN ({_marks(part)})", part).fetchall())
    return found


def data_version(store: Store) -> int:
    """Changes when another connection committed (SQLite's PRAGMA data_version): an order read since is current."""
    return store.read("PRAGMA data_version").fetchone()[0]


class AttemptTimes(NamedTuple):
    """What a run's active time is measured from, of one attempt (runview.history_spans)."""

    status: str
    started_at: Stamp
    ended_at: Stamp | None


def attempt_times(store: Store) -> list[list[AttemptTimes]]:
    """Every tried task's attempts, oldest first: their status and times only (no command, no log path)."""
    columns = {r[1] for r in store.read("PRAGMA table_info(attempts)")}
    boot = ", ".join(c if c in columns else "NULL" for c in ("started_boot", "ended_boot", "boot_id"))
    query = f"SELECT task_id, status, started_at, ended_at, {boot} FROM attempts ORDER BY task_id, number"
    by_task: dict[str, list[AttemptTimes]] = {}
    for task_id, status, started, ended, started_boot, ended_boot, boot_id in store.read(query):
        end = None if ended is None else Stamp(ended, ended_boot, boot_id)
        by_task.setdefault(task_id, []).append(AttemptTimes(status, Stamp(started, started_boot, boot_id), end))
    return list(by_task.values())
