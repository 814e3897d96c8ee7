"""The settle decision: what an ended attempt means for its task. Pure: no I/O, tested directly.

The scheduler gathers the facts (exit status, whether the output exists, the log's tail) and applies
the decision in the transaction that records the attempt's end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gputui.engine.rules.failures import LOST_LOCALLY, Failure, classify
from gputui.engine.rules.placement import backoff_reason
from gputui.jobs.oom import OomPolicy, after_oom
from gputui.jobs.tasks import Status, TaskRecord


@dataclass(frozen=True)
class Ended:
    """The facts of one ended attempt."""

    number: int
    exit_code: int | None  # None: unknown (see `lost`)
    ended_at: float  # a clock.Stamp where known: the store records its CLOCK_BOOTTIME too
    output: str | None  # the task's output path, if it has one
    output_exists: bool
    manifest_error: str | None  # why its done-manifest could not be written
    log_tail: str
    interrupted: bool  # stopped by gputui's own shutdown: not the task's fault
    health: tuple[str, str, bool] | None = None  # stopped by a [health] rule: (rule, reason, may retry)
    time_limit: str | None = None  # stopped for running past [job].time_limit_s (the reason): never retried
    requeue: str | None = None  # it never ran, through no fault of its own (why): run it again, not counted
    lost: str = LOST_LOCALLY  # why its exit status would be unknown (who held the attempt, and ended first)


@dataclass(frozen=True)
class Decision:
    attempt: dict  # fields of the attempt's row
    task: dict = field(default_factory=dict)  # fields of the task's row (empty: leave the task alone)
    event: tuple[str, str] | None = None  # (kind, message) for the task's event log
    say: str | None = None  # one line for the user
    outcome: str = "closed"  # "done" | "killed" | "failed" | "retrying" | "requeued" | "closed"
    failure: str | None = None  # the failure's kind (failures.Failure.kind), when the attempt failed


def decide(
    task: TaskRecord,
    ended: Ended,
    *,
    backoff_s: float,
    backoff_max_s: float,
    now: float,
    on_oom: OomPolicy | None = None,
) -> Decision:
    """`on_oom`: what a retry after CUDA out of memory changes ([retry].on_oom); None: it is retried as it was."""
    code = ended.exit_code
    fields = {"exit_code": code, "ended_at": ended.ended_at}
    if ended.number != task.attempts:  # an old attempt (a retry was queued meanwhile): close it only
        return Decision({"status": Status.LOST if code is None else Status.FAILED} | fields)
    if task.status == Status.KILLED:
        return Decision(
            {"status": Status.KILLED, "reason": task.reason} | fields,
            {"exit_code": code, "ended_at": ended.ended_at},
            say=f"killed {task.id} {task.range_label} ({task.reason})",
            outcome="killed",
        )
    retryable = True
    if ended.time_limit is not None:  # as Slurm's TIMEOUT: not requeued (the same work would run as long again)
        failure, retryable = Failure("time_limit", ended.time_limit), False
    elif ended.health is not None:
        rule, reason, retryable = ended.health
        failure = Failure(f"health_{rule}", reason)
    elif code == 0 and ended.output and not ended.output_exists:
        failure = Failure("missing_output", f"exited 0 but its output {ended.output} is missing")
    elif code == 0 and ended.manifest_error:
        failure = Failure("missing_output", ended.manifest_error)
    elif code == 0:
        return Decision(
            {"status": Status.DONE} | fields,
            {"status": Status.DONE, "exit_code": 0, "ended_at": ended.ended_at, "reason": None},
            ("done", f"attempt {ended.number} done"),
            outcome="done",
        )
    else:
        failure = classify(code, ended.log_tail, ended.lost)
    attempt = {"status": Status.LOST if code is None else Status.FAILED, "reason": failure.reason} | fields
    if (ended.interrupted or ended.requeue) and ended.health is None and ended.time_limit is None:
        why = ended.requeue or "interrupted when gputui stopped"
        if code is None and not ended.log_tail:  # recorded, never started: say so, not "exit status unknown"
            attempt["reason"] = "never started: gputui stopped between recording and launching it"
        task_fields = {"status": Status.PENDING, "budget": task.budget + 1, "reason": why} | fields
        return Decision(attempt, task_fields, outcome="requeued", failure=failure.kind)
    event = ("failed", f"attempt {ended.number}: {failure.reason}")
    head = f"FAILED {task.id} {task.range_label} attempt {ended.number}: {failure.reason} — "
    changed, change = {}, ""
    if failure.kind == "cuda_oom" and on_oom is not None:
        info, change = after_oom(on_oom, task.info)
        if info is None:
            retryable = False
        else:  # kept when the budget is spent too: a retry asked for later runs with the change
            changed, change = {"info": info}, f" {change}"
    if task.attempts < task.budget and retryable:
        delay = min(backoff_max_s, backoff_s * 2 ** (task.attempts - 1))
        why = backoff_reason(now + delay, failure.reason)
        task_fields = {"status": Status.RETRYING, "next_try_at": now + delay, "reason": why} | fields
        say = head + f"retrying in {delay:g}s{change} (attempt {task.attempts + 1}/{task.budget})"
        return Decision(attempt, task_fields | changed, event, say, "retrying", failure.kind)
    task_fields = {"status": Status.FAILED, "reason": failure.reason} | fields | changed
    left = f"no attempts left ({task.attempts}/{task.budget})"
    if changed:
        left += f"; a retry (r) runs{change}"
    elif change:
        left = f"not retried: {change} ([retry].on_oom)"
        task_fields["reason"] = f"{failure.reason} ({change})"
    elif task.attempts < task.budget and failure.kind == "time_limit":
        left = "not retried: it would run as long again ([job].time_limit_s; `gputui retry` runs it again)"
    elif task.attempts < task.budget:
        left = "not retried: the same seed and config would break it again ([health].retry_deterministic)"
    say = head + f"{left}; failed for good"
    return Decision(attempt, task_fields, event, say, "failed", failure.kind)
