"""Shared by the scheduler's parts: what it knows of an attempt, its options, where it speaks."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gputui.engine.rules.health import Break
from gputui.engine.watching import AttemptWatch
from gputui.executors import ownership
from gputui.executors.base import WaiterHandle
from gputui.files.tail import LogTail
from gputui.jobs.tasks import Status, TaskRecord

WAITING = (Status.PENDING, Status.RETRYING)  # the statuses of a task that waits to be launched


class Output(Protocol):
    """Where the scheduler says what happens (the headless printer; a test's recorder)."""

    show_output: bool

    def info(self, text: str) -> None: ...

    def worker_lines(self, label: str, lines: Sequence[str]) -> None: ...

    def progress(self, counts: Mapping[str, int], elapsed: float) -> None: ...


class Infeasible(RuntimeError):
    """The job can never start here (too few or too small GPUs); said at once instead of waiting."""


@dataclass
class Live:
    """An attempt not known to be over: running (launched by us, or adopted from a previous scheduler
    instance), or ended with processes of its task still alive ("lingering": its GPUs stay reserved)."""

    task_id: str
    number: int
    gpus: tuple[int, ...]
    label: str
    log_path: str
    started_at: float  # its launch: a clock.Stamp (intervals from it are measured with clock.between)
    waiter: ownership.ProcessRef | None = None  # while it lives (on Ray: the bridge), the end will be recorded
    worker: ownership.ProcessRef | None = None  # as its waiter recorded it (none on Ray: it runs on a node)
    start_noted: bool = False  # its waiter's start record is in the store
    cgroup: str | None = None
    ours: bool = False  # its waiter reports to our wake pipe; else watched by polling the journal
    log: LogTail | None = None  # opened when output is streamed
    handle: WaiterHandle | None = None  # the waiter chosen for it, until the launch is sent
    interrupted: bool = False  # stopped by our own shutdown: not the task's fault
    said_unprovable: bool = False  # told the user about a tagged leftover we may not signal
    gone_since: float | None = None  # when no process of it was seen any more
    watch: AttemptWatch | None = None  # the [health] rules, while it runs
    health_break: Break | None = None  # the rule it broke: it is being stopped for it
    time_limit: str | None = None  # it ran past [job].time_limit_s (the reason): it is being stopped for it

    @property
    def key(self) -> tuple[str, int]:
        return (self.task_id, self.number)

    def processes(self) -> ownership.AttemptProcesses:
        return ownership.AttemptProcesses(self.waiter, self.worker, self.cgroup)


@dataclass
class Options:
    simulate: str | None = None
    show_output: bool = True
    poll: float = 0.25
    progress_every: float = 30.0
    probe_every: float = 1.0
    on_merge: Callable[[bool], str] | None = None  # the `merge` control verb (verifying?): run by the caller
    on_settled: Callable[[list[str]], None] | None = None  # tasks settled (committed): the caller's products
    # A shard output that exited 0, checked before its done-manifest is written: (what the manifest records
    # of its ids, or why the output is wrong: then the attempt fails and is retried).
    check_output: Callable[[TaskRecord, Path], tuple[dict | None, str | None]] | None = None
