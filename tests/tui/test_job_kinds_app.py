"""Sweeps and pipelines in the app, as a user meets them: the plan before launch (nothing written), a trial's
columns (stage, params, parent, metric, rank, note), a step's (what it waits for), and the selected task's
metrics chart following its events file as it grows.

Fixed runs (recorded by the engine, then given fixed times and statuses: tests/tui/fixed_sweep.py) where looks
and values are the point; real job files and a real background scheduler where planning and launching are.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from gputui.gpus.simulated import SimulatedProbe
from gputui.jobs.loader import load_jobspec
from gputui.rundir.paths import RunLock, RunPaths
from gputui.tui.app import GpuTuiApp
from gputui.tui.screens.help import HelpScreen
from gputui.tui.widgets.job_rows import fitted_widths, number, params_text
from gputui.tui.widgets.job_table import JobTable
from gputui.tui.widgets.log_tabs import LogTabs
from gputui.tui.widgets.log_view import LogPane
from gputui.tui.widgets.metrics_chart import MetricsChart
from gputui.tui.widgets.run_area import RunArea
from gputui.tui.widgets.task_bar import TaskBar
from gputui.views.kinds import table_columns
from gputui.views.metrics import METRIC_POINTS
from gputui.views.runview import RunView
from tests.conftest import gputui
from tests.tui.fixed_run import fixed_run
from tests.tui.fixed_sweep import curve, fixed_pipeline, fixed_sweep, write_metrics
from tests.tui.test_app import statuses, until
from tests.tui.test_app_second_pass import footer_keys, header, probe, ready, text_of

ROOT = Path(__file__).resolve().parents[2]
KIND_WORKER = ROOT / "tests" / "workers" / "kind_worker.py"


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `folder` (its GPU reservations aside), with its size and mtime."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if d != "gpu-locks"]
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.stat()
            found[str(path.relative_to(folder))] = (st.st_size, st.st_mtime_ns)
    return found


def sweep_job(
    folder: Path, *, stages=(("a", [0.1, 0.3, 0.2]), ("b", [0.01, 0.02]), ("c", [0.001])), gate: Path | None = None
) -> Path:
    """A sweep of kind_worker trials: each reports `score` (+ its parent's) as val_acc through gputui.hooks
    (with `gate`, once the file `gate/<its stage>` is gone)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "init").mkdir(exist_ok=True)
    command = f"{sys.executable} {KIND_WORKER} --score {{score}} --init {{parent_output}} --out {{output_dir}}"
    if gate is not None:
        command += f" --gate {gate}/{{stage}}"
    lines = [
        "[job]",
        'name = "sw"',
        'kind = "sweep"',
        f"command = {json.dumps(command)}",
        "stop_grace_s = 2",
        "[sweep]",
        'metric = "val_acc"',
        'goal = "max"',
        "top_k = 2",
        'initial = "init"',
    ]
    for stage, scores in stages:
        params = ", ".join(f"{{ score = {s}, bs = 32 }}" for s in scores)
        lines += ["[[sweep.stage]]", f'name = "{stage}"', f"params = [{params}]"]
    lines += ["[resources]", "gpus_per_worker = 0", "max_parallel = 4", "[retry]", "max_attempts = 1"]
    job = folder / "sweep.toml"
    job.write_text("\n".join(lines) + "\n")
    return job


