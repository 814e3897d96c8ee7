"""A job's plan: the tasks it starts with, and what identifies it, so a run directory is never driven by a
changed plan (ids processed twice or skipped, a stage ranked on other terms)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from gputui.jobs import tabular
from gputui.jobs.kinds import NewTask
from gputui.jobs.shards import Shard, describe_plan, plan_fingerprint, plan_shards
from gputui.jobs.spec import JobSpec, JobSpecError
from gputui.jobs.tasks import SHARD
from gputui.jobs.templates import output_path

if TYPE_CHECKING:
    from gputui.jobs.sweep import SweepSpec


@dataclass(frozen=True)
class Plan:
    tasks: list[NewTask]  # the tasks to start with (a sweep adds its later stages as it goes)
    fingerprint: str
    description: str  # one line, e.g. "4 shards: [0, 25), ..." or "sweep: 3 stages of 3, 4, 4 trials"
    definition: object  # JSON-able: what the fingerprint covers, to say what changed
    integer_ids: bool | None = None  # shards: whether ids are integers (value ranges)


def load_ids(job: JobSpec) -> tuple[list, bool]:
    """Sorted unique ids of the job's input, and whether they are integers (value ranges)."""
    try:
        values = tabular.read_column(job.shards.input, job.shards.id_column, job.shards.format)
    except tabular.ColumnMissingError as e:
        raise JobSpecError(f"{job.path}: [shards].id_column: {e.args[0] if e.args else e}") from None
    return tabular.normalize_ids(values)


def shard_output(job: JobSpec, shard: Shard) -> str | None:
    if job.outputs is None or job.outputs.pattern is None:
        return None
    values = {
        "low": shard.low,
        "high": shard.high,
        "task_id": shard.task_id,
        "input": job.shards.input,
        "output_dir": job.outputs.dir,
        "run_dir": job.run_dir,
    }
    return output_path(job, shard.task_id, values)  # each task's own name checked (templates.py)


def plan_job(job: JobSpec) -> Plan:
    if job.kind == "sweep":
        from gputui.jobs import sweep

        definition = sweep_definition(job.sweep)
        stages = ", ".join(str(len(s.params)) for s in job.sweep.stages)
        description = f"sweep of {len(job.sweep.stages)} stage(s) ({stages} parameter sets), top {job.sweep.top_k}"
        return Plan(sweep.first_trials(job.sweep, job.run_dir), _digest(definition), description, definition)
    if job.kind == "pipeline":
        from gputui.jobs import pipeline

        definition = {"steps": {s.name: {"after": list(s.after)} for s in job.pipeline.steps}}
        description = f"pipeline of {len(job.pipeline.steps)} step(s): " + ", ".join(
            s.name for s in job.pipeline.steps
        )
        return Plan(pipeline.plan_steps(job.pipeline, job.run_dir), _digest(definition), description, definition)
    ids, integer_ids = load_ids(job)
    if not ids:
        raise JobSpecError(f"{job.path}: [shards].input: {job.shards.input} has no rows; nothing to do")
    shards = plan_shards(
        ids, integer_ids=integer_ids, num_workers=job.shards.num_workers, shard_size=job.shards.shard_size
    )
    tasks = [NewTask(s.task_id, s.index, SHARD, s.low, s.high, s.count, shard_output(job, s)) for s in shards]
    definition = [[s.low, s.high] for s in shards]
    return Plan(
        tasks, plan_fingerprint(shards, integer_ids=integer_ids), describe_plan(shards), definition, integer_ids
    )


def sweep_definition(spec: SweepSpec) -> dict:
    """What a sweep's fingerprint covers, as its run records it (meta `plan_definition`): its terms, and its
    stages by name in order, `{"task1": {"params": [...]}, ...}` (a change then reads `stages.task2.params[0]`).
    Every sweep run has recorded this shape and its fingerprint is a digest of it: read it with
    `recorded_stages`, never reshape it (a run started before would be refused as changed)."""
    definition = _json(asdict(spec))
    definition["stages"] = {stage.pop("name"): stage for stage in definition["stages"]}
    return definition


def recorded_stages(definition: object) -> tuple[list[tuple[str, int]], int]:
    """A sweep's stages as (name, parameter sets) in order, and its top_k, from the definition its run
    recorded (`sweep_definition`; a list of {"name", "params"} is read too); ([], 1) if it holds none."""
    if not isinstance(definition, dict):
        return [], 1
    raw = definition.get("stages")
    if isinstance(raw, dict):
        raw = [{**stage, "name": name} for name, stage in raw.items() if isinstance(stage, dict)]
    stages = []
    for stage in raw if isinstance(raw, list) else ():
        if isinstance(stage, dict) and isinstance(stage.get("name"), str):
            stages.append((stage["name"], len(stage.get("params") or ())))
    top_k = definition.get("top_k")
    return stages, top_k if isinstance(top_k, int) and not isinstance(top_k, bool) else 1


def what_changed(old: object, new: object, path: str = "") -> str | None:
    """The first place two plan definitions differ, as `path: was X, now Y`; None when equal."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [*old, *(k for k in new if k not in old)]:
            found = what_changed(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))
            if found:
                return found
        return None
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            found = what_changed(a, b, f"{path}[{i}]")
            if found:
                return found
        return None
    if old == new:
        return None
    return f"{path or 'the plan'}: was {_short(old)}, now {_short(new)}"


def _short(value: object) -> str:
    if value is None:
        return "(none)"
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _json(value: object) -> object:
    return json.loads(json.dumps(value, default=str))


def _digest(definition: object) -> str:
    return hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()[:16]
