"""The "pipeline" job kind: named steps, each with its own command, run once what they wait for is done.

    [[pipeline.step]]
    name = "train"
    command = "python train.py --out {output_dir}"
    gpus = 1                        # optional; default [resources].gpus_per_worker
    [[pipeline.step]]
    name = "eval"
    command = "python eval.py --model {run_dir}/steps/train"
    after = ["train"]

A step's {output_dir} is run_dir/steps/<name>, so a step reads another's output at {run_dir}/steps/<name>.
Every step is planned at the start; when one fails or is killed, the steps stranded behind it are skipped.
"""

from __future__ import annotations

import dataclasses
import difflib
import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gputui.jobs.checks import NAME_RE, Checks, got, is_int
from gputui.jobs.kinds.base import (
    Columns,
    Expansion,
    JobKind,
    Markdown,
    NewTask,
    Plan,
    Recorded,
    TaskValues,
    digest,
    tasks_of_kind,
)
from gputui.jobs.kinds.changes import definition_changed
from gputui.jobs.spec import GENERIC_PLACEHOLDERS, JobSpec
from gputui.jobs.tasks import STEP, Status, TaskRecord

PIPELINE_KEYS = ("step",)
STEP_KEYS = ("name", "command", "gpus", "after")
STEP_PLACEHOLDERS = ("step", "output_dir")
_WAITING = (Status.PENDING, Status.RETRYING)
_BROKEN = {Status.FAILED: "failed", Status.KILLED: "was killed"}  # what strands the steps waiting on it


@dataclass(frozen=True)
class StepSpec:
    name: str
    command: tuple[str, ...]  # argv template
    gpus: int | None  # None: [resources].gpus_per_worker
    after: tuple[str, ...]  # steps that must be done first


@dataclass(frozen=True)
class PipelineSpec:
    steps: tuple[StepSpec, ...]  # in file order


# --------------------------------------------------------------------------------------------------
# Parsing


def parse_pipeline(checks: Checks, table: dict[str, Any], known: list[str]) -> PipelineSpec:
    """[pipeline] (data["pipeline"]) as a PipelineSpec; `known`: the placeholder names a command may use
    besides {step} and {output_dir} (the generic ones, [params])."""
    checks.check_keys(table, "[pipeline]", PIPELINE_KEYS)
    raw = table.get("step")
    if raw is None or raw == []:
        raise checks.error(
            "[[pipeline.step]]", "missing; expected at least one [[pipeline.step]] table with name and command"
        )
    if not isinstance(raw, list) or not all(isinstance(s, dict) for s in raw):
        raise checks.error("[pipeline].step", f"expected [[pipeline.step]] tables, {got(raw)}")
    names = list(dict.fromkeys([*known, *STEP_PLACEHOLDERS]))
    steps: list[StepSpec] = []
    for n, step_table in enumerate(raw, 1):
        step = _parse_step(checks, step_table, n, names)
        previous = next((i for i, s in enumerate(steps, 1) if s.name == step.name), None)
        if previous is not None:
            raise checks.error(
                f"[[pipeline.step]] {n}.name", f"expected a unique name, got {step.name!r} (step {previous} too)"
            )
        steps.append(step)
    _check_after(checks, steps)
    _check_cycles(checks, steps)
    return PipelineSpec(tuple(steps))


def _parse_step(checks: Checks, table: dict[str, Any], n: int, known: list[str]) -> StepSpec:
    where = f"[[pipeline.step]] {n}"
    checks.check_keys(table, where, STEP_KEYS)
    name = table.get("name")
    if name is None:
        raise checks.error(f"{where}.name", "missing; expected a step name (letters, digits, '.', '_', '-')")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or name in (".", ".."):
        raise checks.error(f"{where}.name", f"expected only letters, digits, '.', '_' or '-', {got(name)}")
    where = f"{where} ({name})"
    gpus = table.get("gpus")
    if gpus is not None and not (is_int(gpus) and gpus >= 0):
        raise checks.error(f"{where}.gpus", f"expected a non-negative integer, {got(gpus)}")
    after = table.get("after", [])
    if not isinstance(after, list) or not all(isinstance(a, str) for a in after):
        raise checks.error(f"{where}.after", f'expected a list of step names like ["train"], {got(after)}')
    command, _ = checks.command(table, f"{where}.command", known)
    return StepSpec(name=name, command=command, gpus=gpus, after=tuple(dict.fromkeys(after)))


def _check_after(checks: Checks, steps: list[StepSpec]) -> None:
    names = [s.name for s in steps]
    for n, step in enumerate(steps, 1):
        for dep in step.after:
            if dep not in names:
                close = difflib.get_close_matches(dep, names, n=1)
                hint = f"did you mean '{close[0]}'? Steps" if close else "steps"
                raise checks.error(
                    f"[[pipeline.step]] {n} ({step.name}).after",
                    f"unknown step {dep!r}; {hint}: {', '.join(names)}",
                )


