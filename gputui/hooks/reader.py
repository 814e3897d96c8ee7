"""Read the events file a worker writes through `gputui.hooks`, incrementally and forgivingly.

The worker is untrusted and may die mid-write, so the reader follows the file as `files.tail` does
(only new bytes, whole lines, a partial last line held for the next call, a file truncated or replaced
read afresh, a runaway line cut) and skips (and counts) lines it cannot parse instead of failing the
scheduler.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from gputui.files.tail import LineTail
from gputui.text_safety import visible

_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


@dataclass(slots=True)
class Event:
    t: float
    kind: str  # progress | metrics | phase | healthy | done | failed (unknown kinds are kept, ignored by Latest)
    step: int | None = None
    values: dict[str, float] = field(default_factory=dict)
    done: float | None = None
    total: float | None = None
    reason: str | None = None
    phase: str | None = None  # of a phase event: "train", "eval"...


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        return _NON_FINITE.get(v)
    return None


def parse_line(line: bytes | str) -> Event | None:
    """One events-file line as an Event, or None when it is not a valid event."""
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(obj, dict):
        return None
    kind, t = obj.get("event"), _num(obj.get("t"))
    if not isinstance(kind, str) or t is None:
        return None
    step = obj.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, int)):
        return None
    raw = obj.get("values") or {}
    if not isinstance(raw, dict):
        return None
    # Names and reasons are shown in terminals: their control characters are made visible on the way in.
    values = {visible(str(k)): f for k, v in raw.items() if (f := _num(v)) is not None}
    reason, phase = obj.get("reason"), obj.get("phase")
    return Event(
        t=t,
        kind=kind,
        step=step,
        values=values,
        done=_num(obj.get("done")),
        total=_num(obj.get("total")),
        reason=None if reason is None else visible(str(reason)),
        phase=visible(phase) if isinstance(phase, str) else None,
    )


class EventReader:
    """Tails one events file: each `read()` returns the events appended since the previous call. A file
    truncated or replaced is read again from its start (files.tail)."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = os.fspath(path)
        self._tail = LineTail(path)
        self._unparsed = 0

    @property
    def offset(self) -> int:
        """Bytes consumed, including the held partial line."""
        return self._tail.offset

    @property
    def bad_lines(self) -> int:
        """Lines skipped: not a valid event, or past the longest line a record may have."""
        return self._unparsed + self._tail.cut_lines

    def read(self) -> list[Event]:
        events = []
        for line in self._tail.read():
            if not line.strip():
                continue
            ev = parse_line(line)
            if ev is None:
                self._unparsed += 1
            else:
                events.append(ev)
        return events


def read_all(path: str | os.PathLike[str]) -> list[Event]:
    """Every complete event in the file (a partial last line is left out)."""
    return EventReader(path).read()


class Latest:
    """What the views need from a worker's stream: latest progress, metrics, health and a bounded series."""

    def __init__(self, max_series: int | None = None):
        self.max_series = max_series
        self.progress_done: float | None = None
        self.progress_total: float | None = None
        self.progress_t: float | None = None
        self.metrics: dict[str, float] = {}  # last value per name (final values from "done" included)
        self.metric_step: int | None = None
        self.last_t: float | None = None
        self.healthy = False
        self.done = False
        self.failed = False
        self.reason: str | None = None
        self.series: list[tuple[int, dict[str, float]]] = []

    @property
    def fraction(self) -> float | None:
        """done/total in [0, 1] when the total is known."""
        if self.progress_done is None or not self.progress_total or not math.isfinite(self.progress_total):
            return None
        return min(1.0, max(0.0, self.progress_done / self.progress_total))

    def feed(self, events: Event | list[Event]) -> Latest:
        for ev in [events] if isinstance(events, Event) else events:
            self._feed_one(ev)
        if self.max_series is not None and len(self.series) > self.max_series:
            del self.series[: len(self.series) - self.max_series]
        return self

    def _feed_one(self, ev: Event) -> None:
        self.last_t = ev.t if self.last_t is None else max(self.last_t, ev.t)
        if ev.kind == "progress":
            self.progress_done, self.progress_total, self.progress_t = ev.done, ev.total, ev.t
        elif ev.kind == "metrics":
            self.metrics.update(ev.values)
            if ev.step is not None:
                self.metric_step = ev.step
                self.series.append((ev.step, dict(ev.values)))
        elif ev.kind == "healthy":
            self.healthy = True
        elif ev.kind == "done":
            self.done = True
            self.metrics.update(ev.values)
        elif ev.kind == "failed":
            self.failed = True
            self.reason = ev.reason
