"""Why each waiting task waits, written where the table, `gputui status` and `status --json` read it: the task's
`reason`.

A run may hold 100,000 waiting tasks, and the launcher looks again at every turn, so this writes little:

- only the head of the line, the first HEAD waiting tasks in plan order (those that would start next, and every
  one a `gputui status` of up to 100 tasks lists). Those behind it wait for the same thing as the last of the
  head, or for their own turn; their reason stays empty;
- only every EVERY seconds, and only for a task that was in the head the time before too: in a line that moves
  fast (short tasks, max_parallel at a time) a task usually starts before it is told anything, so the reasons
  cost the launcher next to nothing per turn and no write per task; one that waits says why within 2 EVERY;
- only a reason that changed: what the launcher says is compared with the task's record, which the loop holds
  for every task of the line (and reads again after a rolled-back turn), so a turn that changes nothing writes
  nothing. The words carry no figure that moves each sample (free memory, a countdown), so they change when a
  holder or a count does;
- a task that leaves the head without starting (another came before it) gets its reason cleared, if it still
  waits and still says what was written here: a reason someone else wrote since (a kill, a skip) is kept.

A task's reason is cleared when it starts (the launch writes reason = None). A retrying task that is not due
keeps what settling its attempt wrote ("retry at hh:mm:ss (backoff): why it failed"); once due, it waits like any
other.

On a cluster a submitted task is running as far as the run goes, but it waits in the backend's queue until a node
starts it: `queued` gives it "queued in Ray", or "queued in Slurm" with Slurm's word where it says more than
Priority or Resources ("queued in Slurm: held (JobHeldAdmin)"), asked every poll of the first HEAD attempts not
seen started yet, and clears it once the attempt's runner on a node has started it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from gputui.engine.attempt import WAITING, Live
from gputui.engine.run_state import RunState
from gputui.executors.base import RecordedExecutor

HEAD = 100  # waiting tasks given a reason of their own: the first of the line
EVERY = 1.0  # seconds between two looks at the head of the line
QUEUED = "queued in "  # a cluster attempt's reason while it waits in the backend's queue


class WaitReasons:
    def __init__(self, state: RunState):
        self.state = state
        self.said: dict[str, str] = {}  # task id -> the reason written here, while it is in the head
        self.head: set[str] = set()  # the head of the line the time before
        self.seen_started: set[tuple[str, int]] = set()  # cluster attempts a node has started

    def tell(self, reasons: Mapping[str, str | None]) -> None:
        """`reasons`: this turn's head of the line, task id -> why it waits (None: keep what it says). In the
        caller's transaction."""
        tasks = self.state.tasks
        before, self.head = self.head, set(reasons)
        for task_id, reason in reasons.items():
            if reason is None:
                self.said.pop(task_id, None)
                continue
            if task_id not in before and task_id not in self.said:
                continue  # just come to the head: told next time, if it still waits
            if tasks[task_id].reason != reason:
                self.state.set(task_id, reason=reason)
            self.said[task_id] = reason
        for task_id in [i for i in self.said if i not in reasons]:
            self._clear(task_id)

    def queued(self, attempts: Iterable[Live], recorded: RecordedExecutor, backend: str) -> None:
        """Running attempts on a cluster (`backend`: "ray", "slurm"): those still queued there say so, with the
        backend's word; those a node has started say nothing any more. A reason someone else wrote meanwhile (a
        kill's) is kept: only one that is empty or says "queued in" is changed. In the caller's transaction."""
        name = {"ray": "Ray", "slurm": "Slurm"}.get(backend, backend)
        live, asked = set(), 0
        for a in attempts:
            live.add(a.key)
            if a.key in self.seen_started or asked >= HEAD:
                continue
            asked += 1
            t = self.state.tasks[a.task_id]
            ours = t.reason is None or t.reason.startswith(QUEUED)
            if recorded.placement(a.task_id, a.number, a.log_path) is not None:
                self.seen_started.add(a.key)
                if t.reason is not None and ours:
                    self.state.set(a.task_id, reason=None)
                continue
            word = recorded.standing(a.task_id, a.number)
            reason = f"{QUEUED}{name}: {word}" if word else f"{QUEUED}{name}"
            if ours and t.reason != reason:
                self.state.set(a.task_id, reason=reason)
        self.seen_started &= live

    def started(self, task_id: str) -> None:
        """Its launch cleared its reason."""
        self.said.pop(task_id, None)

    def clear_all(self) -> None:
        """The scheduler leaves: no reason written here stays on a task nobody is placing any more."""
        for task_id in list(self.said):
            self._clear(task_id)

    def _clear(self, task_id: str) -> None:
        said = self.said.pop(task_id)
        t = self.state.tasks.get(task_id)
        if t is not None and t.status in WAITING and t.reason == said:
            self.state.set(task_id, reason=None)
