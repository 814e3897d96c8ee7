"""The app driven by Pilot over real runs: a real background scheduler, real workers, real signals."""

from __future__ import annotations

import html
import os
import time

import psutil

from gputui.gpus.reservations import Reservations
from gputui.jobs.loader import load_jobspec
from gputui.tui.app import GpuTuiApp
from gputui.tui.refresh import Refreshed
from gputui.tui.screens.dialogs import ConfirmScreen, QuitScreen
from gputui.tui.screens.help import HelpScreen
from gputui.tui.screens.menu import FileScreen, MenuScreen
from gputui.tui.widgets.gpu_panel import GpuPanel
from gputui.tui.widgets.job_table import JobTable
from gputui.tui.widgets.log_tabs import LogTabs
from gputui.tui.widgets.process_list import ProcessList
from tests.conftest import gone


def screen_text(app) -> str:
    return html.unescape(app.export_screenshot()).replace("\xa0", " ")


async def until(pilot, predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await pilot.pause(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def statuses(app) -> dict[str, str]:
    return {v.task.id: v.task.status for v in app.snapshot.tasks} if app.snapshot else {}


def job_app(make_job, readonly=False, **job_kw) -> GpuTuiApp:
    job_path = make_job(**job_kw)
    job = load_jobspec(job_path)
    return GpuTuiApp(job_path=job_path, run_dir=job.run_dir, simulate="2x24", interval=0.25, readonly=readonly)


async def launched(pilot, app, make_job, running: int):
    await until(pilot, lambda: app.query(JobTable) and app.is_running, what="the app")
    await pilot.press("l")
    await until(pilot, lambda: app.snapshot is not None and app.snapshot.scheduler_live, what="the scheduler")
    await until(pilot, lambda: len(make_job.running()) >= running, what=f"{running} workers")
    await until(pilot, lambda: list(statuses(app).values()).count("running") >= running, what="running rows")


async def test_monitor_mode_shows_gpus_and_processes_and_quits_at_once():
    app = GpuTuiApp(simulate="8x24", interval=0.25)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: len(app.query(GpuPanel)) == 8, what="8 GPU panels")
        assert app.query(ProcessList) and not app.query(JobTable)
        assert "SIMULATED" in str(app.query_one("#header").render())
        await pilot.press("l", "K")  # nothing to launch or kill in monitor mode
        assert not isinstance(app.screen, ConfirmScreen)
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running, what="exit")


async def test_launch_runs_the_job_in_the_background_and_the_table_follows(make_job):
    app = job_app(make_job, num_workers=2, sleep=0.5)
    seen = []
    async with app.run_test(size=(160, 45), message_hook=seen.append) as pilot:
        await until(pilot, lambda: app.is_running, what="the app")
        assert "press l to launch" in str(app.query_one("#header").render())
        await pilot.press("l")
        await until(pilot, lambda: set(statuses(app).values()) == {"done"}, what="all done")
        table = app.query_one(JobTable)
        assert table.row_count == 2
        assert any(isinstance(m, Refreshed) for m in seen)
        await pilot.press("down")
        await until(
            pilot,
            lambda: any(isinstance(m, JobTable.TaskSelected) and m.task_id == "shard-1" for m in seen),
            what="TaskSelected(shard-1)",
        )
        assert app.query_one(LogTabs).task_id == "shard-1"


async def test_pause_and_resume_from_the_table(make_job):
    app = job_app(make_job, num_workers=1, sleep=60)
    async with app.run_test(size=(160, 45)) as pilot:
        await launched(pilot, app, make_job, 1)
        pid = make_job.running()["shard-0"]
        app.query_one(JobTable).focus()
        await pilot.press("p")
        await until(pilot, lambda: psutil.Process(pid).status() == psutil.STATUS_STOPPED, what="state T")
        await until(pilot, lambda: statuses(app)["shard-0"] == "paused", what="paused row")
        await pilot.press("p")
        await until(pilot, lambda: psutil.Process(pid).status() != psutil.STATUS_STOPPED, what="continued")
        await until(pilot, lambda: statuses(app)["shard-0"] == "running", what="running row")


async def test_kill_asks_first_names_the_processes_and_cancel_keeps_them(make_job):
    app = job_app(make_job, num_workers=1, sleep=60, stop_grace_s=1)
    async with app.run_test(size=(160, 45)) as pilot:
        await launched(pilot, app, make_job, 1)
        pid = make_job.running()["shard-0"]
        app.query_one(JobTable).focus()
        await pilot.press("k")
        screen = await until(pilot, lambda: isinstance(app.screen, ConfirmScreen) and app.screen, what="confirm")
        assert str(pid) in screen.body and "SIGTERM" in screen.body
        await pilot.press("n")
        await pilot.pause(0.5)
        assert not gone(pid) and statuses(app)["shard-0"] == "running"
        await pilot.press("k")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm again")
        await pilot.press("y")
        await until(pilot, lambda: gone(pid), what="the worker gone")
        await until(pilot, lambda: statuses(app)["shard-0"] == "killed", what="killed row")
        app.query_one(JobTable).focus()
        await pilot.press("r")
        await until(pilot, lambda: statuses(app)["shard-0"] in ("pending", "running"), what="retried")


