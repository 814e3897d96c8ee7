"""Energy per attempt, the pure rules: what a GPU used between two samples, and whose it was.

A GPU's energy between two samples is read from its energy counter (NVML's total energy consumption, in
millijoules since the driver loaded). A counter that went down was reset (the driver reloaded): that interval is
not counted. Where either sample lacks the counter but the GPU reports its power, the energy is the mean of the
two powers known times the time between, and marked estimated. Neither known: not counted.

The interval's energy is then shared among the attempts that held the GPU in it: the interval is cut where each
attempt arrived or left, each piece gets the interval's energy in proportion to its length (the GPU's mean rate
over the interval), and the attempts present during a piece share it equally. A GPU held by one attempt the whole
interval: all of it is that attempt's; a piece no attempt held (the GPU idle between two tasks) is no attempt's.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import NamedTuple, TypeVar

K = TypeVar("K", bound=Hashable)


class Reading(NamedTuple):
    """One sample of one GPU, for its energy: when (a clock.Stamp), its counter (mJ) and its power (W)."""

    at: float
    energy_mj: float | None
    power: float | None


class Used(NamedTuple):
    joules: float
    estimated: bool  # from power x time: the GPU's energy counter was missing at either end


def interval_energy(before: Reading, after: Reading, seconds: float) -> Used | None:
    """Joules the GPU used between two readings `seconds` apart; None where not known (a counter reset: the
    driver reloaded; or neither the counter nor the power known)."""
    if before.energy_mj is not None and after.energy_mj is not None:
        if after.energy_mj < before.energy_mj:
            return None
        return Used((after.energy_mj - before.energy_mj) / 1000.0, False)
    powers = [p for p in (before.power, after.power) if p is not None]
    if not powers:
        return None
    return Used(sum(powers) / len(powers) * max(0.0, seconds), True)


def share(joules: float, seconds: float, spans: Mapping[K, tuple[float, float]]) -> dict[K, float]:
    """The interval's `joules` among the attempts that held the GPU in it. `spans`: each attempt's time on the GPU
    as (from, to) seconds after the interval's start, within [0, seconds]. Every attempt named gets a value (0.0
    for one with no time in it); what no attempt held is left out."""
    out = dict.fromkeys(spans, 0.0)
    if not spans:
        return out
    if seconds <= 0:  # two samples at one instant: whatever the counter moved is shared equally
        return dict.fromkeys(spans, joules / len(spans))
    clipped = {k: (min(max(lo, 0.0), seconds), min(max(hi, 0.0), seconds)) for k, (lo, hi) in spans.items()}
    cuts = sorted({0.0, seconds, *(x for span in clipped.values() for x in span)})
    rate = joules / seconds
    for a, b in zip(cuts, cuts[1:], strict=False):
        there = [k for k, (lo, hi) in clipped.items() if lo <= a and b <= hi]
        for k in there:
            out[k] += rate * (b - a) / len(there)
    return out
