"""The sample job driven through the real app in real tmux: what a user does over SSH."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from gputui.rundir.store import Store
from tests.conftest import wait_for
from tests.integration.test_worker_text import ATTACK, hostile_job

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (.ci/run installs it)")


class Tmux:
    """A tmux server of this test's own (`-L`), so nothing else can touch its sessions."""

    def __init__(self, name: str, cwd: Path, size: tuple[int, int] = (200, 50)):
        self.name = name
        self.base = ["tmux", "-L", name]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TMUX", "GPUTUI_"))}
        size = ["-x", str(size[0]), "-y", str(size[1])]
        subprocess.run([*self.base, "new-session", "-d", "-s", name, *size, "-c", str(cwd)], check=True, env=env)

    def keys(self, *keys: str) -> None:
        subprocess.run([*self.base, "send-keys", "-t", self.name, *keys], check=True)

    def screen(self) -> str:
        capture = [*self.base, "capture-pane", "-t", self.name, "-p"]
        return subprocess.run(capture, capture_output=True, text=True).stdout

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never appeared; screen:\n{self.screen()}")

    def title(self) -> str:
        """The pane's title, which an OSC 0 / OSC 2 sequence written to the terminal would change."""
        show = [*self.base, "display-message", "-p", "-t", self.name, "#{pane_title}"]
        return subprocess.run(show, capture_output=True, text=True).stdout.strip()

    def kill(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True)


def workers(run_dir: Path) -> dict[str, psutil.Process]:
    """Running workers of this run, by task, found by their tag."""
    found = {}
    for p in psutil.process_iter(["pid"]):
        try:
            env = p.environ()
            ours = env.get("GPUTUI_RUN_DIR") == str(run_dir) and "GPUTUI_TASK_ID" in env
            if ours and p.status() != "zombie" and "continue_text.py" in " ".join(p.cmdline()):
                found[env["GPUTUI_TASK_ID"]] = p
        except (psutil.Error, OSError):
            pass
    return found


def state(p: psutil.Process) -> str:
    try:
        return p.status()
    except psutil.NoSuchProcess:
        return "gone"


def gone(p: psutil.Process) -> bool:
    return state(p) in ("gone", psutil.STATUS_ZOMBIE)


def sample_jobs(tmp_path: Path, delay: float) -> tuple[Path, Path]:
    """The sample's continuation job run by the CPU stand-in worker (tests/workers/continue_text.py, the real
    worker's arguments and output), whose workers take `delay` s per row: (its folder, its run dir)."""
    jobs = tmp_path / "sample_jobs"
    shutil.copytree(ROOT / "sample_jobs" / "data", jobs / "data")
    shutil.copy(ROOT / "tests" / "workers" / "continue_text.py", jobs)
    job = jobs / "continuation.toml"
    text = (ROOT / "tests" / "workers" / "continuation_standin.toml").read_text()
    text = text.replace("python continue_text.py", f"{sys.executable} continue_text.py")
    env = f'env = {{ CONTINUE_TEXT_DELAY = "{delay}" }}'
    job.write_text(text.replace('name = "continuation"', f'name = "continuation"\n{env}'))
    return jobs, jobs / "runs" / "continuation"


