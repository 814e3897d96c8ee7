"""The run's state in one SQLite database: the only writer of tasks, attempts, events and controls.

WAL mode: a crash at any instant leaves the last committed state; readers (status, the app) never
block the scheduler. A file that cannot be read as our database is never touched.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import time
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from gputui.clock import Stamp
from gputui.executors.ownership import ProcessRef
from gputui.jobs.kinds.base import NewTask
from gputui.jobs.kinds.registry import DEFAULT
from gputui.jobs.tasks import Status, TaskRecord
from gputui.rundir.records import AttemptRecord
from gputui.rundir.schema import MIGRATIONS, SCHEMA, SCHEMA_VERSION
from gputui.rundir.state_file import (
    check_readable,
    check_writable,
    connect_readonly,
    tables,
)


@dataclass(frozen=True)
class Control:
    id: int
    verb: str
    args: dict
    ts: float = 0.0  # when it was posted
    done_at: float | None = None
    ok: bool | None = None
    result: str | None = None


PAGE = 500  # tasks read at once where a run's tasks are read in pages


class GpuUse(NamedTuple):
    gpu_seconds: float | None
    peak_memory: int | None
    gpus_simulated: bool
    energy_j: float | None = None
    energy_estimated: bool = False


@functools.lru_cache(maxsize=256)  # the scheduler changes a few sets of columns, each many times
def _update_tasks(columns: tuple[str, ...]) -> str:
    return f"UPDATE tasks SET {', '.join(f'{k}=?' for k in columns)} WHERE id=?"


@functools.lru_cache(maxsize=1024)  # a run's tasks hold few distinct GPU lists: each parsed once
def _gpus(text: str) -> tuple[int, ...]:
    return tuple(int(g) for g in text.split(",") if g != "")


class Store:
    def __init__(self, conn: sqlite3.Connection, path: Path):
        self._db = conn
        self.path = path
        self._depth = 0
        self._accounting = False  # whether attempts has the GPU accounting columns (schema 3), once seen
        self._energy = False  # whether attempts has the energy columns (schema 6), once seen

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, *, create: bool = False, readonly: bool = False) -> Store:
        """`readonly`: for views (status, the app): never takes a write lock, never creates anything."""
        path = Path(path)
        if path.exists():
            check_readable(path)
        elif not create or readonly:
            raise FileNotFoundError(f"no gputui state at {path}")
        if readonly:
            conn = connect_readonly(path)
        else:
            check_writable(path)
            conn = sqlite3.connect(path, isolation_level=None, timeout=10.0, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=10000")
        store = cls(conn, path)
        if readonly:
            return store
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        with store.transaction():
            version = store.meta("schema_version") if "meta" in tables(conn) else None
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            for step in range(version or SCHEMA_VERSION, SCHEMA_VERSION):
                for statement in MIGRATIONS[step]:
                    table, column = statement.split()[2], statement.split()[5]
                    if column not in {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}:
                        conn.execute(statement)
            if version != SCHEMA_VERSION:
                store.set_meta("schema_version", SCHEMA_VERSION)
        return store

    def close(self) -> None:
        self._db.close()

    def busy_timeout(self, seconds: float) -> None:
        """How long a write waits for another writer before failing with "database is locked"."""
        self._db.execute(f"PRAGMA busy_timeout={int(seconds * 1000)}")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes into one commit; nests. BEGIN IMMEDIATE: no reader-to-writer upgrade deadlock."""
        if self._depth == 0:
            self._db.execute("BEGIN IMMEDIATE")
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth -= 1
            if self._depth == 0:
                self._db.execute("ROLLBACK")
            raise
        self._depth -= 1
        if self._depth == 0:
            self._db.execute("COMMIT")

    # -- meta ----------------------------------------------------------------------------------
    def meta(self, key: str, default=None):
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_meta(self, key: str, value) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, json.dumps(value)))

    def all_meta(self) -> dict:
        return {r[0]: json.loads(r[1]) for r in self._db.execute("SELECT key, value FROM meta")}

    # -- tasks ---------------------------------------------------------------------------------
    def add_tasks(self, tasks: Iterable[NewTask], budget: int) -> None:
        """Inserted as they are read (a plan of a million tasks is never a list), in one transaction."""
        with self.transaction():
            self._db.executemany(
                "INSERT INTO tasks(id, idx, low, high, count, output, status, budget, kind, info, after_ids) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    (t.id, t.index, t.low, t.high, t.count, t.output, Status.PENDING, budget, t.kind)
                    + (json.dumps(dict(t.info)) if t.info else "{}", ",".join(t.after))
                    for t in tasks
                ),
            )

    def tasks(self) -> list[TaskRecord]:
        return [_task(r) for r in self._db.execute(self._tasks_query("ORDER BY t.idx"))]

    def task(self, task_id: str) -> TaskRecord | None:
        r = self._db.execute(self._tasks_query("WHERE t.id=?"), (task_id,)).fetchone()
        return None if r is None else _task(r)

    def _has_accounting(self) -> bool:
        if not self._accounting:  # asked again while missing: a view may watch a scheduler upgrade it
            self._accounting = "gpu_seconds" in {r[1] for r in self._db.execute("PRAGMA table_info(attempts)")}
        return self._accounting

    def _has_energy(self) -> bool:
        if not self._energy:  # as `_has_accounting`
            self._energy = "energy_j" in {r[1] for r in self._db.execute("PRAGMA table_info(attempts)")}
        return self._energy

    def _accounted(self) -> tuple[tuple[str, str], ...]:
        """The attempts' GPU accounting columns this database has, each with how a task's are summed up."""
        columns = (("SUM", "gpu_seconds"), ("MAX", "peak_memory"), ("MAX", "gpus_simulated"))
        return columns + ((("SUM", "energy_j"), ("MAX", "energy_estimated")) if self._has_energy() else ())

    def _tasks_query(self, tail: str) -> str:
        """Tasks with their attempts' GPU accounting summed (GPU-seconds) and maxed (peak memory), each from
        its own attempts through the (task_id, number) key: one task's costs the same however many there are.
        Energy likewise: summed, and estimated where any attempt's was."""
        if not self._has_accounting():  # an older schema read as it is (a view never upgrades it)
            return f"SELECT t.* FROM tasks t {tail}"
        columns = ", ".join(
            f"(SELECT {f}({c}) FROM attempts WHERE task_id = t.id) AS {c}" for f, c in self._accounted()
        )
        return f"SELECT t.*, {columns} FROM tasks t {tail}"

    # -- many tasks, never all at once: a run of 100,000 tasks is read a page at a time ---------
    def task_count(self) -> int:
        return self._db.execute("SELECT count(*) FROM tasks").fetchone()[0]

    def status_counts(self) -> Counter[str]:
        """Tasks by status, counted by SQLite (the status index: no row is read)."""
        return Counter(dict(self._db.execute("SELECT status, count(*) FROM tasks GROUP BY status").fetchall()))

    def tasks_page(
        self, statuses: Collection[str] | None = None, *, after_index: int | None = None, limit: int = PAGE
    ) -> list[TaskRecord]:
        """The first `limit` tasks in plan order after `after_index` (None: from the first), of these statuses
        (None: any)."""
        where, params = [], []
        if statuses is not None:
            where.append(f"t.status IN ({','.join('?' * len(statuses))})")
            params += list(statuses)
        if after_index is not None:
            where.append("t.idx > ?")
            params.append(after_index)
        tail = f"{'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY t.idx LIMIT ?"
        return [_task(r) for r in self._db.execute(self._tasks_query(tail), (*params, limit))]

    def pages(self, statuses: Collection[str] | None = None, *, page: int = PAGE) -> Iterator[list[TaskRecord]]:
        """Every task (of these statuses) in plan order, `page` at a time: what is held is one page, and the
        caller may write between pages (no statement is left open)."""
        after = None
        while rows := self.tasks_page(statuses, after_index=after, limit=page):
            yield rows
            after = rows[-1].index

    def iter_tasks(self, statuses: Collection[str] | None = None) -> Iterator[TaskRecord]:
        for rows in self.pages(statuses):
            yield from rows

    def shard_rows(self, *, page: int = PAGE) -> Iterator[tuple[str, int, int, str, int, str | None]]:
        """(id, low, high, status, attempts, output) of every task in plan order, read a page at a time: what a
        merge asks of each (no record, no GPU accounting)."""
        after = -(1 << 62)
        while rows := self._db.execute(
            "SELECT idx, id, low, high, status, attempts, output FROM tasks WHERE idx > ? ORDER BY idx LIMIT ?",
            (after, page),
        ).fetchall():
            yield from (tuple(r[1:]) for r in rows)
            after = rows[-1][0]

    def output_of(self, task_id: str) -> str | None:
        row = self._db.execute("SELECT output FROM tasks WHERE id=?", (task_id,)).fetchone()
        return None if row is None else row[0]

    def named_outputs(self, statuses: Collection[str], *, page: int = PAGE) -> Iterator[tuple[str, int, int, str]]:
        """(id, low, high, output) of each task of these statuses that names an output, in plan order, read a
        page at a time (the caller may write between pages)."""
        marks, after = ",".join("?" * len(statuses)), -(1 << 62)
        while rows := self._db.execute(
            f"SELECT idx, id, low, high, output FROM tasks WHERE status IN ({marks}) AND idx > ? "
            "AND output IS NOT NULL ORDER BY idx LIMIT ?",
            (*statuses, after, page),
        ).fetchall():
            yield from (r[1:] for r in rows)
            after = rows[-1][0]

    def outputs_of(self, task_ids: Collection[str]) -> dict[str, str | None]:
        """These tasks' outputs (a page of them: SQLite takes some thousands of parameters at most)."""
        marks = ",".join("?" * len(task_ids))
        return dict(self._db.execute(f"SELECT id, output FROM tasks WHERE id IN ({marks})", tuple(task_ids)))

    def attempts_of(self, task_ids: Collection[str]) -> dict[str, list[AttemptRecord]]:
        """These tasks' attempts by task, oldest first (asked 500 ids at a time: SQLite bounds parameters)."""
        ids, found = list(task_ids), {}
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            marks = ",".join("?" * len(part))
            query = f"SELECT * FROM attempts WHERE task_id IN ({marks}) ORDER BY task_id, number"
            for r in self._db.execute(query, part):
                found.setdefault(r["task_id"], []).append(_attempt(r))
        return found

    def gpu_use(self) -> GpuUse:
        """The run's GPU accounting over every attempt: GPU-seconds summed, the largest peak, whether simulated,
        the energy summed and whether any of it is estimated."""
        if not self._has_accounting():
            return GpuUse(None, None, False)
        row = self._db.execute(f"SELECT {', '.join(f'{f}({c})' for f, c in self._accounted())} FROM attempts")
        seconds, peak, simulated, *energy = row.fetchone()
        joules, estimated = energy or (None, False)
        return GpuUse(seconds, peak, bool(simulated), joules, bool(estimated))

    def done_peaks(self) -> tuple[int, int | None]:
        """How many done attempts have a measured peak GPU memory, and the largest of their peaks per GPU (an
        attempt's peak is summed over its GPUs): what the run plans its next tasks for (engine/packing.py)."""
        if not self._has_accounting():
            return 0, None
        per_gpu = "peak_memory / (LENGTH(gpus) - LENGTH(REPLACE(gpus, ',', '')) + 1)"
        row = self._db.execute(
            f"SELECT COUNT(*), MAX({per_gpu}) FROM attempts WHERE status = ? AND peak_memory IS NOT NULL "
            "AND gpus != ''",
            (Status.DONE,),
        ).fetchone()
        return int(row[0]), None if row[1] is None else int(row[1])

    def read(self, sql: str, params: Sequence | Mapping = ()) -> sqlite3.Cursor:
        """A query of the run's readers (rundir.task_json, views): reads only."""
        return self._db.execute(sql, params)

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside see one moment of the run, however long they take (a read transaction: WAL lets the
        scheduler write meanwhile). For a read-only store; nests inside nothing."""
        self._db.execute("BEGIN")
        try:
            yield
        finally:
            self._db.execute("COMMIT")

    def update_task(self, task_id: str, **fields) -> None:
        if "gpus" in fields:
            fields["gpus"] = ",".join(str(g) for g in fields["gpus"])
        if "promoted" in fields:
            fields["promoted"] = int(bool(fields["promoted"]))
        if "info" in fields:
            fields["info"] = json.dumps(dict(fields["info"]))
        self._db.execute(_update_tasks(tuple(fields)), (*fields.values(), task_id))

    # -- attempts ------------------------------------------------------------------------------
    def start_attempt(
        self,
        task_id: str,
        number: int,
        gpus: Sequence[int],
        command: Sequence[str],
        log_path: str,
        now: float,
        waiter: tuple[int, int] | None = None,
    ) -> None:
        """`now`: a clock.Stamp records the start on CLOCK_BOOTTIME too; a plain float (a start known only
        by its wall time, as rebuilt from a journal) is measured on the wall clock. `waiter`: (pid, start
        time) of the process that will record its end."""
        boot, boot_id = getattr(now, "boot", None), getattr(now, "boot_id", None)
        pid, start = waiter or (None, None)
        self._db.execute(
            "INSERT INTO attempts(task_id, number, status, gpus, command, log_path, started_at, started_boot, "
            "boot_id, waiter_pid, waiter_start) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (task_id, number, Status.RUNNING, ",".join(map(str, gpus)), json.dumps(list(command)), log_path)
            + (float(now), boot, boot_id, pid, start),
        )

    def update_attempt(self, task_id: str, number: int, **fields) -> None:
        """An `ended_at` that is a clock.Stamp of the boot the attempt started in records its CLOCK_BOOTTIME
        too (ended_boot); any other end is measured on the wall clock."""
        cols, values = [f"{k}=?" for k in fields], list(fields.values())
        if "ended_at" in fields:
            end = fields["ended_at"]
            cols.append("ended_boot = CASE WHEN boot_id = ? THEN ? END")
            values += [getattr(end, "boot_id", None), getattr(end, "boot", None)]
        self._db.execute(
            f"UPDATE attempts SET {', '.join(cols)} WHERE task_id=? AND number=?", (*values, task_id, number)
        )

    def attempts(self, task_id: str | None = None) -> list[AttemptRecord]:
        if task_id is None:
            rows = self._db.execute("SELECT * FROM attempts ORDER BY task_id, number")
        else:
            rows = self._db.execute("SELECT * FROM attempts WHERE task_id=? ORDER BY number", (task_id,))
        return [_attempt(r) for r in rows]

    def attempt(self, task_id: str, number: int) -> AttemptRecord | None:
        r = self._db.execute("SELECT * FROM attempts WHERE task_id=? AND number=?", (task_id, number)).fetchone()
        return None if r is None else _attempt(r)

    def unsettled_attempts(self) -> list[AttemptRecord]:
        """Attempts not known to be over: still running, or ended with processes of theirs still alive
        (their GPUs stay reserved). The ones to re-adopt or settle after a restart."""
        rows = self._db.execute(
            "SELECT * FROM attempts WHERE ended_at IS NULL OR cleared_at IS NULL ORDER BY task_id, number"
        )
        return [_attempt(r) for r in rows]

    # -- events --------------------------------------------------------------------------------
    def add_event(self, kind: str, message: str, task_id: str | None = None, ts: float | None = None) -> None:
        self._db.execute(
            "INSERT INTO events(ts, task_id, kind, message) VALUES (?,?,?,?)",
            (ts or time.time(), task_id, kind, message),
        )

    def events(self, after_id: int = 0, limit: int = 1000) -> list[sqlite3.Row]:
        return list(self._db.execute("SELECT * FROM events WHERE id>? ORDER BY id LIMIT ?", (after_id, limit)))

    # -- control channel: verbs posted by other processes, applied by the lock holder ----------
    def post_control(self, verb: str, args: dict) -> int:
        with self.transaction():
            cur = self._db.execute(
                "INSERT INTO controls(ts, verb, args) VALUES (?,?,?)", (time.time(), verb, json.dumps(args))
            )
        return int(cur.lastrowid)

    def pending_controls(self) -> list[Control]:
        rows = self._db.execute("SELECT * FROM controls WHERE done_at IS NULL ORDER BY id")
        return [Control(r["id"], r["verb"], json.loads(r["args"]), r["ts"]) for r in rows]

    def finish_control(self, control_id: int, ok: bool, result: str) -> None:
        self._db.execute(
            "UPDATE controls SET done_at=?, ok=?, result=? WHERE id=?", (time.time(), int(ok), result, control_id)
        )

    def control(self, control_id: int) -> Control | None:
        r = self._db.execute("SELECT * FROM controls WHERE id=?", (control_id,)).fetchone()
        if r is None:
            return None
        ok = None if r["ok"] is None else bool(r["ok"])
        return Control(r["id"], r["verb"], json.loads(r["args"]), r["ts"], r["done_at"], ok, r["result"])

    # -- part of a large run, for a view that never reads every task (rundir/task_order.py) -----
    def tasks_where(self, where: str, params: Sequence = ()) -> list[TaskRecord]:
        """The tasks an SQL condition on `t` (the tasks table) selects, as `tasks()` reads them."""
        return [_task(r) for r in self._db.execute(self._tasks_query(f"WHERE {where}"), params)]


def _get(r: sqlite3.Row, column: str):
    """A column an older schema may lack (read as it is by a view): None there."""
    try:
        return r[column]
    except IndexError:
        return None


def _get_all(r: sqlite3.Row, columns: tuple[str, ...]) -> tuple:
    """These columns' values: at once where the row has them all (today's schema), else one by one (`_get`)."""
    try:
        return tuple(map(r.__getitem__, columns))
    except IndexError:
        return tuple(_get(r, c) for c in columns)


_TASK_NEWER = ("gpu_seconds", "peak_memory", "gpus_simulated", "kind", "info", "after_ids", "metric", "rank")
_TASK_NEWER += ("promoted", "note", "energy_j", "energy_estimated")
_ATTEMPT_NEWER = ("boot_id", "started_boot", "ended_boot", "gpu_seconds", "peak_memory", "gpus_simulated")
_ATTEMPT_NEWER += ("energy_j", "energy_estimated")


def _made(cls: type, fields: dict):
    """A record (a frozen dataclass) from every one of its fields, as its __init__ would make it but at once: that
    sets each field through object.__setattr__, which costs more than the reading of a row (thousands a turn)."""
    record = object.__new__(cls)
    record.__dict__.update(fields)
    return record


for _cls in (TaskRecord, AttemptRecord):  # what `_made` relies on: fields in __dict__, nothing done on __init__
    if hasattr(_cls, "__post_init__") or hasattr(_cls, "__slots__"):
        raise TypeError(f"{_cls.__name__}: _made cannot make it")


def _task(r: sqlite3.Row) -> TaskRecord:
    gpu_seconds, peak_memory, simulated, kind, info, after, metric, rank, promoted, note, energy, estimated = (
        _get_all(r, _TASK_NEWER)
    )
    return _made(
        TaskRecord,
        dict(
            id=r["id"],
            index=r["idx"],
            low=r["low"],
            high=r["high"],
            count=r["count"],
            status=r["status"],
            attempts=r["attempts"],
            budget=r["budget"],
            gpus=_gpus(r["gpus"]),
            reason=r["reason"],
            exit_code=r["exit_code"],
            started_at=r["started_at"],
            ended_at=r["ended_at"],
            next_try_at=r["next_try_at"],
            gpu_seconds=gpu_seconds,
            peak_memory=peak_memory,
            gpus_simulated=bool(simulated),
            energy_j=energy,
            energy_estimated=bool(estimated),
            kind=kind or DEFAULT.task_kind,  # a row from before tasks had kinds
            info=json.loads(info) if info and info != "{}" else {},
            after=tuple(a for a in (after or "").split(",") if a),
            metric=metric,
            rank=rank,
            promoted=bool(promoted),
            note=note,
        ),
    )


def _ref(pid: int | None, start: int | None) -> ProcessRef | None:
    return None if pid is None or start is None else ProcessRef(pid, start)


def _attempt(r: sqlite3.Row) -> AttemptRecord:
    boot_id, started_boot, ended_boot, gpu_seconds, peak_memory, simulated, energy, estimated = _get_all(
        r, _ATTEMPT_NEWER
    )
    ended = r["ended_at"]
    return _made(
        AttemptRecord,
        dict(
            task_id=r["task_id"],
            number=r["number"],
            status=r["status"],
            gpus=_gpus(r["gpus"]),
            command=tuple(json.loads(r["command"])),
            log_path=r["log_path"],
            started_at=Stamp(r["started_at"], started_boot, boot_id),
            ended_at=None if ended is None else Stamp(ended, ended_boot, boot_id),
            exit_code=r["exit_code"],
            reason=r["reason"],
            waiter=_ref(r["waiter_pid"], r["waiter_start"]),
            worker=_ref(r["worker_pid"], r["worker_start"]),
            cgroup=r["cgroup"],
            cleared_at=r["cleared_at"],
            gpu_seconds=gpu_seconds,
            peak_memory=peak_memory,
            gpus_simulated=bool(simulated),
            energy_j=energy,
            energy_estimated=bool(estimated),
        ),
    )
