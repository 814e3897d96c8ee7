"""The settle decision, with plain values: what an ended attempt does to its task."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from gputui.engine.rules.settle import Ended, decide
from gputui.jobs.oom import OomPolicy, batch_for, gpus_for
from gputui.jobs.tasks import Status, TaskRecord

TASK = TaskRecord(
    id="shard-1", index=1, low=10, high=20, count=10, status=Status.RUNNING, attempts=1, budget=3, gpus=(0,),
    reason=None, exit_code=None, started_at=100.0, ended_at=None, next_try_at=None,
)  # fmt: skip
ENDED = Ended(
    number=1, exit_code=0, ended_at=110.0, output="/out/a.csv", output_exists=True, manifest_error=None,
    log_tail="", interrupted=False,
)  # fmt: skip


@pytest.fixture
def utc(monkeypatch):
    """Local time is UTC, for the wall-clock times reasons name."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def settle(task=TASK, **facts):
    return decide(task, replace(ENDED, **facts), backoff_s=2.0, backoff_max_s=5.0, now=1000.0)


def test_exit_zero_with_its_output_is_done():
    d = settle()
    assert d.outcome == "done" and d.task["status"] == Status.DONE and d.attempt["status"] == Status.DONE


def test_exit_zero_without_its_output_is_a_failure_that_is_retried():
    d = settle(output_exists=False)
    assert d.outcome == "retrying" and "output /out/a.csv is missing" in d.task["reason"]
    d = settle(manifest_error="cannot record its output: bad csv")
    assert d.outcome == "retrying" and d.attempt["reason"] == "cannot record its output: bad csv"
    assert d.task["reason"].endswith("(backoff): cannot record its output: bad csv")  # and when it is tried again


def test_a_retrying_task_says_when_its_next_try_is_due_and_why_the_last_failed(utc):
    d = decide(TASK, replace(ENDED, exit_code=3), backoff_s=2.0, backoff_max_s=5.0, now=17 * 3600 + 31 * 60 + 3)
    assert d.task["reason"] == "retry at 17:31:05 (backoff): exit code 3"


def test_backoff_doubles_up_to_its_cap_and_the_budget_ends_in_failure():
    assert settle(exit_code=3).task["next_try_at"] == 1002.0
    second = replace(TASK, attempts=2)
    assert settle(second, number=2, exit_code=3).task["next_try_at"] == 1004.0
    third = replace(TASK, attempts=3)
    d = settle(third, number=3, exit_code=3)
    assert d.outcome == "failed" and d.task["status"] == Status.FAILED and "no attempts left (3/3)" in d.say


def test_the_log_names_the_failure():
    d = settle(exit_code=1, log_tail="torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB")
    assert "CUDA out of memory" in d.task["reason"]


def test_unknown_exit_status_is_lost_not_a_wrong_reason():
    d = settle(exit_code=None)
    assert d.attempt["status"] == Status.LOST and "exit status unknown" in d.attempt["reason"]


def test_a_killed_task_stays_killed_whatever_its_worker_returned():
    killed = replace(TASK, status=Status.KILLED, reason="killed by user")
    d = settle(killed, exit_code=0)
    assert d.outcome == "killed" and "status" not in d.task and d.attempt["status"] == Status.KILLED


def test_interrupted_by_our_own_shutdown_is_requeued_without_spending_an_attempt():
    d = settle(exit_code=-15, interrupted=True)
    assert d.outcome == "requeued" and d.task["status"] == Status.PENDING and d.task["budget"] == 4


def test_an_old_attempt_ending_late_only_closes_itself():
    retried = replace(TASK, attempts=2, status=Status.PENDING)
    d = settle(retried, number=1, exit_code=0)
    assert d.outcome == "closed" and d.task == {} and d.attempt["status"] == Status.FAILED


# -- [retry].on_oom ----------------------------------------------------------------------------------

OOM = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"


def oom_settle(task, policy: OomPolicy):
    return decide(
        task,
        replace(ENDED, number=task.attempts, exit_code=1, log_tail=OOM),
        backoff_s=2.0,
        backoff_max_s=5.0,
        now=1000.0,
        on_oom=policy,
    )


def test_out_of_memory_halves_the_batch_on_each_retry_and_gives_up_at_one():
    policy = OomPolicy("smaller_batch", gpus=1, batch=4, gpus_here=8)
    d = oom_settle(TASK, policy)
    assert d.outcome == "retrying" and d.task["info"] == {"oom_retries": 1}
    assert "retrying in 2s with batch size 2 (attempt 2/3)" in d.say
    assert batch_for("smaller_batch", 4, d.task["info"]) == 2
    second = replace(TASK, attempts=2, info={"oom_retries": 2})  # already at 4 >> 2 = 1
    d = oom_settle(second, policy)
    assert d.outcome == "failed" and "not retried: out of memory at batch size 1 ([retry].on_oom)" in d.say
    assert d.task["reason"].endswith("(out of memory at batch size 1)") and "info" not in d.task


def test_out_of_memory_doubles_the_gpus_up_to_the_machines():
    policy = OomPolicy("more_gpus", gpus=2, batch=None, gpus_here=4)
    d = oom_settle(TASK, policy)
    assert "with 4 GPUs per worker" in d.say and gpus_for("more_gpus", 2, d.task["info"]) == 4
    d = oom_settle(replace(TASK, attempts=2, info={"oom_retries": 1, "stage": "a"}), policy)
    assert d.outcome == "failed" and "out of memory with 4 GPU(s) per worker, and this machine has 4" in d.say


def test_without_a_policy_or_for_other_failures_nothing_changes():
    assert "info" not in settle(exit_code=1, log_tail=OOM).task
    policy = OomPolicy("smaller_batch", gpus=1, batch=4, gpus_here=8)
    d = decide(TASK, replace(ENDED, exit_code=3), backoff_s=2.0, backoff_max_s=5.0, now=1000.0, on_oom=policy)
    assert d.outcome == "retrying" and "info" not in d.task and "batch size" not in d.say
    last = replace(TASK, attempts=3)
    d = oom_settle(last, policy)
    assert d.outcome == "failed" and "no attempts left (3/3); a retry (r) runs with batch size 2" in d.say
    assert d.task["info"] == {"oom_retries": 1}, "a retry asked for later runs with the smaller batch"


def test_an_attempt_stopped_at_its_time_limit_fails_and_is_not_retried():
    """As Slurm's TIMEOUT: not requeued by default (the same work would run as long again)."""
    d = settle(exit_code=-15, time_limit="time limit (1h) reached after 1h0m")
    assert d.outcome == "failed" and d.failure == "time_limit"
    assert d.task["status"] == Status.FAILED and d.task["reason"] == "time limit (1h) reached after 1h0m"
    assert d.attempt["reason"] == "time limit (1h) reached after 1h0m"
    assert "not retried" in d.say and "time_limit_s" in d.say
    # Even when gputui stops meanwhile: the limit, not the shutdown, ended it.
    why = "time limit (1h) reached after 1h0m"
    assert settle(exit_code=-15, time_limit=why, interrupted=True).outcome == "failed"
