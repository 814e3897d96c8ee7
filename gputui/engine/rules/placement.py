"""Pure placement: which pending tasks start now, on which GPUs, and the words for why one waits. No I/O,
tested directly."""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from gputui.gpus.probe import GIB, GpuSnapshot
from gputui.jobs.gpu_plan import Decision
from gputui.jobs.spec import ResourceSpec


@dataclass(frozen=True)
class Policy:
    gpus_per_worker: int
    max_parallel: int | None
    min_free_memory_gb: float = 0.0
    memory_per_worker_gb: float | None = None

    @property
    def min_free_bytes(self) -> int:
        need = max(self.min_free_memory_gb, self.memory_per_worker_gb or 0.0)
        return int(need * GIB)


def gpu_policy(res: ResourceSpec, cpus: int, slots: int | None = None, sizing: Decision | None = None) -> Policy:
    """The run's one GPU policy. A run mode's decision (`sizing`) gives GPUs per worker and workers (at most
    max_parallel); a cluster's `slots` bound the workers where max_parallel is not set; else the job's own
    numbers, and CPU tasks run `cpus` at once. Memory per worker is the job's only where it sizes nothing."""
    if sizing is not None:
        workers = min(sizing.workers, res.max_parallel or sizing.workers)
        return Policy(sizing.gpus_per_worker, workers, res.min_free_memory_gb)
    if slots is not None and res.max_parallel is None:
        return Policy(res.gpus_per_worker, slots, res.min_free_memory_gb)
    max_parallel = res.max_parallel or (None if res.gpus_per_worker else cpus)
    return Policy(res.gpus_per_worker, max_parallel, res.min_free_memory_gb, res.memory_per_worker_gb)


def usable_gpus(gpus: Sequence[GpuSnapshot], reserved: Collection[int], policy: Policy) -> list[int]:
    """GPUs free for a new task: not held by one of our tasks, not lost, and with enough free memory.

    A GPU handed to a task stays reserved until that task ends, whatever its memory reads, so a
    worker still loading its model is never double-booked. A lost GPU (fallen off the bus) reads as full, but
    full is still enough where the run asks for no free memory: it is left out by name. Where each task needs
    several GPUs, MIG instances are left out too (`mig_instances`), so that no run claims what it cannot place on.
    """
    mig = mig_instances(gpus) if policy.gpus_per_worker > 1 else set()
    return [
        g.index
        for g in gpus
        if g.index not in reserved and g.index not in mig and not g.lost and g.memory_free >= policy.min_free_bytes
    ]


def place(
    pending: Sequence[str],
    gpus: Sequence[GpuSnapshot],
    reserved: Collection[int],
    running: int,
    policy: Policy,
    needs: Mapping[str, int] | None = None,
) -> list[tuple[str, tuple[int, ...]]]:
    """Assign GPUs to pending task ids, in order, lowest GPU indices first (adjacent GPUs pair up).

    `needs`: GPUs a task asks for when not the policy's (a pipeline step's own `gpus`). The first task
    that does not fit stops the round, so a big task is never starved by smaller ones behind it."""
    slots = len(pending) if policy.max_parallel is None else max(0, policy.max_parallel - running)
    free = usable_gpus(gpus, reserved, policy)
    mig = mig_instances(gpus)
    placed = []
    for task_id in pending[:slots]:
        need = policy.gpus_per_worker if needs is None else needs.get(task_id, policy.gpus_per_worker)
        pool = free if need <= 1 else [i for i in free if i not in mig]
        if len(pool) < need:
            break
        take = pool[:need]
        free = [i for i in free if i not in take]
        placed.append((task_id, tuple(take)))
    return placed


def mig_instances(gpus: Sequence[GpuSnapshot]) -> set[int]:
    """The GPUs that are MIG instances: a task needing one GPU may have one, a task needing several may not (a
    CUDA process sees one MIG instance at most, so it would see only the first)."""
    return {g.index for g in gpus if g.parent is not None}