def pipeline_job(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["[job]", 'name = "pl"', 'kind = "pipeline"']
    for name, after in (("report", ["train", "eval"]), ("train", []), ("eval", ["train"])):
        lines += [
            "[[pipeline.step]]",
            f'name = "{name}"',
            f'command = "true {name}"',
            f"after = {json.dumps(after)}",
        ]
    lines += ["[resources]", "gpus_per_worker = 0", "[retry]", "max_attempts = 1"]
    job = folder / "pipeline.toml"
    job.write_text("\n".join(lines) + "\n")
    return job


def app_for(job: Path, **kw) -> GpuTuiApp:
    return GpuTuiApp(job_path=job, run_dir=load_jobspec(job).run_dir, probe=probe(2), **kw)


def cells(table: JobTable, task_id: str) -> dict[str, str]:
    return dict(zip(table.columns_shown, table.row_text(task_id), strict=True))


async def planned(pilot, app) -> JobTable:
    table = app.query_one(JobTable)
    await until(pilot, lambda: app.plan is not None and table.row_count, what="the plan's rows")
    await until(pilot, lambda: app.gpus, what="GPUs")
    await pilot.pause(0.2)
    return table


# -- the plan before launch ------------------------------------------------------------------------


async def test_a_cluster_jobs_plan_says_where_it_will_run_without_reaching_the_cluster(make_job):
    job = make_job(ids=20, num_workers=2, extra='\n[executor]\nkind = "ray"\naddress = "127.0.0.1:9"\n')
    app = app_for(job, interval=0.25)
    async with app.run_test(size=(160, 45)) as pilot:
        await planned(pilot, app)
        progress = header(app).splitlines()[1]
        assert progress.startswith("not started: 2 shards planned on the Ray cluster at 127.0.0.1:9 · press l")
        assert not make_job.run_dir.exists(), "no bridge, no run directory, before launch"


async def test_a_shard_jobs_plan_shows_before_launch_writes_nothing_and_l_starts_it(make_job):
    job = make_job(ids=40, num_workers=4, sleep=0.2)
    before = listing(make_job.root)
    app = app_for(job, interval=0.25)
    async with app.run_test(size=(160, 45)) as pilot:
        table = await planned(pilot, app)
        assert table.row_ids == ["shard-0", "shard-1", "shard-2", "shard-3"]
        assert [cells(table, t)["range"] for t in table.row_ids] == ["[0, 10)", "[10, 20)", "[20, 30)", "[30, 40)"]
        assert {cells(table, t)["status"] for t in table.row_ids} == {"pending"}
        first, progress = header(app).splitlines()
        assert "gputui · test ·" in first, "the job's name, before any run exists"
        assert progress.startswith("not started: 4 shards planned · press l to launch · 4 shards: [0, 10)")
        assert "shard-0 pending" in str(app.query_one(TaskBar).render())
        assert footer_keys(app) == {"l", "m", "q", "question_mark"}, "nothing to signal in a plan"
        await pilot.pause(1.0)  # a few refreshes: still nothing written
        assert listing(make_job.root) == before and not make_job.run_dir.exists()

        await pilot.press("l")
        await until(pilot, lambda: set(statuses(app).values()) == {"done"}, what="every shard done")
        assert app.plan is None and table.row_ids == ["shard-0", "shard-1", "shard-2", "shard-3"]
        assert "4/4 done" in header(app).splitlines()[1]


async def test_a_plan_of_thousands_of_shards_shows_a_page_at_a_time_and_l_launches_it(make_job):
    """Before launch the table holds the rows around what is on screen, not every planned shard: End shows the
    last shard, the header counts them all, the filters and sorts work on the plan, and `l` launches it."""
    job = make_job(ids=3000, num_workers=3000, max_parallel=2, sleep=60, stop_grace_s=0.5)
    before = listing(make_job.root)
    app = app_for(job, interval=0.25)
    async with app.run_test(size=(160, 45)) as pilot:
        table = await planned(pilot, app)
        assert header(app).splitlines()[1].startswith("not started: 3000 shards planned · press l to launch")
        assert table.row_count == 3000 and 0 < len(table.row_ids) < 500, "a page held, not 3,000 rows"
        assert len(app.plan.tasks) == 3000
        await pilot.press("end")
        await until(pilot, lambda: table.selected_id == "shard-2999", what="the last shard selected")
        await until(pilot, lambda: app.query_one(LogTabs).task_id == "shard-2999", what="its log pane")
        assert cells(table, "shard-2999")["range"] == "[2999, 3000)" and "shard-2999" in text_of(app)
        assert "shard-2999 pending" in str(app.query_one(TaskBar).render())
        await pilot.press("pageup", "home")
        await until(pilot, lambda: table.selected_id == "shard-0", what="the first shard again")
        await pilot.press("v")  # active: nothing is before launch
        await until(pilot, lambda: table.filter_by == "active" and table.row_count == 0, what="no active rows")
        await pilot.press("v", "v", "v")  # failed, done, pending: every planned shard waits
        await until(pilot, lambda: table.filter_by == "pending" and table.row_count == 3000, what="every one")
        await pilot.press("v", "s")  # all, by status: the plan's order
        await until(pilot, lambda: table.rows_query.sort == "status", what="sorted by status")
        assert table.row_ids[:3] == ["shard-0", "shard-1", "shard-2"] and table.row_count == 3000
        await pilot.press("s", "s")  # elapsed, then id
        await pilot.pause(0.5)  # a few refreshes: still nothing written
        assert listing(make_job.root) == before and not make_job.run_dir.exists()

        await pilot.press("l")
        try:
            launched = lambda: app.snapshot is not None and app.plan is None  # noqa: E731
            await until(pilot, launched, timeout=30, what="the run shown")
            await until(pilot, lambda: "running" in statuses(app).values(), timeout=30, what="a shard running")
            assert table.row_count == 3000 and table.row_ids[0] == "shard-0"
            assert "/3000 done" in header(app).splitlines()[1]
            await pilot.press("end")  # the run's rows now, read from its store
            await until(pilot, lambda: table.selected_id == "shard-2999", what="the last shard of the run")
            assert cells(table, "shard-2999")["status"] == "pending"
        finally:
            gputui("kill", "--run-dir", make_job.run_dir, "--all")
        await until(pilot, lambda: not app.snapshot.scheduler_live, timeout=30, what="the scheduler to end")


async def test_a_sweeps_plan_shows_its_first_stage_and_the_stages_to_come(tmp_path):
    job = sweep_job(tmp_path / "jobs")
    before = listing(tmp_path)
    app = app_for(job, interval=0.25)
    async with app.run_test(size=(200, 50)) as pilot:
        table = await planned(pilot, app)
        assert table.row_ids == ["a-0", "a-1", "a-2"]
        assert table.columns_shown[:4] == ("id", "stage", "params", "parent")
        assert [cells(table, t)["params"] for t in table.row_ids] == [
            "score=0.1 bs=32",
            "score=0.3 bs=32",
            "score=0.2 bs=32",
        ]
        assert table.to_come == (
            "b · 2 param sets × top 2 of a (≤4 trials) · after a is ranked",
            "c · 1 param set × top 2 of b (≤2 trials) · after b is ranked",
        )
        screen = text_of(app)
        assert "┄ b · 2 param sets × top 2 of a (≤4 trials) · after a is ranked" in screen
        titles = table.render_line(0).text
        assert "val_acc" in titles and "rank" in titles, "the metric column is named by the sweep's metric"
        progress = header(app).splitlines()[1]
        assert progress.startswith("not started: 3 trials of a planned, 2 stages to come · press l to launch")
        assert "c" not in footer_keys(app), "no chart before launch"
        await pilot.pause(0.5)
        assert listing(tmp_path) == before


async def test_a_sweep_launched_from_its_plan_ends_ranked_with_every_stage_charted(tmp_path):
    """Launched, it still lists the stages to come (the engine records the plan the view reads), each line
    going as its stage is planned."""
    gate = tmp_path / "gate"
    gate.mkdir()
    for stage in ("a", "b"):
        (gate / stage).touch()
    job = sweep_job(tmp_path / "jobs", gate=gate)
    app = app_for(job, interval=0.25)
    async with app.run_test(size=(200, 50)) as pilot:
        table = await planned(pilot, app)
        planned_lines = table.to_come
        await pilot.press("l")
        running = lambda: set(statuses(app).values()) == {"running"} and app.plan is None  # noqa: E731
        await until(pilot, running, timeout=30, what="stage a running")
        assert table.to_come == planned_lines, "the stages to come, as the plan showed them"
        assert "┄ c · 1 param set × top 2 of b (≤2 trials) · after b is ranked" in text_of(app)
        (gate / "a").unlink()
        await until(pilot, lambda: statuses(app).get("b-0") == "running", timeout=30, what="stage b running")
        assert table.to_come == ("c · 1 param set × top 2 of b (≤2 trials) · after b is ranked",)
        (gate / "b").unlink()
        done = lambda: len(statuses(app)) == 9 and set(statuses(app).values()) == {"done"}  # noqa: E731
        await until(pilot, done, timeout=60, what="the whole sweep done")
        await until(pilot, lambda: cells(table, "c-1")["rank"] == "2", what="the last stage ranked")
        assert table.to_come == ()
        chart = app.query_one(MetricsChart)
        await until(pilot, lambda: chart.task_id == "a-0" and chart.names == ["val_acc"], what="a-0 charted")
        assert chart.series.points["val_acc"] == pytest.approx((0.05, 0.1)), "selected in the plan, read once run"
        rows = {t: cells(table, t) for t in table.row_ids}
        # Values, ranks and parents as the engine's own tests expect them (val_acc = score + parent's).
        assert (rows["a-1"]["metric"], rows["a-1"]["rank"]) == ("0.3", "1 ★")
        assert (rows["a-0"]["metric"], rows["a-0"]["rank"]) == ("0.1", "3")
        assert (rows["b-1"]["parent"], rows["b-1"]["metric"], rows["b-1"]["rank"]) == ("a-1", "0.32", "1 ★")
        assert rows["c-0"]["note"] == "best of the sweep"
        table.move_cursor(row=table.row_ids.index("c-0"))
        await until(pilot, lambda: chart.task_id == "c-0" and chart.series is not None, what="c-0 charted")
        assert chart.series.points["val_acc"] == pytest.approx((0.321 / 2, 0.321))
        assert "val_acc 0.321" in chart.row("val_acc").text()
        assert "val_acc 0.321" in str(app.query_one(TaskBar).render())


async def test_a_pipelines_plan_shows_its_steps_in_order_with_what_each_waits_for(tmp_path):
    job = pipeline_job(tmp_path / "jobs")
    before = listing(tmp_path)
    app = app_for(job, interval=0.25)
    async with app.run_test(size=(120, 40)) as pilot:
        table = await planned(pilot, app)
        assert table.row_ids == ["train", "eval", "report"], "after what they wait for"
        assert [cells(table, s)["after"] for s in table.row_ids] == ["", "train", "train, eval"]
        assert cells(table, "report")["reason"] == "waits for train, eval"
        assert "step" in text_of(app) and "not started: 3 steps planned" in header(app)
        table.move_cursor(row=2)
        await until(pilot, lambda: "after train, eval" in str(app.query_one(TaskBar).render()), what="task bar")
        await pilot.pause(0.5)
        assert listing(tmp_path) == before


async def test_a_job_file_that_cannot_be_planned_says_why_and_is_read_again_when_fixed(tmp_path):
    job = sweep_job(tmp_path / "jobs")
    good = job.read_text()
    job.write_text(good.replace('metric = "val_acc"', 'metrik = "val_acc"'))
    app = GpuTuiApp(job_path=job, run_dir=tmp_path / "jobs" / "runs" / "sw", interval=0.25, probe=probe(2))
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: "cannot plan the job" in header(app), what="the error")
        assert "did you mean 'metric'" in header(app)
        job.write_text(good)
        await until(pilot, lambda: app.query_one(JobTable).row_ids == ["a-0", "a-1", "a-2"], what="the plan")
        assert "not started: 3 trials of a planned" in header(app)


