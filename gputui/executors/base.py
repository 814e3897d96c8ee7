"""What every executor does, and the one word each side of the run has for it.

Two faces, both chosen once by kind in registry.py and nowhere else:

- `Executor`, the scheduler's: joins its backend (capacity, largest node, whether it places GPUs itself),
  hands each attempt to whatever records its end (a waiter here, the Ray bridge, a Slurm job's stand-in),
  says how an attempt it lost ended, cleans up after one, and leaves. Every attempt, wherever it runs,
  ends as lines in the attempts journal (journal.py): settling and adoption never ask where it ran.
- `RecordedExecutor`, for whoever has only the run directory (the views, the app, a control verb sent
  from another process): built from what the run recorded (its kind, the Ray address...), it signals an
  attempt with a word, says where a cluster attempt runs, describes a kill, reads the nodes' GPUs.

Kept import-light: a Slurm stand-in and the keeper load what imports this.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from gputui.executors.ownership import ProcessRef

Key = tuple[str, int]  # (task id, attempt number)
Say = Callable[[str], None]
T = TypeVar("T")


class ExecutorUnavailable(RuntimeError):
    """The backend cannot be reached or used (Ray not installed, no Slurm controller): the message says why."""


class LaunchFailed(OSError):
    """The request could not be handed to a waiter (it died, or no keeper could fork one) or to the bridge.
    `retry`: another waiter may take it (a bridge lost just now may not: its attempt fails)."""

    def __init__(self, message: str, retry: bool = True):
        super().__init__(message)
        self.retry = retry


@dataclass(frozen=True)
class RunContext:
    """What an executor knows of the run it serves (the executors layer may not import the run directory)."""

    root: Path  # the run directory
    journal: Path  # the attempts journal every end is recorded in
    cwd: Path  # the job's workdir: commands run there
    scheduler_id: str
    job_name: str = ""
    max_parallel: int | None = None  # [resources].max_parallel: on Slurm, an array's throttle

    @property
    def keeper_log(self) -> Path:
        return self.root / "keeper.log"


@dataclass(frozen=True)
class Capacity:
    """A cluster's room, as its backend counts it. A task's GPUs are on one node, so `node_gpus` bounds a task."""

    gpus: float
    node_gpus: float  # on its largest node
    cpus: float
    nodes: int
    where: str  # how the run names it: "the Ray cluster at 'head:6379'", "Slurm's default partition"


@dataclass(frozen=True)
class Placement:
    """Where and since when an attempt runs on a cluster's node, as the runner there recorded it."""

    node: str
    gpus: str
    since: float  # epoch seconds
    node_id: str = ""  # Ray's id of the node (two nodes may share a host name)

    @classmethod
    def of(cls, found: Mapping) -> Placement:
        return cls(str(found.get("node", "?")), str(found.get("gpus") or ""), found["since"],
                   str(found.get("node_id") or ""))  # fmt: skip

    @property
    def shown(self) -> str:
        """`node:GPUs`, as the GPUs columns show it."""
        return f"{self.node}:{self.gpus or '-'}"


@dataclass(frozen=True)
class LaunchSpec:
    task_id: str
    number: int
    argv: Sequence[str]
    env: Mapping[str, str]  # the worker's own variables (tags, GPUs), on top of the executor's env
    log_path: Path
    grace: float = 10.0  # how long leftovers of the task get between SIGTERM and SIGKILL
    held: Sequence[int] = ()  # descriptors the task holds while any process of it lives (GPU locks)
    asked: int = 0  # on a cluster: the GPUs it asks of it (the cluster picks them)
    after: tuple[str, ...] = ()  # tasks not done yet whose success it waits for (a cluster may queue it behind)
    batch: bool = False  # may share one submission with others asking as many GPUs (a shard)
    # A resident worker's task (resident_slot.py): its filled placeholders, handed to the worker with its command
    # line; None: the command is a process of its own.
    resident: Mapping[str, object] | None = None


@dataclass(eq=False)
class WaiterHandle:
    channel: Any  # socket.socket
    ref: ProcessRef
    key: Key | None = field(default=None)  # the attempt it runs
    shared: bool = False  # the Ray bridge: holds many attempts at once, never idle
    slot: tuple[int, ...] | None = None  # a resident worker's waiter: the GPUs it holds between its tasks


