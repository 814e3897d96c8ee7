"""A job kind is a small rule: (job spec, tasks so far) -> new tasks and the decisions taken.

Shards plan all their tasks at the start; a sweep adds a stage once the one before is ranked; a pipeline
plans every step with what it waits for, and skips the steps a failure strands. The rules are pure; the
scheduler applies `on_settle` in the transaction that settles a task, so each decision is taken once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gputui.jobs.spec import JobSpec
from gputui.jobs.tasks import TaskRecord


@dataclass(frozen=True)
class NewTask:
    """A task a job kind adds: a row of the store's tasks table."""

    id: str
    index: int  # launch order among waiting tasks (lower first); unique in the run
    kind: str
    low: int = 0
    high: int = 0
    count: int = 1
    output: str | None = None  # a shard's output file
    info: Mapping = field(default_factory=dict)  # JSON-able: params, stage, step, parent, output_dir, command
    after: tuple[str, ...] = ()


@dataclass(frozen=True)
class Expansion:
    """What a job kind decided after a task settled."""

    new: list[NewTask] = field(default_factory=list)
    updates: dict[str, dict] = field(default_factory=dict)  # task id -> fields (rank, promoted, note, status)
    events: list[tuple[str | None, str, str]] = field(default_factory=list)  # (task id, kind, message)
    failed: str | None = None  # the run cannot succeed any more, and why (e.g. no trial of a stage ranked)

    def __bool__(self) -> bool:
        return bool(self.new or self.updates or self.events or self.failed)


def on_settle(job: JobSpec, tasks: Iterable[TaskRecord]) -> Expansion:
    """The job kind's rule, applied to every task so far (idempotent: what exists is never added again).
    A shard job has none: its tasks are not even listed (once per settle, that would grow with the run)."""
    if job.kind == "sweep":
        from gputui.jobs import sweep

        return sweep.on_settle(job.sweep, list(tasks))
    if job.kind == "pipeline":
        from gputui.jobs import pipeline

        return pipeline.on_settle(job.pipeline, list(tasks))
    return Expansion()