# -- trial and step columns ------------------------------------------------------------------------


@pytest.fixture
def live_sweep(tmp_path):
    run_dir = fixed_sweep(tmp_path / "run")
    lock = RunLock(RunPaths(run_dir))
    assert lock.try_acquire("scheduler")
    yield run_dir
    lock.release()


async def test_trials_show_stage_params_parent_metric_rank_and_note(live_sweep):
    app = GpuTuiApp(run_dir=live_sweep, interval=0.25, probe=probe())
    async with app.run_test(size=(200, 50)) as pilot:
        await ready(pilot, app)
        table = app.query_one(JobTable)
        assert table.columns_shown == (
            "id", "stage", "params", "parent", "GPUs", "status", "progress", "metric", "rank", "tries",
            "elapsed", "GPU·h", "peak", "note",
        )  # fmt: skip
        rows = {t: cells(table, t) for t in table.row_ids}
        assert [rows["task1-1"][c] for c in ("stage", "params", "parent", "metric", "rank", "note")] == [
            "task1",
            "lr=3e-4 bs=32",
            "",
            "0.934",
            "1 ★",
            "promoted to task2",
        ]
        assert (rows["task1-2"]["rank"], rows["task1-2"]["note"]) == ("3", "")
        assert rows["task1-3"]["note"] == "CUDA out of memory · not ranked: failed"
        # A running trial: the latest value it reported through gputui.hooks.
        assert (rows["task2-0"]["parent"], rows["task2-0"]["metric"]) == ("task1-1", number(curve(39)["val_acc"]))
        assert (rows["task2-3"]["parent"], rows["task2-3"]["metric"], rows["task2-3"]["rank"]) == (
            "task1-0",
            "",
            "",
        )
        screen = text_of(app)
        assert "val_acc" in screen and "trial" in screen and "1 ★" in screen
        assert "┄ task3 · 2 param sets × top 2 of task2 (≤4 trials) · after task2 is ranked" in screen
        # More reported: the running trial's metric follows.
        write_metrics(RunPaths(live_sweep), "task2-0", range(40, 50))
        await until(
            pilot, lambda: cells(table, "task2-0")["metric"] == number(curve(49)["val_acc"]), what="the new value"
        )


