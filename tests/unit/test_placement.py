from __future__ import annotations

from gputui.engine.rules.placement import Policy, after_reason, parallel_reason, place, usable_gpus, why_waiting
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
    assert why_waiting(g, set(), policy) == "needs 2 GPUs, 1 free: GPUs 1,2 below 10 GB free"


# -- why a task waits: the words of its reason, from the placement's facts ---------------------------------------
def test_a_gpu_held_by_another_gputui_run_names_that_run():
    note = {"job": "holder", "run_dir": "/x/c1/runs/holder", "task": "shard-0"}
    assert why_waiting(gpus(24), set(), Policy(1, 4), 1, {0: note}) == (
        "needs 1 GPU, 0 free: GPU 0 held by run holder (/x/c1/runs/holder)"
    )


def test_a_gpu_short_of_memory_says_the_bar_and_who_uses_it_never_the_free_memory_that_moves():
    policy = Policy(1, 4, min_free_memory_gb=20)
    said = why_waiting(gpus(3.2, 5.1), set(), policy, 1, {}, {0: "user bob", 1: "a process outside gputui"})
    assert said == (
        "needs 1 GPU, 0 free: GPU 0 below 20 GB free (used by user bob); "
        "GPU 1 below 20 GB free (used by a process outside gputui)"
    )
    assert (
        why_waiting(gpus(3.3, 5.0), set(), policy, 1, {}, {0: "user bob", 1: "a process outside gputui"}) == said
    )
    assert why_waiting(gpus(3, 3), set(), policy) == "needs 1 GPU, 0 free: GPUs 0,1 below 20 GB free"


def test_gpus_held_by_this_runs_tasks_and_a_task_that_needs_more_than_one():
    assert (
        why_waiting(gpus(24, 24, 24), {0, 2}, Policy(2, 4), 2)
        == "needs 2 GPUs, 1 free: GPUs 0,2 in use by this run"
    )
    note = {"job": "b", "run_dir": "/r/b"}
    assert why_waiting(gpus(24, 24), {0}, Policy(1, 4), 1, {1: note}) == (
        "needs 1 GPU, 0 free: GPU 1 held by run b (/r/b); GPU 0 in use by this run"
    )


def test_max_parallel_and_steps_waited_for():
    assert parallel_reason(4, set_by_job=True) == "max_parallel (4) reached"
    assert parallel_reason(2, set_by_job=False) == "all 2 slots busy"
    assert after_reason(["train", "eval"]) == "waits for train, eval"


def mig_machine() -> list[GpuSnapshot]:
    """GPU 0 in MIG mode as two instances (units 0, 1), then two whole GPUs (units 2, 3: NVML's 1 and 2)."""
    mig = [GpuSnapshot(i, "slice", f"MIG-{i}", 10 * GIB, 0, parent=0, device=f"MIG-{i}") for i in (0, 1)]
    whole = [GpuSnapshot(i, "g", f"u{i}", 24 * GIB, 0, device=str(i - 1)) for i in (2, 3)]
    return mig + whole


def test_a_task_needing_one_gpu_may_have_a_mig_instance_one_needing_two_only_whole_gpus():
    assert place(["a", "b"], mig_machine(), set(), 0, Policy(1, 8)) == [("a", (0,)), ("b", (1,))]
    assert place(["a", "b"], mig_machine(), set(), 0, Policy(2, 8)) == [("a", (2, 3))]
    needs = {"big": 2, "small": 1}
    assert place(["big", "small"], mig_machine(), set(), 0, Policy(1, 8), needs) == [
        ("big", (2, 3)),
        ("small", (0,)),
    ]


def test_why_a_task_needing_two_gpus_waits_names_the_mig_instances_it_cannot_have():
    said = why_waiting(mig_machine(), {2}, Policy(2, 8))
    assert said == "needs 2 GPUs, 1 free: GPUs 0,1 MIG instances (one per task); GPU 2 in use by this run"


def test_cuda_visible_devices_names_a_mig_instance_by_its_uuid_and_a_whole_gpu_by_its_nvml_index():
    from gputui.gpus.probe import cuda_visible_devices

    assert cuda_visible_devices((1,), mig_machine()) == "MIG-1"
    assert cuda_visible_devices((2, 3), mig_machine()) == "1,2"
    assert cuda_visible_devices((0, 1), gpus(24, 24)) == "0,1"  # no MIG: the indices, as always


def test_a_run_of_tasks_needing_two_gpus_claims_no_mig_instance():
    assert usable_gpus(mig_machine(), set(), Policy(2, 8)) == [2, 3]
    assert usable_gpus(mig_machine(), set(), Policy(1, 8)) == [0, 1, 2, 3]
