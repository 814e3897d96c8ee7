"""The job-kind protocol as a contract: every kind in the registry is found by its name, its table and its tasks;
what each kind's plan records when a run opens, the views read back as the plan said before launch; and a kind
registered here, in a test, runs through the loader, the plan, the worker's command, the run directory and the
views without a line of gputui naming it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from gputui.engine.launcher import worker_request
from gputui.jobs.checks import Checks
from gputui.jobs.kinds import registry
from gputui.jobs.kinds.base import Columns, JobKind, NewTask, Plan, Recorded, TaskValues, digest
from gputui.jobs.kinds.registry import KINDS, for_task, for_tasks, named
from gputui.jobs.loader import job_tables, load_jobspec
from gputui.jobs.plans import plan_job
from gputui.jobs.spec import GENERIC_PLACEHOLDERS, JobSpec
from gputui.jobs.tasks import TaskRecord
from gputui.results.report import build_summary, render_report
from gputui.rundir.opening import open_for_job
from gputui.tui.widgets.job_rows import RowContext, row_cells
from gputui.views.kinds import ranked_by, table_columns
from gputui.views.runview import RunView, planned_run
from gputui.views.status_view import status_table

TABLES = {
    "shards": '[shards]\ninput = "ids.csv"\nnum_workers = 2\n',
    "sweep": '[sweep]\nmetric = "acc"\ntop_k = 2\n[[sweep.stage]]\nname = "a"\nparams = [{ lr = 1 }, { lr = 2 }]\n'
    '[[sweep.stage]]\nname = "b"\nparams = [{ lr = 3 }]\n',
    "pipeline": '[[pipeline.step]]\nname = "train"\ncommand = "true train"\n[[pipeline.step]]\nname = "eval"\n'
    'command = "true eval"\nafter = ["train"]\n',
}
COMMANDS = {"shards": "true {low} {high}", "sweep": "true {lr}", "pipeline": None}


def job_file(folder: Path, kind: str, table: str, command: str | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ids.csv").write_text("data_id\n" + "".join(f"{i}\n" for i in range(6)))
    lines = ["[job]", 'name = "k"', f'kind = "{kind}"']
    if command is not None:
        lines.append(f"command = {json.dumps(command)}")
    lines += ["[resources]", "gpus_per_worker = 0", table]
    (folder / "job.toml").write_text("\n".join(lines) + "\n")
    return folder / "job.toml"


def recorded_and_read(job: JobSpec):
    """The plan before launch, the run's meta once open_for_job recorded it, and its snapshot."""
    before = planned_run(job, plan_job(job))
    open_for_job(job).close()
    view = RunView(job.run_dir)
    try:
        return before, view.snapshot()
    finally:
        view.close()


def test_every_kind_is_found_by_its_name_its_table_and_its_tasks():
    assert list(KINDS) == ["shards", "sweep", "pipeline"] and registry.DEFAULT is KINDS["shards"]
    assert len({k.table for k in KINDS.values()}) == len({k.task_kind for k in KINDS.values()}) == len(KINDS)
    for name, kind in KINDS.items():
        assert kind.name == name and named(name) is kind and for_task(kind.task_kind) is kind
        assert kind.table in job_tables() and job_tables()[kind.table] == kind.table_keys
        assert for_tasks([kind.task_kind]) is kind
    assert named(None) is named("no such kind") is for_task(None) is for_tasks([]) is registry.DEFAULT


@pytest.mark.parametrize("name", list(TABLES))
def test_what_a_kind_records_the_views_read_as_its_plan_said(tmp_path, name):
    job = load_jobspec(job_file(tmp_path, name, TABLES[name], COMMANDS[name]))
    kind, plan = KINDS[name], plan_job(job)
    assert {t.kind for t in plan.tasks} == {kind.task_kind}
    before, snap = recorded_and_read(job)
    assert [(v.task.id, v.task.kind, dict(v.task.info)) for v in snap.tasks] == [
        (t.id, t.kind, json.loads(json.dumps(t.info))) for t in plan.tasks
    ]
    # what the kind keeps for its readers, as it wrote it: its own facts, by names it declares
    assert snap.meta.job.kind_facts == json.loads(json.dumps(plan.recorded))
    assert set(plan.recorded) <= set(kind.recorded_keys)
    assert snap.meta.identity.plan_definition == json.loads(json.dumps(plan.definition))
    assert snap.to_come == before.to_come, "what the plan said before launch, the run says after"
    assert ranked_by(snap.meta) == snap.metric == before.metric == (kind.ranking(job.kind_spec) or (None,))[0]
    assert snap.chart == (kind.charts, kind.chart_first)
    assert before.noun == kind.noun and table_columns(v.task.kind for v in snap.tasks) == kind.columns
    context = RowContext(before.metric, {v.task.id: v.task.status for v in snap.tasks})
    for v in snap.tasks:  # every column the kind lists has its cell
        assert set(kind.columns.fitted) <= set(row_cells(v, 0.0, context=context))
    assert status_table([v.task for v in snap.tasks], [], now=0.0).columns[1].header == kind.covers


