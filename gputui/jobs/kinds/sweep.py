"""The "sweep" job kind: stages of trials, each stage seeded by the best trials of the one before.

Its table is read in sweep_table.py and its rule is in sweep_rule.py; here is what the rest of gputui asks of
it: the plan and what a run records of it (its stages by name, its ranking terms), what is still to come as
read back from that record, and its products (results.csv, the report's ranking of each stage).
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gputui.jobs.checks import Checks
from gputui.jobs.kinds import sweep_rule
from gputui.jobs.kinds.base import (
    AttemptOutput,
    Columns,
    Expansion,
    JobKind,
    Markdown,
    Plan,
    Recorded,
    ResultsTable,
    TaskValues,
    digest,
)
from gputui.jobs.kinds.changes import definition_changed
from gputui.jobs.kinds.sweep_rule import first_trials, trial_metric, trial_values
from gputui.jobs.kinds.sweep_table import (
    METRIC_MODES,
    SWEEP_PLACEHOLDERS,
    SweepSpec,
    check_command,
    parse_sweep,
)
from gputui.jobs.spec import GENERIC_PLACEHOLDERS, JobSpec
from gputui.jobs.tasks import TRIAL, Status, TaskRecord

COLUMNS = Columns(
    fitted=(
        "id",
        "stage",
        "params",
        "parent",
        "GPUs",
        "status",
        "progress",
        "metric",
        "rank",
        "tries",
        "elapsed",
        "GPU·h",
        "peak",
        "note",
    ),
    gives_way=("peak", "GPU·h", "tries", "parent", "GPUs", "stage", "elapsed", "progress"),
    titles={"id": "trial"},
    bar=("params", "parent"),
    narrows_for={"progress": "params"},  # at 80 columns a running trial's steps, as a shard's bar
)


class Sweep(JobKind):
    name = "sweep"
    table = "sweep"
    expects = "a sweep job needs it: expected [sweep] with metric and [[sweep.stage]] tables"
    task_kind = TRIAL
    noun = "trial"
    chart_first = True  # a sweep is watched by its metric
    recorded_keys = ("sweep",)  # its ranking terms
    columns = COLUMNS

    def parse(self, checks: Checks, table: Mapping[str, Any], extra: list[str]) -> SweepSpec:
        return parse_sweep(checks, dict(table))

    def placeholders(self, spec: SweepSpec) -> tuple[str, ...]:
        names = dict.fromkeys(n for stage in spec.stages for p in stage.params for n in p)
        return (*GENERIC_PLACEHOLDERS, *SWEEP_PLACEHOLDERS, *names)

    def check_command(self, checks: Checks, spec: SweepSpec, used: set[str], params: Mapping[str, object]) -> None:
        check_command(checks, spec, used, "[job].command", defaults=params)

    def samples(self, spec: SweepSpec, run_dir: Path) -> dict[str, object]:
        return trial_values(first_trials(spec, run_dir)[0])

    def plan(self, job: JobSpec) -> Plan:
        spec: SweepSpec = job.kind_spec
        definition = sweep_definition(spec)
        stages = ", ".join(str(len(s.params)) for s in spec.stages)
        description = f"sweep of {len(spec.stages)} stage(s) ({stages} parameter sets), top {spec.top_k}"
        terms = {
            "sweep": {
                "metric": spec.metric,
                "goal": spec.goal,
                "top_k": spec.top_k,
                "metric_mode": spec.metric_mode,
            }
        }
        return Plan(first_trials(spec, job.run_dir), digest(definition), description, definition, terms)

    def refusal(self, job: JobSpec, plan: Plan, recorded: Recorded, changed: bool) -> str | None:
        if changed:
            why = "the trials already run and ranked"
            return definition_changed(job, "[sweep]", recorded.definition, plan.definition, recorded.run_dir, why)
        # Stages swapped: the fingerprint (a digest with sorted keys) cannot see it, but the trials already
        # ranked would promote into another stage.
        was = [name for name, _ in recorded_stages(recorded.definition)[0]]
        now = [name for name, _ in recorded_stages(plan.definition)[0]]
        if was == now:
            return None
        return (
            f"{job.path}: [[sweep.stage]] order changed since {recorded.run_dir} started (was "
            f"{', '.join(was)}; now {', '.join(now)}); the trials already run and ranked would no longer match "
            f"it, so this is refused.\n  Restore it, or start afresh with another --run-dir."
        )

    def values(self, job: JobSpec, task: TaskRecord, output: str | None) -> TaskValues:
        return TaskValues(trial_values(task))

    def settled(self, spec: SweepSpec, task: TaskRecord, attempt: AttemptOutput) -> dict[str, object]:
        return {"metric": trial_metric(spec, attempt)}

    def on_settle(self, spec: SweepSpec, tasks: Iterable[TaskRecord]) -> Expansion:
        return sweep_rule.on_settle(spec, list(tasks))

    def ranking(self, spec: SweepSpec) -> tuple[str, str]:
        return spec.metric, spec.goal

    def ranked_by(self, facts: Mapping[str, Any]) -> str | None:
        terms = facts.get("sweep")
        return terms.get("metric") if isinstance(terms, dict) else None  # damaged or missing: ranked by nothing

    def to_come(self, definition: object, tasks: Sequence[TaskRecord], stopped: bool) -> list[str]:
        planned = {t.info.get("stage") for t in tasks if t.kind == TRIAL}
        return stages_to_come(*recorded_stages(definition), planned, stopped=stopped)

    def planned_from(self, tasks: Sequence[TaskRecord]) -> str | None:
        return tasks[0].info.get("stage") if tasks else None

    def results(
        self,
        spec: SweepSpec,
        read_tasks: Callable[[], Sequence[TaskRecord]],
        durations: Callable[[str], list[float]],
    ) -> ResultsTable:
        rows = trial_rows(read_tasks(), spec.metric, durations)
        for row in rows:
            row["metric_mode"] = spec.metric_mode  # which of a trial's values the metric column holds
        params = list(dict.fromkeys(name for row in rows for name in row["params"]))
        after = [
            "parent_id",
            spec.metric,
            "status",
            "rank",
            "promoted",
            "output_dir",
            "duration_s",
            "note",
            "metric_mode",
        ]
        return ResultsTable(rows, ["stage", "stage_index", "trial_id", *params, *after], spread="params")

    def report_section(self, summary: Mapping[str, Any], md: Markdown) -> list[str]:
        return report_section(summary["sweep"], summary.get("tasks", []), md) if summary.get("sweep") else []


# --------------------------------------------------------------------------------------------------
# What a run records of its plan, read back


def sweep_definition(spec: SweepSpec) -> dict:
    """What a sweep's fingerprint covers, as its run records it (meta `plan_definition`): its terms, and its
    stages by name in order, `{"task1": {"params": [...]}, ...}` (a change then reads `stages.task2.params[0]`).
    Every sweep run has recorded this shape and its fingerprint is a digest of it: read it with
    `recorded_stages`, never reshape it (a run started before would be refused as changed). `metric_mode` is
    in it only when it is not the default ("best"), and a stage's `inherit` only when true, so a job file
    without them keeps its fingerprint."""
    definition = json.loads(json.dumps(asdict(spec), default=str))  # plain JSON, as the store keeps it
    if definition["metric_mode"] == METRIC_MODES[0]:
        del definition["metric_mode"]
    for stage in definition["stages"]:
        if not stage["inherit"]:
            del stage["inherit"]
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


def stages_to_come(
    stages: list[tuple[str, int]], top_k: int, planned: set[str], *, stopped: bool = False
) -> list[str]:
    """One line per sweep stage not planned yet: 'task2 · 3 param sets × top 2 of task1 (≤6 trials) · after
    task1 is ranked'. `stages`: (name, parameter sets) in order; `planned`: stage names that have trials."""
    lines = []
    for i, (name, sets) in enumerate(stages):
        if i == 0 or name in planned:
            continue
        before = stages[i - 1][0]
        trials = f"≤{sets * top_k} trials" if top_k > 1 else f"{sets} trial{'s' if sets != 1 else ''}"
        when = "will not run: the sweep stopped" if stopped else f"after {before} is ranked"
        plural = "s" if sets != 1 else ""
        lines.append(f"{name} · {sets} param set{plural} × top {top_k} of {before} ({trials}) · {when}")
    return lines


