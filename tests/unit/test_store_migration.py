"""A run directory written by the gputui before GPU accounting (schema 2) is upgraded when opened to change
it, and read as it is by views, never refused."""

from __future__ import annotations

import json
import sqlite3

from gputui.jobs.kinds.base import NewTask
from gputui.rundir import task_json
from gputui.rundir.meta import read_meta
from gputui.rundir.schema import MIGRATIONS, SCHEMA_VERSION
from gputui.rundir.store import Store

V2_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tasks (
    id TEXT PRIMARY KEY, idx INTEGER NOT NULL, low INTEGER NOT NULL, high INTEGER NOT NULL,
    count INTEGER NOT NULL, output TEXT, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    budget INTEGER NOT NULL, gpus TEXT NOT NULL DEFAULT '', reason TEXT, exit_code INTEGER,
    started_at REAL, ended_at REAL, next_try_at REAL
);
CREATE TABLE attempts (
    task_id TEXT NOT NULL, number INTEGER NOT NULL, status TEXT NOT NULL, gpus TEXT NOT NULL,
    command TEXT NOT NULL, log_path TEXT NOT NULL, started_at REAL NOT NULL, ended_at REAL,
    exit_code INTEGER, reason TEXT, waiter_pid INTEGER, waiter_start INTEGER, worker_pid INTEGER,
    worker_start INTEGER, cgroup TEXT, cleared_at REAL,
    PRIMARY KEY (task_id, number)
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, task_id TEXT, kind TEXT NOT NULL, message TEXT NOT NULL
);
CREATE TABLE controls (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, verb TEXT NOT NULL, args TEXT NOT NULL,
    done_at REAL, ok INTEGER, result TEXT
);
"""


def _v2_database(path):
    """What gputui with schema 2 left: one task done after one attempt, one still pending."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(V2_SCHEMA)
    conn.executemany(
        "INSERT INTO meta VALUES (?, ?)", [("schema_version", "2"), ("scheduler_id", json.dumps("sched-v2"))]
    )
    conn.execute(
        "INSERT INTO tasks(id, idx, low, high, count, status, attempts, budget, gpus) "
        "VALUES ('shard-0', 0, 0, 10, 10, 'done', 1, 3, '0')"
    )
    conn.execute(
        "INSERT INTO tasks(id, idx, low, high, count, status, budget) "
        "VALUES ('shard-1', 1, 10, 20, 10, 'pending', 3)"
    )
    conn.execute(
        "INSERT INTO attempts(task_id, number, status, gpus, command, log_path, started_at, ended_at, exit_code, "
        "cleared_at) VALUES ('shard-0', 1, 'done', '0', '[\"w\"]', '/l/0.log', 100.0, 160.0, 0, 160.0)"
    )
    conn.commit()
    conn.close()


