from __future__ import annotations

import sqlite3

import pytest

from gputui.jobs.kinds.base import NewTask
from gputui.jobs.tasks import SHARD, Status
from gputui.rundir.state_file import StateUnreadable
from gputui.rundir.store import Store


def test_tasks_attempts_and_controls_round_trip(tmp_path):
    store = Store.open(tmp_path / "state.db", create=True)
    store.add_tasks(
        [NewTask("shard-0", 0, SHARD, 0, 10, 10, "/o/0.csv"), NewTask("shard-1", 1, SHARD, 10, 20, 10)], budget=3
    )
    with store.transaction():
        store.start_attempt("shard-0", 1, (0, 1), ["python", "w.py"], "/l/0.log", 100.0)
        store.update_task("shard-0", status=Status.RUNNING, attempts=1, gpus=(0, 1))
    t = store.task("shard-0")
    assert (t.status, t.attempts, t.gpus, t.range_label) == ("running", 1, (0, 1), "[0, 10)")
    assert store.unsettled_attempts()[0].command == ("python", "w.py")
    cid = store.post_control("pause", {"tasks": ["shard-0"]})
    assert [c.verb for c in store.pending_controls()] == ["pause"]
    with store.transaction():
        store.finish_control(cid, True, "paused")
    assert store.control(cid).ok and store.pending_controls() == []
    store.close()
    # Everything survives a reopen by another process's connection.
    again = Store.open(tmp_path / "state.db")
    assert again.task("shard-0").status == "running"
    assert again.output_of("shard-0") == "/o/0.csv" and again.output_of("shard-1") is None


def test_failed_transaction_leaves_nothing_behind(tmp_path):
    store = Store.open(tmp_path / "state.db", create=True)
    store.add_tasks([NewTask("shard-0", 0, SHARD, 0, 10, 10)], budget=3)
    with pytest.raises(RuntimeError), store.transaction():
        store.update_task("shard-0", status=Status.DONE)
        raise RuntimeError("crash in the middle")
    assert store.task("shard-0").status == Status.PENDING


def test_foreign_sqlite_file_is_refused_and_untouched(tmp_path):
    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE photos (id INTEGER)")
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(StateUnreadable, match="not gputui state"):
        Store.open(path)
    assert path.read_bytes() == before


def test_missing_state_without_create_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        Store.open(tmp_path / "nope.db")
