"""The app's second pass, as a user meets it: each reported bug, the 80x24 layout, keys per mode, logs.

Fixed runs (state written directly, a real run lock for "live") where looks and keys are the point; a real
background scheduler with real workers where launching is.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import replace

import pytest
from textual.widgets import TabbedContent
from textual.widgets._toast import Toast

from gputui.gpus.simulated import SimulatedProbe
from gputui.jobs.tasks import Status
from gputui.results.report import energy_text
from gputui.rundir.meta import read_meta, write_meta
from gputui.rundir.paths import RunLock, RunPaths
from gputui.rundir.store import Store
from gputui.tui.app import GpuTuiApp
from gputui.tui.screens.dialogs import ChoiceScreen, ConfirmScreen, QuitScreen
from gputui.tui.screens.help import HelpScreen
from gputui.tui.screens.processes import ProcessTreeScreen
from gputui.tui.widgets.gpu_meters import sparkline
from gputui.tui.widgets.gpu_panel import GpuLine, GpuPanel
from gputui.tui.widgets.job_table import JobTable
from gputui.tui.widgets.log_view import LogPane
from gputui.tui.widgets.run_header import RunHeader
from gputui.tui.widgets.task_bar import TaskBar
from gputui.views.runview import attempt_spans, union_length
from tests.conftest import gputui
from tests.tui.fixed_run import fixed_run
from tests.tui.test_app import job_app, launched, statuses, until


def text_of(app) -> str:
    return html.unescape(app.export_screenshot()).replace("\xa0", " ")


def header(app) -> str:
    return str(app.query_one(RunHeader).render())


def footer_keys(app) -> set[str]:
    return {key for key, b in app.screen.active_bindings.items() if b.binding.show and b.enabled}


def probe(n: int = 8) -> SimulatedProbe:
    return SimulatedProbe(n, 80.0, clock=lambda: 0.0)


@pytest.fixture
def live_run(tmp_path):
    """A fixed run with a real scheduler lock held: 2 running/paused tasks, one retrying, 3 pending."""
    run_dir = fixed_run(tmp_path / "run", 10, running=2)
    lock = RunLock(RunPaths(run_dir))
    assert lock.try_acquire("scheduler")
    yield run_dir
    lock.release()


async def ready(pilot, app):
    await until(pilot, lambda: app.snapshot is not None and app.query(JobTable).first().row_count, what="rows")
    await until(pilot, lambda: app.gpus, what="GPUs")
    await pilot.pause(0.2)


# -- 80x24 -----------------------------------------------------------------------------------------


async def test_80x24_with_8_gpus_shows_every_gpu_the_table_the_log_and_the_progress_line(live_run):
    app = GpuTuiApp(run_dir=live_run, interval=60, probe=probe())
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot, app)
        lines = list(app.query(GpuLine))
        assert [line.index for line in lines] == list(range(8))
        assert all(0 <= line.region.y < 24 and line.region.height == 1 for line in lines)
        log = app.query_one("#log-selected-pane", LogPane)
        assert log.region.height >= 3 and log.region.bottom <= 23, "the log pane is on screen"
        table = app.query_one(JobTable)
        assert table.region.height >= 4
        assert "done" in header(app).splitlines()[1] and "elapsed" in header(app).splitlines()[1]
        assert "K" in footer_keys(app) and "q" in footer_keys(app)
        # The selected task's reason is on screen at 80 columns (the task bar), and the reason column too.
        table.move_cursor(row=2)  # shard-2, failed
        await pilot.pause(0.2)
        assert "CUDA out of memory" in str(app.query_one(TaskBar).render())
        assert table.column_widths["reason"] >= 12
        await pilot.press("K")
        dialog = await until(pilot, lambda: isinstance(app.screen, ConfirmScreen) and app.screen, what="ask")
        keys = dialog.query_one(".dialog-keys")
        assert keys.region.bottom <= 24 and "confirm" in str(keys.render())
        await pilot.press("n")


async def test_before_launch_at_80x24_the_footer_shows_launch(tmp_path):
    app = GpuTuiApp(job_path=tmp_path / "job.toml", run_dir=tmp_path / "run", interval=60, probe=probe())
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.gpus, what="GPUs")
        await pilot.pause(0.2)
        assert footer_keys(app) == {"l", "m", "q", "question_mark"}
        await until(pilot, lambda: "Launch" in text_of(app), what="the footer drawn")  # late on a busy machine
        assert "not started: press l to launch" in header(app)


async def test_history_shows_at_200x50(live_run):
    app = GpuTuiApp(run_dir=live_run, interval=0.25, probe=probe())
    async with app.run_test(size=(200, 50)) as pilot:
        await ready(pilot, app)
        panels = list(app.query(GpuPanel))
        assert len(panels) == 8 and all(p.region.bottom <= 50 for p in panels)
        assert [line.split()[0] for line in panels[0].text()[4:6]] == ["util", "mem"]
        await until(pilot, lambda: len(app._panels.history(0)[0]) >= 3, what="history samples")
        await pilot.pause(0.1)
        samples = app._panels.history(0)[0]
        assert panels[0].text()[4].endswith(sparkline(samples, len(samples)))


# -- reported bugs ---------------------------------------------------------------------------------


async def test_merge_or_summary_before_launch_says_so_and_the_app_stays(tmp_path):
    app = GpuTuiApp(job_path=tmp_path / "job.toml", run_dir=tmp_path / "run", interval=60, probe=probe(1))
    async with app.run_test(size=(120, 40)) as pilot:
        for item in (0, 1):  # merge, write summary
            await pilot.press("m", *["down"] * item, "enter")
            await until(
                pilot, lambda: any("yet: launch the job" in n.message for n in app._notifications), what="toast"
            )
            app.clear_notifications()
        await pilot.press("m", "down", "down", "enter")  # view merge_summary.json: not written yet
        await pilot.pause(0.3)
        assert "does not exist yet" in text_of(app) and "Merge writes it" in text_of(app)
        await pilot.press("escape")
        assert app.is_running and not (tmp_path / "run" / "state.db").exists()


async def test_the_reason_column_takes_the_room_left_and_shows_a_reason_that_came_later(tmp_path):
    run_dir = fixed_run(tmp_path / "run", 6)
    reason = "CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.15 GiB total)"
    app = GpuTuiApp(run_dir=run_dir, interval=0.25, probe=probe())
    async with app.run_test(size=(200, 50)) as pilot:
        await ready(pilot, app)
        store = Store.open(run_dir / "state.db")
        with store.transaction():
            store.update_task("shard-4", status=Status.FAILED, reason=reason)
        store.close()
        await until(pilot, lambda: reason in text_of(app), what="the whole reason on screen")
        assert app.query_one(JobTable).column_widths["reason"] >= len(reason)


async def test_reattaching_without_simulate_probes_the_way_the_run_was_started(make_job):
    job = make_job(num_workers=1)
    assert gputui("run", "--jobs", job, "--simulate", "2x24", "--quiet").returncode == 0
    app = GpuTuiApp(run_dir=make_job.run_dir, interval=0.25)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: len(app.query(GpuPanel)) == 2, what="the run's 2 simulated GPUs")
        assert "SIMULATED (2 x 24 GB)" in header(app)


async def test_no_gpu_and_no_simulate_says_so_instead_of_probing_forever():
    app = GpuTuiApp(interval=0.25)  # this machine has no NVIDIA driver (NVML and torch find nothing)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: "none found" in header(app), what="the header")

        def shown():
            return [m for m in app.query("#no-gpu") if m.region.height and "--simulate" in str(m.render())]

        await until(pilot, shown, what="the message under the header")


async def test_a_gpu_job_without_gpus_says_why_each_backend_found_none(make_job):
    """As `gputui gpus` gives them: each backend's reason, not an empty 'No GPU could be probed:'."""
    job = make_job(gpus_per_worker=1)
    app = GpuTuiApp(job_path=job, run_dir=make_job.run_dir, interval=0.25)  # no NVIDIA driver here
    async with app.run_test(size=(160, 40)) as pilot:
        await until(pilot, lambda: "none found" in header(app), what="the header")
        message = lambda: " ".join(" ".join(str(m.render()) for m in app.query("#no-gpu")).split())  # noqa: E731
        said = await until(pilot, lambda: "No GPU" in message() and message(), what="the message")
        assert "No GPU could be probed: nvml:" in said and "; torch:" in said and "--simulate 4x24" in said


