"""The "sweep" job kind: stages of trials, each stage seeded by the best trials of the one before.

    [sweep]
    metric = "val_acc"              # what trials are ranked by (reported through gputui.hooks, or matched
    goal = "max"                    # in the log with metric_regex); "max" or "min"
    top_k = 2                       # trials of a stage promoted to seed the next one
    initial = "models/base"         # {parent_output} of the first stage (relative to the job file)
    metric_regex = 'val_acc=([0-9.eE+-]+)'
    [[sweep.stage]]
    name = "task1"
    params = [{ lr = 1e-3 }, { lr = 3e-4 }]
    [[sweep.stage]]
    name = "task2"
    grid = { lr = [1e-3, 3e-4], batch_size = [32, 64] }

Stage 1 runs one trial per parameter set. Once every trial of a stage has settled, the stage is ranked and
the next one runs each parameter set on top of each promoted trial (its output is the new {parent_output}).
Parsing is checked here; the rule (`on_settle`) is pure: it reads tasks and returns what to add and mark.
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
import re
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gputui.jobs.checks import NAME_RE, got, resolve_path, toml_key
from gputui.jobs.kinds import Expansion, NewTask
from gputui.jobs.spec import PLACEHOLDERS
from gputui.jobs.tasks import TRIAL, Status, TaskRecord

SWEEP_PLACEHOLDERS = (
    "stage",
    "stage_index",
    "trial_id",
    "parent_output",
    "parent_id",
    "output_dir",
    "params_json",
)
SWEEP_KEYS = ("metric", "goal", "top_k", "initial", "metric_regex", "stage")
STAGE_KEYS = ("name", "params", "grid")
GOALS = ("max", "min")
STAGE_STRIDE = 100_000  # a trial's index is stage_index * STAGE_STRIDE + its number: stages launch in order
_BUILT_INS = frozenset(PLACEHOLDERS) | frozenset(SWEEP_PLACEHOLDERS)


@dataclass(frozen=True)
class StageSpec:
    name: str
    params: tuple[Mapping[str, str | int | float | bool], ...]  # one trial per set (per promoted parent)


@dataclass(frozen=True)
class SweepSpec:
    metric: str
    goal: str  # "max" | "min"
    top_k: int
    initial: str | None  # absolute path: {parent_output} of stage 1's trials
    metric_regex: str | None  # exactly one group: the metric's value in a log line
    stages: tuple[StageSpec, ...]


# --------------------------------------------------------------------------------------------------
# Parsing


def check_keys(loader: Any, table: Mapping[str, Any], allowed: Sequence[str], keypath: str) -> None:
    """Raise on the first key not in `allowed`, with a did-you-mean hint (a typo would be silently ignored)."""
    for key in table:
        if key in allowed:
            continue
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"expected one of: {', '.join(allowed)}"
        raise loader.error(f"{keypath}.{toml_key(key)}", f"unknown key; {hint}")


def parse_sweep(loader: Any, table: dict[str, Any]) -> SweepSpec:
    """[sweep] (data["sweep"]) as a SweepSpec; `loader` is jobs.loader.Loader (error, value, base)."""
    check_keys(loader, table, SWEEP_KEYS, "[sweep]")
    metric = loader.value(
        table, "sweep", "metric", "str", missing='the metric trials are ranked by, e.g. "val_acc"'
    )
    goal = loader.value(table, "sweep", "goal", "str", default="max")
    if goal not in GOALS:
        raise loader.error("[sweep].goal", f"expected 'max' or 'min', {got(goal)}")
    top_k = loader.value(table, "sweep", "top_k", "int>=1", default=1)
    initial = loader.value(table, "sweep", "initial", "str", default=None)
    if initial is not None:
        initial = str(resolve_path(initial, loader.base))
    metric_regex = loader.value(table, "sweep", "metric_regex", "str", default=None)
    if metric_regex is not None:
        _check_regex(loader, metric_regex)
    return SweepSpec(
        metric=metric,
        goal=goal,
        top_k=top_k,
        initial=initial,
        metric_regex=metric_regex,
        stages=_parse_stages(loader, table.get("stage"), top_k),
    )


def _check_regex(loader: Any, pattern: str) -> None:
    """The regex must compile and capture exactly the number, so the metric read from a log is unambiguous."""
    try:
        groups = re.compile(pattern).groups
    except re.error as e:
        raise loader.error("[sweep].metric_regex", f"bad regular expression {pattern!r}: {e}") from None
    if groups != 1:
        raise loader.error(
            "[sweep].metric_regex",
            f"expected exactly one group (...) around the metric's value (write (?:...) for any other), "
            f"got {groups} groups in {pattern!r}",
        )


def _parse_stages(loader: Any, raw: object, top_k: int) -> tuple[StageSpec, ...]:
    if raw is None or raw == []:
        raise loader.error(
            "[[sweep.stage]]",
            "missing; expected at least one [[sweep.stage]] table with a name and params or grid",
        )
    if not isinstance(raw, list) or not all(isinstance(s, dict) for s in raw):
        raise loader.error("[sweep].stage", f"expected [[sweep.stage]] tables, {got(raw)}")
    stages: list[StageSpec] = []
    for n, table in enumerate(raw, 1):
        stage = _parse_stage(loader, table, n)
        previous = next((i for i, s in enumerate(stages, 1) if s.name == stage.name), None)
        if previous is not None:
            raise loader.error(
                f"[[sweep.stage]] {n}.name", f"expected a unique name, got {stage.name!r} (stage {previous} too)"
            )
        # Later stages run each parameter set once per promoted trial of the stage before.
        trials = len(stage.params) * (1 if n == 1 else top_k)
        if trials > STAGE_STRIDE:
            raise loader.error(
                f"[[sweep.stage]] {n} ({stage.name})", f"would run {trials} trials; at most {STAGE_STRIDE} a stage"
            )
        stages.append(stage)
    return tuple(stages)


def _parse_stage(loader: Any, table: dict[str, Any], n: int) -> StageSpec:
    where = f"[[sweep.stage]] {n}"
    check_keys(loader, table, STAGE_KEYS, where)
    name = table.get("name")
    if name is None:
        raise loader.error(f"{where}.name", "missing; expected a stage name (letters, digits, '.', '_', '-')")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise loader.error(f"{where}.name", f"expected only letters, digits, '.', '_' or '-', {got(name)}")
    where = f"{where} ({name})"
    if ("params" in table) == ("grid" in table):
        which = "both are set" if "params" in table else "neither is set"
        raise loader.error(where, f"set exactly one of params or grid ({which})")
    if "params" in table:
        return StageSpec(name, _parse_params(loader, table["params"], f"{where}.params"))
    return StageSpec(name, _parse_grid(loader, table["grid"], f"{where}.grid"))


def _parse_params(loader: Any, raw: object, keypath: str) -> tuple[dict, ...]:
    if not isinstance(raw, list) or not raw:
        raise loader.error(keypath, f"expected a non-empty array of tables like [{{ lr = 1e-3 }}], {got(raw)}")
    sets = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise loader.error(
                f"{keypath}[{i}]", f"expected a table of parameters like {{ lr = 1e-3 }}, {got(item)}"
            )
        for key, value in item.items():
            _check_name(loader, f"{keypath}[{i}].{toml_key(key)}", key)
            _check_value(loader, f"{keypath}[{i}].{toml_key(key)}", value)
        sets.append(dict(item))
    return tuple(sets)


def _parse_grid(loader: Any, raw: object, keypath: str) -> tuple[dict, ...]:
    """Every combination, in key order with the last key varying fastest (itertools.product's order)."""
    if not isinstance(raw, dict) or not raw:
        raise loader.error(keypath, f"expected a table of arrays like {{ lr = [1e-3, 3e-4] }}, {got(raw)}")
    for key, values in raw.items():
        kp = f"{keypath}.{toml_key(key)}"
        _check_name(loader, kp, key)
        if not isinstance(values, list) or not values:
            raise loader.error(kp, f"expected a non-empty array of values, {got(values)}")
        for i, value in enumerate(values):
            _check_value(loader, f"{kp}[{i}]", value)
    size = math.prod(len(v) for v in raw.values())
    if size > STAGE_STRIDE:  # before expanding: a typo'd grid must not eat the memory
        raise loader.error(keypath, f"would run {size} trials; at most {STAGE_STRIDE} a stage")
    names = list(raw)
    return tuple(dict(zip(names, combo, strict=True)) for combo in itertools.product(*raw.values()))


def _check_name(loader: Any, keypath: str, name: str) -> None:
    """A parameter is a placeholder: a plain name that leaves the built-in ones alone."""
    if not name.isidentifier():
        raise loader.error(
            keypath, "expected a name usable as a placeholder (letters, digits and _, not starting with a digit)"
        )
    if name in _BUILT_INS:
        raise loader.error(keypath, f"shadows the built-in placeholder {{{name}}}; choose another name")


def _check_value(loader: Any, keypath: str, value: object) -> None:
    finite = not isinstance(value, float) or math.isfinite(value)  # info is JSON: no NaN or Inf
    if not isinstance(value, str | int | float | bool) or not finite:
        raise loader.error(keypath, f"expected a string, finite number or boolean, {got(value)}")


def check_command(
    loader: Any, spec: SweepSpec, used: set[str], keypath: str, defaults: Collection[str] = ()
) -> None:
    """Every parameter the command uses must be set by every parameter set of every stage, or a trial would
    fail to start mid-sweep. `defaults`: names with a value anyway (the [params] names)."""
    names = {name for stage in spec.stages for p in stage.params for name in p}
    for name in sorted((used & names) - set(defaults)):
        for stage in spec.stages:
            for i, params in enumerate(stage.params):
                if name not in params:
                    has = ", ".join(params) or "no parameters"
                    raise loader.error(
                        keypath,
                        f"uses {{{name}}}, which stage {stage.name} does not set (its parameter set {i + 1} "
                        f"has {has}); set it in every stage, or give it a default in [params]",
                    )


# --------------------------------------------------------------------------------------------------
# The rule


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
    return NewTask(id=trial_id, index=stage_index * STAGE_STRIDE + i, kind=TRIAL, info=info)


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
        for params in stage.params:
            new.append(_trial(stage, stage_index, len(new), params, parent.id, output, trials_dir))
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
