"""Control verbs posted to the running scheduler by other processes (the app, `gputui kill`, `gputui
retry` ...), through the store: each applied by the Controller (control.py) and answered; a kill is
answered once it is over; `start` and `stop` only a running scheduler can take. Requests posted before
this scheduler started are refused, never acted on late. `set` (max_parallel) is parallel.py's."""

from __future__ import annotations

from collections.abc import Callable

from gputui.engine.attempt import WAITING
from gputui.engine.control import ControlError, Controller
from gputui.engine.parallel import Parallel
from gputui.engine.run_state import RunState
from gputui.engine.settler import Settler
from gputui.engine.stops import Stops
from gputui.engine.voice import Voice
from gputui.jobs.tasks import Status
from gputui.rundir.store import Store


class Inbox:
    def __init__(
        self,
        store: Store,
        controller: Controller,
        state: RunState,
        stops: Stops,
        settler: Settler,
        voice: Voice,
        on_stop: Callable[[], None],
        parallel: Parallel,
    ):
        self.store = store
        self.controller = controller
        self.state = state
        self.stops = stops
        self.settler = settler
        self.voice = voice
        self.on_stop = on_stop  # the `stop` verb: the run stops as on Ctrl-C
        self.parallel = parallel  # the `set` verb: max_parallel

    def expire_old(self, started_wall: float) -> None:
        """Requests posted before this scheduler started found no one to answer them: never act late."""
        with self.store.transaction():
            for c in self.store.pending_controls():
                if c.ts < started_wall:
                    self.store.finish_control(c.id, False, "expired: no scheduler took it in time")

    def take(self) -> None:
        """Apply the verbs posted since the last turn, and answer them (a kill once it is over)."""
        for c in self.store.pending_controls():
            if self.stops.taken(c.id):
                continue  # taken already: its kill is under way, and answered when it is over
            tasks = c.args.get("tasks")
            try:
                targets = self.controller.select(c.verb, tasks) if c.verb == "kill" else []
                if c.verb == "stop":
                    self.on_stop()
                    ok, result = True, "stopping: our running tasks get SIGTERM and stay pending for next time"
                elif c.verb == "set":
                    ok, result = self.parallel.set(c.args)
                elif c.verb == "start":
                    ok, result = self._start_now(tasks or [])
                elif targets:  # SIGKILL comes later, from the loop: answer when it is over
                    self.stops.begin_kill(targets, c.id)
                    ok, result = None, ""
                else:
                    ok, result = self.controller.apply(c.verb, tasks, bool(c.args.get("force")), c.args)
            except ControlError as e:
                ok, result = False, str(e)
            except Exception as e:  # a bad request must never take the scheduler down
                ok, result = False, f"{c.verb} failed: {e}"
            if c.verb not in ("start", "stop", "set"):
                self.state.load()  # the controller wrote to the store
                with self.store.transaction():  # a retried step's skipped followers wait again; a trial re-ranks
                    self.settler.expand()
            if ok is not None:
                with self.store.transaction():
                    self.store.finish_control(c.id, ok, result)
                for line in result.splitlines():
                    self.voice.info(line)

    def _start_now(self, task_ids: list[str]) -> tuple[bool, str]:
        """Put waiting tasks first in line; they start as soon as resources allow."""
        lines, ok = [], True
        for task_id in task_ids:
            t = self.state.tasks.get(task_id)
            if t is None or t.status not in WAITING:
                ok = False
                lines.append(f"{task_id}: is {t.status if t else 'unknown'}; only a waiting task can be started")
                continue
            if t.status == Status.RETRYING:
                self.state.set(task_id, next_try_at=None)
            self.state.wait(-1, task_id)
            lines.append(f"{task_id}: starts as soon as resources allow")
        return ok, "\n".join(lines)
