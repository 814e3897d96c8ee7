"""What a retry after CUDA out of memory changes ([retry].on_oom): twice the GPUs per worker, or half the
batch. Pure: the task's count of such retries lives in its info, so a resumed run keeps the change."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

ON_OOM = ("more_gpus", "smaller_batch")
KEY = "oom_retries"  # in a task's info: how many times out of memory changed it


@dataclass(frozen=True)
class OomPolicy:
    policy: str  # more_gpus | smaller_batch
    gpus: int  # the task's GPUs per worker before any change
    batch: int | None  # [params].batch_size, for smaller_batch
    gpus_here: int  # GPUs on this machine: more than that cannot be asked for


def changes(info: Mapping) -> int:
    return int(info.get(KEY) or 0)


def gpus_for(policy: str | None, gpus: int, info: Mapping) -> int:
    return gpus * 2 ** changes(info) if policy == "more_gpus" else gpus


def batch_for(policy: str | None, batch: int, info: Mapping) -> int:
    return max(1, batch >> changes(info)) if policy == "smaller_batch" else batch


def after_oom(p: OomPolicy, info: Mapping) -> tuple[dict | None, str]:
    """The task's next info and what its retry changes ('with batch size 8'), or None and why no change
    can help ('out of memory at batch size 1')."""
    n = changes(info)
    if p.policy == "more_gpus":
        now = gpus_for(p.policy, p.gpus, info)
        if now * 2 > p.gpus_here:
            return None, f"out of memory with {now} GPU(s) per worker, and this machine has {p.gpus_here}"
        return {**info, KEY: n + 1}, f"with {now * 2} GPUs per worker"
    now = batch_for(p.policy, p.batch or 1, info)
    if now <= 1:
        return None, "out of memory at batch size 1"
    return {**info, KEY: n + 1}, f"with batch size {now // 2}"
