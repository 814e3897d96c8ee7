"""RunState: the loop's view of the store. `set` is the one place a task's fields change: the store is written,
and the counts and the waiting line follow every status change. A run of many tasks is held a page at a time:
the line still gives them in plan order."""

from __future__ import annotations

import heapq

from gputui.engine.attempt import WAITING, Live
from gputui.engine.run_state import PAGE, RunState
from gputui.jobs.kinds.base import NewTask
from gputui.jobs.tasks import Status
from gputui.rundir.store import Store


def store_of(tmp_path, *tasks: tuple[str, int, str]) -> Store:
    """A real state database holding these (id, index, status) tasks, each with its output file."""
    store = Store.open(tmp_path / "state.db", create=True)
    store.add_tasks([NewTask(i, index, "shard", 0, 10, 10, f"/out/{i}.csv") for i, index, _ in tasks], budget=3)
    with store.transaction():
        for task_id, _, status in tasks:
            store.update_task(task_id, status=status)
    return store


def loaded(tmp_path, *tasks: tuple[str, int, str]) -> RunState:
    state = RunState(store_of(tmp_path, *tasks))
    state.load()
    return state


def launch_order(state: RunState, limit: int | None = None) -> list[str]:
    """The waiting line in launch order, popped as the launcher pops it (stale entries skipped)."""
    found, seen = [], set()
    while state.waiting and (limit is None or len(found) < limit):
        _, task_id = heapq.heappop(state.waiting)
        if state.tasks[task_id].status in WAITING and task_id not in seen:
            seen.add(task_id)
            found.append(task_id)
    return found


def test_load_counts_the_tasks_and_lines_up_those_that_wait(tmp_path):
    state = loaded(
        tmp_path,
        ("c", 2, Status.PENDING),
        ("a", 0, Status.DONE),
        ("b", 1, Status.RETRYING),
        ("d", 3, Status.RUNNING),
    )
    assert state.counts == {Status.PENDING: 1, Status.DONE: 1, Status.RETRYING: 1, Status.RUNNING: 1}
    assert launch_order(state) == ["b", "c"]
    assert state.outputs["a"] == "/out/a.csv" and state.tasks["a"].status == Status.DONE
    assert state.todo() == 3 and not state.all_final()


def test_set_writes_the_store_and_moves_the_counts(tmp_path):
    state = loaded(tmp_path, ("a", 0, Status.PENDING), ("b", 1, Status.PENDING))
    state.set("a", status=Status.RUNNING, attempts=1, gpus=[0, 1])
    assert state.store.task("a").gpus == (0, 1) and state.store.task("a").status == Status.RUNNING
    assert state.tasks["a"].gpus == (0, 1) and state.tasks["a"].attempts == 1  # a tuple, as the store reads it
    assert state.counts[Status.PENDING] == 1 and state.counts[Status.RUNNING] == 1
    assert launch_order(state) == ["b"]  # a is running: not launched again


def test_a_task_that_comes_to_wait_again_joins_the_line(tmp_path):
    state = loaded(tmp_path, ("a", 0, Status.RUNNING), ("b", 1, Status.PENDING))
    state.set("a", status=Status.RETRYING, next_try_at=5.0)
    assert state.counts == {Status.RETRYING: 1, Status.PENDING: 1, Status.RUNNING: 0}
    assert [(t.id, t.next_try_at) for t in state.retrying()] == [("a", 5.0)]
    assert launch_order(state) == ["a", "b"]


def test_fields_without_a_status_change_leave_the_counts_alone(tmp_path):
    state = loaded(tmp_path, ("a", 0, Status.RETRYING))
    state.set("a", next_try_at=None)  # `start` asks for a retry now
    assert state.counts == {Status.RETRYING: 1} and launch_order(state) == ["a"]


def test_every_task_final_ends_the_run(tmp_path):
    state = loaded(tmp_path, ("a", 0, Status.RUNNING), ("b", 1, Status.FAILED))
    for status in (Status.DONE, Status.KILLED, Status.SKIPPED):
        state.set("a", status=status)
        assert state.all_final() and state.todo() == 0
        assert state.tasks["a"].status == status  # read from the store: a final task is not held


def test_a_task_a_kind_adds_is_known_and_waits(tmp_path):
    state = loaded(tmp_path, ("a", 0, Status.DONE))
    state.store.add_tasks([NewTask("trial-1", 5, "trial", output="/out/trial-1")], budget=3)  # as the kind does
    state.added(state.store.task("trial-1"))
    assert state.counts[Status.PENDING] == 1 and launch_order(state) == ["trial-1"] and not state.all_final()
    assert state.outputs["trial-1"] == "/out/trial-1" and "trial-1" in state.tasks and "nope" not in state.tasks


def test_start_now_puts_a_task_first_in_line(tmp_path):
    state = loaded(tmp_path, ("a", 0, Status.PENDING), ("b", 1, Status.PENDING))
    state.wait(-1, "b")
    assert launch_order(state) == ["b", "a"]


def test_attempts_are_the_running_then_the_lingering(tmp_path):
    state = loaded(tmp_path, ("a", 0, Status.RUNNING), ("b", 1, Status.RETRYING))
    running, left = Live("a", 1, (0,), "a", "/l/a", 0.0), Live("b", 1, (1,), "b", "/l/b", 0.0)
    state.live["a"], state.lingering[left.key] = running, left
    assert state.attempts() == [running, left]


def test_many_tasks_are_held_a_page_at_a_time_and_start_in_plan_order(tmp_path):
    n = 2 * PAGE + 50
    statuses = [Status.DONE if i % 3 == 0 else Status.PENDING for i in range(n)]
    state = loaded(tmp_path, *((f"t{i}", i, statuses[i]) for i in range(n)))
    first = launch_order(state, limit=5)
    assert first == ["t1", "t2", "t4", "t5", "t7"]
    assert len(state.tasks.held) <= PAGE  # one page of the waiting tasks, not every task
    for task_id in first:
        state.set(task_id, status=Status.RUNNING)
    state.set("t2", status=Status.RETRYING)  # failed: waits again, ahead of those not started
    state.wait(-1, f"t{n - 2}")  # asked to start now
    later = [f"t{i}" for i in range(8, n - 2) if statuses[i] == Status.PENDING]
    assert launch_order(state) == [f"t{n - 2}", "t2", *later]
    assert state.counts == {Status.DONE: n // 3 + 1, Status.PENDING: n - n // 3 - 1 - 5, Status.RUNNING: 4,
                            Status.RETRYING: 1}  # fmt: skip
