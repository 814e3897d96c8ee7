"""The state database's schema, and what upgrades an older one in place."""

from __future__ import annotations

SCHEMA_VERSION = 6


# What opening a database of an older schema for writing adds to it, by the version it had; a view (read-only)
# reads an older one as it is, with what it lacks shown as unknown.
MIGRATIONS: dict[int, tuple[str, ...]] = {
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
    # An attempt's start and end on CLOCK_BOOTTIME, and the boot they were read in (gputui.clock): its
    # duration never follows a wall-clock step. Rows without them are measured on the wall clock.
    4: (
        "ALTER TABLE attempts ADD COLUMN started_boot REAL",
        "ALTER TABLE attempts ADD COLUMN ended_boot REAL",
        "ALTER TABLE attempts ADD COLUMN boot_id TEXT",
    ),
    # An attempt's energy on its GPUs (joules), and whether any of it is power x time (engine/accounting.py).
    5: (
        "ALTER TABLE attempts ADD COLUMN energy_j REAL",
        "ALTER TABLE attempts ADD COLUMN energy_estimated INTEGER",
    ),
}


# The indexes let a run of 100,000 tasks be read a page at a time, in plan order or by status (the scheduler's
# waiting line, `gputui status`), and counted by status without reading a row. `CREATE ... IF NOT EXISTS`: an
# older database gets them the first time it is opened for writing; a view reads one without them as it is.
SCHEMA = """
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
    gpus_simulated INTEGER, started_boot REAL, ended_boot REAL, boot_id TEXT, energy_j REAL,
    energy_estimated INTEGER,
    PRIMARY KEY (task_id, number)
);
-- The app's table reads a run's tasks a page at a time, in plan order or by status (rundir/task_order.py).
CREATE INDEX IF NOT EXISTS tasks_by_idx ON tasks(idx);
CREATE INDEX IF NOT EXISTS tasks_by_status ON tasks(status, idx);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, task_id TEXT, kind TEXT NOT NULL, message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS controls (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, verb TEXT NOT NULL, args TEXT NOT NULL,
    done_at REAL, ok INTEGER, result TEXT
);
CREATE INDEX IF NOT EXISTS tasks_by_index ON tasks(idx);
CREATE INDEX IF NOT EXISTS tasks_by_status ON tasks(status, idx);
"""
