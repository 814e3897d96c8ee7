"""The [health] rules applied to the run's running attempts: each watched from its launch (or re-adoption)
through its hook events and log (watching.AttemptWatch), checked every HEALTH_EVERY_S. A healthy window
is recorded (event and signal file); a broken rule stops the attempt's whole tree, and its settle records
the rule and the evidence. Timed on the monotonic clock: a step of the wall clock is not silence."""

from __future__ import annotations

import time

from gputui import clock
from gputui.engine.attempt import Live
from gputui.engine.outbox import Outbox
from gputui.engine.run_state import RunState
from gputui.engine.stops import Stops
from gputui.engine.voice import Voice
from gputui.engine.watching import AttemptWatch
from gputui.jobs.health_spec import HealthSpec
from gputui.jobs.tasks import Status
from gputui.rundir.paths import RunPaths
from gputui.rundir.signal_files import write_signal
from gputui.rundir.store import Store

HEALTH_EVERY_S = 1.0  # how often running attempts' new events and log lines are read for the [health] rules


class HealthChecks:
    def __init__(
        self,
        spec: HealthSpec | None,
        paths: RunPaths,
        state: RunState,
        store: Store,
        stops: Stops,
        outbox: Outbox,
        voice: Voice,
    ):
        self.spec = spec  # the job's [health] table; None: nothing to check
        self.paths = paths
        self.state = state
        self.store = store
        self.stops = stops
        self.outbox = outbox
        self.voice = voice
        self.next_at = 0.0

    def watch(self, live: Live) -> None:
        """Watch an attempt from now on (its silence counts from its launch)."""
        if self.spec is not None:
            events = self.paths.events(live.task_id, live.number)
            started = time.monotonic() - clock.since(live.started_at)  # the health rules' clock: monotonic
            live.watch = AttemptWatch(self.spec, events, live.log_path, started)

    def check_if_due(self) -> None:
        if self.spec is not None and time.monotonic() >= self.next_at:
            self.next_at = time.monotonic() + HEALTH_EVERY_S
            self.check()

    def check(self) -> None:
        """The rules over every running attempt's new events and log lines."""
        now = time.monotonic()
        for live in list(self.state.live.values()):
            if live.watch is None or live.health_break is not None or live.handle is not None:
                continue
            if self.state.tasks[live.task_id].status != Status.RUNNING:  # paused: its silence is ours
                live.watch.watch.hold(now)
                continue
            verdict = live.watch.poll(now)
            loss = (verdict.values or {}).get(self.spec.metric)
            if verdict.healthy:
                self.outbox.unsynced.append(
                    write_signal(self.paths, live.task_id, "healthy", durable=False, step=verdict.step, loss=loss)
                )
                self.store.add_event("healthy", "passed its health window", live.task_id)
            if verdict.broken is not None:
                live.health_break = verdict.broken
                self.store.add_event("health", verdict.broken.reason, live.task_id)
                self.voice.info(f"{live.task_id} {live.label}: {verdict.broken.reason}; stopping it")
                self.stops.begin([self.state.tasks[live.task_id]])
