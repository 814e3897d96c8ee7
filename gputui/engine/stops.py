"""Kills in progress: SIGTERM sent, SIGKILL due after the grace (control.Stop), advanced by the loop each
turn without blocking. Begun by a user's kill (answered when it is over), a broken [health] rule, a worker
whose start is reported after its task was killed, or leftovers of an ended attempt; when the run stops,
each is driven to its end."""

from __future__ import annotations

from gputui.engine.control import Controller, Stop
from gputui.engine.voice import Voice
from gputui.jobs.tasks import TaskRecord
from gputui.rundir.records import AttemptRecord
from gputui.rundir.store import Store


class Stops:
    def __init__(self, controller: Controller, store: Store, voice: Voice, grace: float):
        self.controller = controller
        self.store = store
        self.voice = voice
        self.grace = grace  # [job].stop_grace_s
        self.stops: list[Stop] = []

    def __bool__(self) -> bool:
        return bool(self.stops)

    def pairs(self, tasks: list[TaskRecord]) -> list:
        """Each task with its current attempt (one never recorded has none to stop)."""
        return [(t, a) for t in tasks if (a := self.store.attempt(t.id, t.attempts)) is not None]

    def begin(self, tasks: list[TaskRecord]) -> None:
        """Stop these tasks' current attempts (their whole trees)."""
        self.begin_attempts(self.pairs(tasks))

    def begin_attempts(self, pairs: list[tuple[TaskRecord, AttemptRecord]]) -> None:
        self.stops.append(Stop(self.controller, pairs, self.grace).begin())

    def begin_kill(self, targets: list[TaskRecord], control_id: int) -> None:
        """A user's kill, taken from control `control_id`: answered when it is over."""
        self.stops.append(self.controller.begin_kill(targets))
        self.stops[-1].control_id = control_id

    def taken(self, control_id: int) -> bool:
        """Whether that control's kill is under way."""
        return any(stop.control_id == control_id for stop in self.stops)

    def stopping(self, task_id: str) -> bool:
        return any(task_id in {t.id for t, _ in stop.pairs} for stop in self.stops)

    def advance(self) -> None:
        """SIGKILL where the grace is over; a finished kill reports, and answers its control."""
        for stop in [s for s in self.stops if s.step()]:
            self.stops.remove(stop)
            result = "\n".join(stop.report())
            if stop.control_id is not None:
                with self.store.transaction():
                    self.store.finish_control(stop.control_id, True, result)
            for line in result.splitlines():
                self.voice.info(line)

    def step_all(self) -> None:
        """While the run stops: each kill advanced, none reported."""
        for stop in self.stops:
            stop.step()

    def finish_all(self) -> None:
        """The run stops: every kill driven to its end (blocking)."""
        for stop in self.stops:
            stop.finish()
