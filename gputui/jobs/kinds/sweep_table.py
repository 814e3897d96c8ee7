"""The "sweep" job kind: stages of trials, each stage seeded by the best trials of the one before.

    [sweep]
    metric = "val_acc"              # what trials are ranked by (reported through gputui.hooks, or matched
    goal = "max"                    # in the log with metric_regex); "max" or "min"
    top_k = 2                       # trials of a stage promoted to seed the next one
    initial = "models/base"         # {parent_output} of the first stage (relative to the job file)
    metric_regex = 'val_acc=([0-9.eE+-]+)'
    metric_mode = "best"            # a trial's best value over its attempt ranks it ("last": its last value)
    [[sweep.stage]]
    name = "task1"
    params = [{ lr = 1e-3 }, { lr = 3e-4 }]
    [[sweep.stage]]
    name = "task2"
    grid = { lr = [1e-3, 3e-4], batch_size = [32, 64] }
    [[sweep.stage]]
    name = "long"
    inherit = true                  # each trial runs with its parent's params, updated by these
    params = [{ epochs = 3 }]

Stage 1 runs one trial per parameter set. Once every trial of a stage has settled, the stage is ranked and
the next one runs each parameter set on top of each promoted trial (its output is the new {parent_output}).
The table is read and checked here; the rule is in sweep_rule.py, the kind in sweep.py.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from gputui.jobs.checks import NAME_RE, Checks, got, resolve_path, toml_key
from gputui.jobs.spec import PLACEHOLDERS

SWEEP_PLACEHOLDERS = (
    "stage",
    "stage_index",
    "trial_id",
    "parent_output",
    "parent_id",
    "output_dir",
    "params_json",
)
SWEEP_KEYS = ("metric", "goal", "top_k", "initial", "metric_regex", "metric_mode", "stage")
STAGE_KEYS = ("name", "params", "grid", "inherit")
GOALS = ("max", "min")
METRIC_MODES = ("best", "last")  # the first is the default
STAGE_STRIDE = 100_000  # a trial's index is stage_index * STAGE_STRIDE + its number: stages launch in order
_BUILT_INS = frozenset(PLACEHOLDERS) | frozenset(SWEEP_PLACEHOLDERS)


@dataclass(frozen=True)
class StageSpec:
    name: str
    params: tuple[Mapping[str, str | int | float | bool], ...]  # one trial per set (per promoted parent)
    inherit: bool = False  # its trials run with their parent's params, updated by their own set


@dataclass(frozen=True)
class SweepSpec:
    metric: str
    goal: str  # "max" | "min"
    top_k: int
    initial: str | None  # absolute path: {parent_output} of stage 1's trials
    metric_regex: str | None  # exactly one group: the metric's value in a log line
    stages: tuple[StageSpec, ...]
    metric_mode: str = METRIC_MODES[0]  # "best" (by goal) | "last": which of a trial's values ranks it


def parse_sweep(checks: Checks, table: dict[str, Any]) -> SweepSpec:
    """[sweep] (data["sweep"]) as a SweepSpec."""
    checks.check_keys(table, "[sweep]", SWEEP_KEYS)
    metric = checks.value(
        table, "sweep", "metric", "str", missing='the metric trials are ranked by, e.g. "val_acc"'
    )
    goal = checks.value(table, "sweep", "goal", "str", default="max")
    if goal not in GOALS:
        raise checks.error("[sweep].goal", f"expected 'max' or 'min', {got(goal)}")
    top_k = checks.value(table, "sweep", "top_k", "int>=1", default=1)
    initial = checks.value(table, "sweep", "initial", "str", default=None)
    if initial is not None:
        initial = str(resolve_path(initial, checks.base))
    metric_regex = checks.value(table, "sweep", "metric_regex", "str", default=None)
    if metric_regex is not None:
        _check_regex(checks, metric_regex)
    metric_mode = checks.value(table, "sweep", "metric_mode", "str", default=METRIC_MODES[0])
    if metric_mode not in METRIC_MODES:
        raise checks.error("[sweep].metric_mode", f"expected 'best' or 'last', {got(metric_mode)}")
    return SweepSpec(
        metric=metric,
        goal=goal,
        top_k=top_k,
        initial=initial,
        metric_regex=metric_regex,
        stages=_parse_stages(checks, table.get("stage"), top_k),
        metric_mode=metric_mode,
    )


def _check_regex(checks: Checks, pattern: str) -> None:
    """The regex must compile and capture exactly the number, so the metric read from a log is unambiguous."""
    try:
        groups = re.compile(pattern).groups
    except re.error as e:
        raise checks.error("[sweep].metric_regex", f"bad regular expression {pattern!r}: {e}") from None
    if groups != 1:
        raise checks.error(
            "[sweep].metric_regex",
            f"expected exactly one group (...) around the metric's value (write (?:...) for any other), "
            f"got {groups} groups in {pattern!r}",
        )


def _parse_stages(checks: Checks, raw: object, top_k: int) -> tuple[StageSpec, ...]:
    if raw is None or raw == []:
        raise checks.error(
            "[[sweep.stage]]",
            "missing; expected at least one [[sweep.stage]] table with a name and params or grid",
        )
    if not isinstance(raw, list) or not all(isinstance(s, dict) for s in raw):
        raise checks.error("[sweep].stage", f"expected [[sweep.stage]] tables, {got(raw)}")
    stages: list[StageSpec] = []
    for n, table in enumerate(raw, 1):
        stage = _parse_stage(checks, table, n)
        previous = next((i for i, s in enumerate(stages, 1) if s.name == stage.name), None)
        if previous is not None:
            raise checks.error(
                f"[[sweep.stage]] {n}.name", f"expected a unique name, got {stage.name!r} (stage {previous} too)"
            )
        # Later stages run each parameter set once per promoted trial of the stage before.
        trials = len(stage.params) * (1 if n == 1 else top_k)
        if trials > STAGE_STRIDE:
            raise checks.error(
                f"[[sweep.stage]] {n} ({stage.name})", f"would run {trials} trials; at most {STAGE_STRIDE} a stage"
            )
        stages.append(stage)
    return tuple(stages)


def _parse_stage(checks: Checks, table: dict[str, Any], n: int) -> StageSpec:
    where = f"[[sweep.stage]] {n}"
    checks.check_keys(table, where, STAGE_KEYS)
    name = table.get("name")
    if name is None:
        raise checks.error(f"{where}.name", "missing; expected a stage name (letters, digits, '.', '_', '-')")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise checks.error(f"{where}.name", f"expected only letters, digits, '.', '_' or '-', {got(name)}")
    where = f"{where} ({name})"
    if ("params" in table) == ("grid" in table):
        which = "both are set" if "params" in table else "neither is set"
        raise checks.error(where, f"set exactly one of params or grid ({which})")
    inherit = table.get("inherit", False)
    if not isinstance(inherit, bool):
        raise checks.error(f"{where}.inherit", f"expected true or false, {got(inherit)}")
    if inherit and n == 1:
        raise checks.error(f"{where}.inherit", "the first stage has no parent trials to inherit params from")
    if "params" in table:
        return StageSpec(name, _parse_params(checks, table["params"], f"{where}.params"), inherit)
    return StageSpec(name, _parse_grid(checks, table["grid"], f"{where}.grid"), inherit)


def _parse_params(checks: Checks, raw: object, keypath: str) -> tuple[dict, ...]:
    if not isinstance(raw, list) or not raw:
        raise checks.error(keypath, f"expected a non-empty array of tables like [{{ lr = 1e-3 }}], {got(raw)}")
    sets = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise checks.error(
                f"{keypath}[{i}]", f"expected a table of parameters like {{ lr = 1e-3 }}, {got(item)}"
            )
        for key, value in item.items():
            _check_name(checks, f"{keypath}[{i}].{toml_key(key)}", key)
            _check_value(checks, f"{keypath}[{i}].{toml_key(key)}", value)
        sets.append(dict(item))
    return tuple(sets)


def _parse_grid(checks: Checks, raw: object, keypath: str) -> tuple[dict, ...]:
    """Every combination, in key order with the last key varying fastest (itertools.product's order)."""
    if not isinstance(raw, dict) or not raw:
        raise checks.error(keypath, f"expected a table of arrays like {{ lr = [1e-3, 3e-4] }}, {got(raw)}")
    for key, values in raw.items():
        kp = f"{keypath}.{toml_key(key)}"
        _check_name(checks, kp, key)
        if not isinstance(values, list) or not values:
            raise checks.error(kp, f"expected a non-empty array of values, {got(values)}")
        for i, value in enumerate(values):
            _check_value(checks, f"{kp}[{i}]", value)
    size = math.prod(len(v) for v in raw.values())
    if size > STAGE_STRIDE:  # before expanding: a typo'd grid must not eat the memory
        raise checks.error(keypath, f"would run {size} trials; at most {STAGE_STRIDE} a stage")
    names = list(raw)
    return tuple(dict(zip(names, combo, strict=True)) for combo in itertools.product(*raw.values()))


def _check_name(checks: Checks, keypath: str, name: str) -> None:
    """A parameter is a placeholder: a plain name that leaves the built-in ones alone."""
    if not name.isidentifier():
        raise checks.error(
            keypath, "expected a name usable as a placeholder (letters, digits and _, not starting with a digit)"
        )
    if name in _BUILT_INS:
        raise checks.error(keypath, f"shadows the built-in placeholder {{{name}}}; choose another name")


def _check_value(checks: Checks, keypath: str, value: object) -> None:
    finite = not isinstance(value, float) or math.isfinite(value)  # info is JSON: no NaN or Inf
    if not isinstance(value, str | int | float | bool) or not finite:
        raise checks.error(keypath, f"expected a string, finite number or boolean, {got(value)}")


def check_command(
    checks: Checks, spec: SweepSpec, used: set[str], keypath: str, defaults: Collection[str] = ()
) -> None:
    """Every parameter the command uses must be set for every trial of every stage, or a trial would fail to
    start mid-sweep: by its own parameter set, or (inherit = true) by every trial of the stage before.
    `defaults`: names with a value anyway (the [params] names)."""
    names = {name for stage in spec.stages for p in stage.params for name in p}
    inherited = inherited_names(spec)
    for name in sorted((used & names) - set(defaults)):
        for n, stage in enumerate(spec.stages):
            for i, params in enumerate(stage.params):
                if name not in params and name not in inherited[n]:
                    raise checks.error(keypath, _unset(spec, n, i, name))


def inherited_names(spec: SweepSpec) -> list[set[str]]:
    """Per stage, the parameters each of its trials inherits whatever its parent: those every trial of the
    stage before runs with (none for a stage without inherit = true)."""
    found: list[set[str]] = []
    always: set[str] = set()  # what every trial of the stage before runs with
    for stage in spec.stages:
        found.append(set(always) if stage.inherit else set())
        always = set.intersection(*(set(p) | found[-1] for p in stage.params))
    return found


def _unset(spec: SweepSpec, n: int, i: int, name: str) -> str:
    """Why trial set `i` of stage `n` (0-based) would run without {name}, and the way out. Stages are checked
    in order, so every trial of the stage before a later one named here runs with {name}: inheriting it works."""
    stage = spec.stages[n]
    has = ", ".join(stage.params[i]) or "no parameters"
    head = f"uses {{{name}}}, which stage {stage.name} does not set (its parameter set {i + 1} has {has})"
    if n == 0:
        return f"{head}; set it in every stage, or give it a default in [params]"
    return (
        f"{head}; set inherit = true on stage {stage.name} to run each of its trials with its parent's "
        f"params, or set it in every stage (a default in [params] would run every {stage.name} trial with "
        f"that one value, whatever its parent's)"
    )
