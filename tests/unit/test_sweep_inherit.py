"""Sweeps whose promoted trials inherit their parent's params (`inherit = true` on a stage), and trial labels
that tell trials apart (inherited params included)."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gputui.jobs.kinds.sweep import sweep_definition
from gputui.jobs.kinds.sweep_rule import first_trials, on_settle, promoted_params, trial_values
from gputui.jobs.kinds.sweep_table import StageSpec, SweepSpec, check_command, inherited_names
from gputui.jobs.loader import job_checks
from gputui.jobs.spec import JobSpecError
from gputui.jobs.tasks import LABEL_WIDTH, TRIAL, trial_label
from tests.unit.test_sweep import BASE, RUN, STAGE, apply, parse, record, settle

DONE = "done"
HALVING = (
    BASE
    + "top_k = 2\n"
    + '[[sweep.stage]]\nname = "short"\ngrid = { lr = [0.01, 0.003], bs = [32, 64] }\n'
    + '[[sweep.stage]]\nname = "long"\ninherit = true\nparams = [{ epochs = 3 }]\n'
)


def loader():
    return job_checks("job.toml", RUN)


def halving(stages: int = 3) -> SweepSpec:
    """short: a grid of lr x bs (epochs 1); long: epochs 3 on top of each parent; longer: epochs 9, one bs."""
    all_stages = (
        StageSpec("short", tuple({"lr": lr, "bs": bs, "epochs": 1} for lr in (0.01, 0.003) for bs in (32, 64))),
        StageSpec("long", ({"epochs": 3},), inherit=True),
        StageSpec("longer", ({"epochs": 9, "bs": 128},), inherit=True),
    )
    return SweepSpec("val_acc", "max", 2, "/models/base", None, all_stages[:stages])


# --------------------------------------------------------------------------------------------------
# Parsing and what a run records


def test_inherit_is_read_per_stage_and_off_by_default():
    s = parse(HALVING)
    assert [(st.name, st.inherit) for st in s.stages] == [("short", False), ("long", True)]
    assert s.stages[1].params == ({"epochs": 3},)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            BASE + '[[sweep.stage]]\nname = "t"\ninherit = true\nparams = [{ lr = 1 }]\n',
            "[[sweep.stage]] 1 (t).inherit: the first stage has no parent trials to inherit params from",
        ),
        (
            BASE + STAGE + '[[sweep.stage]]\nname = "t"\ninherit = "yes"\nparams = [{ lr = 1 }]\n',
            "[[sweep.stage]] 2 (t).inherit: expected true or false, got 'yes' (str)",
        ),
        (
            BASE + STAGE + '[[sweep.stage]]\nname = "t"\ninherits = true\nparams = [{ lr = 1 }]\n',
            "[[sweep.stage]] 2.inherits: unknown key; did you mean 'inherit'?",
        ),
    ],
)
def test_inherit_errors_name_the_key_path(text, message):
    with pytest.raises(JobSpecError) as e:
        parse(text)
    assert str(e.value).startswith(f"job.toml: {message}"), str(e.value)


def test_inherit_is_recorded_only_when_true_so_turning_it_on_changes_the_plan():
    """A job file without inherit keeps the fingerprint its runs recorded; turning it on for a run already
    started is a changed plan (refused), never a mix of trials with and without their parent's params."""
    plain = sweep_definition(halving(2))
    off = dataclasses.replace(halving(2), stages=(halving(2).stages[0], StageSpec("long", ({"epochs": 3},))))
    assert "inherit" not in sweep_definition(off)["stages"]["long"]
    assert plain["stages"]["long"] == {"params": [{"epochs": 3}], "inherit": True}
    assert sweep_definition(off) != plain


# --------------------------------------------------------------------------------------------------
# The loader's check of the command's placeholders


def test_a_placeholder_every_parent_has_is_inherited_not_missing():
    s = parse(HALVING)
    check_command(loader(), s, {"lr", "bs", "epochs"}, "[job].command", defaults=["epochs"])
    with pytest.raises(JobSpecError) as e:
        check_command(loader(), s, {"lr", "bs", "epochs"}, "[job].command")  # short sets no epochs
    assert "uses {epochs}, which stage short does not set" in str(e.value)


def test_without_inherit_the_loader_points_at_inherit_not_at_a_params_default():
    s = parse(HALVING.replace("inherit = true\n", ""))
    with pytest.raises(JobSpecError) as e:
        check_command(loader(), s, {"lr"}, "[job].command")
    assert str(e.value) == (
        "job.toml: [job].command: uses {lr}, which stage long does not set (its parameter set 1 has epochs); "
        "set inherit = true on stage long to run each of its trials with its parent's params, or set it in "
        "every stage (a default in [params] would run every long trial with that one value, whatever its "
        "parent's)"
    )