async def test_a_cpu_job_without_gpus_says_none_needed_and_warns_of_nothing(make_job):
    job = make_job(gpus_per_worker=0, num_workers=2)
    app = GpuTuiApp(job_path=job, run_dir=make_job.run_dir, interval=0.25)  # no --simulate, no NVIDIA driver
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: "GPUs: none (CPU tasks)" in header(app), what="before launch")
        await pilot.pause(0.5)
        assert "No GPU" not in text_of(app) and "--simulate" not in text_of(app)
        await pilot.press("l")
        await until(pilot, lambda: set(statuses(app).values()) == {"done"}, what="the run done")
        await until(pilot, lambda: "GPUs: none (CPU tasks)" in header(app), what="after launch")
        assert "No GPU" not in text_of(app) and "--simulate" not in text_of(app)


def test_a_bad_simulate_spec_is_refused_before_any_screen():
    result = gputui("--simulate", "8x")
    assert result.returncode == 2
    assert "--simulate: expected N or NxGB (e.g. 4 or 8x24)" in result.stderr and "got '8x'" in result.stderr


async def test_a_run_whose_state_turns_unreadable_says_so_and_dims_what_it_shows(tmp_path):
    run_dir = fixed_run(tmp_path / "run", 6)
    app = GpuTuiApp(run_dir=run_dir, interval=0.25, probe=probe())
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot, app)
        (run_dir / "state.db").write_bytes(b"this is not a database" * 100)
        await until(pilot, lambda: "cannot read the run" in header(app).splitlines()[1], what="the error line")
        assert app.query_one(JobTable).has_class("-stale")


