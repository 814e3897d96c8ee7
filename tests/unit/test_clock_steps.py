"""A step of the wall clock (NTP, a VM resumed, `date -s`) moves no interval gputui measures: attempts'
durations, a run's elapsed time and retry back-off are measured on CLOCK_BOOTTIME stamps (across
processes) or the monotonic clock (within one), the wall clock only where a stamp of another boot, or an
older record without one, leaves nothing else, and then never below 0."""

from __future__ import annotations

import sqlite3
import time

from gputui import clock
from gputui.clock import Stamp
from gputui.executors.journal import line, parse
from gputui.jobs.tasks import Status, TaskRecord
from gputui.rundir.schema import SCHEMA_VERSION
from gputui.rundir.store import Store
from gputui.views.runview import RunSnapshot, TaskView, attempt_spans, union_length

BOOT = "0f6e2c4a-1111-4222-8333-444455556666"
T0 = 1.8e9  # wall clock at the launch


class _Clocks:
    """time.time, time.monotonic and CLOCK_BOOTTIME as the test sets them: `step` moves the wall clock alone,
    `tick` lets real time pass on all three."""

    def __init__(self, monkeypatch):
        self.wall, self.mono, self.boot = T0, 5000.0, 5000.0
        monkeypatch.setattr(time, "time", lambda: self.wall)
        monkeypatch.setattr(time, "monotonic", lambda: self.mono)
        monkeypatch.setattr(clock, "boottime", lambda: self.boot)
        monkeypatch.setattr(clock, "boot_id", lambda: BOOT)

    def step(self, seconds: float) -> None:
        self.wall += seconds

    def tick(self, seconds: float) -> None:
        self.wall, self.mono, self.boot = self.wall + seconds, self.mono + seconds, self.boot + seconds


def test_between_uses_boottime_within_a_boot_and_the_wall_clock_clamped_otherwise():
    start = Stamp(T0, 100.0, BOOT)
    assert clock.between(start, Stamp(T0 + 7200 + 5, 105.0, BOOT)) == 5.0  # +2 h step: 5 s
    assert clock.between(start, Stamp(T0 - 3600 + 24, 124.0, BOOT)) == 24.0  # -1 h step: 24 s
    assert clock.between(start, Stamp(T0 + 30, 2.0, "another boot")) == 30.0  # rebooted: wall clock
    assert clock.between(start, Stamp(T0 - 60, 2.0, "another boot")) == 0.0  # never negative
    assert clock.between(T0, T0 + 12.5) == 12.5 and clock.between(T0, T0 - 1) == 0.0  # older records
    s = Stamp(T0, 100.0, BOOT).later(3.0)
    assert (float(s), s.boot, s.boot_id) == (T0 + 3, 103.0, BOOT)


def test_the_journal_stamps_an_exit_with_boottime_and_reads_old_records_as_wall_time(monkeypatch):
    from gputui.executors.journal import exit_fields

    clocks = _Clocks(monkeypatch)
    clocks.tick(60)
    seen: dict = {}
    parse(line("exit", "shard-0", 1, *exit_fields(0, 0)).decode(), seen)
    ends = seen[("shard-0", 1)]
    assert (ends.exit_code, ends.leftovers, float(ends.ended_at)) == (0, 0, T0 + 60)
    assert (ends.ended_at.boot, ends.ended_at.boot_id) == (5060.0, BOOT)
    parse(line("exit", "shard-1", 2, -9, "1700000000.250", 1).decode(), seen)  # written by an older gputui
    old = seen[("shard-1", 2)]
    assert (old.exit_code, old.leftovers, float(old.ended_at), old.ended_at.boot) == (-9, 1, 1700000000.25, None)


def test_an_attempts_duration_in_the_store_ignores_steps_between_its_launch_and_its_end(tmp_path, monkeypatch):
    clocks = _Clocks(monkeypatch)
    store = Store.open(tmp_path / "state.db", create=True)
    with store.transaction():
        for task in ("a", "b", "c"):
            store.start_attempt(task, 1, (), ["w"], f"/l/{task}.log", clock.now())
        store.start_attempt("d", 1, (), ["w"], "/l/d.log", T0)  # rebuilt from a journal: wall time only
    clocks.tick(6)
    clocks.step(7200)
    clocks.tick(6)
    clocks.step(-10800)
    clocks.tick(12)
    ended = clock.now()
    with store.transaction():
        store.update_attempt("a", 1, status=Status.DONE, ended_at=ended)
        store.update_attempt("b", 1, status=Status.DONE, ended_at=Stamp(ended, 7.0, "another boot"))
        store.update_attempt("c", 1, status=Status.DONE, ended_at=float(ended))
        store.update_attempt("d", 1, status=Status.DONE, ended_at=T0 + 24)
    a, b, c, d = (store.attempt(t, 1) for t in "abcd")
    assert float(a.ended_at) == T0 + 24 - 3600  # the wall clock, as shown
    assert a.duration == 24.0 and a.elapsed(T0) == 24.0  # as measured
    assert b.duration == c.duration == 0.0  # an end of another boot, or unstamped: the wall clock, clamped
    assert d.duration == 24.0  # no start stamp: the wall clock
    store.close()


