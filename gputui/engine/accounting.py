"""GPU accounting: GPU-seconds and peak GPU memory of each attempt, from the scheduler's GPU samples.

An attempt holds its GPUs from launch to its worker's end, paused or not, so each sample adds the time
since the last one times the GPUs it holds. Its memory is what its own processes (its worker, their
descendants, its cgroup: ownership's rule) use on its GPUs, summed; on simulated GPUs that is what the
simulation attributes to the task, and the figures are marked simulated. Kept in memory between
samples and written to the store every few seconds and when the attempt ends. Time held is measured on
CLOCK_BOOTTIME (clock.between) from stamps of the launch, each sample and the end: a step of the wall clock
neither adds hours to it nor takes them away.

Energy: each GPU's energy between two samples (its counter's growth; power x time, marked estimated, where it has
no counter) is shared among the attempts that held it then (rules/energy.py). From an attempt's last sample to its
end, its GPUs are counted at their rate over the last interval (written with its end, which comes before the next
sample); the next interval leaves that stretch out of the others' share. Energy used while no scheduler watched
(between a scheduler's end and the next one's first sample) is not counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from gputui import clock
from gputui.engine.rules.energy import Reading, interval_energy, share
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
    energy_j: float | None = None  # joules used on its GPUs, shared as the samples went; None: not known
    energy_estimated: bool = False  # some of it is power x time (a GPU without an energy counter)
    on: tuple[int, ...] = ()  # its GPUs' indices, as the samples give them
    tail: tuple[float | None, bool] | None = None  # (joules, estimated) from its last sample to its end

    def advance(self, now: float) -> None:
        """Time held up to `now`: each sample adds the seconds since the last one (from the launch, for
        the first sample, and across a restart of the scheduler: its GPUs were held all along) x its GPUs."""
        if self.ended_at is not None:
            now = self.ended_at
        spent = clock.between(self.started_at, now) * self.gpus
        if spent != self.gpu_seconds:
            self.gpu_seconds, self.dirty = spent, True

    def energy(self) -> tuple[float | None, bool]:
        """Joules so far (None: not known), and whether any of it is estimated."""
        tail, tail_estimated = self.tail or (None, False)
        if self.energy_j is None and tail is None:
            return None, False
        return (self.energy_j or 0.0) + (tail or 0.0), self.energy_estimated or tail_estimated

    def fields(self) -> dict:
        """The attempt's columns in the store (its energy only where known)."""
        out = {
            "gpu_seconds": round(self.gpu_seconds, 3),
            "peak_memory": self.peak_memory,
            "gpus_simulated": int(self.simulated),
        }
        joules, estimated = self.energy()
        if joules is not None:
            out |= {"energy_j": round(joules, 3), "energy_estimated": int(estimated)}
        return out


@dataclass
class GpuEnergy:
    """What the meter knows of one GPU's energy: its last reading, its rate (J/s) over the last interval counted,
    and the attempts that left it since that reading ((start, end) of each)."""

    last: Reading
    rate: float | None = None
    estimated: bool = False
    left: dict[tuple[str, int], tuple[float, float]] = field(default_factory=dict)


