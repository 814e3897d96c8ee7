"""Resident workers ([job] resident = true) as the launcher sees them: each is a waiter that keeps its worker
(and its GPU set) between tasks (executors/resident_slot.py). A ready task goes first to an idle one holding as
many GPUs as it needs (rules/resident.py); one no waiting task will take is let go. Each task handed over is an
attempt like any other: recorded before it is sent, settled from the journal."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping

from gputui.engine.attempt import WAITING
from gputui.engine.rules.resident import pair, surplus
from gputui.engine.run_state import RunState
from gputui.executors.base import Executor, WaiterHandle
from gputui.jobs.spec import JobSpec
from gputui.jobs.tasks import Status, TaskRecord
from gputui.jobs.templates import template_values


class ResidentSlots:
    def __init__(self, executor: Executor, state: RunState, needs: Callable[[TaskRecord], int], varied: bool):
        self.executor = executor
        self.state = state
        self.needs = needs  # the GPUs a task asks for
        self.varied = varied  # tasks may ask for different numbers of GPUs ([retry] on_oom = "more_gpus")

    def idle(self) -> list[WaiterHandle]:
        return self.executor.idle_slots()

    def held(self) -> set[int]:
        """The GPUs idle resident workers hold: no new worker is placed on them."""
        return {g for waiter in self.idle() for g in waiter.slot or ()}

    def take(self, ready: list[TaskRecord]) -> tuple[list[tuple[TaskRecord, WaiterHandle]], list[TaskRecord]]:
        """Ready tasks handed to idle resident workers that fit them, and the tasks left."""
        idle = self.idle()
        if not idle or not ready:
            return [], ready
        by_id = {t.id: t for t in ready}
        pairs, left = pair([(t.id, self.needs(t)) for t in ready], [len(w.slot or ()) for w in idle])
        given = [(by_id[task_id], idle[i]) for task_id, i in pairs]
        for _, waiter in given:
            self.executor.take_slot(waiter)
        return given, [by_id[task_id] for task_id in left]

    def let_go(self) -> None:
        """Let idle resident workers go that no waiting task will take (all of them once none waits)."""
        idle = self.idle()
        if not idle:
            return
        state = self.state
        if not self.varied:
            count = state.counts[Status.PENDING] + state.counts[Status.RETRYING]
            waiting = Counter({len(idle[0].slot or ()): count}) if count else Counter()
        else:  # (rare: a scan of the tasks, only while an idle worker waits)
            waiting = Counter(self.needs(t) for t in state.tasks.values() if t.status in WAITING)
        for i in surplus([len(w.slot or ()) for w in idle], waiting):
            self.executor.close_slot(idle[i])


def task_values(job: JobSpec, values: Mapping[str, object]) -> dict[str, object]:
    """A resident worker's task as it is sent (JSON): the placeholders filled into its command line, with
    [params]; what is not a plain value (a path) as text."""
    plain = (str, int, float, bool, type(None))
    return {k: v if isinstance(v, plain) else str(v) for k, v in template_values(job, values).items()}
