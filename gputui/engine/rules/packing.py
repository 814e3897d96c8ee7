"""Pure packing rules: the GPU memory to plan a task for once the job's own tasks were measured, which waiting
tasks go onto which GPU when several may share one (`[resources] share_gpu = true`), and the words for both. No
I/O, tested directly (tests/unit/test_packing_rules.py).

Measured memory. A job's tasks are alike (shards of one input, trials of one command), so once one attempt of
the run has ended done with its peak GPU memory measured (accounting.Meter: its own processes, from the GPU
samples), the next tasks are planned for the largest peak measured so far per GPU (the run's done attempts, and
its running ones where one already went higher), plus a margin (10 % and 0.5 GiB: a peak read between two
samples misses what came between them). That figure replaces the declared `memory_per_worker_gb` both in the
free-memory check and in the memory a task on a shared GPU is counted for while it ramps up. One done attempt is
enough: its peak is a full task's, where a running task's peak may still grow. The run's peaks, not a stage's:
a sweep's stages run one command (the one job-level figure is cheap and errs on the large side).

Sharing. Until the job is measured, one task per GPU, as without share_gpu. Then a waiting task goes to a GPU
none of ours holds first (spread before packing), else to the GPU of ours with the fewest of our tasks where
its free memory, less what ours on it may still grow (each one's planned memory less its peak so far), leaves
the planned memory; never more than `max_tasks_per_gpu` on one GPU. A CUDA out-of-memory failure of a task of
a sharing job turns sharing off for the rest of the run (`unpack_line` says so).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from gputui.gpus.probe import GIB, GpuSnapshot

MARGIN_RATIO = 0.10  # planned = peak * (1 + MARGIN_RATIO) + MARGIN_BYTES
MARGIN_BYTES = GIB // 2
FULL_GPU = 0.95  # the most of a GPU's memory the margin may ask free (free_need)
OOM_FAILURES = ("cuda_oom", "health_cuda_oom")  # failures.classify's kind; a [health] stop's (rules/health.py)
MEASURED_AFTER = 1  # done attempts with a measured peak before a job is placed by its measured memory


@dataclass(frozen=True)
class Measured:
    """What the run's own attempts used: the largest peak per GPU (bytes), how many done attempts were measured,
    and the memory a task is planned for (the peak plus the margin)."""

    peak: int
    attempts: int

    @property
    def planned(self) -> int:
        return with_margin(self.peak)


def with_margin(peak: int) -> int:
    """The memory to plan a task for whose measured peak is `peak` (bytes)."""
    return int(peak * (1 + MARGIN_RATIO)) + MARGIN_BYTES


def per_gpu(peak: int | None, gpus: int) -> int | None:
    """An attempt's peak (summed over its GPUs, as the Meter records it) per GPU."""
    return None if peak is None or gpus <= 0 else peak // gpus


def measured(peak: int | None, attempts: int, running: Sequence[int | None] = ()) -> Measured | None:
    """The run's measured memory from the largest per-GPU peak of its done attempts (`attempts` of them were
    measured), and of its running ones (counted only where higher: a running task may already use more than the
    done ones did); None until MEASURED_AFTER done attempts were measured."""
    if peak is None or attempts < MEASURED_AFTER:
        return None
    return Measured(max([peak, *(p for p in running if p is not None)]), attempts)


def free_need(m: Measured, largest: int) -> int:
    """The free memory a GPU needs for a task: its planned memory, but never so much that a task that ran on the
    largest GPU here (`largest`: its total memory) could not run on it again: at most 95 % of it, or the measured
    peak itself where larger (a task measured at 23 GB of 24 still goes on an idle 24 GB GPU)."""
    return min(m.planned, max(m.peak, int(largest * FULL_GPU)))


def gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def measured_words(m: Measured) -> str:
    """How the planned memory came about, for a waiting reason: "planned 4.9 GiB a task: measured peak 4.0 GiB +
    margin"."""
    return f"planned {gib(m.planned)} a task: measured peak {gib(m.peak)} + margin"


