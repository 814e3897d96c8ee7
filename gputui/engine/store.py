"""The run's state in one SQLite database: the only writer of tasks, attempts, events and controls.

WAL mode: a crash at any instant leaves the last committed state; readers (status, the app) never
block the scheduler. A file that cannot be read as our database is never touched.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sqlite3
import tempfile
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from gputui.engine.records import AttemptRecord
from gputui.executors.ownership import ProcessRef
from gputui.jobs.kinds import NewTask
from gputui.jobs.tasks import SHARD, Status, TaskRecord

SCHEMA_VERSION = 4
# What opening a database of an older schema for writing adds to it, by the version it had; a view (read-only)
# reads an older one as it is, with what it lacks shown as unknown.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: (
        "ALTER TABLE attempts ADD COLUMN gpu_seconds REAL",
        "ALTER TABLE attempts ADD COLUMN peak_memory INTEGER",
        "ALTER TABLE attempts ADD COLUMN gpus_simulated INTEGER",
    ),
    3: (
        "ALTER TABLE tasks ADD COLUMN kind TEXT NOT NULL DEFAULT 'shard'",
        "ALTER TABLE tasks ADD COLUMN info TEXT NOT NULL DEFAULT '{}'",
        "ALTER TABLE tasks ADD COLUMN after_ids TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE tasks ADD COLUMN metric REAL",
        "ALTER TABLE tasks ADD COLUMN rank INTEGER",
        "ALTER TABLE tasks ADD COLUMN promoted INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE tasks ADD COLUMN note TEXT",
    ),
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY, idx INTEGER NOT NULL, low INTEGER NOT NULL, high INTEGER NOT NULL,
    count INTEGER NOT NULL, output TEXT, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    budget INTEGER NOT NULL, gpus TEXT NOT NULL DEFAULT '', reason TEXT, exit_code INTEGER,
    started_at REAL, ended_at REAL, next_try_at REAL, kind TEXT NOT NULL DEFAULT 'shard',
    info TEXT NOT NULL DEFAULT '{}', after_ids TEXT NOT NULL DEFAULT '', metric REAL, rank INTEGER,
    promoted INTEGER NOT NULL DEFAULT 0, note TEXT
);
CREATE TABLE IF NOT EXISTS attempts (
    task_id TEXT NOT NULL, number INTEGER NOT NULL, status TEXT NOT NULL, gpus TEXT NOT NULL,
    command TEXT NOT NULL, log_path TEXT NOT NULL, started_at REAL NOT NULL, ended_at REAL,
    exit_code INTEGER, reason TEXT, waiter_pid INTEGER, waiter_start INTEGER, worker_pid INTEGER,
    worker_start INTEGER, cgroup TEXT, cleared_at REAL, gpu_seconds REAL, peak_memory INTEGER,
    gpus_simulated INTEGER,
    PRIMARY KEY (task_id, number)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, task_id TEXT, kind TEXT NOT NULL, message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS controls (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, verb TEXT NOT NULL, args TEXT NOT NULL,
    done_at REAL, ok INTEGER, result TEXT
);
"""


class StateUnreadable(RuntimeError):
    """The state database exists but is not ours or is damaged; it is kept as it is."""


class StateReadOnly(RuntimeError):
    """A command that changes the run was given a run directory it cannot write to."""


