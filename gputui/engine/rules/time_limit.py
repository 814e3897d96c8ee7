"""Pure: [job].time_limit_s, an attempt's running clock and the words for an attempt that ran past it. No I/O,
tested directly.

The clock counts only the time the attempt runs: time paused by gputui (SIGSTOP) is not run time, so the clock
holds while its task is paused, as Slurm's does for a suspended job."""

from __future__ import annotations

from dataclasses import dataclass


def spelled(seconds: float) -> str:
    """A duration as people write it: 45s, 1m30s, 1h, 1h0m, 2d3h (whole seconds, at most two units)."""
    s = max(0, int(seconds + 0.5))
    d, rest = divmod(s, 86400)
    h, rest = divmod(rest, 3600)
    m, sec = divmod(rest, 60)
    if d:
        return f"{d}d{h}h"
    if h:
        return f"{h}h{m}m"
    if m:
        return f"{m}m{sec}s"
    return f"{sec}s"


def limit_spelled(limit_s: float) -> str:
    """The limit as a job file would say it: 1h, 90m, 30s (its largest whole unit)."""
    s = int(limit_s) if limit_s == int(limit_s) else None
    if s is None or s == 0:
        return f"{limit_s:g}s"
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s % n == 0:
            return f"{s // n}{unit}"
    return f"{s}s"


def reason(limit_s: float, ran_s: float) -> str:
    """An attempt's failure reason: `time limit (1h) reached after 1h0m`."""
    return f"time limit ({limit_spelled(limit_s)}) reached after {spelled(ran_s)}"


@dataclass
class RunClock:
    """An attempt's run time: `tick(now, running)` each look, adding the time since the last look only while it
    ran (not paused). `ran_s` starts at what it had run when first seen (a re-adopted attempt's: the time since
    its start less the time its pauses and resumes recorded, `paused_for`)."""

    ran_s: float
    last: float  # the monotonic time of the last look

    def tick(self, now: float, running: bool) -> float:
        if running:
            self.ran_s += max(0.0, now - self.last)
        self.last = now
        return self.ran_s


def paused_for(marks: list[tuple[float, str]], since: float, now: float) -> float:
    """Seconds paused between `since` and `now` (wall times), from a task's recorded `paused` and `resumed` marks
    in order (time, kind): what a re-adopted attempt's clock leaves out of the time since its start."""
    total, paused_at = 0.0, None
    for ts, kind in marks:
        if ts < since:
            continue
        if kind == "paused" and paused_at is None:
            paused_at = ts
        elif kind == "resumed" and paused_at is not None:
            total, paused_at = total + max(0.0, ts - paused_at), None
    if paused_at is not None:
        total += max(0.0, now - paused_at)
    return total


def over(limit_s: float | None, ran_s: float) -> bool:
    return limit_s is not None and ran_s >= limit_s
