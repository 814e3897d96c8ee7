"""Tagged rows (space) and verbs on many tasks at once, over real runs: one confirmation naming the tagged
tasks, one toast for the whole batch (K too); and `l` on a finished run starting it again or over."""

from __future__ import annotations

from gputui.api import open_run
from gputui.tui.app import GpuTuiApp
from gputui.tui.batch import Batch, batch_of, names, summary
from gputui.tui.modes import FINISHED, LIVE
from gputui.tui.screens.dialogs import ChoiceScreen, ConfirmScreen
from gputui.tui.widgets.job_table import TAG_MARK, JobTable
from gputui.tui.widgets.task_bar import TaskBar
from tests.conftest import gone, gputui
from tests.tui.test_app import job_app, launched, statuses, until


def toasts(app, word: str) -> list[str]:
    return [n.message for n in app._notifications if word in n.message]


def marked(table: JobTable, task_id: str) -> bool:
    """Whether the task's row, as drawn now, carries the tag's mark."""
    row = table.row_ids.index(task_id) - round(table.scroll_y) + 1
    return table.render_line(row).text.startswith(TAG_MARK)


async def tag(pilot, table: JobTable, *task_ids: str) -> None:
    for task_id in task_ids:
        table.move_cursor(row=table.row_ids.index(task_id))
        await pilot.pause()
        await pilot.press("space")


# -- pure ------------------------------------------------------------------------------------------
def test_names_are_cut_past_ten_with_and_n_more():
    assert names(["a"]) == "a" and names(["a", "b", "c"]) == "a, b and c"
    ids = [f"shard-{i}" for i in range(14)]
    assert names(ids) == ", ".join(ids[:10]) + " and 4 more"


def test_a_batch_keeps_the_tasks_a_verb_applies_to_and_names_the_others():
    statuses = {"s1": "running", "s2": "done", "s3": "failed", "s4": "paused"}
    retry = batch_of("retry", statuses, ["s1", "s2", "s3", "s9"], FINISHED)
    assert retry.ids == ("s3",) and retry.refused == {"s1": "running", "s2": "done", "s9": "gone"}
    assert retry.title == "Retry 1 task: s3?" and retry.refused_line().startswith("not retried: s1 (running)")
    assert batch_of("pause", statuses, ["s1", "s4"], LIVE).ids == ("s1",)
    assert batch_of("pause", statuses, ["s4", "s2"], LIVE).verb == "resume"  # none runs, one is paused


def test_one_summary_for_a_batch_report():
    before = {f"shard-{i}": ("running" if i < 2 else "pending") for i in range(5)}
    report = "\n".join(
        [f"shard-{i}: killed (it was pending; nothing was running)" for i in range(2, 5)]
        + ["shard-0: killed 2 process(es)", "shard-1: killed 1 process(es); still alive: pid 7 (D state)"]
    )
    text, severity = summary(Batch("kill", tuple(before), before=before), True, report)
    assert text.splitlines()[0] == "killed 3 pending, 2 running" and "still alive" in text
    assert severity == "warning"  # a process still alive needs a look
    refused = "s1: queued again (3 more attempt(s))\ns2: is running; only a failed, killed or (--force) done task"
    text, severity = summary(Batch("retry", ("s1", "s2"), before={"s1": "failed", "s2": "failed"}), False, refused)
    assert text.splitlines() == ["retried 1 failed", "refused: s2 is running"] and severity == "warning"


# -- the app over real runs ----------------------------------------------------------------------------
async def test_tagged_rows_survive_sort_and_paging_and_k_kills_exactly_them(make_job):
    app = job_app(make_job, ids=200, num_workers=200, rows_per_id=1, max_parallel=6, sleep=60, stop_grace_s=1)
    async with app.run_test(size=(160, 45)) as pilot:
        await launched(pilot, app, make_job, 6)
        table = app.query_one(JobTable)
        table.focus()
        await tag(pilot, table, "shard-1", "shard-3", "shard-4")
        assert table.tagged == ("shard-1", "shard-3", "shard-4")
        await until(pilot, lambda: "3 tagged" in str(app.query_one(TaskBar).render()), what="3 tagged")
        assert marked(table, "shard-3") and not marked(table, "shard-2")
        await pilot.press("space")  # on shard-4 still: untagged, then tagged again
        assert table.tagged == ("shard-1", "shard-3")
        await pilot.press("space")
        await pilot.press("s")  # sorted by status: the tags go with their tasks
        await until(pilot, lambda: table.rows_query.sort == "status", what="sorted by status")
        await until(pilot, lambda: marked(table, "shard-4") and marked(table, "shard-1"), what="marks, sorted")
        await pilot.press("s", "s")  # back to plan order
        await pilot.press("end")  # the last page: the first rows are let go, then read again
        await until(pilot, lambda: "shard-1" not in table.row_ids, what="the first rows let go")
        await pilot.press("home")
        await until(pilot, lambda: "shard-1" in table.row_ids and marked(table, "shard-1"), what="marks back")
        assert table.tagged == ("shard-1", "shard-3", "shard-4")

        pids = make_job.running()
        await pilot.press("k")
        screen = await until(pilot, lambda: isinstance(app.screen, ConfirmScreen) and app.screen, what="confirm")
        assert screen.title_text == "Kill 3 tasks: shard-1, shard-3 and shard-4?"
        assert str(pids["shard-3"]) in screen.body
        await pilot.press("y")
        tagged = ("shard-1", "shard-3", "shard-4")
        await until(pilot, lambda: all(gone(pids[t]) for t in tagged), what="the tagged workers gone")
        await until(pilot, lambda: all(statuses(app)[t] == "killed" for t in tagged), what="tagged killed")
        for other in ("shard-0", "shard-2", "shard-5"):
            assert statuses(app)[other] == "running" and not gone(pids[other]), other
        said = await until(pilot, lambda: toasts(app, "killed"), what="the toast")
        assert said == ["killed 3 running"]
        await pilot.press("escape")  # the tags cleared
        assert table.tagged == () and not marked(table, "shard-1")
        await until(pilot, lambda: "tagged" not in str(app.query_one(TaskBar).render()), what="no tag count")
        app.query_one(JobTable).focus()
        await pilot.press("K")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm K")
        await pilot.press("y")
        await until(pilot, lambda: set(app.snapshot.counts) == {"killed"}, timeout=60, what="every task killed")
        said = await until(pilot, lambda: len(toasts(app, "killed")) > 1 and toasts(app, "killed"), what="K toast")
        assert said[1].startswith("killed ") and "pending" in said[1], said  # one toast, not 197


