"""The pipeline job kind: parsing [[pipeline.step]], the plan's order, and skipping what a failure strands."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from gputui.jobs.kinds.base import NewTask
from gputui.jobs.kinds.pipeline import (
    PipelineSpec,
    StepSpec,
    on_settle,
    parse_pipeline,
    plan_steps,
    ready,
    step_values,
)
from gputui.jobs.loader import job_checks, load_jobspec
from gputui.jobs.spec import GENERIC_PLACEHOLDERS, JobSpecError
from gputui.jobs.tasks import STEP, Status, TaskRecord

RUN = Path("/runs/p")
KNOWN = [*GENERIC_PLACEHOLDERS, "step", "model"]  # what the job file loader passes: generic names, [params]


def parse(text: str) -> PipelineSpec:
    return parse_pipeline(job_checks("job.toml", Path("/jobs")), tomllib.loads(text)["pipeline"], KNOWN)


def step(name: str, *after: str) -> str:
    deps = ", ".join(f'"{a}"' for a in after)
    return f'[[pipeline.step]]\nname = "{name}"\ncommand = "run {name}"\nafter = [{deps}]\n'


def record(task: NewTask, status: str = Status.PENDING) -> TaskRecord:
    return TaskRecord(
        task.id, task.index, 0, 0, 1, status, 0, 3, (), None, None, None, None, None,
        kind=task.kind, info=task.info, after=task.after,
    )  # fmt: skip


def tasks_of(text: str, **statuses: str) -> list[TaskRecord]:
    return [record(t, statuses.get(t.id, Status.PENDING)) for t in plan_steps(parse(text), RUN)]


def apply(tasks: list[TaskRecord], updates: dict[str, dict]) -> list[TaskRecord]:
    return [dataclasses.replace(t, **updates.get(t.id, {})) for t in tasks]


# --------------------------------------------------------------------------------------------------
# Parsing and the plan


def test_parse_a_step_with_all_its_keys():
    spec = parse(
        '[[pipeline.step]]\nname = "train"\ncommand = "python train.py --out \'{output_dir}\' --m {model}"\n'
        "gpus = 1\n"
        '[[pipeline.step]]\nname = "eval"\ncommand = ["python", "eval.py", "{run_dir}/steps/train", "{step}"]\n'
        'after = ["train", "train"]\n'
    )
    assert spec.steps == (
        StepSpec("train", ("python", "train.py", "--out", "{output_dir}", "--m", "{model}"), 1, ()),
        StepSpec("eval", ("python", "eval.py", "{run_dir}/steps/train", "{step}"), None, ("train",)),
    )


def test_plan_is_topological_with_ties_in_file_order():
    spec = parse(step("eval", "train") + step("train") + step("report", "eval", "train") + step("lint"))
    plan = plan_steps(spec, RUN)
    assert [(t.id, t.index, t.after) for t in plan] == [
        ("train", 0, ()),
        ("eval", 1, ("train",)),
        ("report", 2, ("eval", "train")),
        ("lint", 3, ()),
    ]
    assert plan[1].kind == STEP
    assert plan[1].info == {
        "step": "eval",
        "command": ["run", "eval"],
        "gpus": None,
        "output_dir": str(RUN / "steps" / "eval"),
    }
    assert step_values(plan[1]) == {"step": "eval", "output_dir": str(RUN / "steps" / "eval")}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "[[pipeline.step]]: missing; expected at least one [[pipeline.step]] table with name and command"),
        (step("train", "trian"), "[[pipeline.step]] 1 (train).after: unknown step 'trian'; did you mean 'train'?"),
        (step("a") + step("b", "zzz"), "[[pipeline.step]] 2 (b).after: unknown step 'zzz'; steps: a, b"),
        (step("a") + step("a"), "[[pipeline.step]] 2.name: expected a unique name, got 'a' (step 1 too)"),
        ('[[pipeline.step]]\nname = "a"\n', "[[pipeline.step]] 1 (a).command: missing; expected a command string"),
        (
            '[[pipeline.step]]\nname = "a"\ncommand = "run {outdir}"\n',
            "[[pipeline.step]] 1 (a).command: unknown placeholder {outdir}; did you mean {output_dir}?",
        ),
        (
            '[[pipeline.step]]\nname = "a"\ncommand = ["run", 3]\n',
            "[[pipeline.step]] 1 (a).command[1]: expected a string, got 3 (int)",
        ),
        (
            '[[pipeline.step]]\nname = "a"\ncommand = "run"\ngpus = -1\n',
            "[[pipeline.step]] 1 (a).gpus: expected a non-negative integer, got -1 (int)",
        ),
        (
            '[[pipeline.step]]\nname = "a"\ncommand = "run"\nafter = "b"\n',
            "[[pipeline.step]] 1 (a).after: expected a list of step names like [\"train\"], got 'b' (str)",
        ),
        (
            '[[pipeline.step]]\nname = "a"\ncommand = "run"\nwait = ["b"]\n',
            "[[pipeline.step]] 1.wait: unknown key; expected one of: name, command, gpus, after",
        ),
        (
            '[[pipeline.step]]\nname = "a"\ncomand = "run"\n',
            "[[pipeline.step]] 1.comand: unknown key; did you mean 'command'?",
        ),
        ('[[pipeline.step]]\nname = ".."\ncommand = "run"\n', "[[pipeline.step]] 1.name: expected only letters"),
        ("[pipeline]\nsteps = 1\n", "[pipeline].steps: unknown key; did you mean 'step'?"),
        (
            step("train", "eval") + step("eval", "train"),
            "[[pipeline.step]]: steps wait for each other in a cycle: "
            "train -> eval -> train (each waits for the next)",
        ),
        (step("train", "train"), "[[pipeline.step]]: steps wait for each other in a cycle: train -> train"),
        (  # the cycle is told from its step that comes first in the file, whatever the search found first
            step("a", "c") + step("b", "a") + step("c", "b") + step("d", "c"),
            "[[pipeline.step]]: steps wait for each other in a cycle: a -> c -> b -> a",
        ),
        (step("x", "b") + step("a", "c") + step("b", "a") + step("c", "b"), "in a cycle: a -> c -> b -> a"),
    ],
)
def test_parse_errors_name_the_key_path_and_the_expectation(text, message):
    with pytest.raises(JobSpecError) as e:
        parse(text or "[pipeline]\n")
    assert str(e.value).startswith("job.toml: ") and message in str(e.value), str(e.value)


def test_load_jobspec_wires_a_pipeline(tmp_path):
    (tmp_path / "job.toml").write_text(
        '[job]\nname = "train-eval"\nkind = "pipeline"\n'
        + step("eval", "train").replace("run eval", "python eval.py --model {run_dir}/steps/train")
        + step("train").replace("run train", "python train.py --out {output_dir}")
    )
    job = load_jobspec(tmp_path / "job.toml")
    assert [t.id for t in plan_steps(job.kind_spec, job.run_dir)] == ["train", "eval"]


# --------------------------------------------------------------------------------------------------
# The rule

CHAIN = step("prep") + step("train", "prep") + step("eval", "train") + step("report", "eval") + step("other")


def test_ready_means_every_step_waited_for_is_done():
    tasks = tasks_of(CHAIN, prep=Status.DONE, train=Status.RUNNING)
    by_id = {t.id: t for t in tasks}
    assert ready(by_id["prep"], by_id) and ready(by_id["other"], by_id) and ready(by_id["train"], by_id)
    assert not ready(by_id["eval"], by_id)  # train is running
    del by_id["train"]
    assert not ready(by_id["eval"], by_id)  # a step that is not there is never done


def test_a_failure_skips_every_step_behind_it_naming_the_failed_step():
    tasks = tasks_of(CHAIN, prep=Status.DONE, train=Status.FAILED)
    e = on_settle(PipelineSpec(()), tasks)
    reason = "skipped: step train failed"
    assert e.updates == {
        "eval": {"status": Status.SKIPPED, "reason": reason},
        "report": {"status": Status.SKIPPED, "reason": reason},
    }
    assert e.events == [("eval", "skipped", reason), ("report", "skipped", reason)]
    assert e.new == [] and e.failed is None
    assert not on_settle(PipelineSpec(()), apply(tasks, e.updates))  # idempotent


def test_a_killed_step_skips_its_waiters_retrying_ones_too():
    tasks = tasks_of(CHAIN, prep=Status.KILLED, train=Status.RETRYING)
    e = on_settle(PipelineSpec(()), tasks)
    assert {tid: u["reason"] for tid, u in e.updates.items()} == {
        "train": "skipped: step prep was killed",
        "eval": "skipped: step prep was killed",
        "report": "skipped: step prep was killed",
    }


def test_a_step_behind_an_already_skipped_one_names_the_root_failure():
    tasks = tasks_of(CHAIN, prep=Status.DONE, train=Status.FAILED, eval=Status.SKIPPED)
    e = on_settle(PipelineSpec(()), tasks)
    assert e.updates == {"report": {"status": Status.SKIPPED, "reason": "skipped: step train failed"}}
    # the failed step retried: the step skipped for it waits again, and what waits on that is not skipped
    tasks = tasks_of(CHAIN, prep=Status.DONE, train=Status.PENDING, eval=Status.SKIPPED)
    e = on_settle(PipelineSpec(()), tasks)
    assert e.updates == {"eval": {"status": Status.PENDING, "reason": None}}


def test_a_step_waiting_on_several_names_the_first_broken_one_in_its_after_order():
    text = step("a") + step("b") + step("c", "a", "b") + step("d", "b", "a")
    e = on_settle(PipelineSpec(()), tasks_of(text, a=Status.FAILED, b=Status.KILLED))
    assert e.updates["c"]["reason"] == "skipped: step a failed"
    assert e.updates["d"]["reason"] == "skipped: step b was killed"


def test_nothing_to_skip_while_everything_is_healthy():
    for statuses in ({}, {"prep": Status.DONE, "train": Status.RUNNING}, {"prep": Status.DONE, "train": "paused"}):
        assert not on_settle(PipelineSpec(()), tasks_of(CHAIN, **statuses))
    assert not on_settle(PipelineSpec(()), tasks_of(CHAIN, other=Status.FAILED))  # nobody waits on it