async def test_at_80_columns_trial_columns_give_way_and_metric_rank_and_note_stay(live_sweep):
    app = GpuTuiApp(run_dir=live_sweep, interval=60, probe=probe())
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot, app)
        table = app.query_one(JobTable)
        assert table.columns_shown == ("id", "params", "status", "progress", "metric", "rank", "note")
        width = sum(w + 2 for w in table.column_widths.values())
        assert width <= table.scrollable_content_region.width and table.column_widths["note"] >= 12
        table.move_cursor(row=table.row_ids.index("task2-1"))
        await pilot.pause(0.3)
        bar = str(app.query_one(TaskBar).render())  # what the narrow table leaves out
        assert "task2-1 running · val_acc" in bar and "← task1-1" in bar


async def test_at_80_columns_a_running_trial_shows_its_steps_as_a_shards_bar(live_sweep):
    """G9: the progress column stays at 80 columns (elapsed gives way first): a trial reporting its steps through
    gputui.hooks shows a 5-cell bar and its step count, as a shard's row does."""
    events = RunPaths(live_sweep).events("task2-0", 1)
    with open(events, "a") as f:
        f.write(json.dumps({"t": 0, "event": "progress", "done": 40, "total": 100}) + "\n")
    app = GpuTuiApp(run_dir=live_sweep, interval=0.25, probe=probe())
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot, app)
        table = app.query_one(JobTable)
        await until(pilot, lambda: cells(table, "task2-0")["progress"] != "", what="the trial's progress")
        assert cells(table, "task2-0")["progress"] == "██░░░ 40/100"
        assert cells(table, "task1-0")["progress"] == "█████ done"
        assert "40/100" in text_of(app), "on screen, not only in the cells"


