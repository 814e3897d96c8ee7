"""The run's one GPU policy (rules/placement.gpu_policy), decided from plain values: the job's [resources],
a cluster's slots, a run mode's sizing."""

from __future__ import annotations

from gputui.engine.rules.placement import Policy, gpu_policy
from gputui.jobs.gpu_plan import Decision
from gputui.jobs.spec import ResourceSpec


def sized(gpus_per_worker: int, workers: int) -> Decision:
    return Decision(gpus_per_worker, workers, gpu_memory_utilization=0.9, per_gpu_need_gb=20.0)


def test_the_jobs_own_numbers_here():
    res = ResourceSpec(gpus_per_worker=2, min_free_memory_gb=4, max_parallel=3, memory_per_worker_gb=30)
    assert gpu_policy(res, cpus=16) == Policy(2, 3, 4, 30)


def test_gpu_tasks_are_bounded_by_the_gpus_cpu_tasks_by_the_cpus():
    assert gpu_policy(ResourceSpec(gpus_per_worker=1), cpus=16) == Policy(1, None)
    assert gpu_policy(ResourceSpec(gpus_per_worker=0), cpus=16) == Policy(0, 16)
    assert gpu_policy(ResourceSpec(gpus_per_worker=0, max_parallel=2), cpus=16) == Policy(0, 2)


def test_a_clusters_slots_bound_the_workers_unless_max_parallel_is_set():
    res = ResourceSpec(gpus_per_worker=2, min_free_memory_gb=4, memory_per_worker_gb=30)
    assert gpu_policy(res, cpus=16, slots=12) == Policy(2, 12, 4)  # the cluster weighs the memory, not we
    limited = ResourceSpec(gpus_per_worker=2, max_parallel=5, memory_per_worker_gb=30)
    assert gpu_policy(limited, cpus=16, slots=12) == Policy(2, 5, 0.0, 30)


def test_a_run_mode_sizes_gpus_per_worker_and_workers():
    res = ResourceSpec(gpus_per_worker=1, min_free_memory_gb=4, memory_per_worker_gb=30, mode="auto")
    assert gpu_policy(res, cpus=16, sizing=sized(4, 2)) == Policy(4, 2, 4)
    limited = ResourceSpec(gpus_per_worker=1, max_parallel=1, mode="data_parallel")
    assert gpu_policy(limited, cpus=16, sizing=sized(1, 8)) == Policy(1, 1)
