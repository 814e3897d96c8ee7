"""A run directory written by the gputui before GPU accounting (schema 2) is upgraded when opened to change
it, and read as it is by views, never refused."""

from __future__ import annotations

import json
import sqlite3

from gputui.rundir.meta import read_meta
from gputui.rundir.schema import SCHEMA_VERSION
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
    assert store.meta("schema_version") == SCHEMA_VERSION == 5
    assert {"gpu_seconds", "peak_memory", "gpus_simulated"} <= _columns(path)
    assert {"started_boot", "ended_boot", "boot_id"} <= _columns(path)  # schema 5: durations on CLOCK_BOOTTIME
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
