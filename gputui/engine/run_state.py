"""The scheduler's view of the run: its tasks, the line of those waiting, and the attempts not known to be over.
The loop reads tasks here, and `RunState.set` is the one place a task's fields change: it writes the store (in
the caller's transaction) and keeps the counts and the waiting line in step.

A run may hold 100,000 tasks or more, so the store is the mirror's backing, not a copy in memory: the records
held are those the loop works with (waiting at the head of the line, running, retrying); any other task is read
from the store when asked for. Every write goes through the same connection first, so a record read from the
store is never older than one held here; `load` drops what is held after a turn rolled back or another writer
(the controller) changed tasks."""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterator, Mapping

from gputui.engine.attempt import WAITING, Live
from gputui.jobs.tasks import Status, TaskRecord
from gputui.rundir.store import Store

PAGE = 256  # waiting tasks read into the line at once


class Tasks(Mapping[str, TaskRecord]):
    """Every task of the run by id: the records held, else the store's. `values()` reads them from the store a
    page at a time (a job kind's rule over every task); no caller should need them all."""

    def __init__(self, store: Store):
        self.store = store
        self.held: dict[str, TaskRecord] = {}

    def __getitem__(self, task_id: str) -> TaskRecord:
        found = self.held.get(task_id)
        if found is None:
            found = self.store.task(task_id)
            if found is None:
                raise KeyError(task_id)
            self.hold(found)
        return found

    def hold(self, task: TaskRecord) -> None:
        """Held while it may be launched or runs; a final task is read from the store when asked for."""
        if task.status in Status.FINAL:
            self.held.pop(task.id, None)
        else:
            self.held[task.id] = task

    def __contains__(self, task_id: object) -> bool:
        return task_id in self.held or (isinstance(task_id, str) and self.store.task(task_id) is not None)

    def __iter__(self) -> Iterator[str]:
        return (t.id for t in self.store.iter_tasks())

    def __len__(self) -> int:
        return self.store.task_count()

    def values(self) -> Iterator[TaskRecord]:  # type: ignore[override]
        return self.store.iter_tasks()


class Outputs(Mapping[str, str | None]):
    """Each task's output file (None: it names none), read from the store when asked for. A task's output never
    changes once it is added, so those of the tasks the loop holds are kept (read a page at a time with the
    waiting line's), and dropped as their tasks end."""

    def __init__(self, store: Store):
        self.store = store
        self.known: dict[str, str | None] = {}

    def __getitem__(self, task_id: str) -> str | None:
        try:
            return self.known[task_id]
        except KeyError:
            return self.store.output_of(task_id)

    def keep(self, task_ids: list[str]) -> None:
        """Read these tasks' outputs at once (one query), kept until `drop`."""
        if task_ids:
            self.known |= self.store.outputs_of(task_ids)

    def drop(self, task_id: str) -> None:
        self.known.pop(task_id, None)

    def __iter__(self) -> Iterator[str]:
        return iter(Tasks(self.store))

    def __len__(self) -> int:
        return self.store.task_count()


class Statuses(Mapping[str, str]):
    def __init__(self, tasks: Tasks):
        self.tasks = tasks

    def __getitem__(self, task_id: str) -> str:
        return self.tasks[task_id].status

    def __iter__(self) -> Iterator[str]:
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)


