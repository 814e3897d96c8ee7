"""[job].time_limit_s applied to the run's running attempts: one that has run that long (time paused by gputui not
counted, rules/time_limit.py) is stopped as a kill stops it (SIGTERM to its whole tree, SIGKILL after
stop_grace_s, through stops.py and the run's executor: a local tree, a Ray runner's signal file, a Slurm
stand-in), and its settle records it failed, not retried (rules/settle.py). On a cluster the clock starts when
a node starts the attempt, not while it waits in the backend's queue."""

from __future__ import annotations

import time

from gputui import clock
from gputui.engine.attempt import Live
from gputui.engine.rules.time_limit import RunClock, over, paused_for, reason
from gputui.engine.run_state import RunState
from gputui.engine.stops import Stops
from gputui.engine.voice import Voice
from gputui.executors.base import RecordedExecutor
from gputui.jobs.tasks import Status
from gputui.rundir.store import Store

EVERY_S = 0.25  # how often running attempts' clocks are looked at


class TimeLimits:
    def __init__(
        self,
        limit_s: float | None,
        state: RunState,
        store: Store,
        stops: Stops,
        voice: Voice,
        recorded: RecordedExecutor | None,  # a cluster's: when its node started the attempt; None: at launch
    ):
        self.limit_s = limit_s
        self.state = state
        self.store = store
        self.stops = stops
        self.voice = voice
        self.recorded = recorded
        self.clocks: dict[tuple[str, int], RunClock] = {}
        self.next_at = 0.0
        self.marks: dict[str, list[tuple[float, str]]] | None = None  # pauses recorded before we started

    def check_if_due(self) -> None:
        """In the turn's transaction: stop each attempt past the limit (once), and forget ended ones' clocks."""
        if self.limit_s is None or time.monotonic() < self.next_at:
            return
        now = self.next_at = time.monotonic()
        self.next_at += EVERY_S
        live = {a.key: a for a in self.state.live.values()}
        if self.marks is None:  # once: the attempts this scheduler adopts were maybe paused before it started
            self.marks = self._pauses() if live else {}
        for key in [k for k in self.clocks if k not in live]:
            del self.clocks[key]
        for key, attempt in live.items():
            stopping = attempt.time_limit is not None or self.stops.stopping(attempt.task_id)
            if stopping or attempt.handle is not None:
                continue  # being stopped (for it, or a [health] rule) already, or not launched yet
            run_clock = self.clocks.get(key) or self._start(attempt, now)
            if run_clock is None:
                continue  # queued in the cluster
            task = self.state.tasks[attempt.task_id]
            ran = run_clock.tick(now, task.status == Status.RUNNING)
            if over(self.limit_s, ran) and task.status in Status.LIVE:
                attempt.time_limit = why = reason(self.limit_s, ran)
                self.store.add_event("time_limit", why, attempt.task_id)
                self.voice.info(f"{attempt.task_id} {attempt.label}: {why}; stopping it")
                self.stops.begin([task])

    def _start(self, attempt: Live, now: float) -> RunClock | None:
        """Its clock, from its launch (a re-adopted attempt: what it has run since), or on a cluster from when
        its node started it (None while it is queued there)."""
        ran = clock.since(attempt.started_at)
        started = time.time() - ran
        if self.recorded is not None:
            placed = self.recorded.placement(attempt.task_id, attempt.number, attempt.log_path)
            if placed is None:
                return None
            started = placed.since
            ran = max(0.0, time.time() - started)
        ran -= paused_for((self.marks or {}).get(attempt.task_id, []), started, time.time())
        self.clocks[attempt.key] = run_clock = RunClock(max(0.0, ran), now)
        return run_clock

    def _pauses(self) -> dict[str, list[tuple[float, str]]]:
        """Each task's recorded pauses and resumes, in order (one read of the events, as this scheduler starts)."""
        marks: dict[str, list[tuple[float, str]]] = {}
        rows = self.store.read(
            "SELECT task_id, ts, kind FROM events WHERE kind IN ('paused', 'resumed') AND task_id IS NOT NULL "
            "ORDER BY id"
        )
        for task_id, ts, kind in rows:
            marks.setdefault(task_id, []).append((ts, kind))
        return marks
