"""RunState: the loop's mirror of the store. `set` is the one place a task's fields change: the store is
written, and the counts and the waiting line follow every status change."""

from __future__ import annotations

import heapq

from gputui.engine.attempt import Live
from gputui.engine.run_state import RunState
from gputui.jobs.tasks import Status, TaskRecord


def task(task_id: str, index: int, status: str = Status.PENDING) -> TaskRecord:
    return TaskRecord(task_id, index, 0, 10, 10, status, 0, 3, (), None, None, None, None, None)


class Store:
    """What RunState reads and writes of the store, as plain values."""

    def __init__(self, *tasks: TaskRecord):
        self.rows = {t.id: t for t in tasks}
        self.written: list[tuple[str, dict]] = []

    def tasks(self) -> list[TaskRecord]:
        return list(self.rows.values())

    def task_outputs(self) -> dict[str, str | None]:
        return {t: f"/out/{t}.csv" for t in self.rows}

    def update_task(self, task_id: str, **fields) -> None:
        self.written.append((task_id, fields))


def waiting(state: RunState) -> list[str]:
    """The waiting line in launch order, stale entries (no longer waiting) left out, as the launcher skips them."""
    line = list(state.waiting)
    return [
        task_id for _, task_id in sorted(line) if state.tasks[task_id].status in (Status.PENDING, Status.RETRYING)
    ]


def loaded(*tasks: TaskRecord) -> RunState:
    state = RunState(Store(*tasks))
    state.load()
    return state


def test_load_counts_the_tasks_and_lines_up_those_that_wait():
    state = loaded(
        task("c", 2), task("a", 0, Status.DONE), task("b", 1, Status.RETRYING), task("d", 3, Status.RUNNING)
    )
    assert state.counts == {Status.PENDING: 1, Status.DONE: 1, Status.RETRYING: 1, Status.RUNNING: 1}
    assert heapq.heappop(state.waiting) == (1, "b") and waiting(state) == ["c"]
    assert state.outputs["a"] == "/out/a.csv"
    assert state.todo() == 3 and not state.all_final()


def test_set_writes_the_store_and_moves_the_counts():
    state = loaded(task("a", 0), task("b", 1))
    state.set("a", status=Status.RUNNING, attempts=1, gpus=[0, 1])
    assert state.store.written == [("a", {"status": Status.RUNNING, "attempts": 1, "gpus": [0, 1]})]
    assert state.tasks["a"].gpus == (0, 1) and state.tasks["a"].attempts == 1  # a tuple, as the store reads it
    assert state.counts[Status.PENDING] == 1 and state.counts[Status.RUNNING] == 1
    assert waiting(state) == ["b"]  # a's entry is stale now: skipped


def test_a_task_that_comes_to_wait_again_joins_the_line():
    state = loaded(task("a", 0, Status.RUNNING), task("b", 1))
    state.set("a", status=Status.RETRYING, next_try_at=5.0)
    assert state.counts == {Status.RETRYING: 1, Status.PENDING: 1, Status.RUNNING: 0}
    assert waiting(state) == ["a", "b"]


def test_fields_without_a_status_change_leave_the_counts_alone():
    state = loaded(task("a", 0, Status.RETRYING))
    state.set("a", next_try_at=None)  # `start` asks for a retry now
    assert state.counts == {Status.RETRYING: 1} and len(state.waiting) == 1


def test_every_task_final_ends_the_run():
    state = loaded(task("a", 0, Status.RUNNING), task("b", 1, Status.FAILED))
    for status in (Status.DONE, Status.KILLED, Status.SKIPPED):
        state.set("a", status=status)
        assert state.all_final() and state.todo() == 0


def test_a_task_a_kind_adds_is_known_and_waits():
    state = loaded(task("a", 0, Status.DONE))
    state.added(task("trial-1", 5), "/out/trial-1")
    assert state.counts[Status.PENDING] == 1 and waiting(state) == ["trial-1"] and not state.all_final()
    assert state.outputs["trial-1"] == "/out/trial-1" and state.store.written == []  # the kind wrote it


def test_start_now_puts_a_task_first_in_line():
    state = loaded(task("a", 0), task("b", 1))
    state.wait(-1, "b")
    assert heapq.heappop(state.waiting) == (-1, "b")


def test_attempts_are_the_running_then_the_lingering():
    state = loaded(task("a", 0, Status.RUNNING), task("b", 1, Status.RETRYING))
    running, left = Live("a", 1, (0,), "a", "/l/a", 0.0), Live("b", 1, (1,), "b", "/l/b", 0.0)
    state.live["a"], state.lingering[left.key] = running, left
    assert state.attempts() == [running, left]