class WaitingLine(list):
    """A heap of (index, task id): the launcher pops the first. The waiting tasks of the store come in a page at a
    time as it is read: asking whether the line is empty (the launcher asks before each pop) first brings in the
    next page when the store may hold a waiting task before the heap's first, so tasks start in plan order while
    only a page of them is held. Entries pushed again (a retry, `start`) may repeat one: the launcher skips a task
    no longer waiting, and one it has seen in the turn."""

    def __init__(self, tasks: Tasks, outputs: Outputs | None = None):
        super().__init__()
        self.tasks = tasks
        self.outputs = outputs
        self.read_to: float = float("-inf")  # every waiting task up to this index has been brought in
        self.read_all = False

    def __bool__(self) -> bool:
        if not self.read_all and (not len(self) or self[0][0] > self.read_to):
            self._read_page()
        return len(self) > 0

    def _read_page(self) -> None:
        after = None if self.read_to == float("-inf") else int(self.read_to)
        page = self.tasks.store.tasks_page(WAITING, after_index=after, limit=PAGE)
        for t in page:
            self.tasks.hold(t)
            heapq.heappush(self, (t.index, t.id))
        if self.outputs is not None:
            self.outputs.keep([t.id for t in page])
        if len(page) < PAGE:
            self.read_all, self.read_to = True, float("inf")
        else:
            self.read_to = page[-1].index


_FIELDS = frozenset(TaskRecord.__dataclass_fields__)


def _changed(old: TaskRecord, fields: dict) -> TaskRecord:
    """`old` with these fields changed: dataclasses.replace without its checks and __init__ (a task changes
    twice per attempt, and its record has some twenty fields)."""
    if not fields.keys() <= _FIELDS:
        raise TypeError(f"not a task's field: {', '.join(sorted(fields.keys() - _FIELDS))}")
    new = object.__new__(TaskRecord)
    new.__dict__.update(old.__dict__)
    new.__dict__.update(fields)
    return new


class RunState:
    """Tasks and attempts as the loop knows them; `load` reads them again from what is committed."""

    def __init__(self, store: Store):
        self.store = store
        self.tasks = Tasks(store)
        self.outputs = Outputs(store)
        self.counts: Counter[str] = Counter()
        self.total = 0
        self.waiting: list[tuple[int, str]] = WaitingLine(self.tasks, self.outputs)  # stale entries are skipped
        self.live: dict[str, Live] = {}  # running attempts, by task id
        self.lingering: dict[tuple[str, int], Live] = {}  # ended attempts with processes still alive

    def load(self) -> None:
        """The tasks as committed (another process, or a rolled-back turn, may have changed them)."""
        self.tasks = Tasks(self.store)
        self.counts = self.store.status_counts()
        self.total = sum(self.counts.values())
        self.outputs.known.clear()
        self.waiting = WaitingLine(self.tasks, self.outputs)

    def set(self, task_id: str, **fields) -> None:
        """Change a task's fields, in the store and here; a task that comes to wait joins the line."""
        old = self.tasks[task_id]
        self.store.update_task(task_id, **fields)
        if "gpus" in fields:
            fields["gpus"] = tuple(fields["gpus"])
        new = _changed(old, fields)
        self.tasks.hold(new)
        if new.status != old.status:
            self.counts[old.status] -= 1
            self.counts[new.status] += 1
            if new.status in WAITING:
                heapq.heappush(self.waiting, (new.index, new.id))
            elif new.status in Status.FINAL:
                self.outputs.drop(task_id)

    def added(self, task: TaskRecord) -> None:
        """A task a job kind just added to the store (pending, with its output): known and waiting from now on."""
        self.tasks.hold(task)
        self.counts[Status.PENDING] += 1
        self.total += 1
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

    def retrying(self) -> list[TaskRecord]:
        """The tasks held that wait for their retry's back-off: every one the loop set to retry (after `load`,
        those read into the line so far; the loop polls every fraction of a second anyway)."""
        if not self.counts[Status.RETRYING]:
            return []
        return [t for t in self.tasks.held.values() if t.status == Status.RETRYING]

    @property
    def statuses(self) -> Mapping[str, str]:
        """Each task's status by id, read as asked (the ghost watch asks of the few seen on a GPU)."""
        return Statuses(self.tasks)

    def todo(self) -> int:
        return self.total - sum(self.counts[s] for s in Status.FINAL)

    def all_final(self) -> bool:
        return sum(self.counts[s] for s in Status.FINAL) == self.total
