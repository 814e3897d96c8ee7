"""Progress as workers print it (`processed 16/125`, tqdm's `45/100 [...]`), with rate and ETA."""

from __future__ import annotations

import re
import time
from collections import deque
from dataclasses import dataclass

_FRACTION = re.compile(r"(?<![\d.])(\d+)\s*/\s*(\d+)(?![\d.])")


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    rate: float | None = None  # units per second, from successive samples
    eta: float | None = None  # seconds

    @property
    def fraction(self) -> float:
        return 0.0 if self.total <= 0 else min(1.0, self.done / self.total)


def parse_fraction(text: str) -> tuple[int, int] | None:
    """The last `done/total` in the last line that has one (total > 0, done <= total)."""
    for line in reversed(text.splitlines()):
        for m in reversed(list(_FRACTION.finditer(line))):
            done, total = int(m.group(1)), int(m.group(2))
            if total > 0 and done <= total:
                return done, total
    return None


class ProgressTracker:
    """Rate and ETA over the last minute of running time, per attempt.

    A window, not the whole attempt: the rate follows a worker that speeds up or slows down. A paused
    task has no rate, and its samples are dropped, so after resume the pause is not counted as slowness.
    """

    WINDOW_S = 60.0

    def __init__(self) -> None:
        self._samples: dict[tuple[str, int], deque[tuple[float, int]]] = {}

    def update(
        self,
        key: tuple[str, int],
        tail: str,
        now: float | None = None,
        *,
        paused: bool = False,
        reported: tuple[int, int] | None = None,
    ) -> Progress | None:
        """`reported`: (done, total) the worker reported through gputui.hooks; its log is not read then."""
        frac = reported or parse_fraction(tail)
        if frac is None:
            return None
        done, total = frac
        if paused:
            self._samples.pop(key, None)
            return Progress(done, total)
        now = time.monotonic() if now is None else now
        samples = self._samples.setdefault(key, deque())
        if samples and done < samples[-1][1]:  # the worker started counting again
            samples.clear()
        samples.append((now, done))
        while len(samples) > 2 and now - samples[1][0] >= self.WINDOW_S:
            samples.popleft()
        (t0, d0) = samples[0]
        rate = (done - d0) / (now - t0) if now > t0 and done > d0 else None
        eta = (total - done) / rate if rate else None
        return Progress(done, total, rate, eta)

    def forget(self, keep: set[tuple[str, int]]) -> None:
        for key in list(self._samples):
            if key not in keep:
                del self._samples[key]
