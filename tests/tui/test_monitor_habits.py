"""nvitop's monitor habits: the process filter (`/`, --only, --user, --pid), ASCII glyphs (--ascii), and ending a
process of one's own from the monitor (never another user's; never a recycled pid)."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace

import psutil
import pytest
from rich.console import Console

from gputui.cli import _parser, _process_filter
from gputui.executors.ownership import ProcessRef, ref_of
from gputui.gpus.probe import GIB, GpuProcess, GpuSnapshot
from gputui.tui import glyphs, modes
from gputui.tui.app import GpuTuiApp
from gputui.tui.screens.dialogs import ChoiceScreen
from gputui.tui.screens.help import HelpScreen
from gputui.tui.widgets.gpu_panel import GpuLine, GpuPanel
from gputui.tui.widgets.job_table import JobTable
from gputui.tui.widgets.process_list import ProcessList
from gputui.views.processes import ProcessFilter, Target, end_process, read_target, refusal
from tests.tui.test_app import until

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


@pytest.fixture(autouse=True)
def _unicode_after():
    yield
    glyphs.use_ascii(False)  # the choice is the process's: the next test draws with Unicode again


class FixedProbe:
    """Real GPUs as a driver would list them: `holders` maps a GPU index to the pids on it."""

    name, simulated = "fixed", False

    def __init__(self, holders: dict[int, list[int]], count: int = 2) -> None:
        self.holders, self.count = holders, count

    def snapshot(self) -> list[GpuSnapshot]:
        return [
            GpuSnapshot(
                i,
                "Test GPU",
                f"GPU-{i}",
                24 * GIB,
                2 * GIB,
                utilization=50.0,
                temperature=40.0,
                power=100.0,
                processes=tuple(GpuProcess(pid, GIB) for pid in self.holders.get(i, [])),
            )
            for i in range(self.count)
        ]

    def close(self) -> None:
        pass


def screen_text(app) -> str:
    """The screen as a terminal would show it, every cell's character (no SVG, no styles)."""
    console = Console(
        width=app.size.width, height=app.size.height, file=io.StringIO(), force_terminal=True, record=True
    )
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text(styles=False)


def toasts(app) -> str:
    """The notifications up now (a headless test's screen does not draw them)."""
    return " ".join(n.message for n in app._notifications)


def not_ascii(text: str) -> set[str]:
    return {c for c in text if not c.isascii()}


def decoy(reaper, *, env: dict[str, str] | None = None, as_user: str | None = None) -> subprocess.Popen:
    command = SLEEPER if as_user is None else ["setpriv", f"--reuid={as_user}", "--regid=65534", "--clear-groups"]
    if as_user is not None:
        command += ["sleep", "120"]
    proc = subprocess.Popen(command, env={**os.environ, **(env or {})})
    reaper.append(proc)
    if as_user is not None:  # setpriv execs sleep in place: wait until the pid runs as that user
        deadline = time.monotonic() + 10
        while psutil.Process(proc.pid).uids().real == os.getuid() and time.monotonic() < deadline:
            time.sleep(0.02)
    return proc


# -- the filter -------------------------------------------------------------------------------------------------


def test_filter_parses_keys_and_words_and_says_what_is_wrong():
    f = ProcessFilter.parse("user:alice gpu:0,1 pid:12 Train")
    assert f.users == {"alice"} and f.gpus == {0, 1} and f.pids == {12} and f.words == ("train",)
    assert f.text() == "user:alice gpu:0,1 pid:12 train"
    assert f.matches(gpu=1, pid=12, user="alice", command="python train.py")
    assert not f.matches(gpu=2, pid=12, user="alice", command="python train.py")
    assert not f.matches(gpu=1, pid=12, user="bob", command="python train.py")
    assert ProcessFilter.parse("bob").matches(gpu=0, pid=1, user="bob", command="x")  # a word: user or command
    assert not ProcessFilter.parse("") and not ProcessFilter.parse("gpu:")  # a key being typed: no filter yet
    for bad, said in (("gpu:x", "gpu: expects numbers"), ("pid:-1", "0 or more"), ("host:a", "not a filter")):
        with pytest.raises(ValueError, match=said):
            ProcessFilter.parse(bad)