class Meter:
    """Running attempts' usage, by (task id, attempt number)."""

    def __init__(self, simulated: bool) -> None:
        self.simulated = simulated
        self.usage: dict[tuple[str, int], Usage] = {}
        self.gpus: dict[int, GpuEnergy] = {}  # by GPU index
        self._written_at = float("-inf")

    def start(
        self,
        key: tuple[str, int],
        gpus: int,
        started_at: float,
        peak: int | None = None,
        energy: float | None = None,
        estimated: bool = False,
    ) -> None:
        """An attempt launched, or adopted (with the peak and energy already recorded for it)."""
        if key not in self.usage:
            simulated = self.simulated and gpus > 0
            self.usage[key] = Usage(gpus, started_at, peak_memory=peak, simulated=simulated, energy_j=energy)
            self.usage[key].energy_estimated = bool(estimated)

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
        """One GPU sample: time for every running attempt, memory for those whose processes are seen, each GPU's
        energy since its last sample for the attempts that held it."""
        by_index = {g.index: g for g in snapshots}
        chains: dict[int, list[ProcessRef]] = {}
        held: dict[int, list[tuple[tuple[str, int], Usage]]] = {}
        for key, gpus, procs in attempts:
            u = self.usage.get(key)
            if u is None or u.ended_at is not None:
                continue
            u.advance(now)
            u.on = tuple(gpus)
            for i in gpus:
                held.setdefault(i, []).append((key, u))
            used = attempt_memory([by_index[i] for i in gpus if i in by_index], procs, chains)
            if used is not None and (u.peak_memory is None or used > u.peak_memory):
                u.peak_memory, u.dirty = used, True
        for g in snapshots:
            self._energy(g, held.get(g.index, []), now)

    def _energy(self, g: GpuSnapshot, holders: list[tuple[tuple[str, int], Usage]], now: float) -> None:
        """The GPU's energy since its last reading, shared among the attempts that held it meanwhile."""
        reading = Reading(now, g.energy_mj, g.power)
        gpu = self.gpus.get(g.index)
        if gpu is None:  # its first reading: what comes after it is counted
            self.gpus[g.index] = GpuEnergy(reading)
            return
        seconds = clock.between(gpu.last.at, now)
        used = interval_energy(gpu.last, reading, seconds)
        if used is not None:
            spans = {key: (clock.between(gpu.last.at, u.started_at), seconds) for key, u in holders}
            for key, (start, end) in gpu.left.items():  # counted up to its end already: its piece is its own
                spans[key] = (clock.between(gpu.last.at, start), clock.between(gpu.last.at, end))
            shares = share(used.joules, seconds, spans)
            for key, u in holders:
                if shares[key] or u.energy_j is None:
                    u.energy_j, u.dirty = (u.energy_j or 0.0) + shares[key], True
                u.energy_estimated = u.energy_estimated or used.estimated
            if seconds > 0:
                gpu.rate, gpu.estimated = used.joules / seconds, used.estimated
        gpu.last, gpu.left = reading, {}

    def _tail(self, key: tuple[str, int], u: Usage, ended_at: float) -> tuple[float | None, bool]:
        """Joules from the attempt's last sample (or its launch, for one no sample saw) to its end: each of its
        GPUs at its rate over the last interval (its power where none was counted yet: estimated), shared with
        the attempts still on it."""
        joules, estimated = None, False
        for i in u.on:
            gpu = self.gpus.get(i)
            if gpu is None:
                continue
            rate, guessed = gpu.rate, gpu.estimated
            if rate is None and gpu.last.power is not None:
                rate, guessed = gpu.last.power, True
            start = clock.between(gpu.last.at, u.started_at)
            seconds = max(0.0, clock.between(gpu.last.at, ended_at) - start)
            gpu.left[key] = (u.started_at, ended_at)
            if rate is None:
                continue
            others = sum(1 for k, o in self.usage.items() if k != key and o.ended_at is None and i in o.on)
            joules = (joules or 0.0) + rate * seconds / (1 + others)
            estimated = estimated or guessed
        return joules, estimated

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

    def finish(self, key: tuple[str, int], ended_at: float, gpus: Sequence[int] = ()) -> dict:
        """The attempt's final columns, counted up to its end; {} for one never metered. It is forgotten
        only by `keep` (after the end is committed: a rolled-back turn settles it again). `gpus`: its GPUs'
        indices (an attempt that ended before any sample saw it gets its energy from them)."""
        u = self.usage.get(key)
        if u is None:
            return {}
        u.ended_at = ended_at
        u.advance(ended_at)
        u.on = u.on or tuple(gpus)
        if u.tail is None:  # once: a rolled-back turn settles it again, after later samples
            u.tail = self._tail(key, u, ended_at)
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