async def test_at_80_columns_a_promoted_trial_shows_the_params_it_inherited(tmp_path):
    """task2 inherits: each of its trials runs with its parent's bs, and its params cell says so."""
    run_dir = fixed_sweep(tmp_path / "run", inherit=True)
    lock = RunLock(RunPaths(run_dir))
    assert lock.try_acquire("scheduler")
    try:
        app = GpuTuiApp(run_dir=run_dir, interval=60, probe=probe())
        async with app.run_test(size=(80, 24)) as pilot:
            await ready(pilot, app)
            table = app.query_one(JobTable)
            rows = {t: cells(table, t) for t in table.row_ids}
            assert [rows[t]["params"] for t in ("task1-1", "task2-0", "task2-4")] == [
                "lr=3e-4 bs=32",
                "lr=3e-4 bs=32",  # its own lr, its parent's (task1-1) bs
                "lr=1e-4 bs=32",
            ]
    finally:
        lock.release()


def test_trial_and_step_tables_keep_their_progress_to_80_columns():
    """Pure: the progress gives way last; at 78 cells (an 80-column table's) it stays and the params (or a
    step's waits) are cut instead, only as far as needed; a narrower table still drops it."""
    sweep = table_columns(["trial"])
    sized = {"rank": 4, "id": 7, "stage": 5, "params": 13, "parent": 7, "metric": 7}
    at_80 = fitted_widths(sweep, "narrow", sized, 78)
    assert list(at_80) == ["id", "params", "status", "progress", "metric", "rank", "note"]
    assert (at_80["progress"], at_80["params"], at_80["note"]) == (14, 12, 12)
    assert "progress" in fitted_widths(sweep, "narrow", sized, 100) and "elapsed" in fitted_widths(
        sweep, "narrow", sized, 100
    )
    assert "progress" not in fitted_widths(sweep, "narrow", sized, 60)
    pipeline = table_columns(["step"])
    steps = fitted_widths(pipeline, "narrow", {"id": 6, "after": 30}, 78)
    assert "progress" in steps and sum(w + 2 for w in steps.values()) <= 78