def test_monitor_flags_parse_as_nvitops():
    args = _parser().parse_args(["--only", "0,2", "--user", "alice,bob", "--pid", "5", "--pid", "7,8", "--ascii"])
    assert args.only == [0, 2] and args.ascii
    f = _process_filter(args)
    assert f.users == {"alice", "bob"} and f.pids == {5, 7, 8}
    with pytest.raises(SystemExit):
        _parser().parse_args(["--only", "one"])


async def test_slash_filters_the_process_list_shows_it_in_the_title_and_esc_clears_it(reaper):
    a, b = decoy(reaper), decoy(reaper)
    app = GpuTuiApp(interval=0.25, probe=FixedProbe({0: [a.pid], 1: [b.pid]}))
    async with app.run_test(size=(120, 30)) as pilot:
        table = app.query_one(ProcessList)
        await until(pilot, lambda: table.row_count == 2, what="two processes")
        assert not app.query_one("#process-title").display
        await pilot.press("slash")
        assert app.query_one("#process-filter").has_focus
        await pilot.press(*"gpu:1")
        await until(pilot, lambda: table.row_count == 1, what="the filter")
        assert table.highlighted_process.pid == b.pid
        await pilot.press("enter")
        assert table.has_focus
        await until(pilot, lambda: "processes: gpu:1 (1 of 2)" in screen_text(app), what="the title")
        await pilot.pause(0.6)  # refreshes come and go: the filter holds
        assert table.row_count == 1
        await pilot.press("escape")
        await until(pilot, lambda: table.row_count == 2, what="the filter cleared")
        assert "processes: gpu:1" not in screen_text(app)
        await pilot.press("slash", *"pid:x")
        await pilot.pause(0.2)
        assert app.query_one("#process-filter").has_class("-invalid") and table.row_count == 2
        await pilot.press("escape")  # in the input: closes it, the list has the keys again
        assert table.has_focus and not app.query_one("#process-filter").display


async def test_only_narrows_gpu_panels_and_processes_and_user_starts_filtered(reaper):
    a, b = decoy(reaper), decoy(reaper)
    me = psutil.Process().username()
    app = GpuTuiApp(
        interval=0.25,
        probe=FixedProbe({0: [a.pid], 1: [b.pid], 2: [a.pid]}, count=3),
        only=frozenset({1, 2}),
        process_filter=ProcessFilter(users=frozenset({me})),
    )
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.query_one(ProcessList)
        await until(pilot, lambda: table.row_count == 2, what="the processes on GPUs 1 and 2")
        assert sorted(r.gpu for r in table.rows_by_key.values()) == [1, 2]
        shown = lambda: sorted(v.index for v in [*app.query(GpuPanel), *app.query(GpuLine)])  # noqa: E731
        await until(pilot, lambda: shown() == [1, 2], what="GPUs 1 and 2 alone")
        await until(pilot, lambda: f"only GPUs 1,2; user:{me} (2 of 3)" in screen_text(app), what="the title")
        await pilot.press("escape")  # clears --user; --only stays (GPU 0 is not shown at all)
        await until(pilot, lambda: "user:" not in screen_text(app), what="the user filter cleared")
        assert table.row_count == 2


async def test_only_naming_no_gpu_here_says_so():
    app = GpuTuiApp(interval=60, probe=FixedProbe({}, count=2), only=frozenset({7}))
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: "--only names (7) is here: 0, 1" in screen_text(app), what="the message")


