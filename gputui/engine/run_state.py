"""The scheduler's in-memory mirror of the run: its tasks, the line of those waiting, and the attempts not
known to be over. The loop reads this, never the store, and `RunState.set` is the one place a task's
fields change: it writes the store (in the caller's transaction) and keeps the counts and the waiting
line in step, so the mirror and the store never disagree about a task the loop has touched."""

from __future__ import annotations

import heapq
from collections import Counter

from gputui.engine.attempt import WAITING, Live
from gputui.jobs.tasks import Status, TaskRecord
from gputui.rundir.store import Store


class RunState:
    """Tasks and attempts as the loop knows them; `load` reads them again from what is committed."""

    def __init__(self, store: Store):
        self.store = store
        self.tasks: dict[str, TaskRecord] = {}
        self.outputs: dict[str, str | None] = {}
        self.counts: Counter[str] = Counter()
        self.waiting: list[tuple[int, str]] = []  # heap of (index, task id); stale entries are skipped
        self.live: dict[str, Live] = {}  # running attempts, by task id
        self.lingering: dict[tuple[str, int], Live] = {}  # ended attempts with processes still alive

    def load(self) -> None:
        """The tasks as committed (another process, or a rolled-back turn, may have changed them)."""
        self.tasks = {t.id: t for t in self.store.tasks()}
        self.outputs = self.store.task_outputs()
        self.counts = Counter(t.status for t in self.tasks.values())
        self.waiting = [(t.index, t.id) for t in self.tasks.values() if t.status in WAITING]
        heapq.heapify(self.waiting)

    def set(self, task_id: str, **fields) -> None:
        """Change a task's fields, in the store and here; a task that comes to wait joins the line."""
        self.store.update_task(task_id, **fields)
        if "gpus" in fields:
            fields["gpus"] = tuple(fields["gpus"])
        old = self.tasks[task_id]
        new = self.tasks[task_id] = TaskRecord(**{**vars(old), **fields})
        if new.status != old.status:
            self.counts[old.status] -= 1
            self.counts[new.status] += 1
            if new.status in WAITING:
                heapq.heappush(self.waiting, (new.index, new.id))

    def added(self, task: TaskRecord, output: str | None) -> None:
        """A task a job kind just added to the store (pending): known and waiting from now on."""
        self.tasks[task.id] = task
        self.outputs[task.id] = output
        self.counts[Status.PENDING] += 1
        heapq.heappush(self.waiting, (task.index, task.id))

    def wait(self, index: int, task_id: str) -> None:
        """Put a task (back) in the waiting line at `index` (-1: first)."""
        heapq.heappush(self.waiting, (index, task_id))

    def attempts(self) -> list[Live]:
        """Every attempt not known to be over: running, then lingering."""
        return [*self.live.values(), *self.lingering.values()]

    def over(self, task_id: str, number: int) -> bool:
        """Whether that attempt is over: neither running nor ended with processes of it left."""
        live = self.live.get(task_id)
        return (live is None or live.number != number) and (task_id, number) not in self.lingering

    def todo(self) -> int:
        return sum(t.status not in Status.FINAL for t in self.tasks.values())

    def all_final(self) -> bool:
        return sum(self.counts[s] for s in Status.FINAL) == len(self.tasks)