def test_launch_pause_resume_kill_detach_reattach_in_tmux(tmp_path):
    jobs, run_dir = sample_jobs(tmp_path, 0.08)
    app = f"{sys.executable} -m gputui --simulate 4x24 --interval 0.5"
    tmux = Tmux(f"gputui-e2e-{os.getpid()}", jobs)
    decoys: list[subprocess.Popen] = []
    try:
        tmux.keys(f"{app} --jobs continuation.toml", "Enter")
        tmux.wait_for("press l to launch")
        tmux.keys("l")
        tmux.wait_for("scheduler started in the background")
        running = wait_for(lambda: len(workers(run_dir)) == 2 and workers(run_dir), what="two workers")
        target = running["shard-0"]

        # Decoys: the same command line as shard-0's worker, with another run's tag, or none.
        argv = target.cmdline()
        clean = {k: v for k, v in os.environ.items() if not k.startswith("GPUTUI_")}
        for extra in ({}, {"GPUTUI_SCHEDULER_ID": "someone-else", "GPUTUI_TASK_ID": "shard-0"}):
            decoys.append(
                subprocess.Popen(
                    argv,
                    env=clean | extra | {"CONTINUE_TEXT_DELAY": "5"},
                    cwd=jobs,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )

        tmux.wait_for("[0, 75)")  # the table shows shard-0 (the first row, selected)
        wait_for(
            lambda: any("[0, 75)" in ln and "running" in ln for ln in tmux.screen().splitlines()), what="running"
        )
        tmux.keys("p")  # p acts on a running task only (and is shown only then)
        wait_for(lambda: state(target) == psutil.STATUS_STOPPED, what="shard-0 stopped (state T)")
        tmux.wait_for("paused")
        tmux.keys("p")
        wait_for(lambda: state(target) != psutil.STATUS_STOPPED, what="shard-0 continued")

        tmux.keys("k")
        screen = tmux.wait_for("Kill shard-0?")
        assert str(target.pid) in screen
        tmux.keys("y")
        wait_for(lambda: gone(target), what="shard-0 gone")
        tmux.wait_for("killed")
        assert all(d.poll() is None for d in decoys), "a decoy was signalled"

        tmux.keys("q")
        tmux.wait_for("Quit gputui?")
        tmux.keys("d")
        tmux.wait_for("detached: the run goes on in the background")
        assert workers(run_dir), "detaching must not stop the run"

        tmux.keys(f"{app} --run-dir {run_dir}", "Enter")
        tmux.wait_for("[0, 75)")
        tmux.keys("r")  # retry the killed shard-0 (still the first row)
        tmux.wait_for("queued again")
        tmux.keys("l")  # and make sure a scheduler runs it (the first may have ended meanwhile)
        merged = run_dir / "outputs" / "generation_results_data_all_merged.csv"
        wait_for(merged.exists, timeout=90, what="the run to finish and merge")
        tmux.wait_for("4/4 done", timeout=30)
        assert all(d.poll() is None for d in decoys)
        tmux.keys("q")
    finally:
        tmux.kill()
        for d in decoys:
            d.kill()
        for p in workers(run_dir).values():
            p.kill()


def test_80x24_with_8_gpus_keeps_every_gpu_the_log_and_the_progress_line_on_screen(tmp_path):
    jobs, run_dir = sample_jobs(tmp_path, 0.05)
    tmux = Tmux(f"gputui-e2e-small-{os.getpid()}", jobs, size=(80, 24))
    try:
        tmux.keys(f"{sys.executable} -m gputui --simulate 8x80 --interval 0.5 --jobs continuation.toml", "Enter")
        tmux.wait_for("press l to launch")
        before = tmux.wait_for("? Help").splitlines()
        assert len(before) <= 24 and all(len(line) <= 80 for line in before)
        assert "l Launch" in before[23], "the footer, on the last line, shows the key that launches"
        tmux.keys("l")
        wait_for(lambda: len(workers(run_dir)) == 4, what="four workers")
        tmux.wait_for("log: shard-0 #1/1")
        screen = tmux.wait_for("processed", timeout=15)  # the log pane shows the worker's output
        lines = screen.splitlines()
        gpu_rows = [line for line in lines if line[:4].strip().rstrip("~").isdigit() and " mem " in line]
        assert [int(line[:3]) for line in gpu_rows] == list(range(8)), screen
        assert "done," in lines[1] and "elapsed" in lines[1], "the progress line is on screen"
        assert "? Help" in lines[23] and "l Launch" not in lines[23], "shard-0 runs: nothing to launch"
        assert any("shard-3" in line for line in lines), "the table shows the tasks"
        tmux.keys("q")
        tmux.wait_for("Quit gputui?")
        tmux.keys("s")
        wait_for(lambda: not workers(run_dir), what="our tasks stopped")
    finally:
        tmux.kill()
        for p in workers(run_dir).values():
            p.kill()


def test_at_80x24_the_launch_toasts_go_and_leave_the_header_and_gpu_lines_painted(tmp_path):
    """A run whose tasks all fail at once: the scheduler stops while the launch toasts are up. Once they go, the
    header and the idle GPU lines under them (which never change again) are painted in full, and no toast
    says a scheduler runs."""
    (tmp_path / "data.csv").write_text("data_id,v\n0,a\n1,b\n2,c\n3,d\n")
    (tmp_path / "nocmd.toml").write_text(  # (a missing program is refused at `l` now: one that fails at once)
        '[job]\nname = "nocmd"\ncommand = "sh -c \'exit 3\' {low} {high}"\n[shards]\ninput = "data.csv"\n'
        "num_workers = 2\n[resources]\ngpus_per_worker = 1\n[retry]\nmax_attempts = 2\nbackoff_s = 0.1\n"
    )
    tmux = Tmux(f"gputui-e2e-toast-{os.getpid()}", tmp_path, size=(80, 24))
    try:
        tmux.keys(f"{sys.executable} -m gputui --simulate 2 --jobs nocmd.toml", "Enter")
        tmux.wait_for("press l to launch")
        tmux.keys("l")
        tmux.wait_for("scheduler started in the background")
        tmux.wait_for(" stopped ")  # the header: every task failed, the scheduler has ended

        def painted() -> list[str] | None:
            lines = tmux.screen().splitlines()
            clean = not any("background" in line or "▌" in line for line in lines[:6])
            return lines if clean and "elapsed" in lines[1] else None

        lines = wait_for(painted, timeout=30, what="the toasts gone and the lines under them painted")
        assert "2 failed" in lines[1] and "elapsed" in lines[1]
        gpu_rows = [line for line in lines[2:4] if " mem " in line]
        assert len(gpu_rows) == 2 and all(line.rstrip().endswith("W") for line in gpu_rows), lines[:4]
        assert not any("running in the background" in line for line in lines)
    finally:
        tmux.kill()


def test_a_workers_escape_sequences_neither_retitle_nor_clear_the_app(tmp_path):
    """A worker printed a title, a clear screen and fake text, and failed: the app shows its reason made
    visible, and the terminal keeps its title, header and table."""
    job, run_dir = hostile_job(tmp_path)
    run = [sys.executable, "-m", "gputui", "run", "--jobs", str(job), "--run-dir", str(run_dir), "--quiet"]
    assert subprocess.run(run, cwd=tmp_path, capture_output=True, timeout=120).returncode == 1
    store = Store.open(run_dir / "state.db")  # a state.db older than the sanitiser: the raw text itself
    store.update_task("shard-1", reason=ATTACK)
    store.close()
    tmux = Tmux(f"gputui-e2e-hostile-{os.getpid()}", tmp_path)
    try:
        title = tmux.title()
        tmux.keys(f"{sys.executable} -m gputui --run-dir {run_dir} --readonly --interval 0.5", "Enter")
        tmux.wait_for("␛]0;PWNED-TITLE")  # the table's reasons, made visible
        screen = tmux.wait_for("shard-3")
        lines = screen.splitlines()
        assert "gputui" in lines[0] and "hostile" in lines[0] and "READ-ONLY" in lines[0], screen
        assert "4 failed" in lines[1], screen  # the header's progress line
        assert sum(line.lstrip().startswith("shard-") for line in lines) >= 4, screen  # the table
        assert not lines[0].lstrip().startswith("FAKE"), screen
        assert tmux.title() == title and "PWNED" not in tmux.title()
        tmux.keys("q")
    finally:
        tmux.kill()