async def test_kill_all_stops_every_task_of_this_run(make_job):
    app = job_app(make_job, num_workers=2, max_parallel=2, sleep=60, stop_grace_s=1)
    async with app.run_test(size=(160, 45)) as pilot:
        await launched(pilot, app, make_job, 2)
        pids = list(make_job.running().values())
        await pilot.press("K")
        screen = await until(pilot, lambda: isinstance(app.screen, ConfirmScreen) and app.screen, what="confirm")
        assert "Kill all 2 tasks" in screen.title_text
        await pilot.press("y")
        await until(pilot, lambda: all(gone(p) for p in pids), what="all workers gone")
        await until(pilot, lambda: set(statuses(app).values()) == {"killed"}, what="all killed")


async def test_readonly_view_never_signals(make_job):
    app = job_app(make_job, num_workers=1, sleep=60)
    async with app.run_test(size=(160, 45)) as pilot:
        await launched(pilot, app, make_job, 1)
    viewer = GpuTuiApp(run_dir=app.run_dir, simulate="2x24", interval=0.25, readonly=True)
    async with viewer.run_test(size=(160, 45)) as pilot:
        await until(pilot, lambda: statuses(viewer).get("shard-0") == "running", what="the running task")
        pid = make_job.running()["shard-0"]
        viewer.query_one(JobTable).focus()
        await pilot.press("k", "p", "K")
        await pilot.pause(0.5)
        assert not isinstance(viewer.screen, ConfirmScreen)
        assert psutil.Process(pid).status() != psutil.STATUS_STOPPED and not gone(pid)
        assert "READ-ONLY" in str(viewer.query_one("#header").render())


async def test_quit_detaches_and_the_run_goes_on(make_job):
    app = job_app(make_job, num_workers=1, sleep=2.0)
    async with app.run_test(size=(160, 45)) as pilot:
        await launched(pilot, app, make_job, 1)
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, QuitScreen), what="the quit dialog")
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, QuitScreen), what="cancelled")
        await pilot.press("q", "d")
        await until(pilot, lambda: not app.is_running, what="exit")
    # Re-attach: the run finished without the app.
    again = GpuTuiApp(run_dir=app.run_dir, simulate="2x24", interval=0.25)
    async with again.run_test(size=(160, 45)) as pilot:
        await until(pilot, lambda: statuses(again) == {"shard-0": "done"}, timeout=30, what="the run to finish")


async def test_menu_merges_and_shows_the_reports(make_job):
    app = job_app(make_job, num_workers=2)
    async with app.run_test(size=(160, 45)) as pilot:
        await until(pilot, lambda: app.is_running, what="the app")
        await pilot.press("l")
        await until(pilot, lambda: set(statuses(app).values()) == {"done"}, what="all done")
        await until(pilot, lambda: not app.snapshot.scheduler_live, what="the scheduler to finish")
        merged = app.view.paths.root / "outputs" / "merged.csv"
        merged.unlink()
        await pilot.press("m")
        await until(pilot, lambda: isinstance(app.screen, MenuScreen), what="the menu")
        await pilot.press("enter")  # the first entry: merge
        await until(pilot, lambda: merged.exists(), what="the merged file")
        await pilot.press("m", "down", "down", "down", "enter")  # view report.md
        screen = await until(pilot, lambda: isinstance(app.screen, FileScreen) and app.screen, what="the report")
        assert screen.path.name == "report.md"
        await pilot.press("escape")


async def test_theme_switches_at_run_time(make_job):
    app = GpuTuiApp(simulate="1", interval=0.25, theme="dark")
    async with app.run_test(size=(80, 24)) as pilot:
        assert app.has_class("theme-dark") and app.theme == "gputui-dark"
        await pilot.press("t")
        assert app.has_class("theme-light") and not app.has_class("theme-dark") and app.theme == "gputui-light"
        await pilot.press("t")
        assert app.theme == "gputui-high-contrast"


async def test_sort_and_filter_the_table(make_job):
    app = job_app(make_job, num_workers=3, max_parallel=1, sleep=60, worker_args="")
    async with app.run_test(size=(160, 45)) as pilot:
        await launched(pilot, app, make_job, 1)
        table = app.query_one(JobTable)
        table.focus()
        await pilot.press("v")  # active tasks only
        await until(pilot, lambda: table.row_count == 1, what="one active row")
        await pilot.press("v", "v", "v", "v")  # back to all
        await until(pilot, lambda: table.row_count == 3, what="all rows")
        await pilot.press("s")
        assert table.sort_by == "status"
        assert table.row_ids[0] == "shard-0"  # running before pending


async def test_enter_pins_a_log_tab_and_slash_searches_it(make_job):
    app = job_app(make_job, num_workers=2, max_parallel=2, sleep=60)
    async with app.run_test(size=(160, 45)) as pilot:
        await launched(pilot, app, make_job, 2)
        table = app.query_one(JobTable)
        table.focus()
        await pilot.press("down", "enter")
        tabs = app.query_one("#logs")
        await until(pilot, lambda: tabs.active == "log-shard-1-1", what="a pinned tab")
        pane = tabs.active_pane.query_one("LogPane")
        await until(pilot, lambda: pane.log_view.line_count >= 1, what="the log's lines")
        await pilot.press("slash")
        await until(pilot, lambda: pane.search_input.display, what="the search box")
        await pilot.press(*"start", "enter")
        await until(pilot, lambda: pane.log_view.match_line == 0, what="the match")


