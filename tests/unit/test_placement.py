from __future__ import annotations

from gputui.engine.rules.placement import Policy, place, why_waiting
from gputui.gpus.probe import GIB, GpuSnapshot


def gpus(*free_gb: float, total_gb: float = 24) -> list[GpuSnapshot]:
    return [
        GpuSnapshot(i, "g", f"u{i}", int(total_gb * GIB), int((total_gb - f) * GIB)) for i, f in enumerate(free_gb)
    ]


def test_pairs_of_free_gpus_in_index_order():
    placed = place(["a", "b", "c"], gpus(24, 24, 24, 24), set(), 0, Policy(2, 8))
    assert placed == [("a", (0, 1)), ("b", (2, 3))]


def test_gpu_below_min_free_memory_is_skipped():
    placed = place(["a", "b"], gpus(24, 5, 24, 24), set(), 0, Policy(1, 8, min_free_memory_gb=10))
    assert placed == [("a", (0,)), ("b", (2,))]


def test_memory_per_worker_raises_the_bar():
    placed = place(["a"], gpus(11, 13), set(), 0, Policy(1, 8, min_free_memory_gb=10, memory_per_worker_gb=12))
    assert placed == [("a", (1,))]


def test_reserved_gpu_is_not_double_booked_even_if_it_looks_free():
    # GPU 0 is held by a task still loading its model: its memory reads free, it is not.
    placed = place(["a", "b"], gpus(24, 24, 24), {0}, 1, Policy(1, 8))
    assert placed == [("a", (1,)), ("b", (2,))]


def test_max_parallel_counts_running_tasks():
    assert place(["a", "b", "c"], gpus(24, 24, 24, 24), {0}, 3, Policy(1, 4)) == [("a", (1,))]
    assert place(["a"], gpus(24, 24), set(), 4, Policy(1, 4)) == []


def test_cpu_tasks_need_no_gpu():
    assert place(["a", "b", "c"], [], set(), 1, Policy(0, 3)) == [("a", ()), ("b", ())]


def test_not_enough_gpus_for_a_worker_places_nothing_and_says_why():
    policy = Policy(2, 8, min_free_memory_gb=10)
    g = gpus(24, 3, 3)
    assert place(["a"], g, set(), 0, policy) == []
    assert why_waiting(g, set(), policy) == "1 usable GPU(s), 2 needed per worker; 2 GPU(s) below 10 GB free"
