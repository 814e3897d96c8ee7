"""Records read from the store are whole: every field, in the order the dataclass declares them (exports/tasks.json
lists a task's fields in that order), equal to the same record made by its constructor."""

from __future__ import annotations

import dataclasses

from gputui import clock
from gputui.engine.run_state import RunState
from gputui.jobs.kinds.base import NewTask
from gputui.jobs.tasks import SHARD, Status, TaskRecord
from gputui.rundir.records import AttemptRecord
from gputui.rundir.store import Store


def _whole(record) -> None:
    names = [f.name for f in dataclasses.fields(record)]
    assert list(vars(record)) == names
    assert type(record)(**{name: getattr(record, name) for name in names}) == record


def test_task_and_attempt_records_have_every_field_in_order(tmp_path):
    store = Store.open(tmp_path / "state.db", create=True)
    store.add_tasks([NewTask("shard-0", 0, SHARD, 0, 10, 10, info={"a": 1}, after=("x",))], budget=3)
    task = store.task("shard-0")
    _whole(task)
    assert (task.id, task.low, task.high, task.info, task.after, task.status) == (
        "shard-0", 0, 10, {"a": 1}, ("x",), Status.PENDING,
    )  # fmt: skip
    with store.transaction():
        store.start_attempt("shard-0", 1, (0, 1), ["true"], "log", clock.now(), (1, 2))
    attempt = store.attempt("shard-0", 1)
    assert isinstance(attempt, AttemptRecord)
    _whole(attempt)
    assert (attempt.gpus, attempt.command, attempt.waiter.pid) == ((0, 1), ("true",), 1)


def test_a_task_changed_through_the_run_state_keeps_its_fields_in_order(tmp_path):
    store = Store.open(tmp_path / "state.db", create=True)
    store.add_tasks([NewTask("shard-0", 0, SHARD, 0, 10, 10)], budget=3)
    state = RunState(store)
    state.load()
    with store.transaction():
        state.set("shard-0", status=Status.RUNNING, attempts=1, gpus=[2])
    held = state.tasks["shard-0"]
    assert isinstance(held, TaskRecord)
    _whole(held)
    assert (held.status, held.attempts, held.gpus) == (Status.RUNNING, 1, (2,))
    assert store.task("shard-0") == held
