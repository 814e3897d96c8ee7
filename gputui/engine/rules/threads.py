"""Pure: the thread count a local CPU-bound worker is given, so parallel workers share the cores instead of
each starting one thread per core (four torch workers at its default ran about twice as slow)."""

from __future__ import annotations

from collections.abc import Collection

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def thread_env(already_set: Collection[str], cpus: int, workers: int | None) -> dict[str, str]:
    """OMP_NUM_THREADS and MKL_NUM_THREADS as the cores per running task (`cpus` // `workers`, at least 1),
    each only where neither the job's env nor the environment gputui runs in (`already_set`) names it.
    `workers` None (GPU tasks bounded only by the GPUs): nothing is set."""
    if workers is None:
        return {}
    each = str(max(1, cpus // max(1, workers)))
    return {name: each for name in THREAD_VARS if name not in already_set}