def test_params_and_numbers_are_compact():
    assert params_text({"lr": 3e-4, "bs": 32, "wd": 0.01, "name": "x", "big": 1_000_000}) == (
        "lr=3e-4 bs=32 wd=0.01 name=x big=1e6"
    )
    assert [number(v) for v in (0.9312, 1e-3, 0.5, 12.0, float("nan"), True)] == [
        "0.9312",
        "1e-3",
        "0.5",
        "12",
        "nan",
        "True",
    ]


async def test_steps_show_what_they_wait_for(tmp_path):
    run_dir = fixed_pipeline(tmp_path / "run")
    app = GpuTuiApp(run_dir=run_dir, interval=60, probe=probe())
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot, app)
        table = app.query_one(JobTable)
        assert table.columns_shown[:2] == ("id", "after")
        rows = {t: cells(table, t) for t in table.row_ids}
        assert [rows[s]["after"] for s in ("prep", "train", "eval", "report")] == [
            "",
            "prep✓",
            "train",
            "train, eval",
        ]
        assert rows["eval"]["reason"] == "waits for train" and rows["train"]["reason"] == ""
    app = GpuTuiApp(run_dir=run_dir, interval=60, probe=probe())
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot, app)
        table = app.query_one(JobTable)
        assert "after" in table.columns_shown and "reason" in table.columns_shown
        assert sum(w + 2 for w in table.column_widths.values()) <= table.scrollable_content_region.width


# -- the metrics chart -----------------------------------------------------------------------------


async def test_the_chart_shows_the_selected_trials_metrics_and_follows_its_events_file(live_sweep):
    app = GpuTuiApp(run_dir=live_sweep, interval=0.25, probe=probe())
    async with app.run_test(size=(200, 50)) as pilot:
        await ready(pilot, app)
        table, chart, area = app.query_one(JobTable), app.query_one(MetricsChart), app.query_one(RunArea)
        assert area.chart_shown and chart.region.width > 0, "a sweep's chart shows beside the log when wide"
        assert app.query_one("#log-selected-pane", LogPane).region.width > 0
        assert "c" in footer_keys(app)
        assert any("metrics chart" in c.title for c in app.get_system_commands(app.screen)), "in the palette"
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        assert "metrics chart of the selected task" in text_of(app)
        await pilot.press("escape")
        assert chart.message == "no metrics reported yet", "task1-0 reported nothing"
        table.move_cursor(row=table.row_ids.index("task2-0"))
        await until(pilot, lambda: chart.names == ["val_acc", "loss"], what="task2-0's metrics, ranked one first")
        assert len(chart.series.points["loss"]) == 40 and chart.series.step == 39
        loss = [curve(s)["loss"] for s in range(40)]
        assert (
            chart.row("loss").text() == f"loss {number(loss[-1])} min {number(min(loss))}  max {number(max(loss))}"
        )
        assert "metrics: task2-0 #1 · step 39" in text_of(app)
        bar = str(app.query_one(TaskBar).render())
        assert f"val_acc {number(curve(39)['val_acc'])} · loss {number(loss[-1])}" in bar

        write_metrics(RunPaths(live_sweep), "task2-0", range(40, 60))  # the worker goes on
        await until(pilot, lambda: chart.series.step == 59, what="the chart to follow")
        assert len(chart.series.points["val_acc"]) == 60
        assert chart.row("val_acc").text().startswith(f"val_acc {number(curve(59)['val_acc'])}")
        assert "metrics: task2-0 #1 · step 59" in text_of(app)

        table.move_cursor(row=table.row_ids.index("task2-4"))
        await until(pilot, lambda: chart.message == "task2-4 has not started yet: no metrics", what="pending")
        assert chart.names == []
        await pilot.press("c")
        await until(pilot, lambda: chart.region.width == 0, what="the chart hidden")
        assert app.query_one("#log-selected-pane", LogPane).region.width > 0