async def test_a_task_with_no_log_yet_shows_that_not_the_previous_log(tmp_path):
    run_dir = fixed_run(tmp_path / "run", 6)
    app = GpuTuiApp(run_dir=run_dir, interval=60, probe=probe())
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot, app)
        pane = app.query_one("#log-selected-pane", LogPane)
        await until(pilot, lambda: pane.log_view.line_count == 2, what="shard-0's log")
        table = app.query_one(JobTable)
        table.move_cursor(row=4)  # shard-4: pending
        await until(pilot, lambda: pane.log_view.path is None, what="no log shown")
        tabs = app.query_one("#logs", TabbedContent)
        assert "shard-4 (not started)" in str(tabs.get_tab("log-selected").label)
        assert "shard-4 has not started yet" in text_of(app)


async def test_each_pending_task_s_log_pane_names_that_task(make_job):
    """From one pending task to the next, the pane names the selected task, not the first pending one visited."""
    app = job_app(make_job, num_workers=4, max_parallel=1, sleep=0.5, ids=400)
    async with app.run_test(size=(120, 40)) as pilot:
        try:
            await launched(pilot, app, make_job, running=1)
            table = app.query_one(JobTable)
            pane = app.query_one("#log-selected-pane", LogPane)
            tabs = app.query_one("#logs", TabbedContent)
            for task_id in ("shard-2", "shard-3"):
                await until(pilot, lambda t=task_id: statuses(app).get(t) == "pending", what=f"{task_id} pending")
                table.move_cursor(row=table.row_ids.index(task_id))
                await until(pilot, lambda t=task_id: f"{t} has not started yet" in text_of(app), what=task_id)
                assert f"log: {task_id} (not started)" in str(tabs.get_tab("log-selected").label)
                said = re.findall(r"[\w-]+ has not started yet", text_of(app))
                assert pane.log_view.path is None and said == [f"{task_id} has not started yet"]
        finally:
            gputui("kill", "--run-dir", make_job.run_dir, "--all")


async def test_launching_a_run_that_ended_with_failures_asks_and_can_run_only_the_retried(make_job):
    app = job_app(make_job, num_workers=2, max_attempts=1, worker_args="--fail-attempts 1")
    async with app.run_test(size=(160, 45)) as pilot:
        await until(pilot, lambda: app.is_running, what="the app")
        await pilot.press("l")
        await until(pilot, lambda: set(statuses(app).values()) == {"failed"}, what="both failed")
        await until(pilot, lambda: not app.snapshot.scheduler_live, what="the scheduler to end")
        table = app.query_one(JobTable)
        table.focus()
        table.move_cursor(row=0)
        await pilot.press("r")  # shard-0 gets another attempt (no scheduler: applied directly)
        await until(pilot, lambda: statuses(app)["shard-0"] == "pending", what="shard-0 pending")
        await pilot.press("l")
        choice = await until(pilot, lambda: isinstance(app.screen, ChoiceScreen) and app.screen, what="asked")
        assert "shard-1" in choice.body and "failed for good" in choice.body
        await pilot.press("o")  # only the pending one
        await until(pilot, lambda: statuses(app)["shard-0"] == "done", what="shard-0 done")
        await until(pilot, lambda: not app.snapshot.scheduler_live, what="the scheduler to end")
        assert statuses(app)["shard-1"] == "failed"
        assert sum(1 for e in make_job.events() if e["event"] == "start" and e["task"] == "shard-1") == 1


