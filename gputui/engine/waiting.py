"""Why each waiting task waits, written where the table, `gputui status` and `status --json` read it: the task's
`reason`.

A run may hold 100,000 waiting tasks, and the launcher looks again at every turn, so this writes little:

- only the head of the line, the first HEAD waiting tasks in plan order (those that would start next, and every
  one a `gputui status` of up to 100 tasks lists). Those behind it wait for the same thing as the last of the
  head, or for their own turn; their reason stays empty;
- only a reason that changed: what the launcher says is compared with the task's record, which the loop holds
  for every task of the line (and reads again after a rolled-back turn), so a turn that changes nothing writes
  nothing. The words carry no figure that moves each sample (free memory, a countdown), so they change when a
  holder or a count does;
- a task that leaves the head without starting (another came before it) gets its reason cleared, if it still
  waits and still says what was written here: a reason someone else wrote since (a kill, a skip) is kept.

A task's reason is cleared when it starts (the launch writes reason = None). A retrying task that is not due
keeps what settling its attempt wrote ("retry at hh:mm:ss (backoff): why it failed"); once due, it waits like any
other. On a cluster a submitted task is running as far as the run goes; the backend's word on it, while it is
queued there, is shown by the views from the executor's facts.
"""

from __future__ import annotations

from collections.abc import Mapping

from gputui.engine.attempt import WAITING
from gputui.engine.run_state import RunState

HEAD = 100  # waiting tasks given a reason of their own: the first of the line


class WaitReasons:
    def __init__(self, state: RunState):
        self.state = state
        self.said: dict[str, str] = {}  # task id -> the reason written here, while it is in the head

    def tell(self, reasons: Mapping[str, str | None]) -> None:
        """`reasons`: this turn's head of the line, task id -> why it waits (None: keep what it says). In the
        caller's transaction."""
        tasks = self.state.tasks
        for task_id, reason in reasons.items():
            if reason is None:
                self.said.pop(task_id, None)
                continue
            if tasks[task_id].reason != reason:
                self.state.set(task_id, reason=reason)
            self.said[task_id] = reason
        for task_id in [i for i in self.said if i not in reasons]:
            self._clear(task_id)

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
