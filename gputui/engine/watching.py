"""Watching one running attempt for the [health] rules: its hook events and its log, read incrementally
(only new bytes each time), fed to the pure HealthWatch. The scheduler stops the attempt on a break."""

from __future__ import annotations

from dataclasses import dataclass

from gputui.engine.rules.health import Break, HealthWatch
from gputui.files.tail import LogTail
from gputui.hooks.reader import EventReader
from gputui.jobs.health_spec import HealthSpec


@dataclass
class Verdict:
    broken: Break | None = None  # the first rule broken, found now
    healthy: bool = False  # became healthy now: through its window unbroken, or it said so (mark_healthy)
    step: int | None = None
    values: dict | None = None  # the latest metric values seen


class AttemptWatch:
    def __init__(self, spec: HealthSpec, events_path, log_path, started_at: float):
        self.watch = HealthWatch(spec, started_at)
        self.events = EventReader(events_path)
        self.log = LogTail(log_path)
        self.latest: dict[str, float] = {}
        self.said_healthy = False

    def poll(self, now: float) -> Verdict:
        verdict = Verdict()
        said_healthy = False
        for ev in self.events.read():
            said_healthy |= ev.kind == "healthy"
            if ev.kind == "metrics":
                self.latest.update(ev.values)
            verdict.broken = verdict.broken or self.watch.event(ev, now)
        for line in self.log.read_lines():
            verdict.broken = verdict.broken or self.watch.log_line(line, now)
        verdict.broken = verdict.broken or self.watch.check(now)
        if not self.said_healthy and verdict.broken is None and (said_healthy or self.watch.healthy(now)):
            self.said_healthy = verdict.healthy = True
        verdict.step, verdict.values = self.watch.last_step, dict(self.latest)
        return verdict

    def last_words(self, now: float) -> Break | None:
        """What an ended attempt wrote since the last poll, through the rules on values and lines: a short run
        whose loss turned NaN just before it exited broke the rule as surely as a long one. Not the rules on
        time: an attempt that has ended is not hanging."""
        broken = None
        for ev in self.events.read():
            if ev.kind == "metrics":
                self.latest.update(ev.values)
            broken = broken or self.watch.event(ev, now)
        for line in self.log.read_lines(flush=True):  # its last line too, unterminated
            broken = broken or self.watch.log_line(line, now)
        return broken
