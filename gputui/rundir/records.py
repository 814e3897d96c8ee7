"""Plain records of attempts, as the store returns them. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass

from gputui import clock
from gputui.executors.ownership import AttemptProcesses, ProcessRef


@dataclass(frozen=True)
class AttemptRecord:
    task_id: str
    number: int  # 1-based
    status: str  # running | paused | done | failed | killed | lost (ended, exit status unknown)
    gpus: tuple[int, ...]
    command: tuple[str, ...]
    log_path: str
    started_at: float  # wall clock, to show; from the store a clock.Stamp (see `elapsed`)
    ended_at: float | None
    exit_code: int | None  # negative: killed by that signal
    reason: str | None
    waiter: ProcessRef | None  # the worker's parent: while it lives, the attempt's end will be recorded
    worker: ProcessRef | None  # as its waiter recorded it (pid + start time)
    cgroup: str | None  # the attempt's own cgroup, where the machine allows one
    cleared_at: float | None  # when no process of it was left (its GPUs free again)
    gpu_seconds: float | None = None  # seconds held x GPUs held; None: not measured (older gputui)
    peak_memory: int | None = None  # bytes, summed over its GPUs; None: none of its processes seen on one
    gpus_simulated: bool = False  # its GPUs were simulated: these figures are not a real GPU's
    energy_j: float | None = None  # joules its GPUs used for it; None: not measured (no counter, no power)
    energy_estimated: bool = False  # some of it is power x time: a GPU of it has no energy counter

    @property
    def gpu_hours(self) -> float | None:
        return None if self.gpu_seconds is None else self.gpu_seconds / 3600

    def processes(self) -> AttemptProcesses:
        return AttemptProcesses(self.waiter, self.worker, self.cgroup)

    @property
    def duration(self) -> float | None:
        """Seconds from its launch to its end (None while it runs), never negative: on CLOCK_BOOTTIME where
        both were stamped in one boot, so a step of the wall clock meanwhile changes nothing."""
        return None if self.ended_at is None else clock.between(self.started_at, self.ended_at)

    def elapsed(self, now: float | None = None) -> float:
        """Its duration, or while it runs the seconds since its launch as of `now` (a clock.Stamp is measured
        like `duration`; a plain float on the wall clock; None: now)."""
        done = self.duration
        return done if done is not None else clock.between(self.started_at, clock.now() if now is None else now)