def _check_cycles(checks: Checks, steps: list[StepSpec]) -> None:
    cycle = find_cycle(steps)
    if cycle:
        raise checks.error(
            "[[pipeline.step]]",
            f"steps wait for each other in a cycle: {' -> '.join(cycle)} (each waits for the next)",
        )


def find_cycle(steps: Sequence[StepSpec]) -> list[str] | None:
    """A cycle of `after` as names, first repeated at the end (e.g. [train, eval, train]); None if none.

    It starts at its step that comes first in the file, so the message does not depend on the search order.
    """
    position = {s.name: i for i, s in enumerate(steps)}
    after = {s.name: s.after for s in steps}
    state: dict[str, str] = {}  # "open": on the current path; "done": no cycle through it

    def visit(name: str, path: list[str]) -> list[str] | None:
        state[name] = "open"
        path.append(name)
        for dep in after.get(name, ()):
            if state.get(dep) == "open":
                loop = path[path.index(dep) :]
                first = min(range(len(loop)), key=lambda i: position[loop[i]])
                loop = loop[first:] + loop[:first]
                return [*loop, loop[0]]
            if dep not in state and (found := visit(dep, path)):
                return found
        path.pop()
        state[name] = "done"
        return None

    for step in steps:
        if step.name not in state and (found := visit(step.name, [])):
            return found
    return None


# --------------------------------------------------------------------------------------------------
# The plan and the rule


def topological_order(spec: PipelineSpec) -> list[StepSpec]:
    """Every step after those it waits for; among steps free to go, file order (so the plan is stable)."""
    position = {s.name: i for i, s in enumerate(spec.steps)}
    waiting = {s.name: set(s.after) for s in spec.steps}
    ready = [position[name] for name, deps in waiting.items() if not deps]
    heapq.heapify(ready)
    order: list[StepSpec] = []
    while ready:
        step = spec.steps[heapq.heappop(ready)]
        order.append(step)
        for other, deps in waiting.items():
            if step.name in deps:
                deps.discard(step.name)
                if not deps:
                    heapq.heappush(ready, position[other])
    return order


def plan_steps(spec: PipelineSpec, run_dir: Path) -> list[NewTask]:
    """Every step, in a topological order (its index), with what it waits for."""
    return [
        NewTask(
            id=step.name,
            index=i,
            kind=STEP,
            info={
                "step": step.name,
                "command": list(step.command),
                "gpus": step.gpus,
                "output_dir": str(Path(run_dir) / "steps" / step.name),
            },
            after=step.after,
        )
        for i, step in enumerate(topological_order(spec))
    ]


def step_values(task: TaskRecord | NewTask) -> dict[str, object]:
    """The placeholder values a step's command has besides the generic ones."""
    return {"step": task.info.get("step", task.id), "output_dir": task.info.get("output_dir", "")}


def ready(task: TaskRecord, tasks_by_id: Mapping[str, TaskRecord]) -> bool:
    """Whether every step `task` waits for is done (a step that is not there never is)."""
    return all(dep in tasks_by_id and tasks_by_id[dep].status == Status.DONE for dep in task.after)


def on_settle(spec: PipelineSpec, tasks: Sequence[TaskRecord]) -> Expansion:
    """Skip every waiting step that (transitively) waits on a failed or killed step, naming that step.

    Idempotent: a skipped step no longer waits, so it is never skipped twice.
    """
    by_id = {t.id: t for t in tasks if t.kind == STEP}
    causes: dict[str, TaskRecord | None] = {}
    updates, events = _unskip(by_id)
    by_id = {tid: dataclasses.replace(t, **updates[tid]) if tid in updates else t for tid, t in by_id.items()}
    for task in sorted(by_id.values(), key=lambda t: t.index):
        if task.status not in _WAITING:
            continue
        cause = _cause(task, by_id, causes, set())
        if cause is not None:
            reason = f"skipped: step {cause.id} {_BROKEN.get(cause.status, 'was skipped')}"
            updates[task.id] = {"status": Status.SKIPPED, "reason": reason}
            events.append((task.id, "skipped", reason))
    return Expansion(updates=updates, events=events)


def _unskip(by_id: Mapping[str, TaskRecord]) -> tuple[dict[str, dict], list[tuple[str | None, str, str]]]:
    """Skipped steps whose failed step is being retried (or is done now) wait again, transitively."""
    status = {tid: t.status for tid, t in by_id.items()}
    updates: dict[str, dict] = {}
    events: list[tuple[str | None, str, str]] = []
    changed = True
    while changed:
        changed = False
        for t in sorted(by_id.values(), key=lambda t: t.index):
            broken = [d for d in t.after if status.get(d) in (*_BROKEN, Status.SKIPPED)]
            if status[t.id] == Status.SKIPPED and not broken:
                status[t.id], changed = Status.PENDING, True
                updates[t.id] = {"status": Status.PENDING, "reason": None}
                events.append((t.id, "unskipped", "waits again: the steps it waits for are no longer failed"))
    return updates, events


