"""Clocks: the wall clock to show and store, CLOCK_BOOTTIME to measure what two processes stamp.

The wall clock steps (an NTP correction, a VM resumed, `date -s`): an interval between two wall times may
be hours off or negative. CLOCK_BOOTTIME never steps and every process of one boot reads the same one,
so a stamp taken by one process (a waiter recording a worker's end) and one taken by another (the
scheduler recording its launch) give a true interval. A Stamp is a wall time (a float: stored, shown,
compared as before) that also carries its CLOCK_BOOTTIME reading and the boot's id; `between` measures
on CLOCK_BOOTTIME when both stamps come from the same boot, else (another boot or host, a plain float
from an older record) on the wall clock, clamped at 0. Within one process, time.monotonic() is used.
"""

from __future__ import annotations

import functools
import time

_BOOT_ID = "/proc/sys/kernel/random/boot_id"


@functools.cache
def boot_id() -> str | None:
    """This boot's id (Linux); None where there is none: stamps are then never compared on CLOCK_BOOTTIME."""
    try:
        with open(_BOOT_ID) as f:
            text = f.read().strip()
    except OSError:
        return None
    return text if text and " " not in text else None


def boottime() -> float | None:
    try:
        return time.clock_gettime(time.CLOCK_BOOTTIME)
    except (AttributeError, OSError):
        return None


class Stamp(float):
    """A wall-clock time (the float's value) with the CLOCK_BOOTTIME reading and boot id taken with it.

    Arithmetic gives plain floats (wall seconds): measure an interval with `between`."""

    __slots__ = ("boot", "boot_id")

    def __new__(cls, wall: float, boot: float | None = None, boot_id: str | None = None) -> Stamp:
        stamp = super().__new__(cls, wall)
        stamp.boot = None if boot is None or boot_id is None else float(boot)
        stamp.boot_id = boot_id if stamp.boot is not None else None
        return stamp

    def __reduce__(self):
        return (Stamp, (float(self), self.boot, self.boot_id))

    def later(self, seconds: float) -> Stamp:
        """This stamp moved `seconds` on, on both clocks."""
        boot = None if self.boot is None else self.boot + seconds
        return Stamp(float(self) + seconds, boot, self.boot_id)


def now() -> Stamp:
    return Stamp(time.time(), boottime(), boot_id())


def between(start: float, end: float) -> float:
    """Seconds from `start` to `end`, never negative: on CLOCK_BOOTTIME when both are stamps of the same
    boot, else on the wall clock."""
    a, b = getattr(start, "boot", None), getattr(end, "boot", None)
    if a is not None and b is not None and start.boot_id == end.boot_id:
        return max(0.0, b - a)
    return max(0.0, float(end) - float(start))


def since(start: float) -> float:
    """Seconds from `start` to now (see `between`)."""
    return between(start, now())
