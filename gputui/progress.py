"""Progress as workers print it (`processed 16/125`, tqdm's `45/100 [...]`), with rate and ETA."""

from __future__ import annotations

import re
import time
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
    """Keeps the first sample of each attempt so rate and ETA span the attempt, not one tick."""

    def __init__(self) -> None:
        self._first: dict[tuple[str, int], tuple[float, int]] = {}

    def update(self, key: tuple[str, int], tail: str, now: float | None = None) -> Progress | None:
        frac = parse_fraction(tail)
        if frac is None:
            return None
        now = time.monotonic() if now is None else now
        done, total = frac
        t0, d0 = self._first.setdefault(key, (now, done))
        if done < d0:  # the worker started counting again
            self._first[key] = (t0, d0) = (now, done)
        rate = (done - d0) / (now - t0) if now > t0 and done > d0 else None
        eta = (total - done) / rate if rate else None
        return Progress(done, total, rate, eta)

    def forget(self, keep: set[tuple[str, int]]) -> None:
        for key in list(self._first):
            if key not in keep:
                del self._first[key]
