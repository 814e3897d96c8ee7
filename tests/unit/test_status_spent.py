"""How long a run has been active, as `gputui status` says it (the app's header's measure): its attempts' times,
each interval measured on CLOCK_BOOTTIME between stamps of one boot, so a step of the wall clock changes nothing;
the wait since the last attempt counted only while a scheduler drives the run, and only since it started."""

from __future__ import annotations

from gputui.api.status import _spent
from gputui.clock import Stamp
from gputui.jobs.kinds.base import NewTask
from gputui.rundir.store import Store


def store_with(tmp_path, *tasks: str) -> Store:
    store = Store.open(tmp_path / "state.db", create=True)
    store.add_tasks([NewTask(t, i, "shard") for i, t in enumerate(tasks)], budget=3)
    return store


def test_a_step_of_the_wall_clock_does_not_stretch_the_time_spent(tmp_path):
    store = store_with(tmp_path, "a", "b")
    with store.transaction():
        store.start_attempt("a", 1, (), (), "/l/a", Stamp(1_000.0, 50.0, "boot"))
        store.update_attempt("a", 1, ended_at=Stamp(4_700.0, 150.0, "boot"))  # 100 s, the wall clock stepped 1 h
        store.start_attempt("b", 1, (), (), "/l/b", Stamp(4_720.0, 170.0, "boot"))  # still running
    assert _spent(store, Stamp(4_800.0, 250.0, "boot"), None) == 100.0 + 80.0  # a, then b until now: boot clock
    assert _spent(store, Stamp(4_800.0, 250.0, "another boot"), None) == 100.0 + 80.0  # b's on the wall clock


def test_records_with_wall_times_only_are_measured_on_the_wall_clock(tmp_path):
    store = store_with(tmp_path, "a", "b")
    assert _spent(store, Stamp(10_000.0), None) == 0.0  # nothing started yet
    with store.transaction():
        store.start_attempt("a", 1, (), (), "/l/a", 10_000.0)  # as rebuilt from a journal: a wall time
        store.update_attempt("a", 1, ended_at=10_030.0)
        store.start_attempt("b", 1, (), (), "/l/b", 10_010.0)
    assert _spent(store, Stamp(10_100.0, 5.0, "boot"), None) == 100.0  # b, from 10,010 to now, covers a


def test_time_waiting_counts_only_since_the_scheduler_that_drives_the_run_started(tmp_path):
    store = store_with(tmp_path, "a", "b")
    with store.transaction():
        store.start_attempt("a", 1, (), (), "/l/a", Stamp(1_000.0, 50.0, "boot"))
        store.update_attempt("a", 1, ended_at=Stamp(1_020.0, 70.0, "boot"))  # 20 s; then the run stopped
    now = Stamp(1_100.0, 150.0, "boot")
    assert _spent(store, now, None) == 20.0  # stopped: b waits for no one
    assert _spent(store, now, 1_090.0) == 20.0 + 10.0  # launched again at 1,090: b waits since, not since 1,020
    assert _spent(store, now, 1_010.0) == 20.0 + 80.0  # a scheduler that ran all along waited since a ended