def test_a_sweeps_record_reads_back_its_stages_to_come_and_its_metric(tmp_path):
    job = load_jobspec(job_file(tmp_path, "sweep", TABLES["sweep"], COMMANDS["sweep"]))
    before, snap = recorded_and_read(job)
    assert snap.to_come == ["b · 1 param set × top 2 of a (≤2 trials) · after a is ranked"]
    assert before.planned_from == "a" and ranked_by(snap.meta) == "acc"


# --------------------------------------------------------------------------------------------------
# A fourth kind, registered by a test: nothing else in gputui changes for it


class Repeats(JobKind):
    """The command `count` times, each told its number as {copy}."""

    name = "repeats"
    table = "repeats"
    table_keys = ("count",)
    expects = "a repeats job needs it: expected [repeats] with count"
    task_kind = "repeat"
    noun = "repeat"
    columns = Columns(fitted=("id", "status", "tries", "reason"), gives_way=("tries",), titles={"id": "repeat"})

    def parse(self, checks: Checks, table: Mapping[str, Any], extra: list[str]) -> int:
        checks.check_table(table, "repeats")
        return checks.value(table, "repeats", "count", "int>=1", missing="how many copies")

    def placeholders(self, spec: int) -> tuple[str, ...]:
        return (*GENERIC_PLACEHOLDERS, "copy")

    def samples(self, spec: int, run_dir: Path) -> dict[str, object]:
        return {"copy": 0}

    def plan(self, job: JobSpec) -> Plan:
        tasks = [NewTask(f"repeat-{i}", i, self.task_kind, info={"copy": i}) for i in range(job.kind_spec)]
        definition = {"count": job.kind_spec}
        return Plan(tasks, digest(definition), f"{job.kind_spec} repeats", definition)

    def refusal(self, job: JobSpec, plan: Plan, recorded: Recorded, changed: bool) -> str | None:
        return f"repeats: was {recorded.definition}, now {plan.definition}" if changed else None

    def values(self, job: JobSpec, task: TaskRecord, output: str | None) -> TaskValues:
        return TaskValues({"copy": task.info["copy"]})

    def report_section(self, summary: Mapping[str, Any], md) -> list[str]:
        return ["## Repeats", "", md.row(["repeats", len(summary["tasks"])]), ""]


def test_a_kind_registered_in_the_registry_alone_runs_through_every_layer(tmp_path, monkeypatch):
    monkeypatch.setitem(KINDS, "repeats", Repeats())
    path = job_file(tmp_path, "repeats", "[repeats]\ncount = 3\n", "echo {copy} of {task_id}")
    job = load_jobspec(path)
    assert job.kind == "repeats" and job.kind_spec == 3
    task = planned_run(job, plan_job(job)).tasks[1].task
    argv, _ = worker_request(job, task, 1, (), "sched", job.run_dir)
    assert argv == ["echo", "1", "of", "repeat-1"]
    before, snap = recorded_and_read(job)
    assert before.noun == "repeat" and [v.task.id for v in snap.tasks] == ["repeat-0", "repeat-1", "repeat-2"]
    assert table_columns(v.task.kind for v in snap.tasks).titles == {"id": "repeat"}
    tasks = [v.task for v in snap.tasks]
    report = render_report(
        build_summary(job_name="k", run_dir=str(job.run_dir), scheduler_id="s", tasks=tasks, attempts=[])
    )
    assert "0/3 repeats done" in report and "## Repeats" in report and "| repeats | 3 |" in report
    (tmp_path / "job.toml").write_text(path.read_text().replace("count = 3", "count = 4"))
    with pytest.raises(RuntimeError, match=r"repeats: was \{'count': 3\}, now \{'count': 4\}"):
        open_for_job(load_jobspec(path))
    with pytest.raises(ValueError, match=r"\[repeats\]\.count: missing; expected how many copies"):
        (tmp_path / "job.toml").write_text(path.read_text().replace("count = 4", ""))
        load_jobspec(path)
