"""The job table over a run of a few hundred tasks, held a page at a time: the path a run of 100,000 takes.
Only the rows around the screen are read; keys reach rows not read yet; the cursor's task drives the log pane;
what changes in the store reaches the row on screen. Runs made by the engine: one run to the end by the real
scheduler (each worker's log names its shard), one planned and stored by it, then changed by its verbs."""

from __future__ import annotations

import html

import pytest

from gputui.gpus.simulated import SimulatedProbe
from gputui.tui.app import GpuTuiApp
from gputui.tui.screens.dialogs import ConfirmScreen
from gputui.tui.widgets.job_table import JobTable
from tests.conftest import gputui
from tests.tui.fixed_run import recorded, shard_file
from tests.tui.test_app import until

TASKS = 400  # more than the table holds at 120x30 (the rows on screen and JobTable.MARGIN each way)


def text_of(app) -> str:
    return html.unescape(app.export_screenshot()).replace("\xa0", " ")


def cells(table: JobTable, task_id: str) -> dict[str, str]:
    return dict(zip(table.columns_shown, table.row_text(task_id), strict=True))


def app_on(run_dir, interval: float = 60) -> GpuTuiApp:
    return GpuTuiApp(run_dir=run_dir, interval=interval, probe=SimulatedProbe(2, 24.0, clock=lambda: 0.0))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """400 shards of `echo`, run to the end by the real scheduler, 8 at a time."""
    root = tmp_path_factory.mktemp("pages")
    (root / "ids.csv").write_text("data_id\n" + "".join(f"{i}\n" for i in range(TASKS)))
    (root / "job.toml").write_text(
        '[job]\nname = "pages"\ncommand = "echo this is {task_id}"\n'
        '[shards]\ninput = "ids.csv"\nshard_size = 1\n[resources]\ngpus_per_worker = 0\nmax_parallel = 8\n'
    )
    assert gputui("run", "--jobs", root / "job.toml", "--quiet").returncode == 0
    return root / "runs" / "pages"


async def test_end_reads_the_last_rows_and_the_log_pane_shows_the_last_tasks_log(finished_run):
    app = app_on(finished_run)
    async with app.run_test(size=(120, 30)) as pilot:
        table = app.query_one(JobTable)
        await until(pilot, lambda: table.row_count == TASKS, what="every row counted")
        held = table.row_ids
        assert held[0] == "shard-0" and len(held) <= TASKS / 2, "a page around the screen, not every row"
        await until(pilot, lambda: "this is shard-0" in text_of(app), what="the first task's log")
        table.focus()
        await pilot.press("end")
        await until(pilot, lambda: table.selected_id == f"shard-{TASKS - 1}", what="the last row read")
        await until(pilot, lambda: f"this is shard-{TASKS - 1}" in text_of(app), what="the last task's log")
        assert cells(table, f"shard-{TASKS - 1}")["status"] == "done"
        assert "shard-0" not in table.row_ids, "the first rows let go"
        await pilot.press("home")
        await until(pilot, lambda: "this is shard-0" in text_of(app), what="the first task's log again")
        await pilot.press("end", "home", "end", "home", "end")  # faster than the rows come
        await until(pilot, lambda: f"this is shard-{TASKS - 1}" in text_of(app), what="the log of where it ended")


async def test_paging_down_past_the_rows_held_reads_the_next_ones_on_the_way(finished_run):
    app = app_on(finished_run)
    async with app.run_test(size=(120, 30)) as pilot:
        table = app.query_one(JobTable)
        await until(pilot, lambda: table.row_count == TASKS, what="every row counted")
        beyond = max(int(t.split("-")[1]) for t in table.row_ids) + 10  # past the rows held at first
        table.focus()
        while table.cursor_row < beyond:
            await pilot.press("pagedown")
            row = table.cursor_row
            await until(pilot, lambda row=row: table.selected_id == f"shard-{row}", what=f"row {row} read")
        await until(pilot, lambda: f"this is shard-{table.cursor_row}" in text_of(app), what="its log")


async def test_a_verb_on_a_row_read_late_changes_it_on_screen_and_the_filters_read_the_store(tmp_path):
    run_dir = tmp_path / "run"
    recorded(shard_file(tmp_path, TASKS), run_dir)  # planned and stored by the engine: every task pending
    last = f"shard-{TASKS - 1}"
    app = app_on(run_dir, interval=0.25)
    async with app.run_test(size=(120, 30)) as pilot:
        table = app.query_one(JobTable)
        await until(pilot, lambda: table.row_count == TASKS, what="every row counted")
        table.focus()
        await pilot.press("end")
        await until(pilot, lambda: table.selected_id == last, what="the last row")
        await pilot.press("k")  # no scheduler: the verb is applied to the store by the app's own sender
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the kill asked")
        await pilot.press("y")
        await until(pilot, lambda: cells(table, last)["status"] == "killed", what="the row killed on screen")
        assert table.selected_id == last
        await pilot.press("v", "v")  # active, then failed (killed counts): one row, read from the store
        await until(pilot, lambda: table.row_count == 1 and table.row_ids == [last], what="the failed view")
        assert table.selected_id == last, "the cursor followed its task from the last row to the first"
        await pilot.press("v", "v", "v")  # done (none), pending, all
        await until(pilot, lambda: table.row_count == TASKS and table.filter_by == "all", what="all rows")
