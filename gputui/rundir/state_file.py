"""Opening the state database safely: read-only without adding a file where none is, refusing (and never
touching) a file that is empty, damaged, foreign or of another version, and the one safe next step to say."""

from __future__ import annotations

import errno
import json
import os
import shlex
import shutil
import sqlite3
import tempfile
import urllib.parse
from pathlib import Path

from gputui.rundir.schema import MIGRATIONS, SCHEMA_VERSION


class StateUnreadable(RuntimeError):
    """The state database exists but is not ours or is damaged; it is kept as it is."""


class StateReadOnly(RuntimeError):
    """A command that changes the run was given a run directory it cannot write to."""


def check_writable(path: Path) -> None:
    for target in (path.parent, path):
        if target.exists() and not os.access(target, os.W_OK):
            read_only = bool(os.statvfs(target).f_flag & os.ST_RDONLY)
            why = "read-only file system" if read_only else "permission denied"
            raise StateReadOnly(
                f"cannot write to {target}: {why}; this command changes the run, so it did nothing.\n"
                f"  `gputui status --run-dir {path.parent}` shows the run without writing anything."
            )


def rebuild_hint(path: Path, lead: str = "To go on: ") -> str:
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
        f"{lead}`gputui run --jobs {job} --run-dir {shlex.quote(str(path.parent))} --rebuild-state` moves it "
        f"aside and rebuilds the run's state from attempts.journal and the done-manifests (workers still "
        f"running are re-adopted, never started twice)."
    )


def unreadable(path: Path, what: str) -> StateUnreadable:
    """`what` went wrong with the state database at `path`; it is left as it is. Two lines."""
    return StateUnreadable(f"state database {path} {what}; it was left untouched.\n  {rebuild_hint(path)}")


RUN_JSON = "run.json"  # the run's identity, kept outside its state database (written by rebuild.write_identity)


def run_identity(run_dir: Path) -> tuple[str, str, str | None] | None:
    """The run a directory holds, as recorded outside its state database: (where it is recorded, scheduler
    id, job name) from run.json, or from exports/config.json where there is no run.json (a run of a gputui
    before it); None when neither names one. The one reader of it: a rebuild keeps this scheduler id, and
    check_readable refuses a state database of another."""
    for where in (RUN_JSON, "exports/config.json"):
        try:
            found = json.loads((run_dir / where).read_text())
        except (OSError, ValueError):
            continue
        sid = found.get("scheduler_id") if isinstance(found, dict) else None
        if isinstance(sid, str) and sid:
            job = found.get("job")
            return where, sid, job if isinstance(job, str) else None
    return None


def _foreign(path: Path, sid: object, job: object) -> StateUnreadable | None:
    """The refusal of a state database whose run (scheduler id `sid`, job `job`, from its meta) is not the
    one its directory holds; None when it is that run, or either side names none (nothing to compare)."""
    recorded = run_identity(path.parent)
    if recorded is None or not isinstance(sid, str) or not sid or sid == recorded[1]:
        return None
    where, own_sid, own_job = recorded

    def who(job: object, sid: str) -> str:
        return f"job {json.dumps(job) if isinstance(job, str) else '(unnamed)'}, scheduler {sid[:8]}"

    return StateUnreadable(
        f"{path} belongs to another run ({who(job, sid)}), not this one ({where}: {who(own_job, own_sid)}); "
        f"it was left untouched.\n  Move it away, or rebuild this run's own state: "
        f"{rebuild_hint(path, lead='')}"
    )


def _uri(path: Path, query: str) -> str:
    return f"file:{urllib.parse.quote(str(path))}?{query}"


def _connect(uri: str, timeout: float) -> sqlite3.Connection:
    return sqlite3.connect(uri, uri=True, isolation_level=None, timeout=timeout, check_same_thread=False)


def connect_readonly(path: Path, timeout: float = 10.0, *, create_nothing: bool = False) -> sqlite3.Connection:
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


def check_readable(path: Path) -> None:
    """Refuse, writing nothing, a state file that is empty, damaged, foreign (not gputui's, or another
    run's) or of another version."""
    # Never open()ed here: closing any descriptor of the file ends every POSIX lock this process holds on
    # it, its SQLite connections' included, and a scheduler could then remove the WAL they still read.
    try:
        size = os.stat(path).st_size
        if not os.access(path, os.R_OK):
            raise PermissionError(errno.EACCES, "permission denied")
    except OSError as e:
        raise StateUnreadable(
            f"cannot read the state database {path}: {(e.strerror or str(e)).lower()}; it was left untouched."
        ) from e
    if not size:
        raise unreadable(path, "is empty (0 bytes)")
    try:
        conn = connect_readonly(path, create_nothing=True)
        try:
            problems = [r[0] for r in conn.execute("PRAGMA quick_check(5)")]
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            meta: dict = {}
            if "meta" in names:
                keys = ("schema_version", "scheduler_id", "job_name")
                rows = conn.execute("SELECT key, value FROM meta WHERE key IN (?, ?, ?)", keys)
                meta = {key: json.loads(value) for key, value in rows}
            version = meta.get("schema_version")
        finally:
            conn.close()
    except (sqlite3.DatabaseError, ValueError) as e:
        if "file is not a database" in str(e):
            raise unreadable(path, "is not an SQLite database (damaged, or overwritten by another file)") from e
        raise unreadable(path, f"is damaged ({e})") from e
    if problems != ["ok"]:
        raise unreadable(path, f"is damaged (integrity check: {'; '.join(problems)[:200]})")
    if "tasks" not in names or "meta" not in names:
        if (path.parent / RUN_JSON).exists() or (path.parent / "attempts.journal").exists():
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
    if version != SCHEMA_VERSION and version not in MIGRATIONS:
        raise StateUnreadable(
            f"state database {path} was written by an older gputui (schema {version}; this one reads "
            f"{SCHEMA_VERSION}); it was left untouched.\n  Finish that run with the gputui that started it, or "
            f"start afresh with another --run-dir."
        )
    if "attempts" not in names:  # the other tables a view reads: lost, so the file is damaged
        raise unreadable(path, "is damaged (its attempts table is missing)")
    refusal = _foreign(path, meta.get("scheduler_id"), meta.get("job_name"))
    if refusal is not None:  # another run's state copied in: shown or driven, it would pass for this run's
        raise refusal


def tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
