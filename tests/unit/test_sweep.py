"""The sweep job kind: parsing [sweep], and the rule that ranks a stage and plans the next from its best."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

import pytest

from gputui.jobs.kinds.base import AttemptOutput, Expansion, NewTask
from gputui.jobs.kinds.sweep import sweep_definition
from gputui.jobs.kinds.sweep_rule import (
    best_chain,
    first_trials,
    on_settle,
    pick_metric,
    trial_metric,
    trial_values,
)
from gputui.jobs.kinds.sweep_table import SWEEP_PLACEHOLDERS, StageSpec, SweepSpec, check_command, parse_sweep
from gputui.jobs.loader import job_checks, load_jobspec
from gputui.jobs.spec import JobSpecError
from gputui.jobs.tasks import TRIAL, Status, TaskRecord

RUN = Path("/runs/autocl")

SWEEP = """\
[sweep]
metric = "val_acc"
goal = "max"
top_k = 2
initial = "models/base"
metric_regex = 'val_acc=([0-9.eE+-]+)'
[[sweep.stage]]
name = "task1"
params = [{ lr = 1e-3, batch_size = 32 }, { lr = 3e-4, batch_size = 32 }, { lr = 1e-4, batch_size = 16 }]
[[sweep.stage]]
name = "task2"
grid = { lr = [1e-3, 3e-4], batch_size = [32, 64] }
"""


def parse(text: str, base: Path = Path("/jobs")) -> SweepSpec:
    return parse_sweep(job_checks("job.toml", base), tomllib.loads(text)["sweep"])


def spec(top_k: int = 2, goal: str = "max", stages: int = 2) -> SweepSpec:
    all_stages = (
        StageSpec("task1", ({"lr": 1}, {"lr": 2}, {"lr": 3})),
        StageSpec("task2", ({"lr": 10}, {"lr": 20})),
        StageSpec("task3", ({"lr": 100},)),
    )
    return SweepSpec("val_acc", goal, top_k, "/models/base", None, all_stages[:stages])


def record(task: NewTask, status: str = Status.PENDING, metric: float | None = None) -> TaskRecord:
    return TaskRecord(
        task.id, task.index, 0, 0, 1, status, 1, 3, (), None, None, None, None, None,
        kind=task.kind, info=task.info, after=task.after, metric=metric,
    )  # fmt: skip


def settle(tasks: list[TaskRecord], results: dict[str, tuple[str, float | None]]) -> list[TaskRecord]:
    """The tasks with the given (status, metric) by id."""
    return [
        dataclasses.replace(t, status=results[t.id][0], metric=results[t.id][1]) if t.id in results else t
        for t in tasks
    ]


def apply(tasks: list[TaskRecord], e: Expansion) -> list[TaskRecord]:
    """What the scheduler does with an Expansion: set the fields, add the new tasks as pending."""
    updated = [dataclasses.replace(t, **e.updates.get(t.id, {})) for t in tasks]
    return updated + [record(n) for n in e.new]


def stage1(results: dict[str, tuple[str, float | None]], **kw) -> tuple[SweepSpec, list[TaskRecord]]:
    s = spec(**kw)
    return s, settle([record(t) for t in first_trials(s, RUN)], results)


DONE, FAILED, KILLED = Status.DONE, Status.FAILED, Status.KILLED


# --------------------------------------------------------------------------------------------------
# Parsing


def test_parse_params_and_grid_in_product_order():
    s = parse(SWEEP)
    assert (s.metric, s.goal, s.top_k, s.metric_regex) == ("val_acc", "max", 2, "val_acc=([0-9.eE+-]+)")
    assert s.initial == str(Path("/jobs/models/base").resolve())
    assert [st.name for st in s.stages] == ["task1", "task2"]
    assert s.stages[0].params[2] == {"lr": 1e-4, "batch_size": 16}
    assert s.stages[1].params == (  # key order, the last key varying fastest
        {"lr": 1e-3, "batch_size": 32},
        {"lr": 1e-3, "batch_size": 64},
        {"lr": 3e-4, "batch_size": 32},
        {"lr": 3e-4, "batch_size": 64},
    )


def test_parse_defaults():
    s = parse('[sweep]\nmetric = "loss"\n[[sweep.stage]]\nname = "a"\nparams = [{ x = "y" }]\n')
    assert (s.goal, s.top_k, s.initial, s.metric_regex) == ("max", 1, None, None)


# --------------------------------------------------------------------------------------------------
# Which value ranks a trial ([sweep].metric_mode)

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("values", "mode", "goal", "expected"),
    [
        ([0.5, 0.9, 0.7], "best", "max", 0.9),  # the best epoch, as a script that keeps its best model
        ([0.5, 0.9, 0.7], "best", "min", 0.5),
        ([0.5, 0.9, 0.7], "last", "max", 0.7),  # what the sweep ranked before metric_mode
        ([0.5, 0.9, 0.7], "last", "min", 0.7),
        ([0.5, NAN, 0.8, INF], "best", "max", 0.8),  # only finite values count
        ([0.5, 0.8, NAN], "last", "max", None),  # ended on NaN: not ranked
        ([NAN, None], "best", "min", None),
        ([0.5, None], "last", "max", None),  # a log match that is no number
        ([], "best", "max", None),
        ([], "last", "max", None),
    ],
)
def test_pick_metric(values, mode, goal, expected):
    assert pick_metric(values, mode, goal) == expected


def test_trial_metric_picks_by_mode_from_hooks_events_else_from_the_log(tmp_path):
    events = tmp_path / "events.jsonl"
    lines = [
        {"event": "metrics", "t": i, "step": i, "values": {"val_acc": v}} for i, v in enumerate([0.6, 0.9, 0.8])
    ]
    events.write_text("".join(json.dumps(line) + "\n" for line in lines))
    log = "epoch 1 val_acc=0.3\nepoch 2 val_acc=0.2\n"
    hooks = AttemptOutput(events, lambda n: log)
    printed = AttemptOutput(tmp_path / "none.jsonl", lambda n: log)
    for goal, mode, from_hooks, from_log in [
        ("max", "best", 0.9, 0.3),
        ("min", "best", 0.6, 0.2),
        ("max", "last", 0.8, 0.2),
    ]:
        s = dataclasses.replace(spec(goal=goal), metric_regex=r"val_acc=([0-9.]+)", metric_mode=mode)
        assert (trial_metric(s, hooks), trial_metric(s, printed)) == (from_hooks, from_log), (goal, mode)


def test_metric_mode_is_recorded_only_when_it_is_not_the_default():
    """A job file without metric_mode keeps the definition (and so the fingerprint) its runs recorded."""
    default = sweep_definition(spec())
    assert "metric_mode" not in default
    assert sweep_definition(dataclasses.replace(spec(), metric_mode="best")) == default
    assert sweep_definition(dataclasses.replace(spec(), metric_mode="last")) == {**default, "metric_mode": "last"}


BASE = '[sweep]\nmetric = "val_acc"\n'
STAGE = '[[sweep.stage]]\nname = "task1"\nparams = [{ lr = 1 }]\n'
TEN = list(range(10))
BIG_GRID = (
    f'[[sweep.stage]]\nname = "t"\ngrid = {{ a = {TEN}, b = {TEN}, c = {TEN}, d = {TEN}, e = {[*TEN, 10]} }}\n'
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (STAGE, "[sweep].metric: missing; expected the metric trials are ranked by"),
        (BASE + 'goal = "maximize"\n' + STAGE, "[sweep].goal: expected 'max' or 'min', got 'maximize' (str)"),
        (BASE + "top_k = 0\n" + STAGE, "[sweep].top_k: expected a positive integer, got 0 (int)"),
        (
            BASE + 'metric_mode = "max"\n' + STAGE,
            "[sweep].metric_mode: expected 'best' or 'last', got 'max' (str)",
        ),
        (BASE + "topk = 2\n" + STAGE, "[sweep].topk: unknown key; did you mean 'top_k'?"),
        (BASE + "metric_regex = '(('\n" + STAGE, "[sweep].metric_regex: bad regular expression '(('"),
        (
            BASE + "metric_regex = 'val_acc=[0-9.]+'\n" + STAGE,
            "[sweep].metric_regex: expected exactly one group (...) around the metric's value",
        ),
        (BASE, "[[sweep.stage]]: missing; expected at least one [[sweep.stage]] table"),
        (
            BASE + '[[sweep.stage]]\nname = "t"\nparams = [{ lr = 1 }]\ngrid = { lr = [1] }\n',
            "[[sweep.stage]] 1 (t): set exactly one of params or grid (both are set)",
        ),
        (BASE + '[[sweep.stage]]\nname = "t"\n', "[[sweep.stage]] 1 (t): set exactly one of params or grid"),
        (
            BASE + STAGE + '[[sweep.stage]]\nname = "task2"\ngrid = { lr = 3 }\n',
            "[[sweep.stage]] 2 (task2).grid.lr: expected a non-empty array of values, got 3 (int)",
        ),
        (
            BASE + '[[sweep.stage]]\nname = "t"\nparams = []\n',
            "[[sweep.stage]] 1 (t).params: expected a non-empty array of tables",
        ),
        (
            BASE + '[[sweep.stage]]\nname = "t"\nparams = [{ stage = 1 }]\n',
            "[[sweep.stage]] 1 (t).params[0].stage: shadows the built-in placeholder {stage}",
        ),
        (
            BASE + '[[sweep.stage]]\nname = "t"\ngrid = { low = [1] }\n',
            "[[sweep.stage]] 1 (t).grid.low: shadows the built-in placeholder {low}",
        ),
        (
            BASE + '[[sweep.stage]]\nname = "t"\nparams = [{ "my-lr" = 1 }]\n',
            "[[sweep.stage]] 1 (t).params[0].my-lr: expected a name usable as a placeholder",
        ),
        (
            BASE + '[[sweep.stage]]\nname = "t"\nparams = [{ lr = [1, 2] }]\n',
            "[[sweep.stage]] 1 (t).params[0].lr: expected a string, finite number or boolean, got [1, 2] (array)",
        ),
        (
            BASE + '[[sweep.stage]]\nname = "t"\ngrid = { lr = [1, nan] }\n',
            "[[sweep.stage]] 1 (t).grid.lr[1]: expected a string, finite number or boolean, got nan (float)",
        ),
        (BASE + STAGE + STAGE, "[[sweep.stage]] 2.name: expected a unique name, got 'task1' (stage 1 too)"),
        (BASE + '[[sweep.stage]]\nname = "a b"\n', "[[sweep.stage]] 1.name: expected only letters, digits"),
        (BASE + "[[sweep.stage]]\nparams = [{ lr = 1 }]\n", "[[sweep.stage]] 1.name: missing"),
        (
            BASE + '[[sweep.stage]]\nname = "t"\nparam = [{ lr = 1 }]\n',
            "[[sweep.stage]] 1.param: unknown key; did you mean 'params'?",
        ),
        (
            BASE + BIG_GRID,
            "[[sweep.stage]] 1 (t).grid: would run 110000 trials; at most 100000 a stage",
        ),
    ],
)
def test_parse_errors_name_the_key_path_and_the_expectation(text, message):
    with pytest.raises(JobSpecError) as e:
        parse(text)
    assert str(e.value).startswith(f"job.toml: {message}"), str(e.value)


def test_later_stages_count_trials_per_promoted_parent():
    text = BASE + "top_k = 2\n" + STAGE + '[[sweep.stage]]\nname = "t2"\ngrid = { a = ' + str(list(range(50_001)))
    with pytest.raises(JobSpecError, match=r"\[\[sweep.stage\]\] 2 \(t2\): would run 100002 trials"):
        parse(text + " }\n")


def test_check_command_names_the_stage_missing_a_parameter():
    s = parse(BASE + STAGE + '[[sweep.stage]]\nname = "task2"\nparams = [{ lr = 1, bs = 2 }, { bs = 3 }]\n')
    loader = job_checks("job.toml", Path("/jobs"))
    check_command(loader, s, {"output_dir", "parent_output", "model"}, "[job].command")  # no parameter used
    with pytest.raises(JobSpecError) as e:
        check_command(loader, s, {"lr", "output_dir"}, "[job].command")
    assert str(e.value) == (
        "job.toml: [job].command: uses {lr}, which stage task2 does not set (its parameter set 2 has bs); "
        "set inherit = true on stage task2 to run each of its trials with its parent's params, or set it in "
        "every stage (a default in [params] would run every task2 trial with that one value, whatever its "
        "parent's)"
    )
    with pytest.raises(JobSpecError, match=r"uses \{bs\}, which stage task1 does not set \(its parameter set 1"):
        check_command(loader, s, {"bs"}, "[job].command")
    check_command(loader, s, {"lr", "bs"}, "[job].command", defaults=["lr", "bs"])  # [params] fills the gaps


def test_load_jobspec_wires_a_sweep(tmp_path):
    (tmp_path / "job.toml").write_text(
        '[job]\nname = "autocl"\nkind = "sweep"\n'
        'command = "python train.py --lr {lr} --bs {batch_size} --init {parent_output} --out {output_dir}"\n'
        + SWEEP
    )
    job = load_jobspec(tmp_path / "job.toml")
    assert job.kind_spec.stages[1].params[1] == {"lr": 1e-3, "batch_size": 64}
    assert job.kind_spec.initial == str((tmp_path / "models/base").resolve())


# --------------------------------------------------------------------------------------------------
# The rule


def test_first_trials_run_stage_one_from_initial():
    trials = first_trials(spec(), RUN)
    assert [(t.id, t.index, t.kind) for t in trials] == [
        ("task1-0", 100_000, TRIAL),
        ("task1-1", 100_001, TRIAL),
        ("task1-2", 100_002, TRIAL),
    ]
    assert trials[1].info == {
        "stage": "task1",
        "stage_index": 1,
        "trial": 1,
        "params": {"lr": 2},
        "parent_id": None,
        "parent_output": "/models/base",
        "output_dir": str(RUN / "trials" / "task1-1"),
    }


def test_nothing_is_decided_until_every_trial_of_the_stage_settled():
    for waiting in (Status.PENDING, Status.RUNNING, Status.RETRYING, Status.PAUSED):
        s, tasks = stage1({"task1-0": (DONE, 0.5), "task1-1": (waiting, None), "task1-2": (DONE, 0.7)})
        assert not on_settle(s, tasks)
    assert not on_settle(spec(), [])


def test_top_k_are_promoted_and_seed_the_next_stage_best_first():
    s, tasks = stage1({"task1-0": (DONE, 0.91), "task1-1": (DONE, 0.80), "task1-2": (DONE, 0.93)})
    e = on_settle(s, tasks)
    assert e.updates == {
        "task1-2": {"rank": 1, "promoted": True, "note": "promoted to task2"},
        "task1-0": {"rank": 2, "promoted": True, "note": "promoted to task2"},
        "task1-1": {"rank": 3, "promoted": False, "note": None},
    }
    assert e.events == [
        (None, "ranked", "stage task1: 3 trials ranked by val_acc (max); promoted task1-2 (0.93), task1-0 (0.91)")
    ]
    assert e.failed is None
    # parents in rank order x parameter sets in file order
    assert [(t.id, t.index, t.info["parent_id"], t.info["params"]) for t in e.new] == [
        ("task2-0", 200_000, "task1-2", {"lr": 10}),
        ("task2-1", 200_001, "task1-2", {"lr": 20}),
        ("task2-2", 200_002, "task1-0", {"lr": 10}),
        ("task2-3", 200_003, "task1-0", {"lr": 20}),
    ]
    assert e.new[2].info == {
        "stage": "task2",
        "stage_index": 2,
        "trial": 2,
        "params": {"lr": 10},
        "parent_id": "task1-0",
        "parent_output": str(RUN / "trials" / "task1-0"),
        "output_dir": str(RUN / "trials" / "task2-2"),
    }
    assert all(t.kind == TRIAL for t in e.new)


def test_goal_min_ranks_the_lowest_first():
    s, tasks = stage1(
        {"task1-0": (DONE, 0.3), "task1-1": (DONE, 0.1), "task1-2": (DONE, 0.2)}, top_k=1, goal="min"
    )
    e = on_settle(s, tasks)
    assert {tid: u["rank"] for tid, u in e.updates.items()} == {"task1-1": 1, "task1-2": 2, "task1-0": 3}
    assert [tid for tid, u in e.updates.items() if u["promoted"]] == ["task1-1"]
    assert e.events[0][2] == "stage task1: 3 trials ranked by val_acc (min); promoted task1-1 (0.1)"
    assert {t.info["parent_id"] for t in e.new} == {"task1-1"}


def test_ties_go_to_the_earlier_trial_and_the_message_says_so():
    s, tasks = stage1({"task1-0": (DONE, 0.5), "task1-1": (DONE, 0.9), "task1-2": (DONE, 0.9)}, top_k=1)
    e = on_settle(s, tasks)
    assert e.updates["task1-1"]["rank"] == 1 and e.updates["task1-2"]["rank"] == 2
    assert e.events[0][2] == (
        "stage task1: 3 trials ranked by val_acc (max); promoted task1-1 (0.9); "
        "task1-1 and task1-2 tie at 0.9: the earlier trial ranks higher"
    )


def test_failed_killed_and_silent_trials_are_not_ranked_and_say_why():
    s, tasks = stage1({"task1-0": (FAILED, None), "task1-1": (KILLED, 0.99), "task1-2": (DONE, None)})
    tasks.append(record(NewTask("task1-3", 100_003, TRIAL, info={**tasks[0].info, "trial": 3}), DONE, 0.4))
    e = on_settle(s, tasks)
    assert e.updates == {
        "task1-0": {"rank": None, "promoted": False, "note": "not ranked: failed"},
        "task1-1": {"rank": None, "promoted": False, "note": "not ranked: killed"},
        "task1-2": {"rank": None, "promoted": False, "note": "not ranked: reported no val_acc"},
        "task1-3": {"rank": 1, "promoted": True, "note": "promoted to task2"},
    }
    assert e.events[0][2] == (
        "stage task1: 1 trial ranked by val_acc (max); promoted task1-3 (0.4); "
        "not ranked: task1-0 (failed), task1-1 (killed), task1-2 (reported no val_acc); "
        "only 1 of top_k=2 ranked: promoted what there is"
    )
    assert [t.info["parent_id"] for t in e.new] == ["task1-3", "task1-3"]


def test_a_non_finite_metric_is_not_ranked():
    s, tasks = stage1({"task1-0": (DONE, float("nan")), "task1-1": (DONE, 0.2), "task1-2": (DONE, float("inf"))})
    e = on_settle(s, tasks)
    assert e.updates["task1-0"]["note"] == "not ranked: reported val_acc = nan"
    assert e.updates["task1-2"]["note"] == "not ranked: reported val_acc = inf"
    assert e.updates["task1-1"]["rank"] == 1


def test_a_stage_with_no_ranked_trial_fails_the_sweep():
    s, tasks = stage1({"task1-0": (FAILED, None), "task1-1": (DONE, None), "task1-2": (FAILED, None)})
    e = on_settle(s, tasks)
    assert e.failed == "stage task1: no trial was ranked (2 failed, 1 reported no val_acc); the sweep cannot go on"
    assert e.new == []
    assert e.updates["task1-1"] == {"rank": None, "promoted": False, "note": "not ranked: reported no val_acc"}
    assert not on_settle(s, apply(tasks, e))  # decided once: the failure is not reported again


def test_the_rule_is_idempotent_through_the_whole_sweep():
    s, tasks = stage1({"task1-0": (DONE, 0.91), "task1-1": (DONE, 0.80), "task1-2": (DONE, 0.93)})
    e1 = on_settle(s, tasks)
    tasks = apply(tasks, e1)
    assert not on_settle(s, tasks)  # applied: stage 1 is decided, stage 2 is waiting
    tasks = settle(tasks, {"task2-0": (DONE, 0.95)})
    assert not on_settle(s, tasks)  # stage 2 not settled yet
    tasks = settle(tasks, {"task2-1": (DONE, 0.97), "task2-2": (FAILED, None), "task2-3": (DONE, 0.96)})
    e2 = on_settle(s, tasks)
    assert e2.new == [] and e2.failed is None  # the last stage: ranked, and the sweep is complete
    assert e2.events == [
        (
            None,
            "ranked",
            "stage task2: 3 trials ranked by val_acc (max); top 2: task2-1 (0.97), task2-3 (0.96); "
            "the sweep is complete; not ranked: task2-2 (failed)",
        )
    ]
    assert e2.updates["task2-1"] == {"rank": 1, "promoted": False, "note": "best of the sweep"}  # seeds nothing
    tasks = apply(tasks, e2)
    assert not on_settle(s, tasks)
    assert [t.id for t in best_chain(tasks)] == ["task2-1", "task1-2"]


def test_three_stages_chain_back_to_stage_one():
    s, tasks = stage1({"task1-0": (DONE, 0.1), "task1-1": (DONE, 0.3), "task1-2": (DONE, 0.2)}, top_k=1, stages=3)
    assert best_chain(tasks) == []  # nothing ranked yet
    tasks = apply(tasks, on_settle(s, tasks))
    tasks = settle(tasks, {"task2-0": (DONE, 0.5), "task2-1": (DONE, 0.6)})
    e = on_settle(s, tasks)
    assert [(t.id, t.info["parent_id"]) for t in e.new] == [("task3-0", "task2-1")]
    tasks = apply(tasks, e)
    assert [t.id for t in best_chain(tasks)] == ["task2-1", "task1-1"]  # stage 3 is not ranked yet
    tasks = settle(tasks, {"task3-0": (DONE, 0.7)})
    tasks = apply(tasks, on_settle(s, tasks))
    assert [t.id for t in best_chain(tasks)] == ["task3-0", "task2-1", "task1-1"]


def test_trial_values_fill_every_sweep_placeholder():
    s, tasks = stage1({"task1-0": (DONE, 0.9), "task1-1": (DONE, 0.1), "task1-2": (DONE, 0.2)}, top_k=1)
    first = trial_values(tasks[0])
    assert first == {
        "lr": 1,
        "stage": "task1",
        "stage_index": 1,
        "trial_id": "task1-0",
        "parent_output": "/models/base",
        "parent_id": "",
        "output_dir": str(RUN / "trials" / "task1-0"),
        "params_json": '{"lr": 1}',
    }
    assert set(SWEEP_PLACEHOLDERS) <= set(first)
    child = trial_values(on_settle(s, tasks).new[1])  # a NewTask works too
    assert (child["parent_id"], child["parent_output"]) == ("task1-0", str(RUN / "trials" / "task1-0"))
    assert json.loads(child["params_json"]) == {"lr": 20}
    no_initial = dataclasses.replace(s, initial=None)
    assert trial_values(first_trials(no_initial, RUN)[0])["parent_output"] == ""