async def test_at_80_columns_c_swaps_the_log_for_the_chart_and_back(live_sweep):
    app = GpuTuiApp(run_dir=live_sweep, interval=60, probe=probe())
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot, app)
        table, chart = app.query_one(JobTable), app.query_one(MetricsChart)
        log = app.query_one("#log-selected-pane", LogPane)
        assert chart.region.width == 0 and log.region.height > 0, "narrow: the log until c is pressed"
        table.move_cursor(row=table.row_ids.index("task2-1"))
        await pilot.press("c")
        await until(pilot, lambda: chart.names == ["val_acc", "loss"], what="the chart")
        assert chart.region.width >= 78 and log.region.height == 0
        assert not app.check_action("follow", ()) and not app.check_action("search_log", ()), "no log shown"
        assert "loss" in text_of(app) and "min " in text_of(app)
        await pilot.press("c")
        await until(pilot, lambda: log.region.height > 0 and chart.region.width == 0, what="the log back")


async def test_a_shard_run_offers_the_chart_once_a_task_reports_metrics(tmp_path):
    run_dir = fixed_run(tmp_path / "run", 10, running=2)
    lock = RunLock(RunPaths(run_dir))
    assert lock.try_acquire("scheduler")
    try:
        app = GpuTuiApp(run_dir=run_dir, interval=0.25, probe=probe())
        async with app.run_test(size=(200, 50)) as pilot:
            await ready(pilot, app)
            assert "c" not in footer_keys(app) and not app.query_one(RunArea).chart_shown
            assert "val_acc" not in app.query_one(JobTable).columns_shown, "shards keep their columns"
            path = RunPaths(run_dir).events("shard-4", 1)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"t": 1.0, "event": "metrics", "step": 3, "values": {"loss": 0.5}}) + "\n")
            await until(pilot, lambda: "c" in footer_keys(app), what="c offered")
            app.query_one(JobTable).move_cursor(row=4)
            await until(pilot, lambda: "loss 0.5" in str(app.query_one(TaskBar).render()), what="the task bar")
            await pilot.press("c")
            chart = app.query_one(MetricsChart)
            await until(pilot, lambda: chart.names == ["loss"] and chart.region.width > 0, what="the chart")
    finally:
        lock.release()


# -- the run view: one reader per attempt, kept across refreshes -----------------------------------


