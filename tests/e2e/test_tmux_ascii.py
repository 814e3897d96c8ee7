"""`--ascii` in a real terminal (tmux): what the pane holds is ASCII only, in the monitor and with a job that
ran, at 80x24 and 200x50 (Textual's own borders, the footer and the cut-short text included)."""

from __future__ import annotations

import os
import sys

import pytest

from tests.conftest import wait_for
from tests.e2e.test_tmux import Tmux, sample_jobs, workers


def not_ascii(screen: str) -> list[str]:
    return [line for line in screen.splitlines() if not line.isascii()]


@pytest.mark.parametrize("size", [(80, 24), (200, 50)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_ascii_monitor_and_job_in_tmux(tmp_path, size):
    jobs, run_dir = sample_jobs(tmp_path, 0.05)
    tmux = Tmux(f"gputui-e2e-ascii-{os.getpid()}-{size[0]}", jobs, size=size)
    app = f"{sys.executable} -m gputui --simulate 4x24 --interval 0.5 --ascii"
    try:
        tmux.keys(app, "Enter")
        screen = tmux.wait_for("? Help")
        wait_for(lambda: " mem " in tmux.screen(), what="the GPU lines")
        screen = tmux.screen()
        assert "GPU MEM" in screen and not not_ascii(screen), not_ascii(screen)
        tmux.keys("q")
        wait_for(lambda: "? Help" not in tmux.screen(), what="the monitor quit")
        tmux.keys(f"{app} --jobs continuation.toml", "Enter")
        tmux.wait_for("press l to launch")
        screen = tmux.screen()
        assert not not_ascii(screen), not_ascii(screen)
        tmux.keys("l")
        screen = tmux.wait_for("running", timeout=30)
        wait_for(lambda: "#" in tmux.screen() or "done" in tmux.screen(), what="progress")
        screen = tmux.screen()
        assert not not_ascii(screen), not_ascii(screen)
        tmux.keys("q")
        tmux.wait_for("Quit gputui?")
        screen = tmux.screen()
        assert not not_ascii(screen), not_ascii(screen)
        tmux.keys("s")
        wait_for(lambda: not workers(run_dir), what="our tasks stopped")
    finally:
        tmux.kill()
        for p in workers(run_dir).values():
            p.kill()