# --------------------------------------------------------------------------------------------------
# Products


def trial_rows(tasks: Iterable[TaskRecord], metric: str, durations: Callable[[str], list[float]]) -> list[dict]:
    """One row per settled trial, in plan order (results.jsonl's)."""
    rows = []
    for t in sorted(tasks, key=lambda t: t.index):
        if t.kind != TRIAL or t.status not in Status.FINAL:
            continue
        took = durations(t.id)
        rows.append(
            {
                "stage": t.info.get("stage"),
                "stage_index": t.info.get("stage_index"),
                "trial_id": t.id,
                "params": dict(t.info.get("params") or {}),
                "parent_id": t.info.get("parent_id"),
                metric: t.metric,
                "status": t.status,
                "rank": t.rank,
                "promoted": t.promoted,
                "output_dir": t.info.get("output_dir"),
                "duration_s": round(sum(took), 3) if took else None,
                "note": t.note or t.reason,
            }
        )
    return rows


def report_section(sweep: Mapping[str, Any], tasks: Iterable[dict], md: Markdown) -> list[str]:
    """Each stage's ranking, then the best chain: the best trial of the last ranked stage and its parents.

    `tasks` is read once (and again only for a parent of the best chain that was not promoted); each stage's
    table shows its first `md.cap` trials by rank, then how many more there are."""
    metric, goal = sweep.get("metric", "metric"), sweep.get("goal", "max")
    mode = sweep.get("metric_mode")  # not recorded by runs started before it existed (they ranked the last)
    value = f"each trial's {mode} value of " if mode in METRIC_MODES else ""
    lines = [
        "## Sweep",
        "",
        f"Ranked by {value}`{metric}` ({goal}imum first), top {sweep.get('top_k')} promoted per stage; ties are "
        "broken by trial order (the earlier trial ranks higher).",
        "",
    ]
    stages: dict[str, _Best] = {}
    firsts, kept = [], {}  # the trials ranked first; those a chain may pass through (promoted or first)
    for t in tasks:
        if t.get("kind") != TRIAL:
            continue
        stages.setdefault(t["info"].get("stage", "?"), _Best(md.cap)).add(t)
        if t.get("rank") == 1:
            firsts.append(t)
        if t.get("rank") == 1 or t.get("promoted"):
            kept[t["id"]] = t
    for stage, best in stages.items():
        lines += [f"### Stage {stage}", "", f"| Rank | Trial | Params | Parent | {metric} | Status | Note |"]
        lines.append("|---|---|---|---|---|---|---|")
        for t in best.rows():
            params = ", ".join(f"{k}={v}" for k, v in (t["info"].get("params") or {}).items())
            rank = "-" if t.get("rank") is None else str(t["rank"]) + (" ★" if t.get("promoted") else "")
            value = "-" if t.get("metric") is None else f"{t['metric']:.6g}"
            note = t.get("note") or t.get("reason") or ""
            lines.append(
                md.row(
                    [rank, t["id"], params, t["info"].get("parent_id") or "-", value, t["status"], md.cut(note)]
                )
            )
        lines.append("")
        lines += md.more(best.seen - md.cap, f"trials of stage {stage}")
    chain = _best_chain(firsts, kept, tasks)
    if chain:
        links = " ← ".join(
            f"**{t['id']}** ({t.get('label') or t['id']}; {metric} {t['metric']:.6g})" for t in chain
        )
        lines += ["**Best chain** (last stage first): " + links, ""]
    return lines