async def test_text_that_looks_like_markup_is_shown_as_written(tmp_path):
    run_dir = fixed_run(tmp_path / "run", 6)
    store = Store.open(run_dir / "state.db")
    with store.transaction():
        meta = read_meta(store)
        write_meta(store, replace(meta, job=replace(meta.job, name="[exp] sweep")))
        store.update_task("shard-2", reason="missing [outputs].merged in [b]job.toml[/b]")
    store.close()
    app = GpuTuiApp(run_dir=run_dir, interval=60, probe=probe())
    async with app.run_test(size=(200, 50)) as pilot:
        await ready(pilot, app)
        app.query_one(JobTable).move_cursor(row=2)
        await pilot.pause(0.2)
        assert "[exp] sweep" in header(app)
        assert "missing [outputs].merged in [b]job.toml[/b]" in str(app.query_one(TaskBar).render())
        app.say("merge: set [outputs].merged first")
        await pilot.pause(0.3)
        shown = [Toast(n).render().plain for n in app._notifications]  # what the toast draws
        assert any("merge: set [outputs].merged first" in text for text in shown)


async def test_header_words_are_separated(live_run):
    app = GpuTuiApp(run_dir=live_run, interval=60, probe=probe())
    async with app.run_test(size=(200, 50)) as pilot:
        await ready(pilot, app)
        first = header(app).splitlines()[0]
        assert "continuation · gpu" in first or "continuation · " in first
        assert " live · GPUs: SIMULATED" in first


async def test_paused_tasks_are_not_running_have_no_rate_and_the_retry_counts_down(live_run):
    app = GpuTuiApp(run_dir=live_run, interval=60, probe=probe())
    async with app.run_test(size=(200, 50)) as pilot:
        await ready(pilot, app)
        progress = header(app).splitlines()[1]
        assert "1 running" in progress and "1 paused" in progress and "3 pending" in progress
        table = app.query_one(JobTable)
        paused = [str(c) for c in table.row_text("shard-5")]
        assert "paused" in paused and not any(":" in c for c in paused[6:7]), "no ETA while paused"
        retrying = [str(c) for c in table.row_text("shard-6")]
        assert any(c.startswith("next try in") for c in retrying)


def test_elapsed_counts_back_off_but_not_idle_time_between_launches():
    from gputui.jobs.tasks import TaskRecord
    from gputui.rundir.records import AttemptRecord
    from gputui.views.runview import TaskView

    def attempt(n, start, end, status):
        return AttemptRecord("t", n, status, (), (), "", start, end, None, None, None, None, None, end)

    task = TaskRecord("t", 0, 0, 1, 1, Status.DONE, 3, 3, (), None, 0, 0.0, 500.0, None)
    history = (
        attempt(1, 0.0, 10.0, Status.FAILED),  # retried automatically after a 5 s back-off
        attempt(2, 15.0, 20.0, Status.KILLED),  # killed by the user; launched again much later
        attempt(3, 400.0, 500.0, Status.DONE),
    )
    spans = attempt_spans([TaskView(task, history[-1], None, history)], now=1000.0, bridge_s=30.0)
    assert union_length(spans) == 20.0 + 100.0


async def test_elapsed_moves_every_second_without_a_refresh(live_run):
    app = GpuTuiApp(run_dir=live_run, interval=60, probe=probe())  # no data refresh during the test
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot, app)
        table = app.query_one(JobTable)
        for _ in range(20):  # the first frames settled (the GPU panels' arrival may lay the table out again)
            drawn = table.rows_rendered
            await pilot.pause(0.5)
            if table.rows_rendered == drawn:
                break
        before = header(app).splitlines()[1]
        await pilot.pause(2.1)
        assert header(app).splitlines()[1] != before
        assert table.rows_rendered == drawn, "no table row was drawn again"


# -- keys per mode ---------------------------------------------------------------------------------