# -- ASCII ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(80, 24), (200, 50)], ids=lambda s: f"{s[0]}x{s[1]}")
async def test_ascii_monitor_draws_ascii_only(size, reaper):
    a = decoy(reaper)
    app = GpuTuiApp(interval=0.25, probe=FixedProbe({0: [a.pid]}, count=4), ascii=True)
    async with app.run_test(size=size) as pilot:
        await until(pilot, lambda: app.query_one(ProcessList).row_count == 1, what="a process")
        await pilot.pause(1.0)  # a few samples of history
        shown = screen_text(app)
        assert "GPU MEM" in shown and not not_ascii(shown), not_ascii(shown)
        await pilot.press("g")  # the full cards: Textual draws their borders
        await until(pilot, lambda: app.query(GpuPanel), what="GPU cards")
        await pilot.pause(0.3)
        shown = screen_text(app)
        assert "| GPU 0" in shown and "+---" in shown and not not_ascii(shown), not_ascii(shown)
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        shown = screen_text(app)
        assert "end the selected process" in shown and not not_ascii(shown), not_ascii(shown)
        await pilot.press("escape", "k")
        await until(pilot, lambda: isinstance(app.screen, ChoiceScreen), what="the confirmation")
        shown = screen_text(app)
        assert f"pid {a.pid}" in shown and not not_ascii(shown), not_ascii(shown)


async def test_unicode_is_the_default_and_gputui_ascii_switches_it(monkeypatch):
    app = GpuTuiApp(interval=60, probe=FixedProbe({}, count=1))
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.gpus, what="GPUs")
        await pilot.pause(0.2)
        assert "━" in screen_text(app)
    monkeypatch.setenv("GPUTUI_ASCII", "1")
    app = GpuTuiApp(interval=60, probe=FixedProbe({}, count=1))
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.gpus, what="GPUs")
        await pilot.pause(0.2)
        assert not not_ascii(screen_text(app))


@pytest.mark.parametrize("size", [(80, 24), (200, 50)], ids=lambda s: f"{s[0]}x{s[1]}")
async def test_ascii_with_a_job_draws_ascii_only(size, make_job):
    job = make_job(num_workers=2, sleep=0.3, extra="")
    from gputui.jobs.loader import load_jobspec

    app = GpuTuiApp(job_path=job, run_dir=load_jobspec(job).run_dir, simulate="2x24", interval=0.25, ascii=True)
    async with app.run_test(size=size) as pilot:
        await until(pilot, lambda: app.query(JobTable) and app.plan is not None, what="the plan")
        await pilot.pause(0.3)
        shown = screen_text(app)
        assert not not_ascii(shown), [line for line in shown.splitlines() if not line.isascii()]
        await pilot.press("l")
        done = lambda: app.snapshot and {v.task.status for v in app.snapshot.tasks} == {"done"}  # noqa: E731
        await until(pilot, done, timeout=60, what="the tasks done")
        await pilot.pause(0.6)
        shown = screen_text(app)
        assert "done" in shown and "#" in shown and not not_ascii(shown), not_ascii(shown)


# -- ending a process -------------------------------------------------------------------------------------------


async def confirm_end(pilot, app, pid: int) -> ChoiceScreen:
    table = app.query_one(ProcessList)
    await until(pilot, lambda: table.row_count, what="the process row")
    assert table.highlighted_process.pid == pid
    await pilot.press("k")
    return await until(pilot, lambda: isinstance(app.screen, ChoiceScreen) and app.screen, what="the question")


async def test_k_ends_a_process_of_ones_own_after_a_confirmation_naming_it(reaper):
    proc = decoy(reaper)
    app = GpuTuiApp(interval=0.25, probe=FixedProbe({0: [proc.pid]}))
    async with app.run_test(size=(120, 30)) as pilot:
        question = await confirm_end(pilot, app, proc.pid)
        body = question.body
        assert f"pid {proc.pid}" in body and psutil.Process().username() in body and "time.sleep(120)" in body
        assert "gputui run" not in body
        await pilot.press("escape")  # cancel: nothing is sent
        await pilot.pause(0.3)
        assert proc.poll() is None
        await confirm_end(pilot, app, proc.pid)
        await pilot.press("t")
        await until(pilot, lambda: proc.poll() is not None, what="the process ended")
        assert proc.returncode == -signal.SIGTERM


