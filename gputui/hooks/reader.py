"""Read the events file a worker writes through `gputui.hooks`, incrementally and forgivingly.

The worker is untrusted and may die mid-write, so the reader keeps a byte offset, returns only
complete lines, holds a partial last line for the next call, and skips (and counts) lines it
cannot parse instead of failing the scheduler. Standard library only.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from gputui.text_safety import visible

_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_CHUNK = 1 << 20


@dataclass(slots=True)
class Event:
    t: float
    kind: str  # progress | metrics | healthy | done | failed (unknown kinds are kept, and ignored by Latest)
    step: int | None = None
    values: dict[str, float] = field(default_factory=dict)
    done: float | None = None
    total: float | None = None
    reason: str | None = None


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
    reason = obj.get("reason")
    return Event(
        t=t,
        kind=kind,
        step=step,
        values=values,
        done=_num(obj.get("done")),
        total=_num(obj.get("total")),
        reason=None if reason is None else visible(str(reason)),
    )


class EventReader:
    """Tails one events file: each `read()` returns the events appended since the previous call."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = os.fspath(path)
        self.offset = 0  # bytes consumed, including the held partial line
        self.bad_lines = 0
        self._partial = b""

    def read(self) -> list[Event]:
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < self.offset:  # truncated or replaced: start over
                    self.offset, self._partial = 0, b""
                f.seek(self.offset)
                chunks = []
                while chunk := f.read(_CHUNK):
                    chunks.append(chunk)
        except FileNotFoundError:
            return []
        data = b"".join(chunks)
        if not data:
            return []
        self.offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        events = []
        for line in lines:
            if not line.strip():
                continue
            ev = parse_line(line)
            if ev is None:
                self.bad_lines += 1
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
