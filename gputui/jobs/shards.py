"""Pure planning: split sorted unique ids into contiguous, non-overlapping shards covering them all."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Shard:
    index: int
    low: int  # inclusive
    high: int  # exclusive
    count: int  # unique ids inside

    @property
    def task_id(self) -> str:
        return f"shard-{self.index}"


def plan_shards(
    ids: Sequence, *, integer_ids: bool, num_workers: int | None = None, shard_size: int | None = None
) -> list[Shard]:
    """Shards over `ids` (sorted, unique).

    Integer ids give value ranges (a worker keeps rows with low <= id < high, as the seed's
    workers do); other ids give positional ranges over the sorted list. Sizes differ by at most
    one; never more shards than ids, and no empty shard.
    """
    if (num_workers is None) == (shard_size is None):
        raise ValueError("set exactly one of num_workers or shard_size")
    n = len(ids)
    if n == 0:
        return []
    if num_workers is not None:
        if num_workers < 1:
            raise ValueError("num_workers must be >= 1")
        k = min(num_workers, n)
        base, extra = divmod(n, k)
        sizes = [base + (1 if i < extra else 0) for i in range(k)]
    else:
        if shard_size < 1:
            raise ValueError("shard_size must be >= 1")
        sizes = [min(shard_size, n - start) for start in range(0, n, shard_size)]
    shards, start = [], 0
    for i, size in enumerate(sizes):
        end = start + size
        if integer_ids:
            low = ids[start]
            high = ids[end] if end < n else ids[-1] + 1
        else:
            low, high = start, end
        shards.append(Shard(i, int(low), int(high), size))
        start = end
    return shards


def plan_fingerprint(shards: Sequence[Shard], *, integer_ids: bool) -> str:
    """Identifies a plan, so a run directory is never driven by a different one."""
    body = json.dumps([integer_ids, [(s.low, s.high) for s in shards]])
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def describe_plan(shards: Sequence[Shard]) -> str:
    if not shards:
        return "no shards"
    head = ", ".join(f"[{s.low}, {s.high})" for s in shards[:4])
    more = f", ... ({len(shards)} in all)" if len(shards) > 4 else ""
    return f"{len(shards)} shard{'s' if len(shards) != 1 else ''}: {head}{more}"