def test_a_later_stage_missing_a_parameter_is_named_after_the_stages_before_it():
    """Stages are checked in order: a stage named for a missing parameter follows stages whose every trial
    has it, so inheriting it is always a way out."""
    spec = SweepSpec(
        "m",
        "max",
        1,
        None,
        None,
        (
            StageSpec("a", ({"lr": 1, "bs": 1}, {"lr": 2, "bs": 2})),
            StageSpec("b", ({"lr": 3}, {"bs": 4})),
            StageSpec("c", ({"epochs": 3},), inherit=True),
        ),
    )
    with pytest.raises(JobSpecError) as e:
        check_command(loader(), spec, {"bs"}, "[job].command")
    assert "which stage b does not set (its parameter set 1 has lr); set inherit = true on stage b" in str(e.value)
    b_inherits = dataclasses.replace(spec.stages[1], inherit=True)
    inheriting = dataclasses.replace(spec, stages=(spec.stages[0], b_inherits, spec.stages[2]))
    assert inherited_names(inheriting) == [set(), {"lr", "bs"}, {"lr", "bs"}]
    check_command(loader(), inheriting, {"lr", "bs"}, "[job].command")  # b's sets inherit what they lack
    lacking = dataclasses.replace(
        inheriting, stages=(StageSpec("a", ({"lr": 1}, {"bs": 1})), *inheriting.stages[1:])
    )
    assert inherited_names(lacking) == [set(), set(), set()]  # a's trials have lr or bs: b's too
    with pytest.raises(JobSpecError) as e:
        check_command(loader(), lacking, {"lr"}, "[job].command")
    assert "uses {lr}, which stage a does not set (its parameter set 2 has bs)" in str(e.value)


def _expanded(spec: SweepSpec) -> list[list[dict]]:
    """Every parameter set each stage can run with, whichever trials are promoted: a stage with inherit runs
    each of its sets on top of every parameter set of the stage before."""
    stages: list[list[dict]] = []
    for stage in spec.stages:
        if stage.inherit and stages:
            stages.append([{**parent, **own} for parent in stages[-1] for own in stage.params])
        else:
            stages.append([dict(own) for own in stage.params])
    return stages


NAMES = ("a", "b", "c")
param_sets = st.lists(
    st.dictionaries(st.sampled_from(NAMES), st.integers(0, 3), max_size=3), min_size=1, max_size=3
)
stage_specs = st.lists(st.tuples(param_sets, st.booleans()), min_size=1, max_size=4)


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(stages=stage_specs, used=st.sets(st.sampled_from(NAMES)), defaults=st.sets(st.sampled_from(NAMES)))
def test_the_loader_accepts_a_command_exactly_when_every_trial_would_have_its_params(stages, used, defaults):
    spec = SweepSpec(
        "m",
        "max",
        1,
        None,
        None,
        tuple(
            StageSpec(f"s{n}", tuple(sets), inherit=n > 0 and inherit) for n, (sets, inherit) in enumerate(stages)
        ),
    )
    known = {name for sets, _ in stages for p in sets for name in p}  # a name no stage sets is not a param
    fine = all(
        name in p or name in defaults or name not in known
        for sets in _expanded(spec)
        for p in sets
        for name in used
    )
    try:
        check_command(loader(), spec, set(used), "[job].command", defaults=defaults)
    except JobSpecError:
        assert not fine
    else:
        assert fine


# --------------------------------------------------------------------------------------------------
# The rule: params merged at promotion, recorded with the trial


def test_promoted_params_are_the_parents_updated_by_the_stages_own():
    parent = {"lr": 0.01, "bs": 32, "epochs": 1}
    assert promoted_params(parent, {"epochs": 3}, inherit=True) == (
        {"lr": 0.01, "bs": 32, "epochs": 3},
        ["lr", "bs"],
    )
    assert list(promoted_params(parent, {"wd": 0.1}, inherit=True)[0]) == ["lr", "bs", "epochs", "wd"]
    assert promoted_params(parent, {"epochs": 3}, inherit=False) == ({"epochs": 3}, None)  # today's behaviour
    assert promoted_params({}, {"epochs": 3}, inherit=True) == ({"epochs": 3}, [])