V4_ATTEMPTS = """
CREATE TABLE attempts (
    task_id TEXT NOT NULL, number INTEGER NOT NULL, status TEXT NOT NULL, gpus TEXT NOT NULL,
    command TEXT NOT NULL, log_path TEXT NOT NULL, started_at REAL NOT NULL, ended_at REAL,
    exit_code INTEGER, reason TEXT, waiter_pid INTEGER, waiter_start INTEGER, worker_pid INTEGER,
    worker_start INTEGER, cgroup TEXT, cleared_at REAL, gpu_seconds REAL, peak_memory INTEGER,
    gpus_simulated INTEGER,
    PRIMARY KEY (task_id, number)
)"""


def _v4_database(path) -> None:
    """A state database of schema 4 (before boot stamps), with one attempt ended 90 s after its launch and
    one running."""
    store = Store.open(path, create=True)
    store.close()
    conn = sqlite3.connect(path)
    conn.executescript(f"DROP TABLE attempts; {V4_ATTEMPTS};")
    conn.execute("UPDATE meta SET value='4' WHERE key='schema_version'")
    conn.execute(
        "INSERT INTO attempts(task_id, number, status, gpus, command, log_path, started_at, ended_at) "
        "VALUES ('a', 1, 'done', '', '[]', '/l/a.log', 1000.0, 1090.0), "
        "('b', 1, 'running', '', '[]', '/l/b.log', 1000.0, NULL)"
    )
    conn.commit()
    conn.close()


def test_a_schema_4_run_is_read_as_it_is_and_upgraded_to_measure_new_ends(tmp_path, monkeypatch):
    path = tmp_path / "state.db"
    _v4_database(path)
    view = Store.open(path, readonly=True)
    assert view.attempt("a", 1).duration == 90.0 and view.attempt("b", 1).elapsed(1030.0) == 30.0
    view.close()
    store = Store.open(path)  # as a scheduler resuming the run does
    columns = {r[1] for r in store._db.execute("PRAGMA table_info(attempts)")}
    assert {"started_boot", "ended_boot", "boot_id"} <= columns and store.meta("schema_version") == SCHEMA_VERSION
    with store.transaction():
        store.update_attempt("b", 1, status=Status.DONE, ended_at=Stamp(1060.0, 77.0, BOOT))
    assert store.attempt("a", 1).duration == 90.0
    assert store.attempt("b", 1).duration == 60.0  # its launch has no stamp: the wall clock
    store.close()


def _task(status: str = Status.RUNNING, next_try_at: float | None = None) -> TaskRecord:
    return TaskRecord("t", 0, 0, 10, 10, status, 1, 3, (), None, None, T0, None, next_try_at)


def _attempt(started, ended, status=Status.DONE):
    from gputui.rundir.records import AttemptRecord

    return AttemptRecord("t", 1, status, (), (), "/l", started, ended, None, None, None, None, None, None)


def test_the_runs_elapsed_time_is_never_negative_nor_hours_long_after_a_step(monkeypatch):
    clocks = _Clocks(monkeypatch)
    started = clock.now()
    clocks.tick(6)
    clocks.step(7200)
    clocks.tick(6)
    clocks.step(-10800)
    clocks.tick(12)
    now = clock.now()
    running = TaskView(_task(), _attempt(started, None, Status.RUNNING), history=(_attempt(started, None),))
    done = TaskView(_task(Status.DONE), _attempt(started, now), history=(_attempt(started, now),))
    for view in (running, done):
        assert view.elapsed == 24.0
        assert union_length(attempt_spans([view], now, bridge_s=30.0)) == 24.0
    snap = RunSnapshot("/r", "j", "s", True, tasks=[running], taken_at=now, active_s=24.0)
    clocks.step(7200)
    clocks.tick(1)
    assert snap.elapsed(clock.now()) == 25.0


def test_a_retry_waits_its_back_off_however_the_wall_clock_steps(monkeypatch):
    from gputui.engine.launcher import RetryClock

    clocks = _Clocks(monkeypatch)
    host = RetryClock(backoff_max_s=300.0)
    retrying = _task(Status.RETRYING, next_try_at=time.time() + 10)  # as the settle decided it
    assert host.wait(retrying) == 10.0
    clocks.tick(4)
    clocks.step(-3600)  # not an hour more to wait
    assert host.wait(retrying) == 6.0
    clocks.step(7200)  # nor due at once
    assert host.wait(retrying) == 6.0
    clocks.tick(6)
    assert host.wait(retrying) == 0.0
    assert host.wait(_task(Status.RETRYING, next_try_at=time.time() + 1e6)) == 300.0  # read after a restart
    assert host.wait(_task(Status.RETRYING, next_try_at=None)) == 0.0  # "start now"