async def test_keys_shown_follow_the_mode_and_the_selected_task(live_run):
    app = GpuTuiApp(run_dir=live_run, interval=60, probe=probe())
    async with app.run_test(size=(200, 50)) as pilot:
        await ready(pilot, app)
        table = app.query_one(JobTable)
        table.move_cursor(row=0)  # done
        await pilot.pause(0.2)
        assert not {"p", "k", "r", "l"} & footer_keys(app)
        table.move_cursor(row=4)  # running
        await pilot.pause(0.2)
        assert {"p", "k"} <= footer_keys(app) and "r" not in footer_keys(app)
        table.move_cursor(row=2)  # failed
        await pilot.pause(0.2)
        assert "r" in footer_keys(app) and "p" not in footer_keys(app)
        table.move_cursor(row=7)  # pending: l starts it now
        await pilot.pause(0.2)
        assert "l" in footer_keys(app)


def files(root):
    """Every file and its bytes, but SQLite's own -wal/-shm (it may tidy them when a reader closes)."""
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.name.endswith(("-wal", "-shm"))}


async def test_readonly_writes_nothing_offers_no_signals_and_q_quits_at_once(live_run):
    before = files(live_run)
    app = GpuTuiApp(run_dir=live_run, interval=0.25, readonly=True, probe=probe())
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot, app)
        app.query_one(JobTable).move_cursor(row=4)  # running
        await pilot.pause(0.2)
        assert not {"p", "k", "K", "r", "l"} & footer_keys(app)
        await pilot.press("m")
        await pilot.pause(0.2)
        assert "Merge shard outputs" not in text_of(app) and "View report.md" in text_of(app)
        await pilot.press("escape", "q")
        await until(pilot, lambda: not app.is_running, what="quit at once")
    assert files(live_run) == before


async def help_and_palette(pilot, app) -> tuple[str, str]:
    """What `?` shows and what the command palette offers, as text."""
    palette = " | ".join(c.title for c in app.get_system_commands(app.screen))
    await pilot.press("question_mark")
    await until(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
    await pilot.pause(0.2)
    shown = text_of(app)
    await pilot.press("escape")
    return shown, palette


async def test_readonly_help_and_palette_describe_only_what_acts_there(make_job):
    job = make_job(num_workers=1)
    assert gputui("run", "--jobs", job, "--simulate", "2x24", "--quiet").returncode == 0
    app = GpuTuiApp(run_dir=make_job.run_dir, interval=0.25, readonly=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.snapshot is not None, what="the run")
        shown, palette = await help_and_palette(pilot, app)
        assert "gputui keys (read-only)" in shown and "q quits" in shown
        for text in (shown, palette):
            assert "detach" not in text and "stop them" not in text
            assert "merge shard outputs" not in text and "launch the job" not in text
        assert "view the merge summary and report.md" in shown


async def test_monitor_help_and_palette_describe_only_what_acts_there():
    app = GpuTuiApp(simulate="2x24", interval=0.25)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.gpus, what="GPUs")
        shown, palette = await help_and_palette(pilot, app)
        assert "gputui keys (monitor)" in shown and "sort the process list: GPU, GPU memory, CPU" in shown
        for text in (shown, palette):
            assert "sort the table" not in text and "back to the table" not in text
            assert "detach" not in text and "log:" not in text


async def test_a_live_runs_help_still_says_how_quitting_leaves_tasks_going(live_run):
    app = GpuTuiApp(run_dir=live_run, interval=60, probe=probe())
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot, app)
        shown, _ = await help_and_palette(pilot, app)
        assert "d detach (they go on)" in shown and "sort the table: id, status, elapsed" in shown


async def test_filter_and_sort_are_always_on_screen(live_run):
    app = GpuTuiApp(run_dir=live_run, interval=60, probe=probe())
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot, app)
        assert "view all · sort id" in str(app.query_one(TaskBar).render())
        await pilot.press("v", "s")
        await pilot.pause(0.2)
        assert "view active · sort status" in str(app.query_one(TaskBar).render())


# -- logs ------------------------------------------------------------------------------------------