def why_waiting(
    gpus: Sequence[GpuSnapshot],
    reserved: Collection[int],
    policy: Policy,
    need: int | None = None,
    other_runs: Mapping[int, Mapping] | None = None,
    users: Mapping[int, str] | None = None,
    kept: Collection[int] = (),
    limit: str = "",
    ours: Mapping[int, str] | None = None,
    memory: str = "",
) -> str:
    """Why a task needing `need` GPUs (the policy's per worker) cannot start, in one short line for its reason
    column and the progress output: how many GPUs are free, then who holds each of the others. `reserved`: this
    run's tasks hold them; `other_runs`: GPU index -> the note of another gputui run holding it (its `job` and
    `run_dir`; its `user` where it names one); `users`: GPU index -> who uses one below the free-memory bar ("user
    bob", "a process outside gputui"); `kept`: GPUs the box policy keeps for interactive use; `limit`: the box
    policy's words where this user already holds as many GPUs as it allows (first, it is what holds the task
    back); `ours`: words for GPUs of this run's that its tasks share (rules/packing.share_words), in place of "in
    use by this run"; `memory`: how the free memory asked came about, where measured ("planned 4.9 GiB a task:
    measured peak 4.0 GiB + margin"). No figure that moves with every sample (free memory), so the line changes
    only when a holder does."""
    need = policy.gpus_per_worker if need is None else need
    other_runs = other_runs or {}
    users = users or {}
    ours = ours or {}
    free = [i for i in usable_gpus(gpus, reserved, policy) if i not in other_runs and i not in kept]
    taken = set(reserved) | set(other_runs) | set(kept)
    mig = sorted(mig_instances(gpus) - taken) if need > 1 else []  # (whatever their memory) not for this task
    free = [i for i in free if i not in mig]
    mine = sorted({g.index for g in gpus if g.index in reserved and g.index not in ours})
    held: dict[str, list[int]] = {}  # what holds them -> the GPUs it holds, in index order
    for g in gpus:
        if g.index in mig:
            continue
        if g.index in ours:
            held.setdefault(ours[g.index], []).append(g.index)
            continue
        if g.index in reserved:
            continue
        if g.index in other_runs:
            held.setdefault(held_by(other_runs[g.index]), []).append(g.index)
        elif g.index in kept:
            held.setdefault("reserved for interactive use by policy", []).append(g.index)
        elif g.lost:
            held.setdefault("lost (the driver cannot reach it)", []).append(g.index)
        elif g.memory_free < policy.min_free_bytes:
            why = [f"used by {users[g.index]}"] if users.get(g.index) else []
            why += [memory] if memory else []
            who = f" ({'; '.join(why)})" if why else ""
            held.setdefault(f"below {round(policy.min_free_bytes / GIB, 2):g} GB free{who}", []).append(g.index)
    if mig:
        held["MIG instances (one per task)"] = mig
    if mine:
        held["in use by this run"] = mine
    parts = [f"{_gpu_list(indices)} {what}" for what, indices in held.items()]
    if limit:
        parts.insert(0, limit)
    head = f"needs {need} GPU{'s' if need != 1 else ''}, {len(free)} free"
    return f"{head}: {'; '.join(parts)}" if parts else head


def held_by(note: Mapping) -> str:
    """Who holds a GPU, from its claim's note: "held by alice (run sweep, task shard-3)"; an older gputui's note
    names no user: "held by run sweep (/path/of/its/run)"."""
    if not note:  # unreadable (its lock file is not open to this user)
        return "held by another gputui run"
    if note.get("user"):
        task = f", task {note['task']}" if note.get("task") else ""
        return f"held by {note['user']} (run {note.get('job', '?')}{task})"
    return f"held by run {note.get('job', '?')} ({note.get('run_dir', '?')})"


def _gpu_list(indices: Sequence[int]) -> str:
    return f"GPU {indices[0]}" if len(indices) == 1 else f"GPUs {','.join(map(str, indices))}"


def parallel_reason(max_parallel: int, set_by_job: bool) -> str:
    """Why tasks wait while as many run as may: the job's max_parallel, or the slots gputui worked out (the
    cores for CPU tasks, a cluster's slots, a run mode's workers)."""
    return f"max_parallel ({max_parallel}) reached" if set_by_job else f"all {max_parallel} slots busy"


def after_reason(steps: Sequence[str]) -> str:
    """A task waiting for others (a pipeline step's `after`): as the plan view says it."""
    return f"waits for {', '.join(steps)}"


def backoff_reason(next_try_at: float, failure: str) -> str:
    """A retrying task's reason: when its next try is due (local wall time), then why its last one failed."""
    return f"retry at {time.strftime('%H:%M:%S', time.localtime(next_try_at))} (backoff): {failure}"
