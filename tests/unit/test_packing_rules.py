"""Measured memory and packing, the pure rules (gputui/engine/rules/packing.py), the shared claim they rely on
(gputui/gpus/reservations.py) and the job file keys that ask for them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gputui.engine.rules.packing import (
    MARGIN_BYTES,
    GpuShare,
    Measured,
    free_need,
    measured,
    pack,
    per_gpu,
    placing_line,
    share_words,
    to_come,
    unpack_line,
    unpacks,
    with_margin,
)
from gputui.engine.rules.placement import Policy, why_waiting
from gputui.gpus.probe import GIB, GpuSnapshot
from gputui.gpus.reservations import Reservations
from gputui.jobs.loader import load_jobspec
from gputui.jobs.spec import JobSpecError
from gputui.rundir.meta import JobFacts, RunMeta, read_meta, write_meta
from gputui.rundir.store import Store


def gpus(*free_gb: float, total_gb: float = 24) -> list[GpuSnapshot]:
    return [
        GpuSnapshot(i, "g", f"u{i}", int(total_gb * GIB), int((total_gb - f) * GIB)) for i, f in enumerate(free_gb)
    ]


# -- measured peaks -> the memory to plan for ---------------------------------------------------------------------
def test_nothing_is_measured_until_an_attempt_ended_done_with_its_peak():
    assert measured(None, 0) is None
    assert measured(None, 0, [3 * GIB]) is None  # a running task's peak may still grow: not enough alone
    m = measured(4 * GIB, 1)
    assert m == Measured(4 * GIB, 1)


def test_the_plan_is_the_largest_peak_plus_ten_percent_and_half_a_gib():
    m = measured(4 * GIB, 3)
    assert m.planned == with_margin(4 * GIB) == int(4.4 * GIB) + MARGIN_BYTES
    assert abs(m.planned / GIB - 4.9) < 1e-6


def test_a_running_task_that_went_higher_raises_the_plan_one_lower_does_not():
    assert measured(4 * GIB, 2, [6 * GIB, None]).peak == 6 * GIB
    assert measured(4 * GIB, 2, [1 * GIB]).peak == 4 * GIB


def test_an_attempts_peak_is_summed_over_its_gpus_so_it_is_planned_per_gpu():
    assert per_gpu(12 * GIB, 2) == 6 * GIB
    assert per_gpu(None, 2) is None and per_gpu(5, 0) is None


def test_the_measured_memory_replaces_the_declared_one_in_the_free_memory_check():
    declared = Policy(1, 8, memory_per_worker_gb=12)
    m = measured(6 * GIB, 1)
    from dataclasses import replace

    placing = replace(declared, memory_per_worker_gb=m.planned / GIB)
    assert placing.min_free_bytes == pytest.approx(m.planned, abs=1)
    # the user's own floor still holds where larger
    assert replace(Policy(1, 8, min_free_memory_gb=10), memory_per_worker_gb=m.planned / GIB).min_free_bytes == (
        10 * GIB
    )


def test_the_margin_never_asks_more_than_a_gpu_a_task_ran_on_can_give():
    assert free_need(Measured(4 * GIB, 1), 24 * GIB) == with_margin(4 * GIB)
    assert free_need(Measured(22 * GIB, 1), 24 * GIB) == int(0.95 * 24 * GIB)  # not 24.7 GiB: never placed again
    assert free_need(Measured(int(23.5 * GIB), 1), 24 * GIB) == int(23.5 * GIB)  # its own peak, at least


def test_the_line_says_what_it_places_by_instead_of_what():
    line = placing_line(Measured(int(6.2 * GIB), 1), 12)
    assert line.startswith("placing by measured peak 6.2 GiB (+ margin: 7.3 GiB a task, from 1 done attempt)")
    assert line.endswith("instead of memory_per_worker_gb 12")
    assert placing_line(Measured(2 * GIB, 3), None).endswith("from 3 done attempts) (no memory_per_worker_gb)")


# -- which tasks fit on which GPU together --------------------------------------------------------------------
PLANNED = with_margin(4 * GIB)  # 4.9 GiB


def test_empty_gpus_first_then_beside_ours_where_memory_leaves_room():
    # One 24 GB GPU, none of ours on it: four tasks of 4.9 GiB planned fit (the cap), counted as they go on.
    assert pack(list("abcde"), gpus(24), {0}, {}, PLANNED, PLANNED, 4) == [("a", 0), ("b", 0), ("c", 0), ("d", 0)]
    # Spread before packing: a task per empty GPU first.
    assert pack(list("abc"), gpus(24, 24), {0, 1}, {}, PLANNED, PLANNED, 4) == [("a", 0), ("b", 1), ("c", 0)]


def test_a_task_joins_the_shared_gpu_with_the_fewest_of_ours():
    shares = {0: GpuShare(0, 2, 0), 1: GpuShare(1, 1, 0)}
    assert pack(["a", "b"], gpus(14, 19), set(), shares, PLANNED, PLANNED, 4) == [("a", 1), ("b", 0)]


def test_what_ours_may_still_take_counts_against_the_free_memory():
    # 8 GB free, but a task of ours on it has only reached 1 of its 4.9 GiB: 4.1 GiB more may come.
    share = GpuShare(0, 1, to_come(PLANNED, [1 * GIB]))
    assert pack(["a"], gpus(8), set(), {0: share}, PLANNED, PLANNED, 4) == []
    grown = GpuShare(0, 1, to_come(PLANNED, [int(4.8 * GIB)]))
    assert pack(["a"], gpus(8), set(), {0: grown}, PLANNED, PLANNED, 4) == [("a", 0)]


def test_to_come_is_each_ones_plan_less_its_peak_so_far():
    assert to_come(5 * GIB, [None, 2 * GIB, 6 * GIB]) == 5 * GIB + 3 * GIB + 0


def test_no_more_than_max_tasks_per_gpu_whatever_the_memory():
    assert pack(["a"], gpus(24), set(), {0: GpuShare(0, 2, 0)}, GIB, GIB, 2) == []
    assert pack(list("abc"), gpus(80, total_gb=80), {0}, {}, GIB, GIB, 2) == [("a", 0), ("b", 0)]


def test_the_first_task_that_fits_nowhere_stops_the_round():
    assert pack(list("ab"), gpus(3), set(), {0: GpuShare(0, 1, 0)}, PLANNED, PLANNED, 4) == []


def test_the_free_memory_asked_may_exceed_the_planned_one():
    # min_free_memory_gb 10 asks 10 GB free for any task, beside ours too
    assert pack(["a"], gpus(9), set(), {0: GpuShare(0, 1, 0)}, 10 * GIB, PLANNED, 4) == []


def test_a_waiting_reason_says_why_a_shared_gpu_takes_no_more():
    m = Measured(4 * GIB, 1)
    full = share_words(GpuShare(0, 4, 0), 4, m)
    assert full == "in use by this run (4 tasks, max_tasks_per_gpu 4)"
    low = share_words(GpuShare(0, 2, 0), 4, m)
    assert low == (
        "in use by this run (2 tasks; too little memory left for another: planned 4.9 GiB a task: measured peak "
        "4.0 GiB + margin)"
    )
    policy = Policy(1, 8, memory_per_worker_gb=PLANNED / GIB)
    line = why_waiting(gpus(5, 2), {0}, policy, ours={0: low}, memory="planned 4.9 GiB a task: measured")
    assert line == (
        f"needs 1 GPU, 0 free: GPU 0 {low}; GPU 1 below 4.9 GB free (planned 4.9 GiB a task: measured)"
    )


def test_without_sharing_the_reasons_read_as_before():
    assert why_waiting(gpus(24, 2), {0}, Policy(1, 8, memory_per_worker_gb=12)) == (
        "needs 1 GPU, 0 free: GPU 1 below 12 GB free; GPU 0 in use by this run"
    )


# -- the OOM switch -------------------------------------------------------------------------------------------
def test_an_out_of_memory_failure_of_a_task_sharing_its_gpu_turns_sharing_off():
    assert unpacks("cuda_oom", True, True)
    assert unpacks("health_cuda_oom", True, True)  # stopped at the line by [health] cuda_errors
    assert not unpacks("cuda_oom", True, False)  # alone on its GPU: it would have run out all the same
    assert not unpacks("exit_code", True, True)
    assert not unpacks("cuda_oom", False, True)  # the job never shared


def test_the_line_says_who_ran_out_sharing_which_gpu_with_how_many():
    assert unpack_line("shard-7", (0,), 2) == (
        "shard-7 ran out of GPU memory sharing GPU 0 with 2 others: one task per GPU from now on"
    )
    assert unpack_line("shard-1", (3,), 1).startswith("shard-1 ran out of GPU memory sharing GPU 3 with 1 other:")
    assert unpack_line("shard-1", (3,), 0).startswith("shard-1 ran out of GPU memory on GPU 3:")


# -- the shared claim -----------------------------------------------------------------------------------------
def test_a_claim_shared_by_dup_holds_until_its_last_copy_and_never_lets_another_in(tmp_path):
    r = Reservations(tmp_path / "locks")
    kept = r.claim("GPU-0")
    copies = [Reservations.share(kept) for _ in range(2)]  # two tasks beside the run's own
    assert r.claim("GPU-0") is None  # another run: refused
    os.close(kept)  # the scheduler dies
    assert r.claim("GPU-0") is None and r.holders(["GPU-0"]) == {"GPU-0": {}}
    os.close(copies[0])
    assert r.claim("GPU-0") is None
    os.close(copies[1])  # the last task on it ends
    again = r.claim("GPU-0")
    assert again is not None
    os.close(again)


# -- the job file ---------------------------------------------------------------------------------------------
JOB = """\
[job]
name = "demo"
command = "python worker.py --low {low} --high {high}"