async def test_log_tabs_attempts_close_switch_escape_long_lines_and_match_count(tmp_path):
    run_dir = fixed_run(tmp_path / "run", 6)
    logs = run_dir / "logs"
    (logs / "shard-2.attempt2.log").write_text("attempt two\n" + "wide " * 100 + "\nerror here\nerror again\n")
    store = Store.open(run_dir / "state.db")
    with store.transaction():
        store.start_attempt("shard-2", 2, (4, 5), ["python", "w.py"], str(logs / "shard-2.attempt2.log"), 1.7e9)
        store.update_attempt("shard-2", 2, status=Status.FAILED, exit_code=1, ended_at=1.7e9 + 5)
        store.update_task("shard-2", attempts=2)
    store.close()
    app = GpuTuiApp(run_dir=run_dir, interval=60, probe=probe())
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot, app)
        table = app.query_one(JobTable)
        table.move_cursor(row=2)
        tabs = app.query_one("#logs", TabbedContent)
        pane = app.query_one("#log-selected-pane", LogPane)
        await until(pilot, lambda: "shard-2 #2/2" in str(tabs.get_tab("log-selected").label), what="attempt 2")
        await until(pilot, lambda: pane.log_view.line_count == 4, what="attempt 2's lines")
        assert "›" in text_of(app), "the long line shows that it goes on"
        await pilot.press("a")  # the earlier attempt
        await until(pilot, lambda: "shard-2 #1/2" in str(tabs.get_tab("log-selected").label), what="attempt 1")
        await until(pilot, lambda: pane.log_view.path.name == "shard-2.attempt1.log", what="attempt 1's log")
        await pilot.press("enter")  # pin it
        await until(pilot, lambda: tabs.active == "log-shard-2-1", what="pinned")
        await pilot.press("right_square_bracket")
        assert tabs.active == "log-selected"
        await pilot.press("left_square_bracket", "x")  # back to the pinned tab, and close it
        await until(pilot, lambda: not tabs.query("#log-shard-2-1"), what="closed")
        await pilot.press("a", "slash")  # attempt 2 again, then search it
        await pilot.press(*"error", "enter")
        await until(pilot, lambda: pane.log_view.match_rank == (1, 2), what="match 1/2")
        assert any("match 1/2" in n.message for n in app._notifications)
        assert app.focused is pane.log_view
        await pilot.press("escape")
        assert isinstance(app.focused, JobTable)


async def test_detach_prints_the_command_that_reattaches(make_job):
    app = job_app(make_job, num_workers=1, sleep=60)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.is_running, what="the app")
        await pilot.press("l")
        await until(pilot, lambda: statuses(app).get("shard-0") == "running", what="running")
        await pilot.press("l")  # twice: not an error
        await pilot.pause(0.3)
        assert not [n for n in app._notifications if n.severity == "error"]
        await pilot.press("ctrl+q")  # asks like q
        await until(pilot, lambda: isinstance(app.screen, QuitScreen), what="the quit dialog")
        await pilot.press("d")
        await until(pilot, lambda: not app.is_running, what="detached")
    said = app.return_value  # what the CLI prints once the screen is given back, as it is (never folded)
    assert "Re-attach with:" in said and said.endswith(f"gputui --run-dir {make_job.run_dir}")
    gputui("kill", "--run-dir", make_job.run_dir, "--all")


async def test_a_finished_run_with_every_task_done_offers_l_to_start_it_over_and_esc_starts_nothing(make_job):
    """Every task done: `l` offers only to run them all over (tests/tui/test_multi_select.py runs it); `esc`
    leaves the run as it is."""
    job = make_job(num_workers=1)
    assert gputui("run", "--jobs", job, "--simulate", "2x24", "--quiet").returncode == 0
    app = GpuTuiApp(job_path=job, run_dir=make_job.run_dir, interval=0.25)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.snapshot is not None and app.gpus, what="the run")
        await pilot.pause(0.2)
        assert {"l", "m", "q"} <= footer_keys(app)
        await pilot.press("l")
        await until(pilot, lambda: isinstance(app.screen, ChoiceScreen), what="the start-over dialog")
        await pilot.press("escape")
        await pilot.pause(1)
        assert not isinstance(app.screen, ChoiceScreen) and not app.snapshot.scheduler_live
        assert {v.task.status for v in app.snapshot.tasks} == {"done"}


async def test_the_task_bar_gives_a_finished_tasks_energy(make_job):
    """The table has no energy column (GPU-hours and peak memory take the room): the task bar gives it."""
    job = make_job(num_workers=1, gpus_per_worker=1, sleep=0.5)
    assert gputui("run", "--jobs", job, "--simulate", "1x24", "--quiet").returncode == 0
    app = GpuTuiApp(job_path=job, run_dir=make_job.run_dir, interval=0.25)
    async with app.run_test(size=(160, 40)) as pilot:
        await until(pilot, lambda: app.snapshot is not None and app.gpus, what="the run")
        await pilot.pause(0.2)
        (view,) = app.snapshot.tasks
        shown = str(app.query_one(TaskBar).render())
        said = energy_text(view.task.energy_j, view.task.energy_estimated)  # `~`: estimated, a short task's
        assert view.task.energy_j and f"sim energy {said}" in shown, shown


