"""What a job kind is: everything the loader, the plan, the scheduler's settle, the views and the run's products
ask of it, in one protocol (`JobKind`), and the plain values it answers with.

The kinds (shards, sweep, pipeline) implement JobKind; the registry (registry.py) is the one place they are
named, so the engine, the views and the app ask `KINDS[job.kind]` and never which kind a run is. The rules are
pure: they read specs and tasks and return values; the callers do the I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from gputui.jobs.checks import Checks
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


@dataclass(frozen=True)
class Plan:
    """A job's plan: the tasks it starts with, and what identifies it, so a run directory is never driven by a
    changed plan (ids processed twice or skipped, a stage ranked on other terms)."""

    tasks: list[NewTask]  # the tasks to start with (a sweep adds its later stages as it goes)
    fingerprint: str
    description: str  # one line, e.g. "4 shards: [0, 25), ..." or "sweep of 3 stage(s) ..."
    definition: object  # JSON-able: what the fingerprint covers, to say what changed (kept as the run's record)
    recorded: Mapping[str, object] = field(default_factory=dict)  # meta the run keeps for its readers (the
    # merge's input and id column, a sweep's ranking terms): keys of the kind's `recorded_keys`, kept by the run
    # as its kind's facts (rundir.meta JobFacts.kind_facts) and read back through the same kind


@dataclass(frozen=True)
class Recorded:
    """What a run directory recorded of its plan when it started, for a kind to judge the job file's plan now."""

    definition: object  # the plan's definition as recorded (JSON: through the store)
    read_tasks: Callable[[], Sequence[TaskRecord]]  # its tasks now (read only where a kind needs them)
    run_dir: Path


@dataclass(frozen=True)
class TaskValues:
    """What one task of a kind fills into its command, besides the placeholders every task has."""

    values: Mapping[str, object]
    env: Mapping[str, str] = field(default_factory=dict)  # variables of the worker's own
    command: tuple[str, ...] | None = None  # its own argv template (a pipeline step's); None: [job].command


@dataclass(frozen=True)
class AttemptOutput:
    """What a settled attempt left for its kind to read: the events its worker reported through gputui.hooks,
    and its log (the last `max_bytes` of it, read by the caller)."""

    events: Path
    read_log: Callable[[int], str]


@dataclass(frozen=True)
class Columns:
    """A kind's rows in the app's task table. `fitted`: every column in order, fitted to the width (those in
    `gives_way` left out first to last as it narrows); empty: the fixed layouts by width (a shard's range).
    `titles`: a column's header where not its name. `bar`: what the task bar adds of a task in words.
    `narrows_for`: a column of `gives_way` -> a sized column cut (to its least) before that one goes, where the
    cut alone makes room (a running trial's progress kept at 80 columns, its params cut: the task bar has them)."""

    fitted: tuple[str, ...] = ()
    gives_way: tuple[str, ...] = ()
    titles: Mapping[str, str] = field(default_factory=dict)
    bar: tuple[str, ...] = ()
    narrows_for: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ResultsTable:
    """A kind's table of results over its tasks, written as results.csv and results.jsonl in the run directory.
    `rows` as the JSONL has them; `columns` the CSV's, where the dict in each row's `spread` column (a trial's
    params) is spread into a column per key."""

    rows: list[dict]
    columns: list[str]
    spread: str | None = None


class Markdown(Protocol):
    """How report.md writes a table's cells (the report's own rules, handed to a kind's section)."""

    def row(self, cells: Iterable[object]) -> str: ...

    def cut(self, text: str) -> str: ...

    def seconds(self, value: object) -> str: ...

    cap: int  # the most tasks a table or list shows

    def more(self, n: int, what: str) -> list[str]:
        """After a table or list cut at `cap`: how many more there are (`n`; [] if none)."""
        ...


