"""+ and - in the app: one more or one fewer task at once on a live run (its max_parallel), with a toast."""

from __future__ import annotations

from gputui.tui.screens.help import HelpScreen
from tests.conftest import gone
from tests.tui.test_app import job_app, launched, screen_text, until


def _alive(make_job) -> int:
    return len([p for p in make_job.running().values() if not gone(p)])


def _toast(app, text: str) -> bool:
    return any(text in n.message for n in app._notifications)


async def test_plus_and_minus_change_max_parallel_of_the_live_run(make_job):
    app = job_app(make_job, ids=8, num_workers=4, max_parallel=1, sleep=60, stop_grace_s=1)
    async with app.run_test(size=(160, 45)) as pilot:
        await launched(pilot, app, make_job, 1)
        await pilot.press("plus")
        await until(pilot, lambda: _toast(app, "max_parallel 1 → 2"), what="the toast")
        await until(pilot, lambda: _alive(make_job) == 2, what="a second worker")
        await pilot.press("minus")
        await until(pilot, lambda: _toast(app, "max_parallel 2 → 1"), what="the toast")
        await pilot.pause(1.0)
        assert _alive(make_job) == 2  # lowering it stops nothing: new ones wait
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        assert "one more / one fewer task at once" in screen_text(app)
