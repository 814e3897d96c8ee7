"""Every job kind, by its [job].kind: the one place a kind is named. The rest of gputui asks the kind of a job, a
run (by what it recorded) or a task, and never which kind it is."""

from __future__ import annotations

from collections.abc import Iterable

from gputui.jobs.kinds.base import Expansion, JobKind
from gputui.jobs.kinds.pipeline import Pipeline
from gputui.jobs.kinds.shards import Shards
from gputui.jobs.kinds.sweep import Sweep
from gputui.jobs.spec import JobSpec
from gputui.jobs.tasks import TaskRecord

DEFAULT: JobKind = Shards()  # a job file without [job].kind, and a run that recorded none
KINDS: dict[str, JobKind] = {kind.name: kind for kind in (DEFAULT, Sweep(), Pipeline())}


def kind_of(job: JobSpec) -> JobKind:
    return KINDS[job.kind]


def named(name: str | None) -> JobKind:
    """The kind a run recorded (its meta's job_kind); the default one where it recorded none."""
    return KINDS.get(name or "", DEFAULT)


def for_task(task_kind: str | None) -> JobKind:
    """The kind whose tasks are of `task_kind` (TaskRecord.kind)."""
    return next((k for k in KINDS.values() if k.task_kind == task_kind), DEFAULT)


def for_tasks(task_kinds: Iterable[str | None]) -> JobKind:
    """The kind of a run's tasks: the first kind (in KINDS' order) other than the default that has a task
    among them, else the default (a run's tasks are of one kind; none planned yet reads as the default)."""
    present = set(task_kinds)
    return next((k for k in KINDS.values() if k is not DEFAULT and k.task_kind in present), DEFAULT)


def on_settle(job: JobSpec, tasks: Iterable[TaskRecord]) -> Expansion:
    """The job's kind's rule over every task so far (a shard job has none: its tasks are not even listed)."""
    return kind_of(job).on_settle(job.kind_spec, tasks)