async def test_tagged_retry_reports_the_tasks_it_cannot_retry(make_job):
    app = job_app(make_job, num_workers=3, max_parallel=3, sleep=60, stop_grace_s=1)
    async with app.run_test(size=(160, 45)) as pilot:
        await launched(pilot, app, make_job, 3)
        table = app.query_one(JobTable)
        table.focus()
        await tag(pilot, table, "shard-0")
        await pilot.press("k")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm kill")
        await pilot.press("y")
        await until(pilot, lambda: statuses(app)["shard-0"] == "killed", what="shard-0 killed")
        await tag(pilot, table, "shard-1")
        await pilot.press("r")  # shard-0 can be retried, shard-1 (running) cannot
        screen = await until(pilot, lambda: isinstance(app.screen, ConfirmScreen) and app.screen, what="confirm")
        assert screen.title_text == "Retry 1 task: shard-0?" and "not retried: shard-1 (running)" in screen.body
        await pilot.press("y")
        said = await until(pilot, lambda: toasts(app, "retried"), what="the toast")
        assert said == ["retried 1 killed\nnot retried: shard-1 (running)"]
        await until(pilot, lambda: statuses(app)["shard-0"] in ("pending", "running"), what="shard-0 again")
        await pilot.press("K", "y")


def run_statuses(run_dir) -> dict[str, str]:
    """As the run's store has them (not as the app last read them)."""
    with open_run(run_dir) as run:
        return {t.id: t.status for t in run.tasks()}


def starts(make_job, task_id: str) -> int:
    return sum(1 for e in make_job.events() if e["event"] == "start" and e["task"] == task_id)


async def test_l_on_a_finished_run_with_a_failed_task_runs_only_that_one_again(make_job):
    # shard-1 (ids from 1) fails its first attempt, shard-0 never fails
    app = job_app(make_job, ids=2, num_workers=2, max_attempts=1, worker_args="--fail-attempts {low}")
    async with app.run_test(size=(160, 45)) as pilot:
        await until(pilot, lambda: app.is_running, what="the app")
        await pilot.press("l")
        await until(pilot, lambda: statuses(app) == {"shard-0": "done", "shard-1": "failed"}, what="one failed")
        await until(pilot, lambda: not app.snapshot.scheduler_live, what="the scheduler to end")
        await pilot.press("l")
        choice = await until(pilot, lambda: isinstance(app.screen, ChoiceScreen) and app.screen, what="asked")
        keys = str(choice.query_one(".dialog-keys").render())
        assert "run the failed tasks again" in keys and "run all again" in keys and "esc" in keys
        await pilot.press("f")  # the failed only
        done = {"shard-0": "done", "shard-1": "done"}
        await until(pilot, lambda: run_statuses(make_job.run_dir) == done, what="shard-1 done")
        assert (starts(make_job, "shard-0"), starts(make_job, "shard-1")) == (1, 2)


async def test_l_on_a_run_where_every_task_is_done_starts_it_over(make_job):
    job = make_job(ids=2, num_workers=2)
    assert gputui("run", "--jobs", job, "--simulate", "2x24", "--quiet").returncode == 0
    app = GpuTuiApp(job_path=job, run_dir=make_job.run_dir, simulate="2x24", interval=0.25)
    async with app.run_test(size=(160, 45)) as pilot:
        await until(pilot, lambda: statuses(app) == {"shard-0": "done", "shard-1": "done"}, what="the run read")
        await pilot.press("l")
        choice = await until(pilot, lambda: isinstance(app.screen, ChoiceScreen) and app.screen, what="asked")
        assert "over" in choice.title_text and "esc" in str(choice.query_one(".dialog-keys").render())
        await pilot.press("a")
        await until(
            pilot,
            lambda: (starts(make_job, "shard-0"), starts(make_job, "shard-1")) == (2, 2),
            what="a new attempt for each",
        )
        done = {"shard-0": "done", "shard-1": "done"}
        await until(pilot, lambda: run_statuses(make_job.run_dir) == done, what="done again")
        with open_run(make_job.run_dir) as run:
            assert [t.attempts for t in run.tasks()] == [2, 2]
