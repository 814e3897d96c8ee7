"""`p` on a task using CUDA (the fake NVML lists its worker): a choice between a plain pause (it keeps its GPU
memory) and one that frees it with cuda-checkpoint (a fake here, recording its calls), or the reason it cannot."""

from __future__ import annotations

import os

import psutil
import pytest

from gputui.tui.screens.dialogs import ChoiceScreen
from gputui.tui.widgets.job_table import JobTable
from tests.integration.test_pause_free_memory import fake_tool, lines, spec
from tests.tui.test_app import job_app, launched, statuses, until

pytestmark = pytest.mark.fake_nvml


@pytest.fixture
def tool_on_path(tmp_path, monkeypatch, fake_nvml):
    record = fake_tool(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    fake_nvml.write(spec("550.54.15", []))
    fake_nvml.load_here()
    return record


async def test_p_offers_to_free_gpu_memory_and_f_does(make_job, fake_nvml, tool_on_path):
    app = job_app(make_job, num_workers=1, sleep=60)
    async with app.run_test(size=(160, 45)) as pilot:
        await launched(pilot, app, make_job, 1)
        pid = make_job.running()["shard-0"]
        fake_nvml.write(spec("550.54.15", [pid]))
        app.query_one(JobTable).focus()
        await pilot.press("p")
        await until(pilot, lambda: isinstance(app.screen, ChoiceScreen), what="the pause dialog")
        assert [key for key, _, _ in app.screen.choices] == ["p", "f"]
        await pilot.press("f")
        await until(pilot, lambda: psutil.Process(pid).status() == psutil.STATUS_STOPPED, what="state T")
        await until(pilot, lambda: statuses(app)["shard-0"] == "paused", what="paused row")
        (call,) = lines(tool_on_path)
        assert call.startswith(f"--toggle --pid {pid} ") and not call.endswith("state=T")


async def test_p_shows_why_memory_cannot_be_freed(make_job, fake_nvml, tool_on_path):
    app = job_app(make_job, num_workers=1, sleep=60)
    async with app.run_test(size=(160, 45)) as pilot:
        await launched(pilot, app, make_job, 1)
        pid = make_job.running()["shard-0"]
        fake_nvml.write(spec("535.104", [pid]))
        app.query_one(JobTable).focus()
        await pilot.press("p")
        await until(pilot, lambda: isinstance(app.screen, ChoiceScreen), what="the pause dialog")
        dialog = app.screen
        assert dialog.body == "Pause and free its GPU memory is not possible: driver 535.104 is older than 550."
        assert [key for key, _, _ in dialog.choices] == ["p"]
        await pilot.press("p")
        await until(pilot, lambda: psutil.Process(pid).status() == psutil.STATUS_STOPPED, what="state T")
        assert lines(tool_on_path) == []