def _columns(path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {r[1] for r in conn.execute("PRAGMA table_info(attempts)")}
    finally:
        conn.close()


def test_a_view_reads_a_schema_2_run_as_it_is(tmp_path):
    path = tmp_path / "state.db"
    _v2_database(path)
    before = path.read_bytes()
    store = Store.open(path, readonly=True)
    (task, _), attempt = store.tasks(), store.attempt("shard-0", 1)
    assert (task.status, task.gpu_seconds, task.peak_memory) == ("done", None, None)
    assert (attempt.duration, attempt.gpu_seconds, attempt.peak_memory) == (60.0, None, None)
    meta = read_meta(store)  # the run's facts: what it recorded, the job file's defaults for the rest
    assert (meta.identity.scheduler_id, meta.job.max_attempts, meta.executor.kind) == ("sched-v2", 3, "local")
    store.close()
    assert path.read_bytes() == before and "gpu_seconds" not in _columns(path)


def test_opening_a_schema_2_run_to_change_it_upgrades_it_and_keeps_everything(tmp_path):
    path = tmp_path / "state.db"
    _v2_database(path)
    store = Store.open(path)
    assert store.meta("schema_version") == SCHEMA_VERSION == 6
    assert {"gpu_seconds", "peak_memory", "gpus_simulated"} <= _columns(path)
    assert {"started_boot", "ended_boot", "boot_id"} <= _columns(path)  # schema 5: durations on CLOCK_BOOTTIME
    assert {"energy_j", "energy_estimated"} <= _columns(path)  # schema 6: energy per attempt
    assert store.meta("scheduler_id") == "sched-v2" and [t.status for t in store.tasks()] == ["done", "pending"]
    assert [(t.kind, t.after, t.rank) for t in store.tasks()] == [("shard", (), None)] * 2  # job kinds: schema 4
    assert store.attempt("shard-0", 1).gpu_seconds is None  # not measured by the gputui that ran it
    with store.transaction():
        store.start_attempt("shard-1", 1, (0, 1), ["w"], "/l/1.log", 200.0)
        store.update_attempt("shard-1", 1, gpu_seconds=7200.0, peak_memory=3 * 2**30, gpus_simulated=0)
    store.close()
    again = Store.open(path, readonly=True)
    shard1 = again.task("shard-1")
    assert (shard1.gpu_hours, shard1.peak_memory) == (2.0, 3 * 2**30)
    again.close()


def _as_made_by(path, version: int) -> None:
    """The database at `path` as the gputui of schema `version` would have left it: today's, less the columns the
    migrations since then add (SQLite drops a column in place)."""
    conn = sqlite3.connect(path)
    for step in range(version, SCHEMA_VERSION):
        for statement in MIGRATIONS[step]:
            table, column = statement.split()[2], statement.split()[5]
            conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(version),))
    conn.commit()
    conn.close()


def _v5_database(path) -> None:
    """What gputui with schema 5 (before energy) left: a task done after two attempts measured on GPUs."""
    store = Store.open(path, create=True)
    with store.transaction():
        store.add_tasks(
            [NewTask("shard-0", 0, "shard", 0, 10, 10), NewTask("shard-1", 1, "shard", 10, 20, 10)], budget=3
        )
        for number in (1, 2):
            store.start_attempt("shard-0", number, (0,), ["w"], f"/l/{number}.log", 100.0 * number)
            store.update_attempt(
                "shard-0", number, ended_at=100.0 * number + 60, gpu_seconds=60.0, gpus_simulated=1
            )
        store.update_task("shard-0", status="done", attempts=2)
    store.close()
    _as_made_by(path, 5)


def test_a_schema_5_run_reads_as_before_without_energy_and_is_upgraded_to_record_it(tmp_path):
    path = tmp_path / "state.db"
    _v5_database(path)
    assert "energy_j" not in _columns(path)
    before = path.read_bytes()
    view = Store.open(path, readonly=True)
    task = view.task("shard-0")
    assert (task.gpu_seconds, task.energy_j, task.energy_estimated) == (120.0, None, False)
    assert view.attempt("shard-0", 2).energy_j is None and view.gpu_use().energy_j is None
    rows = [json.loads(row) for row in task_json.rows(view)]  # status --json: made by SQLite
    last = {t.id: (view.attempts(t.id) or [None])[-1] for t in view.tasks()}
    python = [json.loads(task_json.ascii_json(task_json.task_json(t, last[t.id]))) for t in view.tasks()]
    assert [r["energy_j"] for r in rows] == [None, None] and rows == python  # the store's reference agrees
    exported = [json.loads(row) for row in task_json.export_rows(view)]
    assert [a["energy_j"] for a in exported[0]["attempt_log"]] == [None, None]
    view.close()
    assert path.read_bytes() == before  # a view never upgrades it

    store = Store.open(path)  # as a scheduler resuming the run does
    assert store.meta("schema_version") == SCHEMA_VERSION and {"energy_j", "energy_estimated"} <= _columns(path)
    with store.transaction():
        store.start_attempt("shard-1", 1, (0,), ["w"], "/l/3.log", 300.0)
        store.update_attempt("shard-1", 1, gpu_seconds=5.0, energy_j=1500.0, energy_estimated=1)
    store.close()
    again = Store.open(path, readonly=True)
    assert [(t.energy_j, t.energy_estimated) for t in again.tasks()] == [(None, False), (1500.0, True)]
    assert again.gpu_use()[3:] == (1500.0, True) and again.task("shard-0").gpu_seconds == 120.0
    again.close()