async def test_a_recycled_pid_is_never_signalled(reaper, monkeypatch):
    """The process read when `k` was pressed is not the one holding the pid at the answer (its start time
    differs, as a recycled pid's would): nothing is sent."""
    proc = decoy(reaper)
    import gputui.tui.widgets.process_panel as panel

    def read_earlier(pid: int) -> Target | None:
        target = read_target(pid)
        return None if target is None else replace(target, ref=ProcessRef(pid, target.ref.start - 1))

    monkeypatch.setattr(panel, "read_target", read_earlier)
    app = GpuTuiApp(interval=0.25, probe=FixedProbe({0: [proc.pid]}))
    async with app.run_test(size=(120, 30)) as pilot:
        await confirm_end(pilot, app, proc.pid)
        await pilot.press("K")
        await pilot.pause(0.5)
        assert proc.poll() is None and psutil.Process(proc.pid).status() != psutil.STATUS_ZOMBIE


def test_end_process_checks_pid_start_and_uid_again_just_before_the_signal(reaper):
    proc = decoy(reaper)
    target = read_target(proc.pid)
    assert target is not None and target.uid == os.getuid() and refusal(target) is None
    stale = replace(target, ref=ProcessRef(proc.pid, target.ref.start + 1))
    assert "nothing was signalled" in end_process(stale, signal.SIGKILL)
    assert proc.poll() is None
    assert refusal(replace(target, uid=os.getuid() + 1)) is not None
    assert end_process(target, signal.SIGKILL).startswith("SIGKILL sent")
    proc.wait(5)
    assert "nothing was signalled" in end_process(target, signal.SIGKILL)  # gone: said, not raised


def test_root_is_refused_other_users_processes_in_words():
    target = Target(ProcessRef(1234, 1), 1000, "alice", "python train.py")
    assert "not even root's" in refusal(target, my_uid=0) and "alice" in refusal(target, my_uid=0)
    assert "gputui ends only your own processes" in refusal(target, my_uid=1001)
    assert "set-uid" in refusal(replace(target, uid=-1), my_uid=1000)


@pytest.mark.skipif(os.getuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
async def test_another_users_process_is_refused_with_a_toast(reaper):
    proc = decoy(reaper, as_user="nobody")
    assert psutil.Process(proc.pid).username() == "nobody"
    app = GpuTuiApp(interval=0.25, probe=FixedProbe({0: [proc.pid]}))
    async with app.run_test(size=(140, 30)) as pilot:
        table = app.query_one(ProcessList)
        await until(pilot, lambda: table.row_count, what="the process row")
        await pilot.press("k")
        await until(pilot, lambda: "belongs to nobody" in toasts(app), what="the refusal")
        assert not isinstance(app.screen, ChoiceScreen)
        assert "not even root's" in toasts(app)
        await pilot.pause(0.3)
        assert proc.poll() is None


async def test_a_gputui_worker_is_named_with_its_run_and_offered_kill_through_it(reaper, tmp_path):
    env = {"GPUTUI_SCHEDULER_ID": "abcdef12-3456", "GPUTUI_TASK_ID": "shard-3", "GPUTUI_ATTEMPT": "2"}
    proc = decoy(reaper, env={**env, "GPUTUI_RUN_DIR": str(tmp_path / "run")})
    app = GpuTuiApp(interval=0.25, probe=FixedProbe({0: [proc.pid]}))
    async with app.run_test(size=(140, 30)) as pilot:
        question = await confirm_end(pilot, app, proc.pid)
        assert "task shard-3 (attempt 2) of gputui run abcdef12" in question.body
        assert f"gputui kill --run-dir {tmp_path / 'run'} shard-3" in question.body
        assert question.choices[0][:2] == ("r", "run")
        await pilot.press("r")  # no such run there: said, nothing signalled
        await until(pilot, lambda: "cannot ask run" in toasts(app), what="the answer")
        assert proc.poll() is None
    assert ref_of(proc.pid) is not None


def test_help_lists_the_monitors_new_keys_only_in_the_monitor():
    new = {"edit_filter", "clear_filter", "end_process"}
    assert new <= {k.action for k in modes.keys_for(modes.MONITOR)}
    for mode in modes.JOB_MODES:
        assert not new & {k.action for k in modes.keys_for(mode)}, mode
