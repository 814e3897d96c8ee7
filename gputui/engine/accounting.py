"""GPU accounting: GPU-seconds and peak GPU memory of each attempt, from the scheduler's GPU samples.

An attempt holds its GPUs from launch to its worker's end, paused or not, so each sample adds the time
since the last one times the GPUs it holds. Its memory is what its own processes (its worker, their
descendants, its cgroup: ownership's rule) use on its GPUs, summed; on simulated GPUs that is what the
simulation attributes to the task, and the figures are marked simulated. Kept in memory between
samples and written to the store every few seconds and when the attempt ends. Time held is measured on
CLOCK_BOOTTIME (clock.between) from stamps of the launch, each sample and the end: a step of the wall clock
neither adds hours to it nor takes them away.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gputui import clock
from gputui.executors.ownership import AttemptProcesses, ProcessRef, lineage
from gputui.gpus.probe import GpuSnapshot

WRITE_EVERY_S = 5.0  # how often running attempts' figures are written to the store

Held = tuple[tuple[str, int], tuple[int, ...], AttemptProcesses]  # (task id, number), its GPUs, its processes


@dataclass
class Usage:
    gpus: int  # how many GPUs the attempt holds
    started_at: float  # when it was launched: a clock.Stamp (a plain float is measured on the wall clock)
    gpu_seconds: float = 0.0
    peak_memory: int | None = None  # bytes; None: none of its processes seen on a GPU yet
    simulated: bool = False
    dirty: bool = True  # changed since last written
    ended_at: float | None = None  # its end, once known: no sample counts past it

    def advance(self, now: float) -> None:
        """Time held up to `now`: each sample adds the seconds since the last one (from the launch, for
        the first sample, and across a restart of the scheduler: its GPUs were held all along) x its GPUs."""
        if self.ended_at is not None:
            now = self.ended_at
        spent = clock.between(self.started_at, now) * self.gpus
        if spent != self.gpu_seconds:
            self.gpu_seconds, self.dirty = spent, True

    def fields(self) -> dict:
        """The attempt's columns in the store."""
        return {
            "gpu_seconds": round(self.gpu_seconds, 3),
            "peak_memory": self.peak_memory,
            "gpus_simulated": int(self.simulated),
        }


class Meter:
    """Running attempts' usage, by (task id, attempt number)."""

    def __init__(self, simulated: bool) -> None:
        self.simulated = simulated
        self.usage: dict[tuple[str, int], Usage] = {}
        self._written_at = float("-inf")

    def start(self, key: tuple[str, int], gpus: int, started_at: float, peak: int | None = None) -> None:
        """An attempt launched, or adopted (with the peak already recorded for it)."""
        if key not in self.usage:
            self.usage[key] = Usage(gpus, started_at, peak_memory=peak, simulated=self.simulated and gpus > 0)

    def ran_from(self, key: tuple[str, int], since: float | None) -> None:
        """A cluster attempt's GPUs are counted from when it started on its node (None: it never did), not
        from its launch: it may have waited in the cluster's queue meanwhile."""
        u = self.usage.get(key)
        if u is None:
            return
        if since is None:
            u.gpus = 0
        elif since > u.started_at:  # on the node's wall clock: this long after the launch
            start = u.started_at if isinstance(u.started_at, clock.Stamp) else clock.Stamp(u.started_at)
            u.started_at = start.later(since - start)

    def sample(self, snapshots: Sequence[GpuSnapshot], attempts: Iterable[Held], now: float) -> None:
        """One GPU sample: time for every running attempt, memory for those whose processes are seen."""
        by_index = {g.index: g for g in snapshots}
        chains: dict[int, list[ProcessRef]] = {}
        for key, gpus, procs in attempts:
            u = self.usage.get(key)
            if u is None or u.ended_at is not None:
                continue
            u.advance(now)
            used = attempt_memory([by_index[i] for i in gpus if i in by_index], procs, chains)
            if used is not None and (u.peak_memory is None or used > u.peak_memory):
                u.peak_memory, u.dirty = used, True

    def due(self, now: float) -> dict[tuple[str, int], dict]:
        """Columns to write for attempts that changed, at most every WRITE_EVERY_S of `now` (time.monotonic();
        a clock that went back writes at once rather than waiting for it to catch up)."""
        if 0 <= now - self._written_at < WRITE_EVERY_S:
            return {}
        self._written_at = now
        out = {}
        for key, u in self.usage.items():
            if u.dirty:
                out[key] = u.fields()
                u.dirty = False
        return out

    def finish(self, key: tuple[str, int], ended_at: float) -> dict:
        """The attempt's final columns, counted up to its end; {} for one never metered. It is forgotten
        only by `keep` (after the end is committed: a rolled-back turn settles it again)."""
        u = self.usage.get(key)
        if u is None:
            return {}
        u.ended_at = ended_at
        u.advance(ended_at)
        return u.fields()

    def keep(self, keys: Iterable[tuple[str, int]]) -> None:
        """Forget attempts that are not running any more."""
        wanted = set(keys)
        self.usage = {k: u for k, u in self.usage.items() if k in wanted}


def attempt_memory(
    gpus: Sequence[GpuSnapshot], procs: AttemptProcesses, chains: dict[int, list[ProcessRef]] | None = None
) -> int | None:
    """GPU memory the attempt's own processes use on these GPUs, summed; None when none is seen (or
    the driver does not say). `chains` caches each process's lineage across the attempts of one sample."""
    chains = {} if chains is None else chains
    total, seen = 0, False
    for g in gpus:
        for p in g.processes:
            if p.used_memory is None:
                continue
            if p.pid not in chains:
                chains[p.pid] = lineage(p.pid)
            if procs.holds(chains[p.pid]):
                total += p.used_memory
                seen = True
    return total if seen else None