def _check_writable(path: Path) -> None:
    for target in (path.parent, path):
        if target.exists() and not os.access(target, os.W_OK):
            read_only = bool(os.statvfs(target).f_flag & os.ST_RDONLY)
            why = "read-only file system" if read_only else "permission denied"
            raise StateReadOnly(
                f"cannot write to {target}: {why}; this command changes the run, so it did nothing.\n"
                f"  `gputui status --run-dir {path.parent}` shows the run without writing anything."
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


def _gpus(text: str) -> tuple[int, ...]:
    return tuple(int(g) for g in text.split(",") if g != "")


class Store:
    def __init__(self, conn: sqlite3.Connection, path: Path):
        self._db = conn
        self.path = path
        self._depth = 0
        self._accounting = False  # whether attempts has the GPU accounting columns (schema 3), once seen

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, *, create: bool = False, readonly: bool = False) -> Store:
        """`readonly`: for views (status, the app): never takes a write lock, never creates anything."""
        path = Path(path)
        if path.exists():
            _check_readable(path)
        elif not create or readonly:
            raise FileNotFoundError(f"no gputui state at {path}")
        if readonly:
            conn = _connect_readonly(path)
        else:
            _check_writable(path)
            conn = sqlite3.connect(path, isolation_level=None, timeout=10.0, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=10000")
        store = cls(conn, path)
        if readonly:
            return store
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        with store.transaction():
            version = store.meta("schema_version") if "meta" in _tables(conn) else None
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            for step in range(version or SCHEMA_VERSION, SCHEMA_VERSION):
                for statement in _MIGRATIONS[step]:
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
        with self.transaction():
            self._db.executemany(
                "INSERT INTO tasks(id, idx, low, high, count, output, status, budget, kind, info, after_ids) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (t.id, t.index, t.low, t.high, t.count, t.output, Status.PENDING, budget, t.kind)
                    + (json.dumps(dict(t.info)), ",".join(t.after))
                    for t in tasks
                ],
            )

    def tasks(self) -> list[TaskRecord]:
        return [_task(r) for r in self._db.execute(self._tasks_query("ORDER BY t.idx"))]

    def task(self, task_id: str) -> TaskRecord | None:
        r = self._db.execute(self._tasks_query("WHERE t.id=?"), (task_id,)).fetchone()
        return None if r is None else _task(r)

    def _tasks_query(self, tail: str) -> str:
        """Tasks with their attempts' GPU accounting summed (GPU-seconds) and maxed (peak memory)."""
        if not self._accounting:  # asked again while missing: a view may watch a scheduler upgrade it
            self._accounting = "gpu_seconds" in {r[1] for r in self._db.execute("PRAGMA table_info(attempts)")}
        if not self._accounting:  # an older schema read as it is (a view never upgrades it)
            return f"SELECT t.* FROM tasks t {tail}"
        return (
            "SELECT t.*, a.gpu_seconds, a.peak_memory, a.gpus_simulated FROM tasks t LEFT JOIN ("
            "SELECT task_id, SUM(gpu_seconds) AS gpu_seconds, MAX(peak_memory) AS peak_memory, "
            f"MAX(gpus_simulated) AS gpus_simulated FROM attempts GROUP BY task_id) a ON a.task_id = t.id {tail}"
        )

    def task_outputs(self) -> dict[str, str | None]:
        return {r[0]: r[1] for r in self._db.execute("SELECT id, output FROM tasks")}

    def update_task(self, task_id: str, **fields) -> None:
        if "gpus" in fields:
            fields["gpus"] = ",".join(str(g) for g in fields["gpus"])
        if "promoted" in fields:
            fields["promoted"] = int(bool(fields["promoted"]))
        cols = ", ".join(f"{k}=?" for k in fields)
        self._db.execute(f"UPDATE tasks SET {cols} WHERE id=?", (*fields.values(), task_id))

    # -- attempts ------------------------------------------------------------------------------
    def start_attempt(
        self, task_id: str, number: int, gpus: Sequence[int], command: Sequence[str], log_path: str, now: float
    ) -> None:
        self._db.execute(
            "INSERT INTO attempts(task_id, number, status, gpus, command, log_path, started_at) "
            "VALUES (?,?,?,?,?,?,?)",
            (task_id, number, Status.RUNNING, ",".join(map(str, gpus)), json.dumps(list(command)), log_path, now),
        )

    def update_attempt(self, task_id: str, number: int, **fields) -> None:
        cols = ", ".join(f"{k}=?" for k in fields)
        self._db.execute(
            f"UPDATE attempts SET {cols} WHERE task_id=? AND number=?", (*fields.values(), task_id, number)
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


def rebuild_hint(path: Path) -> str:
    """The one safe next step for a run whose state database is damaged, naming the run's job file (as
    its last scheduler recorded it in exports/config.json, outside the database) and run directory."""
    job = "JOBFILE"
    try:
        found = json.loads((path.parent / "exports" / "config.json").read_text()).get("job_file")
        if isinstance(found, str) and found:
            job = shlex.quote(found)
    except (OSError, ValueError, AttributeError):
        pass
    return (
        f"To go on: `gputui run --jobs {job} --run-dir {shlex.quote(str(path.parent))} --rebuild-state` moves it "
        f"aside and rebuilds the run's state from attempts.journal and the done-manifests (workers still "
        f"running are re-adopted, never started twice)."
    )


def unreadable(path: Path, what: str) -> StateUnreadable:
    """`what` went wrong with the state database at `path`; it is left as it is. Two lines."""
    return StateUnreadable(f"state database {path} {what}; it was left untouched.\n  {rebuild_hint(path)}")


def _uri(path: Path, query: str) -> str:
    return f"file:{urllib.parse.quote(str(path))}?{query}"


def _connect(uri: str, timeout: float) -> sqlite3.Connection:
    return sqlite3.connect(uri, uri=True, isolation_level=None, timeout=timeout, check_same_thread=False)


def _connect_readonly(path: Path, timeout: float = 10.0, *, create_nothing: bool = False) -> sqlite3.Connection:
    """Read without write access, and without adding anything beside a file no process has open.

    With a WAL file (a scheduler has the database open, or died with it open), read-only mode sees every
    commit, even in a run directory that cannot be written (a read-only mount, a colleague's run): SQLite
    then reads the WAL index other processes keep. Without one, nothing but a checkpointing writer changes
    the database file, and none has it open: it is read as immutable, which needs no lock or index files
    (a view that stays open, as the app's does, uses plain read-only mode where it may, to see a scheduler
    that starts later). Where the WAL cannot be indexed in place, a consistent private copy is read.
    `create_nothing`: never use a mode that may add -wal/-shm files where none are (the checks on open)."""
    has_wal = Path(f"{path}-wal").exists()
    if not has_wal and (create_nothing or not os.access(path.parent, os.W_OK)):
        return _connect(_uri(path, "mode=ro&immutable=1"), timeout)
    conn = _connect(_uri(path, "mode=ro"), timeout)
    try:
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        return conn
    except sqlite3.OperationalError:
        conn.close()
    if not has_wal:
        return _connect(_uri(path, "mode=ro&immutable=1"), timeout)
    return _private_copy(path)


def _private_copy(path: Path) -> sqlite3.Connection:
    """The database and its WAL copied (again if a checkpoint changed the file meanwhile) and read into memory."""

    def stamp() -> tuple[int, int, int]:
        st = os.stat(path)
        return st.st_ino, st.st_size, st.st_mtime_ns

    with tempfile.TemporaryDirectory(prefix="gputui-view-") as tmp:
        copy = Path(tmp) / "state.db"
        for _ in range(20):
            before = stamp()
            shutil.copyfile(path, copy)
            try:
                shutil.copyfile(f"{path}-wal", f"{copy}-wal")
            except FileNotFoundError:
                Path(f"{copy}-wal").unlink(missing_ok=True)
            if stamp() == before:
                break
        source = sqlite3.connect(copy)
        try:
            memory = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            source.backup(memory)
        finally:
            source.close()
    return memory


def _check_readable(path: Path) -> None:
    """Refuse, writing nothing, a state file that is empty, damaged, foreign or of another version."""
    try:
        with open(path, "rb") as f:
            header = f.read(16)
    except OSError as e:
        raise StateUnreadable(
            f"cannot read the state database {path}: {(e.strerror or str(e)).lower()}; it was left untouched."
        ) from e
    if not header:
        raise unreadable(path, "is empty (0 bytes)")
    if header != b"SQLite format 3\0":
        raise unreadable(path, "is not an SQLite database (damaged, or overwritten by another file)")
    try:
        conn = _connect_readonly(path, create_nothing=True)
        try:
            problems = [r[0] for r in conn.execute("PRAGMA quick_check(5)")]
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            version = None
            if "meta" in names:
                row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                version = None if row is None else json.loads(row[0])
        finally:
            conn.close()
    except (sqlite3.DatabaseError, ValueError) as e:
        raise unreadable(path, f"is damaged ({e})") from e
    if problems != ["ok"]:
        raise unreadable(path, f"is damaged (integrity check: {'; '.join(problems)[:200]})")
    if "tasks" not in names or "meta" not in names:
        if (path.parent / "run.json").exists() or (path.parent / "attempts.journal").exists():
            raise unreadable(path, "is an SQLite database but not gputui state (no tasks or meta table)")
        raise StateUnreadable(
            f"{path} is an SQLite database but not gputui state; it was left untouched.\n"
            f"  It is not gputui's to move or change: use another --run-dir."
        )
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise StateUnreadable(
            f"state database {path} was written by a newer gputui (schema {version}; this one reads "
            f"{SCHEMA_VERSION}); it was left untouched.\n  Go on with that gputui, or upgrade this one."
        )
    if version != SCHEMA_VERSION and version not in _MIGRATIONS:
        raise StateUnreadable(
            f"state database {path} was written by an older gputui (schema {version}; this one reads "
            f"{SCHEMA_VERSION}); it was left untouched.\n  Finish that run with the gputui that started it, or "
            f"start afresh with another --run-dir."
        )
    if "attempts" not in names:  # the other tables a view reads: lost, so the file is damaged
        raise unreadable(path, "is damaged (its attempts table is missing)")


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _get(r: sqlite3.Row, column: str):
    """A column an older schema may lack (read as it is by a view): None there."""
    try:
        return r[column]
    except IndexError:
        return None


def _task(r: sqlite3.Row) -> TaskRecord:
    return TaskRecord(
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
        gpu_seconds=_get(r, "gpu_seconds"),
        peak_memory=_get(r, "peak_memory"),
        gpus_simulated=bool(_get(r, "gpus_simulated")),
        kind=_get(r, "kind") or SHARD,
        info=json.loads(_get(r, "info") or "{}"),
        after=tuple(a for a in (_get(r, "after_ids") or "").split(",") if a),
        metric=_get(r, "metric"),
        rank=_get(r, "rank"),
        promoted=bool(_get(r, "promoted")),
        note=_get(r, "note"),
    )


def _ref(pid: int | None, start: int | None) -> ProcessRef | None:
    return None if pid is None or start is None else ProcessRef(pid, start)


def _attempt(r: sqlite3.Row) -> AttemptRecord:
    return AttemptRecord(
        task_id=r["task_id"],
        number=r["number"],
        status=r["status"],
        gpus=_gpus(r["gpus"]),
        command=tuple(json.loads(r["command"])),
        log_path=r["log_path"],
        started_at=r["started_at"],
        ended_at=r["ended_at"],
        exit_code=r["exit_code"],
        reason=r["reason"],
        waiter=_ref(r["waiter_pid"], r["waiter_start"]),
        worker=_ref(r["worker_pid"], r["worker_start"]),
        cgroup=r["cgroup"],
        cleared_at=r["cleared_at"],
        gpu_seconds=_get(r, "gpu_seconds"),
        peak_memory=_get(r, "peak_memory"),
        gpus_simulated=bool(_get(r, "gpus_simulated")),
    )