class JobKind(Protocol):
    """A job kind: its table in the job file, its plan, its rule as tasks settle, and what it shows.

    The defaults are a kind that has nothing to add; a kind overrides what it does.
    """

    name: ClassVar[str]  # [job].kind
    table: ClassVar[str]  # its table in the job file
    table_keys: ClassVar[tuple[str, ...] | None] = None  # the table's keys where plain (None: `parse` checks them)
    expects: ClassVar[str]  # what the table should hold, said when it is missing
    task_kind: ClassVar[str]  # the kind of its tasks (TaskRecord.kind)
    noun: ClassVar[str]  # one of its tasks in words
    covers: ClassVar[str] = "covers"  # the status table's title of what a task covers
    command_required: ClassVar[bool] = True  # [job].command (a pipeline's steps may carry their own)
    names_outputs: ClassVar[bool] = False  # [outputs].pattern names each task's output file
    alike_tasks: ClassVar[bool] = False  # one command over ranges: a cluster may take them as one array
    always_products: ClassVar[bool] = True  # every task gets metrics.csv and summary.json, reported or not
    charts: ClassVar[bool] = True  # the app offers the metrics chart before any metric is reported
    chart_first: ClassVar[bool] = False  # and shows it instead of the log by default
    columns: ClassVar[Columns] = Columns()
    recorded_keys: ClassVar[tuple[str, ...]] = ()  # the run meta keys its plans record (Plan.recorded): its own

    # -- the job file -----------------------------------------------------------------------------

    def parse(self, checks: Checks, table: Mapping[str, Any], extra: list[str]) -> Any:
        """Its table as its spec (JobSpec.kind_spec). `extra`: placeholder names every command of the job may use
        besides the kind's own ([params], a [model]'s)."""
        ...

    def placeholders(self, spec: Any) -> tuple[str, ...]:
        """The placeholders [job].command may use besides `extra`."""
        ...

    def check_command(self, checks: Checks, spec: Any, used: set[str], params: Mapping[str, object]) -> None:
        """Refuse what [job].command (its placeholders `used`) cannot do for every task of the kind."""

    def templates(self, spec: Any) -> list[tuple[str, tuple[str, ...]]]:
        """Its own argv templates with their key paths (a pipeline's steps), checked like [job].command."""
        return []

    def first_commands(self, job: JobSpec) -> list[tuple[str, tuple[str, ...]]]:
        """The argv templates (with their key paths) of the tasks that may start before any other ran: their
        programs must be there now (jobs/startable.py); a later task's may be made by those before it."""
        return [("[job].command", job.command)] if job.command else []

    def samples(self, spec: Any, run_dir: Path) -> dict[str, object]:
        """Example values of its placeholders, to fill every template once at load (a bad format spec fails
        then, not mid-run)."""
        return {}

    # -- the plan ---------------------------------------------------------------------------------

    def plan(self, job: JobSpec) -> Plan:
        """The tasks the job starts with, shown before launch and added when the run opens."""
        ...

    def refusal(self, job: JobSpec, plan: Plan, recorded: Recorded, changed: bool) -> str | None:
        """Why a run that recorded `recorded` may not go on with the job file's `plan` (None: it may).
        `changed`: the fingerprints differ; a kind may also see a change the fingerprint cannot."""
        ...

    def own_gpus(self, spec: Any) -> dict[str, int]:
        """Task id -> GPUs it asks for when not [resources].gpus_per_worker (a pipeline step's own)."""
        return {}

    def values(self, job: JobSpec, task: TaskRecord, output: str | None) -> TaskValues:
        """What `task` fills into its command (`output`: its output file, where the kind names one)."""
        ...

    # -- as tasks settle --------------------------------------------------------------------------

    def settled(self, spec: Any, task: TaskRecord, attempt: AttemptOutput) -> dict[str, object]:
        """Fields a task that ended well gets from its kind (a trial's metric); read once, as it settles."""
        return {}

    def on_settle(self, spec: Any, tasks: Iterable[TaskRecord]) -> Expansion:
        """The kind's rule over every task so far, applied in the transaction that settles one: tasks to add,
        fields to set. Idempotent: what exists is never added again."""
        return Expansion()

    # -- what it shows ----------------------------------------------------------------------------

    def ranking(self, spec: Any) -> tuple[str, str] | None:
        """(metric, goal) its tasks are ranked by, if they are."""
        return None

    def ranked_by(self, facts: Mapping[str, Any]) -> str | None:
        """The metric a run ranks its tasks by, from what its plan recorded (`facts`: the Plan.recorded the run
        kept, JobFacts.kind_facts)."""
        return None

    def to_come(self, definition: object, tasks: Sequence[TaskRecord], stopped: bool) -> list[str]:
        """One line for each part not planned yet, from the kind's own recorded `definition` (Plan.definition)
        and the tasks planned so far; `stopped`: the run cannot go on (so they will not run)."""
        return []

    def planned_from(self, tasks: Sequence[TaskRecord]) -> str | None:
        """What the tasks planned at the start belong to, in a word (a sweep's first stage), if anything."""
        return None

    def results(
        self, spec: Any, read_tasks: Callable[[], Sequence[TaskRecord]], durations: Callable[[str], list[float]]
    ) -> ResultsTable | None:
        """Its table of results over the run's tasks, if it keeps one (`read_tasks`, `durations`: a task's
        attempts', are read only by a kind that does)."""
        return None

    def report_section(self, summary: Mapping[str, Any], md: Markdown) -> list[str]:
        """Its section of report.md from the run's summary (summary.json's dict), if any."""
        return []


def tasks_of_kind(summary: Mapping[str, Any], task_kind: str) -> Iterator[dict]:
    """The rows of summary.json's "tasks" of this kind, in order; none read where the rows say they hold none
    (results.report.SpooledRows keeps the kinds it was given: a run of 100,000 shards is not read again)."""
    tasks = summary.get("tasks", [])
    kinds = getattr(tasks, "kinds", None)
    if kinds is not None and task_kind not in kinds:
        return iter(())
    return (t for t in tasks if t.get("kind") == task_kind)


def digest(definition: object) -> str:
    """A plan's fingerprint from its definition (sorted keys: the same definition, the same fingerprint)."""
    return hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()[:16]
