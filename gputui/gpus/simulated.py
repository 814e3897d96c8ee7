"""Simulated GPUs, so the scheduler and UI can be developed and demoed on machines without any.

The simulated GPUs reflect what gputui itself is running on them (through the `load` callback), so
memory-based placement behaves as it would on real hardware: a GPU holding a task's memory is busy while that
task's process runs, and idle (its memory still held) while it is stopped (paused: SIGSTOP). Every snapshot is
marked simulated.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence

from gputui.gpus.probe import GIB, GpuProcess, GpuSnapshot

MAX_SIMULATED_GPUS = 64
DEFAULT_MEMORY_GB = 24.0
TASK_MEMORY_GB = 2.0  # what a simulated GPU shows for a task that declares no memory_per_worker_gb
BASELINE_USED = 300 * 1024**2  # a real idle GPU never shows 0 bytes used (driver, display, ECC)
POWER_LIMIT_W = 350.0

# GPU index -> (pid, bytes) for each task gputui runs on it; pid 0 when not known yet. A third item, where the
# caller knows, says whether the task is at work (False: paused); else a task is at work unless its pid is stopped.
LoadEntry = tuple[int, int] | tuple[int, int, bool]
LoadFn = Callable[[], Mapping[int, Sequence[LoadEntry]]]

_SPEC = re.compile(r"^\s*(\d+)\s*(?:[xX]\s*(\d+(?:\.\d*)?|\.\d+)\s*)?$")
SHARED = "shared:"  # --simulate shared:2x24: simulated GPUs claimed in the machine's one map, like real ones


def split_shared(spec: str) -> tuple[bool, str]:
    """("shared:" was asked, the rest): `shared:2x24`, and `auto:shared:2x24` / `shared:auto:2x24` for a
    fallback to shared simulated GPUs."""
    text = spec.strip()
    head, sep, rest = text.partition(":")
    if head.strip().lower() == SHARED[:-1] and sep:
        if not rest.strip():
            raise ValueError(f"--simulate: expected N or NxGB after 'shared:' (e.g. shared:2x24), got {spec!r}")
        return True, rest.strip()
    if head.strip().lower() == "auto" and sep:
        shared, rest = split_shared(rest)
        return shared, f"auto:{rest}" if rest.lower() != "auto" else "auto"
    return False, text


def parse_simulate_spec(spec: str) -> tuple[int, float]:
    """Parse a --simulate value "N" or "NxGB" into (count, GiB per GPU) (a "shared:" before it is read by
    `split_shared`)."""
    m = _SPEC.match(spec) if isinstance(spec, str) else None
    if m is None:
        raise ValueError(
            f"--simulate: expected N or NxGB (e.g. 4 or 8x24), 'shared:' before it for GPUs shared with "
            f"other runs (shared:2x24), or auto[:NxGB], got {spec!r}"
        )
    count = int(m.group(1))
    memory_gb = float(m.group(2)) if m.group(2) is not None else DEFAULT_MEMORY_GB
    if not 1 <= count <= MAX_SIMULATED_GPUS:
        raise ValueError(f"--simulate: GPU count must be 1..{MAX_SIMULATED_GPUS}, got {spec!r}")
    if memory_gb <= 0:
        raise ValueError(f"--simulate: memory per GPU must be more than 0 GB, got {spec!r}")
    return count, memory_gb


class SimulatedProbe:
    """Fake GPUs whose memory and load follow the tasks gputui is running on them.

    Private to their run (`private`: their reservations live in the run directory, so no other run sees or waits
    for them) unless `shared` (`--simulate shared:NxGB`): then they are claimed in the machine's one map, as real
    GPUs are, for tests and demos of sharing one box."""

    name = "simulated"
    simulated = True

    def __init__(
        self,
        count: int,
        memory_gb: float = DEFAULT_MEMORY_GB,
        load: LoadFn | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        shared: bool = False,
    ) -> None:
        if not 1 <= count <= MAX_SIMULATED_GPUS:
            raise ValueError(f"simulated GPU count must be 1..{MAX_SIMULATED_GPUS}, got {count}")
        if memory_gb <= 0:
            raise ValueError(f"simulated GPU memory must be more than 0 GB, got {memory_gb}")
        self.count = count
        self.memory_gb = float(memory_gb)
        self.memory_total = int(self.memory_gb * GIB)
        self._load = load
        self._clock = clock  # injectable so tests can pin the wobble
        self._energy_mj = [0.0] * count  # each GPU's energy counter: its simulated power integrated over time
        self._powered: tuple[float, list[float]] | None = None  # (when, each GPU's power shown then)
        self.shared = shared
        self.private = not shared

    def snapshot(self) -> list[GpuSnapshot]:
        loads = self._load() if self._load is not None else {}
        now = self._clock()
        name = f"Simulated GPU {self.memory_gb:g}GB"
        total = self.memory_total
        shown = []  # each GPU's (entries, used, util, temperature, power): its energy counter needs them all
        for i in range(self.count):
            given = loads.get(i, ())
            entries = [(int(e[0]), max(0, int(e[1]))) for e in given]
            used = min(total, BASELINE_USED + sum(nbytes for _, nbytes in entries))
            if any(at_work(e) for e in given):
                # A slow, per-GPU wobble in [85, 99] so busy GPUs look alive without randomness.
                util = float(round(92 + 7 * math.sin(now * 0.9 + i * 1.7)))
                temperature = 61.0 + (util - 85)  # 61..75 C
                power = 280.0 + (util - 85) * 3  # 280..322 W
            elif entries:  # every task on it paused: idle, its memory still held
                util, temperature, power = 0.0, 40.0, 70.0
            else:
                util, temperature, power = 0.0, 35.0, 60.0
            shown.append((entries, used, util, temperature, power))
        counters = self._count_energy(now, [power for *_, power in shown])
        return [
            GpuSnapshot(
                index=i,
                name=name,
                uuid=f"SIM-GPU-{i}",
                memory_total=total,
                memory_used=used,
                utilization=util,
                temperature=temperature,
                power=power,
                power_limit=POWER_LIMIT_W,
                processes=tuple(GpuProcess(pid, nbytes) for pid, nbytes in entries if pid > 0),
                simulated=True,
                energy_mj=mj,
            )
            for i, ((entries, used, util, temperature, power), mj) in enumerate(zip(shown, counters, strict=True))
        ]

    def _count_energy(self, now: float, powers: list[float]) -> list[float]:
        """Each GPU's energy counter (millijoules) as of `now`, growing as NVML's does: since the last snapshot,
        the mean of the power it showed then and now, times the time between."""
        if self._powered is not None:
            then, before = self._powered
            seconds = max(0.0, now - then)
            for i, (was, watts) in enumerate(zip(before, powers, strict=True)):
                self._energy_mj[i] += (was + watts) / 2 * seconds * 1000.0
        self._powered = (now, powers)
        return list(self._energy_mj)

    def close(self) -> None:
        """Nothing to release."""


def at_work(entry: LoadEntry) -> bool:
    """Whether a task the load names is at work: as the caller says, else unless its process is stopped."""
    if len(entry) > 2:
        return bool(entry[2])
    return not stopped(int(entry[0]))


def stopped(pid: int) -> bool:
    """Whether the process is stopped (SIGSTOP: state T, or t under a tracer), as /proc says; False for pid 0 or
    a process that is gone."""
    if pid <= 0:
        return False
    try:  # (os.read: no file object for a read of a few hundred bytes, every snapshot, for every attempt)
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        stat = os.read(fd, 4096)
    except OSError:
        return False
    finally:
        os.close(fd)
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]  # after the command, which may hold ')'
    return state in (b"T", b"t")