class Attempt(Protocol):
    """What a read side needs of an attempt's record (rundir.records.AttemptRecord has it)."""

    task_id: str
    number: int
    log_path: str

    def processes(self) -> Any: ...  # ownership.AttemptProcesses


class RecordedExecutor(Protocol):
    """A recorded run's executor, for code that has only the run directory: never asks which one it is."""

    kind: str
    places_gpus: bool  # this machine's GPUs are the run's (else the cluster's panels, or none, are shown)
    label: str | None  # the header's word for where GPUs are ("ray cluster"); None: this machine

    def meta(self) -> dict[str, Any]: ...  # what the run records of it, for the app (read back by from_meta)

    def placement(self, task_id: str, number: int, log_path: str) -> Placement | None: ...

    def standing(self, task_id: str, number: int) -> str: ...  # the backend's word on a queued attempt

    def job_of(self, task_id: str, number: int) -> str: ...  # the backend's id of the attempt ("" if none)

    # `word`: pause, resume, terminate or kill. The processes signalled here; None: told (Ray's signal file).
    def signal(self, attempt: Attempt, word: str) -> list[ProcessRef] | None: ...

    # Attempts of `keys` with no process here that have not ended, as `ends()` (the journal) says.
    def running_elsewhere(self, ends: Callable[[], Mapping], keys: Sequence[Key]) -> set[Key]: ...

    def paused(self, sent: list[ProcessRef]) -> str: ...

    def resumed(self, sent: list[ProcessRef]) -> str: ...

    def killed(self, signalled: int, stuck: list[str], running: bool) -> str: ...

    def kill_target(self, refs: list[ProcessRef], placed: str | None, job: str) -> str: ...

    def adopted_where(self, worker: ProcessRef | None) -> str: ...

    # Its nodes' GPUs ([{node, id, declared, gpus | why}]), and what to say while none is read; None and why
    # not where they cannot be read (the run's Ray bridge has left; Slurm shows none).
    def node_gpus(self, simulate: str | None) -> tuple[list[dict] | None, str]: ...


class Executor(Protocol):
    """The scheduler's executor: one per run, chosen when it opens (registry.open_executor)."""

    kind: str
    places_gpus: bool  # the scheduler picks each attempt's GPUs here; a cluster picks them itself
    stop_waits_for_backend: bool  # a stopped attempt ends when its backend ends it, however long that takes
    lost_wording: str  # why an attempt this executor held would have no recorded exit status
    recorded: RecordedExecutor
    env: dict[str, str]

    def join(self, env: Mapping[str, str]) -> Capacity | None: ...  # None: this machine (no cluster)

    def slots(self, capacity: Capacity, gpus_per_worker: int) -> int: ...  # when max_parallel is not set

    def start(self, prefork: int = 0) -> None: ...

    def ready(self, now: float, say: Say) -> bool: ...

    def waiter(self) -> WaiterHandle: ...

    # Resident workers' waiters between tasks ([job] resident = true; the local executor only): those idle, one
    # taken for a task, one let go (it stops its worker and exits).
    def idle_slots(self) -> list[WaiterHandle]: ...

    def take_slot(self, waiter: WaiterHandle) -> None: ...

    def close_slot(self, waiter: WaiterHandle) -> None: ...

    def give_back(self, waiter: WaiterHandle | None) -> None: ...

    def submit(self, launches: list[tuple[LaunchSpec, T]], say: Say) -> list[tuple[LaunchSpec, T]]: ...

    def queues_after(self, task_id: str) -> bool: ...

    def launch(self, waiter: WaiterHandle, spec: LaunchSpec) -> None: ...

    def fileno(self) -> int: ...

    def events(self) -> list[str]: ...

    def lost(self) -> list[Key]: ...

    def done(self, key: Key) -> None: ...

    def requeue_reason(self, exit_code: int | None) -> str | None: ...

    def after_end(self, task_id: str, number: int, exit_code: int | None) -> str | None: ...

    def stopping_line(self, running: int, grace_s: float) -> str: ...

    def waiting_line(self, keys: list[Key], leave: str) -> str: ...

    def left_line(self, running: int) -> str: ...

    def abandon(self) -> None: ...

    def close(self) -> None: ...

    def leave(self) -> None: ...