def _cause(
    task: TaskRecord, by_id: Mapping[str, TaskRecord], memo: dict[str, TaskRecord | None], seen: set[str]
) -> TaskRecord | None:
    """The failed or killed step that keeps `task` from ever running, or None.

    A skipped step passes on its own cause (or stands for it when none is left, e.g. the failure was retried).
    """
    if task.id in memo:
        return memo[task.id]
    if task.status in _BROKEN:
        cause: TaskRecord | None = task
    elif task.status == Status.SKIPPED:
        cause = _upstream_cause(task, by_id, memo, seen) or task
    elif task.status in _WAITING:
        cause = _upstream_cause(task, by_id, memo, seen)
    else:  # running, paused or done: its own waits are over
        cause = None
    memo[task.id] = cause
    return cause


def _upstream_cause(
    task: TaskRecord, by_id: Mapping[str, TaskRecord], memo: dict[str, TaskRecord | None], seen: set[str]
) -> TaskRecord | None:
    """The first cause among what `task` waits for, in its `after` order."""
    seen = seen | {task.id}  # a cycle cannot be planned; guard anyway
    for dep in task.after:
        if dep in by_id and dep not in seen and (cause := _cause(by_id[dep], by_id, memo, seen)) is not None:
            return cause
    return None


# --------------------------------------------------------------------------------------------------
# The kind

COLUMNS = Columns(
    fitted=("id", "after", "GPUs", "status", "progress", "ETA", "tries", "elapsed", "GPU·h", "peak", "reason"),
    gives_way=("peak", "GPU·h", "tries", "ETA", "GPUs", "elapsed", "progress"),
    titles={"id": "step"},
    bar=("after",),
    narrows_for={"progress": "after"},  # at 80 columns a running step's progress, as a shard's bar
)


class Pipeline(JobKind):
    name = "pipeline"
    table = "pipeline"
    expects = "a pipeline job needs it: expected [[pipeline.step]] tables with name and command"
    task_kind = STEP
    noun = "step"
    command_required = False  # each step may carry its own
    columns = COLUMNS

    def parse(self, checks: Checks, table: Mapping[str, Any], extra: list[str]) -> PipelineSpec:
        return parse_pipeline(checks, dict(table), [*self.placeholders(None), *extra])

    def placeholders(self, spec: PipelineSpec | None) -> tuple[str, ...]:
        return (*GENERIC_PLACEHOLDERS, "step")

    def templates(self, spec: PipelineSpec) -> list[tuple[str, tuple[str, ...]]]:
        return [(f"[[pipeline.step]] {i + 1} ({s.name}).command", s.command) for i, s in enumerate(spec.steps)]

    def first_commands(self, job: JobSpec) -> list[tuple[str, tuple[str, ...]]]:
        """The steps that wait for none: a later step may run what an earlier one builds."""
        steps = enumerate(job.kind_spec.steps)
        return [(f"[[pipeline.step]] {i + 1} ({s.name}).command", s.command) for i, s in steps if not s.after]

    def plan(self, job: JobSpec) -> Plan:
        spec: PipelineSpec = job.kind_spec
        definition = {"steps": {s.name: {"after": list(s.after)} for s in spec.steps}}
        description = f"pipeline of {len(spec.steps)} step(s): " + ", ".join(s.name for s in spec.steps)
        return Plan(plan_steps(spec, job.run_dir), digest(definition), description, definition)

    def refusal(self, job: JobSpec, plan: Plan, recorded: Recorded, changed: bool) -> str | None:
        if not changed:
            return None
        why = "the steps already run"
        return definition_changed(
            job, "[[pipeline.step]]", recorded.definition, plan.definition, recorded.run_dir, why
        )

    def own_gpus(self, spec: PipelineSpec) -> dict[str, int]:
        return {step.name: step.gpus for step in spec.steps if step.gpus is not None}

    def values(self, job: JobSpec, task: TaskRecord, output: str | None) -> TaskValues:
        step = task.info.get("step")
        command = next((s.command for s in job.kind_spec.steps if s.name == step), None)
        return TaskValues(step_values(task), command=command or tuple(task.info.get("command") or ()))

    def on_settle(self, spec: PipelineSpec, tasks: Iterable[TaskRecord]) -> Expansion:
        return on_settle(spec, list(tasks))

    def report_section(self, summary: Mapping[str, Any], md: Markdown) -> list[str]:
        rows, steps = [], 0
        for t in tasks_of_kind(summary, STEP):
            steps += 1
            if steps <= md.cap:
                after = ", ".join(t.get("after") or []) or "-"
                cells = [t["id"], after, t["status"], md.seconds(t.get("duration")), md.cut(t.get("reason") or "")]
                rows.append(md.row(cells))
        if not steps:
            return []
        lines = ["## Steps", "", "| Step | Waits for | Status | Duration | Reason |", "|---|---|---|---|---|"]
        return [*lines, *rows, "", *md.more(steps - md.cap, "steps")]
