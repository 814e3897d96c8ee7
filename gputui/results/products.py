"""What a run leaves per task and per kind, rewritten as tasks settle: a task's metrics.csv and summary.json
(from the events its worker reported; a shard's only once it reported any), and a kind's results.csv /
results.jsonl (a sweep's: one row per settled trial, readable by pandas as it is). Every file is replaced
atomically."""

from __future__ import annotations

import csv
import io
import os
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from gputui.files.atomic import atomic_write_text, dumps_json
from gputui.hooks.reader import read_all
from gputui.jobs.kinds.base import ResultsTable
from gputui.jobs.kinds.registry import DEFAULT, for_task
from gputui.jobs.tasks import TaskRecord
from gputui.results.task_summary import write_metrics_csv, write_task_summary
from gputui.rundir.paths import RunPaths
from gputui.rundir.store import Store


def write_task_products(
    store: Store, paths: RunPaths, task_ids: Iterable[str], goals: dict[str, str], *, fsync: bool = True
) -> None:
    """metrics.csv and summary.json of each task, from every attempt's events (the curve of the last).
    `fsync=False` as tasks settle: derived files, so the run's end writes again (durably) any that a
    power loss left empty or missing (`unwritten_products`), and the scheduler's turn waits on no disk."""
    for task_id in _with_products(store, paths, task_ids):
        task = store.task(task_id)
        if task is None:
            continue
        attempts = store.attempts(task_id)
        events = read_all(paths.events(task_id, task.attempts))
        folder = paths.task_dir(task_id)
        folder.mkdir(parents=True, exist_ok=True)
        write_metrics_csv(events, folder / "metrics.csv", fsync=fsync)
        write_task_summary(
            folder / "summary.json",
            task_id=task_id,
            params=dict(task.info.get("params") or {}),
            status=task.status,
            attempts=task.attempts,
            durations=[a.duration for a in attempts if a.duration is not None],
            exit_code=task.exit_code,
            events=events,
            goal_by_metric=goals,
            fsync=fsync,
        )


def _with_products(store: Store, paths: RunPaths, task_ids: Iterable[str]) -> list[str]:
    """Those of these tasks, launched, that have products (`has_products`), in the order given: their kind and
    attempts read at once, not each one's record (a shard of a short job has none)."""
    ids, found = list(task_ids), set()
    for i in range(0, len(ids), 500):  # (SQLite bounds parameters)
        part = ids[i : i + 500]
        query = f"SELECT id, kind, attempts, ended_at FROM tasks WHERE id IN ({','.join('?' * len(part))})"
        try:
            rows = store.read(query, part).fetchall()
        except sqlite3.OperationalError:  # a schema from before tasks had kinds: as their records say
            rows = [(t.id, t.kind, t.attempts, t.ended_at) for t in map(store.task, part) if t is not None]
        launched = (Launched(r[0], r[1] or DEFAULT.task_kind, r[2], r[3]) for r in rows)
        found |= {t.id for t in launched if t.attempts and has_products(paths, t)}
    return [task_id for task_id in ids if task_id in found]


class Launched(NamedTuple):
    """What `unwritten_products` asks of a task that was launched: less than its record, read faster."""

    id: str
    kind: str
    attempts: int
    ended_at: float | None


def launched_tasks(store: Store, *, page: int = 1000) -> Iterator[Launched | TaskRecord]:
    """Every task launched at least once, in plan order, a page at a time (its record, from an older schema)."""
    query = "SELECT idx, id, kind, attempts, ended_at FROM tasks"
    query += " WHERE idx > ? AND attempts > 0 ORDER BY idx LIMIT ?"
    try:
        rows = store.read(query, (-(1 << 62), page)).fetchall()
    except sqlite3.OperationalError:  # an older schema (no kind column): as its records say
        yield from store.iter_tasks()
        return
    while rows:
        yield from (Launched(r[1], r[2] or DEFAULT.task_kind, r[3], r[4]) for r in rows)
        rows = store.read(query, (rows[-1][0], page)).fetchall()


def has_products(paths: RunPaths, task: TaskRecord | Launched, listed: Listed | None = None) -> bool:
    """Every trial and step has its folder; a shard only once its worker reported through gputui.hooks.
    Otherwise its metrics.csv would be a header and its summary.json what exports/tasks.json already
    says: three files per shard of noise, which cost a short shard more than its own work. `listed`: the
    folders' names as `listed_products` read them (else each task's files are looked up)."""
    if for_task(task.kind).always_products:
        return True
    if listed is None:
        return paths.events(task.id, task.attempts).exists() or paths.task_dir(task.id).exists()
    return task.id in listed.folders or paths.events_name(task.id, task.attempts) in listed.events


@dataclass(frozen=True)
class Listed:
    events: set[str]  # names in the run's events folder
    folders: set[str]  # and in its tasks folder


def listed_products(paths: RunPaths) -> Listed:
    """The events and tasks folders listed once: `has_products` of 100,000 tasks without two lookups each."""

    def names(folder: Path) -> set[str]:
        try:
            return {entry.name for entry in os.scandir(folder)}
        except OSError:
            return set()

    return Listed(names(paths.events_dir), names(paths.tasks_dir))


def unwritten_products(paths: RunPaths, tasks: Iterable[TaskRecord | Launched]) -> list[str]:
    """The tasks whose products were not written since they last ended (their settle wrote them, unless
    the run stopped first, or a power loss left them empty): what the run's end still has to write,
    instead of every task again."""
    found, listed = [], listed_products(paths)
    for t in tasks:
        if t.attempts == 0 or not has_products(paths, t, listed):
            continue
        try:
            written = [(paths.task_dir(t.id) / name).stat() for name in ("summary.json", "metrics.csv")]
        except OSError:
            written = []
        fresh = written and t.ended_at is not None and all(s.st_size and s.st_mtime >= t.ended_at for s in written)
        if not fresh:
            found.append(t.id)
    return found


def write_results(paths: RunPaths, table: ResultsTable) -> None:
    """results.csv (a column per key of each row's `spread` dict: a trial's params) and results.jsonl (that dict
    as one object) in the run directory: a kind's table of results (a sweep's trials)."""
    buf = io.StringIO()
    out = csv.DictWriter(buf, table.columns, lineterminator="\n", extrasaction="ignore")
    out.writeheader()
    for row in table.rows:
        spread = row[table.spread] if table.spread else {}
        out.writerow({k: "" if v is None else v for k, v in {**row, **spread}.items()})
    paths.results.mkdir(parents=True, exist_ok=True)
    atomic_write_text(paths.results / "results.csv", buf.getvalue())
    lines = "".join(dumps_json(row, indent=None) + "\n" for row in table.rows)  # strict: a NaN param is null
    atomic_write_text(paths.results / "results.jsonl", lines)