[shards]
input = "data.csv"
num_workers = 2

[resources]
"""


def load(tmp_path: Path, resources: str, extra: str = ""):
    (tmp_path / "data.csv").write_text("data_id\n1\n")
    path = tmp_path / "job.toml"
    path.write_text(JOB + resources + "\n" + extra)
    return load_jobspec(path)


def test_share_gpu_and_its_cap_are_read(tmp_path):
    res = load(tmp_path, "gpus_per_worker = 1\nshare_gpu = true\nmax_tasks_per_gpu = 3").resources
    assert (res.share_gpu, res.max_tasks_per_gpu) == (True, 3)
    res = load(tmp_path, "gpus_per_worker = 1").resources
    assert (res.share_gpu, res.max_tasks_per_gpu) == (False, 4)


@pytest.mark.parametrize(
    ("resources", "extra", "says"),
    [
        ("gpus_per_worker = 2\nshare_gpu = true", "", "but gpus_per_worker = 2; set gpus_per_worker = 1"),
        (
            "gpus_per_worker = 1\nmax_tasks_per_gpu = 2",
            "",
            "max_tasks_per_gpu: caps tasks sharing a GPU; set share_gpu",
        ),
        ("gpus_per_worker = 1\nshare_gpu = true\nmax_tasks_per_gpu = 0", "", "max_tasks_per_gpu: expected"),
        ("gpus_per_worker = 1\nshare_gpu = true", '[executor]\nkind = "slurm"', "'slurm' places them itself"),
        ("gpus_per_worker = 1\nshare_gpu = 1", "", "share_gpu: expected true or false"),
    ],
)
def test_share_gpu_is_refused_where_it_cannot_be_kept(tmp_path, resources, extra, says):
    with pytest.raises(JobSpecError) as e:
        load(tmp_path, resources, extra)
    assert says in str(e.value)


def test_sharing_turned_off_is_kept_in_the_run_state_across_starts(tmp_path):
    store = Store.open(tmp_path / "state.db", create=True)
    try:
        write_meta(store, RunMeta(job=JobFacts(name="j")).unpacked("shard-7 ran out of GPU memory ..."))
        meta = read_meta(store)
        write_meta(store, meta.opened(meta.identity, JobFacts(name="j"), None))  # a start records the job again
        assert read_meta(store).packing_off == "shard-7 ran out of GPU memory ..."
    finally:
        store.close()
