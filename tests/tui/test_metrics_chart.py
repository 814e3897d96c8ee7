"""The metrics chart (`c`) as a user reads it: every series drawn across the chart pane's whole width at
every size (beside the log from 120 columns, instead of it at 80), and a flat series' line right under its
name. The run is real: a pipeline step that reports loss, val_acc and a constant lr through gputui.hooks."""

from __future__ import annotations

import json
import sys

import pytest
from textual.widgets import Sparkline

from gputui.tui.app import GpuTuiApp
from gputui.tui.widgets.job_table import JobTable
from gputui.tui.widgets.metrics_chart import MetricsChart
from gputui.tui.widgets.run_area import RunArea
from tests.conftest import gputui
from tests.tui.test_app import until

TRAINER = """
from gputui import hooks
for step in range(1, 41):
    hooks.log_metrics(step, val_acc=0.5 + step / 100, loss=1.0 / step + (step % 3) / 50, lr=0.3)
hooks.mark_done(val_acc=0.9)
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished one-step pipeline whose step reported 40 steps of three metrics."""
    folder = tmp_path_factory.mktemp("chart")
    (folder / "trainer.py").write_text(TRAINER)
    command = json.dumps(f"{sys.executable} {folder / 'trainer.py'}")
    (folder / "job.toml").write_text(
        f'[job]\nname = "chart"\nkind = "pipeline"\n[[pipeline.step]]\nname = "train"\ncommand = {command}\n'
        "[resources]\ngpus_per_worker = 0\n[retry]\nmax_attempts = 1\n"
    )
    assert gputui("run", "--jobs", folder / "job.toml", "--quiet").returncode == 0
    return folder / "runs" / "chart"


@pytest.mark.parametrize("size", [(80, 24), (120, 40), (200, 50)], ids=lambda s: f"{s[0]}x{s[1]}")
async def test_each_sparkline_fills_the_chart_panes_width(trained, size):
    app = GpuTuiApp(run_dir=trained, interval=0.25)
    async with app.run_test(size=size) as pilot:
        await until(pilot, lambda: app.query_one(JobTable).row_count, what="the step")
        chart, area = app.query_one(MetricsChart), app.query_one(RunArea)
        await until(pilot, lambda: area.can_chart, what="the chart offered")
        await pilot.press("c")
        await until(pilot, lambda: sorted(chart.names) == ["loss", "lr", "val_acc"], what="three series")
        await pilot.pause(0.3)
        assert chart.size.width >= (80 if size[0] == 80 else size[0] * 0.4), "beside the log, or instead of it"
        for name in chart.names:
            line = chart.row(name).query_one(Sparkline)
            assert line.size.width >= chart.size.width - 3, f"{name}: {line.size.width} of {chart.size.width}"


async def test_a_flat_series_draws_its_line_right_under_its_name(trained):
    app = GpuTuiApp(run_dir=trained, interval=0.25)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.query_one(JobTable).row_count, what="the step")
        chart, area = app.query_one(MetricsChart), app.query_one(RunArea)
        await until(pilot, lambda: area.can_chart, what="the chart offered")
        await pilot.press("c")
        await until(pilot, lambda: "lr" in chart.names, what="lr charted")
        await pilot.pause(0.3)
        row = chart.row("lr")
        name, line = row.query_one(".metric-name"), row.query_one(Sparkline)
        assert "lr 0.3" in row.text() and line.region.y == name.region.y + 1 and line.region.height == 1
        loss = chart.row("loss").query_one(Sparkline)
        assert loss.region.height > 1, "a series that moves keeps its height"
