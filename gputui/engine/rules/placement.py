"""Pure placement: which pending tasks start now, on which GPUs. No I/O, tested directly."""

from __future__ import annotations

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
    """GPUs free for a new task: not held by one of our tasks and with enough free memory.

    A GPU handed to a task stays reserved until that task ends, whatever its memory reads, so a
    worker still loading its model is never double-booked.
    """
    return [g.index for g in gpus if g.index not in reserved and g.memory_free >= policy.min_free_bytes]


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
    placed = []
    for task_id in pending[:slots]:
        need = policy.gpus_per_worker if needs is None else needs.get(task_id, policy.gpus_per_worker)
        if len(free) < need:
            break
        take, free = free[:need], free[need:]
        placed.append((task_id, tuple(take)))
    return placed


def why_waiting(gpus: Sequence[GpuSnapshot], reserved: Collection[int], policy: Policy) -> str:
    """One line on why nothing can start, for the progress output."""
    free = usable_gpus(gpus, reserved, policy)
    others = [g for g in gpus if g.index not in reserved and g.memory_free < policy.min_free_bytes]
    parts = [f"{len(free)} usable GPU(s), {policy.gpus_per_worker} needed per worker"]
    if others:
        need = policy.min_free_bytes / GIB
        parts.append(f"{len(others)} GPU(s) below {need:g} GB free")
    if reserved:
        parts.append(f"{len(set(reserved))} held by our tasks")
    return "; ".join(parts)
