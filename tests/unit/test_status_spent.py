"""How long a run has been running, as `gputui status` says it: summed by SQLite over every attempt, each
interval measured on CLOCK_BOOTTIME between stamps of one boot, so a step of the wall clock changes nothing."""

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
    assert _spent(store, Stamp(4_800.0, 250.0, "boot")) == 200.0  # from a's start to now, on the boot clock
    assert _spent(store, Stamp(4_800.0, 250.0, "another boot")) == 120.0 + 80.0  # now on the wall clock only


def test_records_with_wall_times_only_are_measured_on_the_wall_clock(tmp_path):
    store = store_with(tmp_path, "a", "b")
    assert _spent(store, Stamp(10_000.0)) == 0.0  # nothing started yet
    with store.transaction():
        store.start_attempt("a", 1, (), (), "/l/a", 10_000.0)  # as rebuilt from a journal: a wall time
        store.update_attempt("a", 1, ended_at=10_030.0)
        store.start_attempt("b", 1, (), (), "/l/b", 10_010.0)
    assert _spent(store, Stamp(10_100.0, 5.0, "boot")) == 100.0
