"""An attempt's metrics over steps, read incrementally from its events file (gputui.hooks) for the charts.

Blocking (a stat, a read): read from a thread, never from a UI loop.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gputui.hooks.reader import EventReader, Latest

METRIC_POINTS = 1024
"""Points kept per metric for a chart: past twice that, neighbours are averaged (the whole run keeps its
shape at half the resolution), so a long run costs the same memory as a short one."""


def file_stamp(path: str | os.PathLike[str]) -> tuple[int, int, int] | None:
    """(inode, size, mtime): what changes when a file is written or replaced; None if it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


@dataclass(frozen=True)
class MetricSeries:
    """One attempt's metrics over steps, as its worker reported them through `gputui.hooks`."""

    task_id: str
    attempt: int
    points: Mapping[str, tuple[float, ...]]  # name -> finite values in step order (first-seen name order)
    last: Mapping[str, float]  # name -> the latest value (a final value from `mark_done` included)
    low: Mapping[str, float]  # name -> the least finite value reported (every point, not the kept ones)
    high: Mapping[str, float]
    step: int | None  # the latest step reported
    version: int = 0  # grows with each read that found new events

    @property
    def empty(self) -> bool:
        return not self.last


class MetricHistory:
    """Reads one attempt's events file incrementally (a stat per quiet refresh) and keeps what a chart
    needs: each metric's series (at most 2 x METRIC_POINTS points), its latest value, least and most."""

    def __init__(self, task_id: str, attempt: int, path: Path) -> None:
        self.task_id, self.attempt = task_id, attempt
        self._reader = EventReader(path)
        self._latest = Latest(max_series=0)  # its series is kept here, decimated
        self._points: dict[str, list[float]] = {}
        self._low: dict[str, float] = {}
        self._high: dict[str, float] = {}
        self._stamp: tuple | None = None
        self._frozen: MetricSeries | None = None
        self.version = 0

    @property
    def metrics(self) -> dict[str, float]:
        return self._latest.metrics

    @property
    def progress(self) -> tuple[int, int] | None:
        """(done, total) as the worker last reported it through `gputui.hooks.progress`, if it did."""
        done, total = self._latest.progress_done, self._latest.progress_total
        if done is None or not total or total <= 0:
            return None
        return int(min(done, total)), int(total)

    def poll(self) -> None:
        stamp = file_stamp(self._reader.path)
        if stamp is None or stamp == self._stamp:
            return
        self._stamp = stamp
        events = self._reader.read()
        if not events:
            return
        self._latest.feed(events)
        for ev in events:
            if ev.kind != "metrics" or ev.step is None:
                continue
            for name, value in ev.values.items():
                if not math.isfinite(value):
                    continue
                points = self._points.setdefault(name, [])
                points.append(value)
                if len(points) >= 2 * METRIC_POINTS:
                    points[:] = [(a + b) / 2 for a, b in zip(points[::2], points[1::2], strict=False)]
                self._low[name] = min(self._low.get(name, value), value)
                self._high[name] = max(self._high.get(name, value), value)
        self.version += 1
        self._frozen = None

    def frozen(self) -> MetricSeries:
        """What a screen shows, as a value: the same object until new events are read."""
        if self._frozen is None:
            names = [*self._points, *(n for n in self._latest.metrics if n not in self._points)]
            self._frozen = MetricSeries(
                self.task_id,
                self.attempt,
                {n: tuple(self._points.get(n, ())) for n in names},
                {n: self._latest.metrics[n] for n in names if n in self._latest.metrics},
                dict(self._low),
                dict(self._high),
                self._latest.metric_step,
                self.version,
            )
        return self._frozen