def placing_line(m: Measured, declared_gb: float | None) -> str:
    """What the run says (once) when it starts placing by measured memory."""
    instead = f"instead of memory_per_worker_gb {declared_gb:g}" if declared_gb else "(no memory_per_worker_gb)"
    done = f"{m.attempts} done attempt{'s' if m.attempts != 1 else ''}"
    return f"placing by measured peak {gib(m.peak)} (+ margin: {gib(m.planned)} a task, from {done}) {instead}"


@dataclass(frozen=True)
class GpuShare:
    """A GPU our tasks share: how many of ours are on it, and how much more memory they may still take (bytes)."""

    index: int
    tasks: int
    to_come: int


def to_come(planned: int, seen: Sequence[int | None]) -> int:
    """What our tasks on a GPU may still take beyond what it shows now: each one's planned memory less its peak so
    far (None: not seen on the GPU yet)."""
    return sum(max(0, planned - (s or 0)) for s in seen)


def fits(g: GpuSnapshot, share: GpuShare, need: int, cap: int) -> bool:
    """Whether one more task planned for `need` bytes may join our tasks on this GPU."""
    return share.tasks < cap and g.memory_free - share.to_come >= need


def pack(
    pending: Sequence[str],
    gpus: Sequence[GpuSnapshot],
    empty: Collection[int],
    shares: Mapping[int, GpuShare],
    need: int,
    planned: int,
    cap: int,
) -> list[tuple[str, int]]:
    """Pending tasks of one GPU each onto GPUs, in order: `empty` ones (usable and claimed, none of ours on them)
    first, lowest index first, then those our tasks share (`shares`: GPUs the run may add tasks to), the one with
    the fewest of ours first, where `fits`. A task counts `planned` bytes to come on its GPU; `need`: the free
    memory a task asks (the planned memory, or min_free_memory_gb where larger). The first task that fits nowhere
    stops the round."""
    by_index = {g.index: g for g in gpus}
    free = sorted(i for i in empty if i in by_index)
    on = {i: s for i, s in shares.items() if i in by_index}
    placed: list[tuple[str, int]] = []
    for task_id in pending:
        if free:
            index = free.pop(0)
            on[index] = GpuShare(index, 1, planned)
        else:
            room = [s for s in on.values() if fits(by_index[s.index], s, need, cap)]
            if not room:
                break
            s = min(room, key=lambda s: (s.tasks, s.index))
            index = s.index
            on[index] = GpuShare(index, s.tasks + 1, s.to_come + planned)
        placed.append((task_id, index))
    return placed


def share_words(share: GpuShare, cap: int, m: Measured | None) -> str:
    """Why a GPU our tasks share takes no more of them, in a waiting reason: "in use by this run (4 tasks,
    max_tasks_per_gpu 4)", "in use by this run (2 tasks; too little memory left for another: planned 4.9 GiB a
    task: measured peak 4.0 GiB + margin)"."""
    tasks = f"{share.tasks} task{'s' if share.tasks != 1 else ''}"
    if share.tasks >= cap:
        return f"in use by this run ({tasks}, max_tasks_per_gpu {cap})"
    if m is None:
        return "in use by this run"
    return f"in use by this run ({tasks}; too little memory left for another: {measured_words(m)})"


def unpacks(failure: str | None, share_gpu: bool, shared: bool) -> bool:
    """Whether an attempt's failure turns sharing off: CUDA out of memory (read from its log as it ended, or
    stopped at the line by [health] cuda_errors) of a task of a job that shares GPUs, where it shared its GPU
    (`shared`: another of ours was on it with it). One alone on its GPU would have run out of memory all the
    same: it leaves sharing on."""
    return share_gpu and shared and failure in OOM_FAILURES


def unpack_line(task_id: str, gpus: Sequence[int], others: int) -> str:
    """The one line said when an out-of-memory failure turns sharing off."""
    where = f"GPU {','.join(map(str, gpus))}" if gpus else "its GPU"
    with_whom = f"sharing {where} with {others} other{'s' if others != 1 else ''}" if others else f"on {where}"
    return f"{task_id} ran out of GPU memory {with_whom}: one task per GPU from now on"
