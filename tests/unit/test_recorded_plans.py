"""What the engine records of a plan, the views read: one contract per job kind. Each job is planned and recorded
by `open_for_job` (what a launch does) into a real store, then read back by the RunView the app and its status
lines are built from; its lines must say what the plan said before launch. A run of the real scheduler checks a
sweep's stages to come once it has stopped."""

from __future__ import annotations

import json
from pathlib import Path

from gputui.jobs.kinds.registry import kind_of
from gputui.jobs.kinds.sweep import recorded_stages, sweep_definition
from gputui.jobs.loader import load_jobspec
from gputui.jobs.plans import plan_job
from gputui.rundir.opening import open_for_job
from gputui.tui.widgets.job_rows import RowContext, row_cells
from gputui.views.runview import RunView, planned_run
from gputui.views.waiting import NO_SCHEDULER
from tests.conftest import gputui

TO_COME = [
    "b · 2 param sets × top 2 of a (≤4 trials) · after a is ranked",
    "c · 1 param set × top 2 of b (≤2 trials) · after b is ranked",
]


def sweep_file(folder: Path, command: str = "true {lr}") -> Path:
    """A 3-stage sweep of trials that do nothing (`command`: each trial's)."""
    lines = ["[job]", 'name = "sw"', 'kind = "sweep"', f"command = {json.dumps(command)}", "[sweep]"]
    lines += ['metric = "val_acc"', "top_k = 2"]
    for name, lrs in (("a", [0.1, 0.3, 0.2]), ("b", [0.01, 0.02]), ("c", [0.001])):
        lines += ["[[sweep.stage]]", f'name = "{name}"', f"params = [{', '.join(f'{{ lr = {x} }}' for x in lrs)}]"]
    lines += ["[resources]", "gpus_per_worker = 0", "[retry]", "max_attempts = 1"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sweep.toml").write_text("\n".join(lines) + "\n")
    return folder / "sweep.toml"


def launched(job_file: Path):
    """The job's plan before launch (as the app shows it), and the run's snapshot once the engine recorded it."""
    job = load_jobspec(job_file)
    plan = plan_job(job)
    before = planned_run(job, plan)
    open_for_job(job).close()
    view = RunView(job.run_dir)
    try:
        snap = view.snapshot()
    finally:
        view.close()
    assert set(plan.recorded) <= set(kind_of(job).recorded_keys)  # declared: read back as the kind's
    assert snap.meta.job.kind_facts == plan.recorded and snap.metric == before.metric
    return before, snap


def rows(tasks) -> dict[str, dict[str, str]]:
    """Each task's row as the app's table draws it."""
    context = RowContext("val_acc", {v.task.id: v.task.status for v in tasks})
    return {v.task.id: row_cells(v, 0.0, context=context) for v in tasks}


def test_a_launched_sweep_still_lists_its_stages_to_come(tmp_path):
    """The bug: the engine recorded stages by name, the view read a list, so they vanished at launch."""
    before, snap = launched(sweep_file(tmp_path))
    assert before.to_come == TO_COME
    assert snap.to_come == TO_COME, "what the plan said before launch, the run says after"
    assert [v.task.id for v in snap.tasks] == ["a-0", "a-1", "a-2"]


def test_a_pipelines_recorded_steps_say_what_each_waits_for(tmp_path):
    job = tmp_path / "pipeline.toml"
    steps = [("train", []), ("eval", ["train"]), ("report", ["train", "eval"])]
    lines = ["[job]", 'name = "pl"', 'kind = "pipeline"']
    for name, after in steps:
        lines += [
            "[[pipeline.step]]",
            f'name = "{name}"',
            f'command = "true {name}"',
            f"after = {json.dumps(after)}",
        ]
    job.write_text("\n".join([*lines, "[resources]", "gpus_per_worker = 0"]) + "\n")
    before, snap = launched(job)
    after = {t: (r["after"], r["reason"]) for t, r in rows(snap.tasks).items()}
    assert after == {
        "train": ("", NO_SCHEDULER),  # (recorded, and no scheduler runs it)
        "eval": ("train", "waits for train"),
        "report": ("train, eval", "waits for train, eval"),
    }
    planned = {t: (r["after"], r["reason"]) for t, r in rows(before.tasks).items()}
    assert planned == after | {"train": ("", "")}  # before launch, the plan's first step waits for nothing


def test_a_shard_jobs_recorded_shards_keep_their_ranges(make_job):
    before, snap = launched(make_job(ids=40, num_workers=4))
    ranges = {t: r["range"] for t, r in rows(snap.tasks).items()}
    assert ranges == {"shard-0": "[0, 10)", "shard-1": "[10, 20)", "shard-2": "[20, 30)", "shard-3": "[30, 40)"}
    assert ranges == {t: r["range"] for t, r in rows(before.tasks).items()}


def test_a_sweep_that_stopped_at_its_first_stage_says_its_later_stages_will_not_run(tmp_path):
    """A real scheduler run: every trial of stage a fails, so the sweep stops; b and c are still listed."""
    job = sweep_file(tmp_path, command="false {lr}")
    assert gputui("run", "--jobs", job).returncode == 1
    view = RunView(tmp_path / "runs" / "sw")
    try:
        snap = view.snapshot()
    finally:
        view.close()
    assert {v.task.id: v.task.status for v in snap.tasks} == {"a-0": "failed", "a-1": "failed", "a-2": "failed"}
    assert snap.to_come == [
        "b · 2 param sets × top 2 of a (≤4 trials) · will not run: the sweep stopped",
        "c · 1 param set × top 2 of b (≤2 trials) · will not run: the sweep stopped",
    ]


def test_stages_are_read_in_the_shape_every_run_recorded_and_in_a_list_of_named_stages(tmp_path):
    """Runs started before keep their fingerprints (a digest of the dict by stage name): the reader follows the
    writer, and a list of {name, params} reads the same."""
    spec = load_jobspec(sweep_file(tmp_path)).kind_spec
    recorded = json.loads(json.dumps(sweep_definition(spec)))  # through the store's JSON
    assert list(recorded["stages"]) == ["a", "b", "c"]
    as_list = {**recorded, "stages": [{"name": n, **s} for n, s in recorded["stages"].items()]}
    assert recorded_stages(recorded) == recorded_stages(as_list) == ([("a", 3), ("b", 2), ("c", 1)], 2)
    assert recorded_stages(None) == ([], 1)
