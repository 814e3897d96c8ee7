"""The sweep's rule: stage 1's trials at the start; once every trial of a stage has settled, the stage is ranked
and the next one runs each of its parameter sets on top of each promoted trial (its output is the new
{parent_output}; with inherit = true, its params too). Pure: it reads tasks and returns what to add and mark
(the scheduler applies it in the transaction that settles a trial, so each decision is taken once).
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from gputui.hooks.reader import read_all
from gputui.jobs.kinds.base import AttemptOutput, Expansion, NewTask
from gputui.jobs.kinds.sweep_table import STAGE_STRIDE, StageSpec, SweepSpec
from gputui.jobs.tasks import TRIAL, Status, TaskRecord


def first_trials(spec: SweepSpec, run_dir: Path) -> list[NewTask]:
    """Stage 1: one trial per parameter set, all starting from [sweep].initial."""
    stage = spec.stages[0]
    trials_dir = Path(run_dir) / "trials"
    return [_trial(stage, 1, i, params, None, spec.initial, trials_dir) for i, params in enumerate(stage.params)]


def _trial(
    stage: StageSpec,
    stage_index: int,
    i: int,
    params: Mapping,
    parent_id: str | None,
    parent_output: str | None,
    trials_dir: Path,
    inherited: Sequence[str] | None = None,
) -> NewTask:
    trial_id = f"{stage.name}-{i}"
    info = {
        "stage": stage.name,
        "stage_index": stage_index,
        "trial": i,
        "params": dict(params),
        "parent_id": parent_id,
        "parent_output": parent_output,
        "output_dir": str(trials_dir / trial_id),
    }
    if inherited is not None:  # a stage with inherit = true: which of its params came from its parent
        info["inherited"] = list(inherited)
    return NewTask(id=trial_id, index=stage_index * STAGE_STRIDE + i, kind=TRIAL, info=info)


def promoted_params(parent: Mapping, own: Mapping, inherit: bool) -> tuple[dict, list[str] | None]:
    """A promoted trial's params and the names it inherited (None: its stage does not inherit). With inherit,
    its parent's params (all of them, themselves perhaps inherited) updated by its own set: the stage's values
    win, and keep the parent's order, so `lr=0.01 epochs=1` updated by `epochs=3` reads `lr=0.01 epochs=3`.
    Taken once, as the trial is planned: the store keeps the result, so a resumed run reads, never recomputes."""
    if not inherit:
        return dict(own), None
    return {**parent, **own}, [name for name in parent if name not in own]


def _stage_index(task: TaskRecord) -> int:
    return int(task.info.get("stage_index", 0))


def _trial_number(task: TaskRecord) -> int:
    return int(task.info.get("trial", task.index))


def on_settle(spec: SweepSpec, tasks: Sequence[TaskRecord]) -> Expansion:
    """Rank the latest stage once all its trials have settled, and plan the next one from its best.

    Taken once: a stage whose trials carry its decision (a rank for each trial that can be ranked, a note
    for each that cannot) is decided, and then nothing is returned. A trial run again since (a failed one
    retried) unsettles the decision of the latest stage, which is then taken again.
    """
    trials = [t for t in tasks if t.kind == TRIAL]
    if not trials:
        return Expansion()
    n = max(_stage_index(t) for t in trials)
    stage = sorted((t for t in trials if _stage_index(t) == n), key=_trial_number)
    settled = all(t.status in Status.FINAL for t in stage)
    decided = any(t.rank is not None or t.note is not None for t in stage) and all(
        (t.rank is not None) == (_unranked_why(spec, t) is None) for t in stage
    )
    if not settled or decided or not 1 <= n <= len(spec.stages):
        return Expansion()
    return _decide(spec, n, stage)


def _unranked_why(spec: SweepSpec, task: TaskRecord) -> str | None:
    """Why a settled trial is left out of the ranking (None: it is ranked), in a few words."""
    if task.status != Status.DONE:
        return task.status  # failed, killed, skipped
    if task.metric is None:
        return f"reported no {spec.metric}"
    if not math.isfinite(task.metric):
        return f"reported {spec.metric} = {task.metric}"
    return None


def _decide(spec: SweepSpec, n: int, stage: list[TaskRecord]) -> Expansion:
    name = spec.stages[n - 1].name
    why = {t.id: w for t in stage if (w := _unranked_why(spec, t)) is not None}
    updates = {tid: {"rank": None, "promoted": False, "note": f"not ranked: {w}"} for tid, w in why.items()}
    sign = -1 if spec.goal == "max" else 1
    # Ties go to the earlier trial, so the order is the same however often the rule runs.
    ranked = sorted((t for t in stage if t.id not in why), key=lambda t: (sign * t.metric, _trial_number(t)))
    if not ranked:
        tally = ", ".join(f"{c} {w}" for w, c in Counter(why.values()).items())
        return Expansion(
            updates=updates, failed=f"stage {name}: no trial was ranked ({tally}); the sweep cannot go on"
        )
    for r, t in enumerate(ranked, 1):
        # Promoted: seeds the next stage. The last stage has none: its ranking is the sweep's result.
        promoted = r <= spec.top_k and n < len(spec.stages)
        updates[t.id] = {"rank": r, "promoted": promoted, "note": _ranked_note(spec, n, r)}
    last = n == len(spec.stages)
    promoted = ranked[: spec.top_k]
    message = _ranked_message(spec, name, ranked, promoted, why, last)
    new = [] if last else _next_trials(spec, n + 1, promoted)
    return Expansion(new=new, updates=updates, events=[(None, "ranked", message)])


def _ranked_note(spec: SweepSpec, n: int, rank: int) -> str | None:
    if n == len(spec.stages):
        return "best of the sweep" if rank == 1 else None
    return f"promoted to {spec.stages[n].name}" if rank <= spec.top_k else None


def _ranked_message(
    spec: SweepSpec,
    name: str,
    ranked: list[TaskRecord],
    promoted: list[TaskRecord],
    why: dict[str, str],
    last: bool,
) -> str:
    """E.g. 'stage task1: 3 trials ranked by val_acc (max); promoted task1-2 (0.93), task1-0 (0.91)'."""
    plural = "trial" if len(ranked) == 1 else "trials"
    best = ", ".join(f"{t.id} ({t.metric:.6g})" for t in promoted)
    parts = [f"stage {name}: {len(ranked)} {plural} ranked by {spec.metric} ({spec.goal})"]
    parts.append(f"top {len(promoted)}: {best}; the sweep is complete" if last else f"promoted {best}")
    for a, b in itertools.pairwise(ranked):
        if a.metric == b.metric:
            parts.append(f"{a.id} and {b.id} tie at {a.metric:.6g}: the earlier trial ranks higher")
    if why:
        parts.append("not ranked: " + ", ".join(f"{tid} ({w})" for tid, w in why.items()))
    if len(ranked) < spec.top_k:
        parts.append(f"only {len(ranked)} of top_k={spec.top_k} ranked: promoted what there is")
    return "; ".join(parts)


def _next_trials(spec: SweepSpec, stage_index: int, parents: list[TaskRecord]) -> list[NewTask]:
    """Each parameter set of the next stage on top of each promoted trial, best parent first."""
    stage = spec.stages[stage_index - 1]
    new = []
    for parent in parents:
        output = str(parent.info["output_dir"])
        trials_dir = Path(output).parent  # run_dir / "trials": the rule is not told the run directory
        for own in stage.params:
            params, inherited = promoted_params(parent.info.get("params") or {}, own, stage.inherit)
            new.append(_trial(stage, stage_index, len(new), params, parent.id, output, trials_dir, inherited))
    return new


# --------------------------------------------------------------------------------------------------
# Reading trials


def best_chain(tasks: Sequence[TaskRecord]) -> list[TaskRecord]:
    """The best trial of the last ranked stage, then its parent, and so on back to stage 1 (last first)."""
    trials = [t for t in tasks if t.kind == TRIAL]
    ranked = [t for t in trials if t.rank is not None]
    if not ranked:
        return []
    by_id = {t.id: t for t in trials}
    chain = [min(ranked, key=lambda t: (-_stage_index(t), t.rank))]
    while (parent := by_id.get(chain[-1].info.get("parent_id") or "")) is not None and parent not in chain:
        chain.append(parent)
    return chain


def trial_values(task: TaskRecord | NewTask) -> dict[str, object]:
    """The placeholder values of a trial's command: its parameters and the sweep's built-ins."""
    info = task.info
    params = dict(info.get("params") or {})
    return {
        **params,
        "stage": info.get("stage", ""),
        "stage_index": info.get("stage_index", 0),
        "trial_id": task.id,
        "parent_output": info.get("parent_output") or "",
        "parent_id": info.get("parent_id") or "",
        "output_dir": info.get("output_dir", ""),
        "params_json": json.dumps(params, sort_keys=True),
    }


def trial_metric(spec: SweepSpec, attempt: AttemptOutput) -> float | None:
    """A trial's metric: of the values of `metric` it reported through gputui.hooks, else of the matches of
    `[sweep].metric_regex` in its log (its last MiB), the one `[sweep].metric_mode` picks."""
    values = [event.values[spec.metric] for event in read_all(attempt.events) if spec.metric in event.values]
    if not values and spec.metric_regex:
        values = [_number(text) for text in re.findall(spec.metric_regex, attempt.read_log(1 << 20))]
    return pick_metric(values, spec.metric_mode, spec.goal)


def pick_metric(values: Sequence[float | None], mode: str, goal: str) -> float | None:
    """The value that ranks a trial. "last": its last value, None unless finite (a run that ended on NaN is
    not ranked). "best": its best finite value by `goal` ("max" | "min"), as a script that keeps its best
    epoch's model would; None when none is finite."""
    if mode == "last":
        value = values[-1] if values else None
        return value if value is not None and math.isfinite(value) else None
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None
    return max(finite) if goal == "max" else min(finite)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