def test_the_run_view_reads_the_selected_tasks_events_incrementally(tmp_path):
    run_dir = fixed_sweep(tmp_path / "run")
    paths = RunPaths(run_dir)
    view = RunView(run_dir)
    try:
        view.select("task1-1")  # done, reported nothing: read anyway (selected)
        first = view.snapshot()
        assert first.series is not None and first.series.task_id == "task1-1" and first.series.empty
        assert {v.task.id for v in first.tasks if v.metrics} == {"task2-0", "task2-1"}, "running ones only"
        view.select("task2-0")
        series = view.snapshot().series
        reader = view._metrics[("task2-0", 1)]
        assert len(series.points["loss"]) == 40
        assert view.snapshot().series is series, "nothing new: the same value, nothing read again"
        write_metrics(paths, "task2-0", range(40, 45))
        again = view.snapshot().series
        assert view._metrics[("task2-0", 1)] is reader, "one reader per attempt, kept across snapshots"
        assert reader._reader.offset == paths.events("task2-0", 1).stat().st_size
        assert len(again.points["loss"]) == 45 and again.step == 44
        view.select("task1-0")
        view.snapshot()
        assert ("task1-1", 1) not in view._metrics, "a finished task no longer selected is dropped"

        write_metrics(paths, "task2-1", range(25, 25 + 3 * METRIC_POINTS))  # a long run: kept at bounded size
        view.select("task2-1")
        long = view.snapshot().series
        assert METRIC_POINTS <= len(long.points["loss"]) < 2 * METRIC_POINTS
        every = [curve(s)["loss"] for s in range(25 + 3 * METRIC_POINTS)]
        assert (long.low["loss"], long.high["loss"]) == (min(every), max(every)), "from every point, not the kept"
    finally:
        view.close()


# -- a run mode, decided before launch ---------------------------------------------------------------


def run_mode_app(folder: Path, mode: str) -> tuple[Path, GpuTuiApp]:
    """A job sizing Qwen2.5-7B in `mode`, and the app over it on four 12 GB GPUs."""
    from tests.integration.test_run_modes import job

    folder.mkdir(parents=True, exist_ok=True)
    path = Path(job(folder, mode))
    return path, GpuTuiApp(job_path=path, run_dir=load_jobspec(path).run_dir, probe=SimulatedProbe(4, 12.0))


async def test_the_run_modes_decision_shows_before_launch_on_the_gpus_seen_now(tmp_path):
    _, app = run_mode_app(tmp_path / "jobs", "auto")
    before = listing(tmp_path)
    async with app.run_test(size=(200, 50)) as pilot:
        await planned(pilot, app)
        progress = header(app).splitlines()[1]
        # 15 GB of Qwen2.5-7B weights: two 12 GB GPUs per worker, two workers on four GPUs.
        assert "auto: 2 GPU/worker × 2 at once, mem util 0.9" in progress
        assert progress.startswith("not started: 8 shards planned · press l to launch · auto: 2 GPU/worker")
    assert listing(tmp_path) == before, "deciding wrote nothing"


async def test_a_model_that_fits_nowhere_is_said_before_launch_and_l_is_refused(tmp_path):
    job, app = run_mode_app(tmp_path / "jobs", "single")
    async with app.run_test(size=(200, 50)) as pilot:
        await planned(pilot, app)
        progress = header(app).splitlines()[1]
        assert "cannot launch: single: the model does not fit one GPU here in mode 'single'" in progress
        await pilot.press("l")
        await until(pilot, lambda: app._notifications, what="a toast")
        toast = list(app._notifications)[-1].message
        assert toast.startswith("cannot launch: single: the model does not fit one GPU") and "gputui plan" in toast
        await pilot.pause(0.5)
        assert app.snapshot is None and not RunPaths(load_jobspec(job).run_dir).root.exists(), "nothing started"


async def test_a_command_that_cannot_start_is_said_before_launch_and_l_is_refused(make_job):
    """The check `gputui plan` and `gputui run` make (jobs/startable.py), in the header before `l`."""
    job = make_job(num_workers=2)
    job.write_text(job.read_text().replace(f'command = "{sys.executable} ', 'command = "trainz.py '))
    app = GpuTuiApp(job_path=job, run_dir=make_job.run_dir, interval=0.25, probe=probe())
    async with app.run_test(size=(200, 50)) as pilot:
        await planned(pilot, app)
        progress = header(app).splitlines()[1]
        assert "cannot launch: " in progress and "[job].command" in progress and "trainz.py" in progress
        await pilot.press("l")
        await until(pilot, lambda: app._notifications, what="a toast")
        assert list(app._notifications)[-1].message.startswith("cannot launch: ")
        await pilot.pause(0.5)
        assert app.snapshot is None and not make_job.run_dir.exists(), "nothing started"
