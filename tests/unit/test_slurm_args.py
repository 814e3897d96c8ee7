"""What gputui hands sbatch, and how it reads sinfo's GRES: pure, tested directly."""

from __future__ import annotations

import pytest

from gputui.executors import slurm


@pytest.mark.parametrize(
    ("gres", "gpus"),
    [
        ("gpu:4", 4),
        ("gpu:a100:2(S:0-1)", 2),
        ("gpu:a100:2(S:0),gpu:v100:1(S:1)", 3),
        ("gpu:8,shard:16", 8),
        ("(null)", 0),
        ("mps:100", 0),
    ],
)
def test_gpu_count_reads_every_gres_form_sinfo_prints(gres: str, gpus: int) -> None:
    assert slurm.gpu_count(gres) == gpus


def args(**kw) -> list[str]:
    base = dict(name="shards", scheduler_id="uuid-1", run_dir="/runs/x", gpus=2, partition="gpu", extra=(),
                elements=8, array=True, throttle=3)  # fmt: skip
    return slurm.sbatch_args(**(base | kw))


def test_shards_are_one_throttled_array_carrying_the_scheduler_uuid() -> None:
    a = args()
    assert "--array=0-7%3" in a and "--gres=gpu:2" in a and "--partition=gpu" in a
    assert "--comment=gputui:uuid-1" in a and "--job-name=gputui-shards" in a
    assert "--output=/runs/x/slurm/job-%A_%a.out" in a and "--chdir=/runs/x" in a


def test_a_single_job_has_no_array_and_a_step_waits_with_afterok() -> None:
    a = args(array=False, elements=1, throttle=None, gpus=0, partition=None, after=("12", "13_4"))
    assert not [x for x in a if x.startswith(("--array", "--gres", "--partition"))]
    assert "--dependency=afterok:12:13_4" in a and "--kill-on-invalid-dep=yes" in a
    assert "--output=/runs/x/slurm/job-%j.out" in a


def test_the_users_sbatch_options_come_last_as_given() -> None:
    assert args(extra=("--time=02:00:00", "--account=lab"))[-2:] == ["--time=02:00:00", "--account=lab"]
