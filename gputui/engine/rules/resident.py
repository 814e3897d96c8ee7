"""Pure: which waiting tasks go to resident workers between tasks, and which of those workers are let go."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence


def pair(ready: Sequence[tuple[str, int]], idle: Sequence[int]) -> tuple[list[tuple[str, int]], list[str]]:
    """Ready tasks (id, GPUs it needs), in order, each to the first idle resident worker holding as many GPUs
    (`idle`: each one's GPU count, by position): ([(task id, worker position)], ids of the tasks left)."""
    free = list(range(len(idle)))
    pairs, left = [], []
    for task_id, need in ready:
        fit = next((i for i in free if idle[i] == need), None)
        if fit is None:
            left.append(task_id)
        else:
            free.remove(fit)
            pairs.append((task_id, fit))
    return pairs, left


def surplus(idle: Sequence[int], waiting: Counter[int]) -> list[int]:
    """Idle resident workers no waiting task will take (positions in `idle`, each one's GPU count): of each
    size, those beyond as many as there are tasks waiting (due or not) that need that many GPUs. They are let
    go, so the GPUs they hold are free for a task that needs another number of them, or for another run."""
    keep = Counter(waiting)
    extra = []
    for i, size in enumerate(idle):
        if keep[size] > 0:
            keep[size] -= 1
        else:
            extra.append(i)
    return extra
