"""Plain records of tasks and attempts, as the store returns them. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass

from gputui.executors.ownership import AttemptProcesses, ProcessRef


class Status:
    PENDING = "pending"  # waiting for resources
    RUNNING = "running"
    PAUSED = "paused"  # SIGSTOPped; still holds its GPUs
    RETRYING = "retrying"  # failed, waiting for its backoff before the next attempt
    DONE = "done"
    FAILED = "failed"  # failed for good (attempts used up)
    KILLED = "killed"  # stopped by the user; stays killed until retried
    LOST = "lost"  # attempts only: ended without a recorded exit status (its waiter was killed first)

    LIVE = frozenset({RUNNING, PAUSED})
    FINAL = frozenset({DONE, FAILED, KILLED})
    ALL = (PENDING, RUNNING, PAUSED, RETRYING, DONE, FAILED, KILLED)


@dataclass(frozen=True)
class TaskRecord:
    id: str  # e.g. "shard-0"
    index: int  # position in the plan
    low: int  # shard range [low, high): id values, or positions when ids are not integers
    high: int
    count: int  # unique ids in the range
    status: str
    attempts: int  # attempts started so far
    budget: int  # attempts allowed before the task fails for good (grows on user retry)
    gpus: tuple[int, ...]  # GPUs held by the current/last attempt
    reason: str | None  # why it failed / was killed
    exit_code: int | None  # last attempt's exit code (negative: killed by that signal)
    started_at: float | None  # first launch, epoch seconds
    ended_at: float | None
    next_try_at: float | None  # for RETRYING
    # GPU accounting over all its attempts, as last written (every few seconds while one runs):
    gpu_seconds: float | None = None  # sum of its attempts' GPU-seconds; None: never measured
    peak_memory: int | None = None  # bytes: the most GPU memory any one attempt of it used at once
    gpus_simulated: bool = False  # measured on simulated GPUs: not a real GPU's figures

    @property
    def range_label(self) -> str:
        return f"[{self.low}, {self.high})"

    @property
    def gpu_hours(self) -> float | None:
        return None if self.gpu_seconds is None else self.gpu_seconds / 3600


@dataclass(frozen=True)
class AttemptRecord:
    task_id: str
    number: int  # 1-based
    status: str  # running | paused | done | failed | killed | lost (ended, exit status unknown)
    gpus: tuple[int, ...]
    command: tuple[str, ...]
    log_path: str
    started_at: float
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

    @property
    def gpu_hours(self) -> float | None:
        return None if self.gpu_seconds is None else self.gpu_seconds / 3600

    def processes(self) -> AttemptProcesses:
        return AttemptProcesses(self.waiter, self.worker, self.cgroup)

    @property
    def duration(self) -> float | None:
        return None if self.ended_at is None else self.ended_at - self.started_at