async def test_an_alert_the_scheduler_records_is_shown_once(tmp_path):
    run_dir = fixed_run(tmp_path / "run", 6)
    old = {"time": 1.0, "kind": "task_failed", "task_id": "shard-9", "message": "from before", "log_path": None}
    (run_dir / "alerts.jsonl").write_text(json.dumps(old) + "\n")
    app = GpuTuiApp(run_dir=run_dir, interval=0.25, probe=probe())
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot, app)
        new = {"time": 2.0, "kind": "out_of_memory", "task_id": "shard-2", "message": "CUDA out of memory"}
        with open(run_dir / "alerts.jsonl", "a") as f:
            f.write(json.dumps(new) + "\n")
        shown = lambda: [n.message for n in app._notifications if "shard-2" in n.message]  # noqa: E731
        await until(pilot, shown, what="the alert")
        await pilot.pause(1)
        assert shown() == ["out_of_memory: shard-2: CUDA out of memory"]
        assert not any("from before" in n.message for n in app._notifications)


async def test_gpu_hours_and_peak_memory_show_in_the_table_when_wide(tmp_path):
    run_dir = fixed_run(tmp_path / "run", 6)
    store = Store.open(run_dir / "state.db")
    with store.transaction():
        store.update_attempt("shard-0", 1, gpu_seconds=2 * 3600.0, peak_memory=12 * 1024**3, gpus_simulated=1)
    store.close()
    app = GpuTuiApp(run_dir=run_dir, interval=60, probe=probe())
    async with app.run_test(size=(200, 50)) as pilot:
        await ready(pilot, app)
        table = app.query_one(JobTable)
        assert table.layout == "full"
        cells = dict(zip(table.columns_shown, table.row_text("shard-0"), strict=True))
        assert (cells["GPU·h"], cells["peak"]) == ("2.00~", "12.0G~"), "~: measured on simulated GPUs"
        assert "GPU·h" in text_of(app)
    app = GpuTuiApp(run_dir=run_dir, interval=60, probe=probe())
    async with app.run_test(size=(80, 24)) as pilot:  # narrow: the columns give way to the reason
        await ready(pilot, app)
        assert "GPU·h" not in app.query_one(JobTable).columns_shown


async def test_i_shows_the_selected_tasks_processes_as_a_tree(make_job, tmp_path):
    children = tmp_path / "children.json"
    app = job_app(make_job, num_workers=1, sleep=60, worker_args=f"--spawn-children --children-file {children}")
    async with app.run_test(size=(160, 45)) as pilot:
        await launched(pilot, app, make_job, 1)
        await until(pilot, children.exists, what="the worker's children")
        same_group, own_session = json.loads(children.read_text())
        worker = make_job.running()["shard-0"]
        app.query_one(JobTable).focus()
        await pilot.press("i")
        screen = await until(pilot, lambda: isinstance(app.screen, ProcessTreeScreen) and app.screen, what="tree")
        await until(pilot, lambda: len(screen.rows) >= 3, what="the worker and its children")
        assert [(r.depth, r.pid) for r in screen.rows[:1]] == [(0, worker)]
        assert {(r.depth, r.pid) for r in screen.rows[1:]} >= {(1, same_group), (1, own_session)}
        assert "shard_worker.py" in screen.rows[0].command and screen.rows[0].rss > 0
        assert "└ " in text_of(app), "children are drawn under their parent"
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is not screen, what="closed")
        await pilot.press("K")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="ask")
        await pilot.press("y")
        await until(pilot, lambda: statuses(app)["shard-0"] == "killed", what="killed")


async def test_a_theme_switch_recolours_the_gpu_cards_at_once():
    app = GpuTuiApp(interval=60, probe=SimulatedProbe(1, 24.0, clock=lambda: 0.0))
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.query(GpuPanel), what="a card")
        await pilot.pause(0.2)
        card = app.query_one(GpuPanel)
        label = lambda: card.render_line(1)._segments[0].style.color  # noqa: E731 - the "mem" label
        before = label()
        await pilot.press("t")  # dark -> light
        await pilot.pause(0.3)
        assert label() != before and label() == card.style_of("gpu-panel--label").color, "no stale colour"