def test_promoted_trials_run_with_their_parents_params_down_to_the_grandchildren():
    s = halving(3)
    tasks = [record(t) for t in first_trials(s, RUN)]
    tasks = settle(
        tasks, {"short-0": (DONE, 0.5), "short-1": (DONE, 0.9), "short-2": (DONE, 0.7), "short-3": (DONE, 0.1)}
    )
    e = on_settle(s, tasks)
    assert [(t.id, t.info["parent_id"], t.info["params"], t.info["inherited"]) for t in e.new] == [
        ("long-0", "short-1", {"lr": 0.01, "bs": 64, "epochs": 3}, ["lr", "bs"]),
        ("long-1", "short-2", {"lr": 0.003, "bs": 32, "epochs": 3}, ["lr", "bs"]),
    ]
    assert all(t.kind == TRIAL for t in e.new)
    values = trial_values(e.new[0])
    assert (values["lr"], values["bs"], values["epochs"]) == (0.01, 64, 3)
    assert json.loads(values["params_json"]) == {"lr": 0.01, "bs": 64, "epochs": 3}

    tasks = settle(apply(tasks, e), {"long-0": (DONE, 0.8), "long-1": (DONE, 0.95)})
    e = on_settle(s, tasks)  # longer: its own bs and epochs win, lr comes from the grandparent through long
    assert [(t.id, t.info["parent_id"], t.info["params"], t.info["inherited"]) for t in e.new] == [
        ("longer-0", "long-1", {"lr": 0.003, "bs": 128, "epochs": 9}, ["lr"]),
        ("longer-1", "long-0", {"lr": 0.01, "bs": 128, "epochs": 9}, ["lr"]),
    ]


def test_without_inherit_a_promoted_trial_runs_only_its_stages_params():
    s = dataclasses.replace(halving(2), stages=(halving(2).stages[0], StageSpec("long", ({"epochs": 3},))))
    tasks = settle([record(t) for t in first_trials(s, RUN)], {f"short-{i}": (DONE, i / 10) for i in range(4)})
    new = on_settle(s, tasks).new
    assert [(t.info["params"], "inherited" in t.info) for t in new] == [({"epochs": 3}, False)] * 2


# --------------------------------------------------------------------------------------------------
# Labels


def test_labels_tell_trials_apart_by_their_params_or_their_parent():
    s = halving(2)
    tasks = settle([record(t) for t in first_trials(s, RUN)], {f"short-{i}": (DONE, i / 10) for i in range(4)})
    assert [t.range_label for t in tasks[:2]] == ["short lr=0.01 bs=32 epochs=1", "short lr=0.01 bs=64 epochs=1"]
    inherited = [record(t) for t in on_settle(s, tasks).new]
    assert [t.range_label for t in inherited] == ["long lr=0.003 bs=64 epochs=3", "long lr=0.003 bs=32 epochs=3"]
    plain = dataclasses.replace(s, stages=(s.stages[0], StageSpec("long", ({"epochs": 3},))))
    not_inherited = [record(t) for t in on_settle(plain, tasks).new]
    assert [t.range_label for t in not_inherited] == ["long epochs=3 ← short-3", "long epochs=3 ← short-2"]


def test_labels_inheriting_nothing_name_their_parent():
    info = {"stage": "long", "params": {"lr": 0.1}, "parent_id": "short-2", "inherited": []}
    assert trial_label(info) == "long lr=0.1 ← short-2"  # the stage set every param: only the parent differs
    assert trial_label({"stage": "s", "params": {}}) == "s"


def test_long_labels_leave_out_whole_params_from_the_end_and_keep_the_parent():
    params = {f"param_{i}": 0.001 * i for i in range(10)}
    info = {"stage": "long", "params": params, "parent_id": "short-12"}
    label = trial_label(info)
    assert len(label) <= LABEL_WIDTH and label.startswith("long param_0=0.0 param_1=0.001 ")
    assert label.endswith(" … ← short-12")
    kept = label.removeprefix("long ").removesuffix(" … ← short-12").split(" ")
    assert kept == [f"{k}={v}" for k, v in list(params.items())[: len(kept)]]  # whole params, in order
    path = {"stage": "s", "params": {"data": "/very/long/path/to/a/dataset/on/disk", "lr": 1}}
    assert trial_label(path) == "s data=/very/long/path/to… lr=1"  # one over-long value is cut
    assert trial_label({"stage": "a-very-long-stage-name", "params": {}, "parent_id": "x" * 60}, width=20)


@settings(max_examples=200, deadline=None, database=None)
@given(
    stage=st.text(min_size=1, max_size=30),
    params=st.dictionaries(st.text(min_size=1, max_size=12), st.one_of(st.integers(), st.text(max_size=40))),
    parent=st.one_of(st.none(), st.text(min_size=1, max_size=20)),
    width=st.integers(20, 80),
)
def test_labels_fit_their_width_and_keep_the_stage_first(stage, params, parent, width):
    label = trial_label({"stage": stage, "params": params, "parent_id": parent}, width=width)
    assert len(label) <= width
    if len(stage) + (len(f" ← {parent}") if parent else 0) <= width - 2:
        assert label.startswith(stage)
        if parent:
            assert label.endswith(f" ← {parent}")