class _Best:
    """A stage's first `cap` trials by rank (unranked last, then by trial order), out of any number seen."""

    def __init__(self, cap: int) -> None:
        self.cap, self.seen, self._rows = cap, 0, []

    @staticmethod
    def _key(t: dict) -> tuple:
        return (t.get("rank") is None, t.get("rank") or 0, t["index"])

    def add(self, t: dict) -> None:
        self.seen += 1
        self._rows.append(t)
        if len(self._rows) >= 2 * self.cap:
            self._rows = heapq.nsmallest(self.cap, self._rows, key=self._key)

    def rows(self) -> list[dict]:
        return sorted(self._rows, key=self._key)[: self.cap]


def _best_chain(firsts: list[dict], kept: dict[str, dict], tasks: Iterable[dict]) -> list[dict]:
    """The best trial of the last ranked stage, then its parents; a parent not in `kept` is looked up in
    `tasks` (read again)."""
    if not firsts:
        return []
    chain = [max(firsts, key=lambda t: t["info"].get("stage_index", 0))]
    while parent_id := chain[-1]["info"].get("parent_id") or "":
        parent = kept.get(parent_id)
        if parent is None:
            parent = next((t for t in tasks if t.get("kind") == TRIAL and t["id"] == parent_id), None)
        if parent is None:
            break
        chain.append(parent)
    return [t for t in chain if t.get("metric") is not None]