async def test_help_follow_and_the_other_menu_entries(make_job):
    app = job_app(make_job, num_workers=1)
    async with app.run_test(size=(160, 45)) as pilot:
        await until(pilot, lambda: app.is_running, what="the app")
        await pilot.press("question_mark")
        help_screen = await until(pilot, lambda: isinstance(app.screen, HelpScreen) and app.screen, what="help")
        listed = screen_text(app)
        assert "before launch" in listed and "launch the job" in listed
        assert "pause the selected" not in listed, "before launch, p does nothing: not listed"
        await pilot.press("question_mark")
        await until(pilot, lambda: app.screen is not help_screen, what="help closed")
        await pilot.press("l")
        await until(pilot, lambda: set(statuses(app).values()) == {"done"}, what="all done")
        await until(pilot, lambda: not app.snapshot.scheduler_live, what="the scheduler to finish")
        view = app._visible_log().log_view
        following = view.follow
        await pilot.press("f")
        assert view.follow is not following
        report = app.view.paths.root / "report.md"
        report.unlink()
        await pilot.press("m", "down", "enter")  # write summaries
        await until(pilot, report.exists, what="report.md written again")
        await pilot.press("m", "down", "down", "enter")  # view merge_summary.json
        screen = await until(pilot, lambda: isinstance(app.screen, FileScreen) and app.screen, what="the viewer")
        assert screen.path.name == "merge_summary.json"
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, FileScreen), what="closed")


async def test_command_palette_offers_the_keys(make_job):
    app = job_app(make_job, num_workers=1)
    async with app.run_test(size=(160, 45)) as pilot:
        await until(pilot, lambda: app.is_running, what="the app")
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for text in ("launch the job", "menu: merge", "next theme", "GPU layout"):
            assert any(text in t for t in titles), text
        assert not any("pause the selected" in t for t in titles), "only what acts before launch"


async def test_the_selected_log_follows_a_retry_to_its_new_attempt(make_job):
    app = job_app(make_job, num_workers=1, backoff_s=0.2, worker_args="--fail-attempts 1")
    async with app.run_test(size=(160, 45)) as pilot:
        await until(pilot, lambda: app.is_running, what="the app")
        await pilot.press("l")
        await until(pilot, lambda: statuses(app).get("shard-0") == "done", what="attempt 2 done")
        pane = app.query_one("#log-selected-pane")
        await until(
            pilot,
            lambda: pane.log_view.path and pane.log_view.path.name == "shard-0.attempt2.log",
            what="the pane on attempt 2's log",
        )


async def test_private_simulated_gpus_show_no_holder_from_the_machines_map():
    reservations = Reservations()  # the test's own folder (GPUTUI_LOCK_DIR, see conftest)
    fd = reservations.claim("SIM-GPU-1")
    Reservations.annotate(fd, {"job": "other-job", "task": "shard-7", "user": "alice", "scheduler_id": "x"})
    try:
        app = GpuTuiApp(simulate="2x24", interval=0.25)  # private: another run's simulated GPU 1 is not this one
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: len(app.query(GpuPanel)) == 2, what="2 GPU panels")
            await pilot.pause(0.6)  # (a refresh or two)
            assert all(not p.state.holders for p in app.query(GpuPanel))
    finally:
        os.close(fd)


async def test_gpu_panels_show_which_gpu_another_run_holds():
    reservations = Reservations()  # the test's own folder (GPUTUI_LOCK_DIR, see conftest)
    fd = reservations.claim("SIM-GPU-1")
    note = {"job": "other-job", "task": "shard-7", "scheduler_id": "someone-else", "pid": os.getpid()}
    note |= {"user": "alice", "uid": 4242, "run_dir": "/home/alice/runs/other"}
    Reservations.annotate(fd, note)
    try:
        app = GpuTuiApp(simulate="shared:2x24", interval=0.25)  # (private simulated GPUs show no one else's)
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: len(app.query(GpuPanel)) == 2, what="2 GPU panels")
            labels = lambda: {p.index: " ".join(p.state.holders) for p in app.query(GpuPanel)}  # noqa: E731
            held = "held by alice: runs/other shard-7 since "
            await until(pilot, lambda: held in labels()[1], what="GPU 1 shown as held")
            assert "other-job" not in labels()[0]
            # No driver lists processes on simulated GPUs: the monitor's process panel shows the run's task.
            rows = await until(pilot, lambda: app.query_one(ProcessList).rows_by_key, what="a process row")
            (row,) = rows.values()
            assert (row.gpu, row.pid, row.task_id, row.ours) == (1, os.getpid(), "shard-7", True)
            assert "gputui run other-job: task shard-7 (simulated GPU)" in row.command
    finally:
        os.close(fd)
