"""How the app looks in each mode (monitor, before launch, live, finished, read-only) and GPU layout, at
80x24 and 200x50, in every theme for the live view (pytest-textual-snapshot).

Snapshots check looks only; behaviour is checked by assertions in test_app.py. Everything on screen is
made deterministic: simulated GPUs with a fixed clock, a fixed host name and host line, a run with fixed
times, and a fixed wall clock for elapsed times. A live scheduler is a real run lock held by the test.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from gputui.gpus.probe import GIB
from gputui.gpus.simulated import SimulatedProbe
from gputui.rundir.paths import RunLock, RunPaths
from gputui.tui.app import GpuTuiApp
from gputui.tui.widgets.gpu_grid import GpuPanels
from gputui.tui.widgets.gpu_panel import GpuLine
from gputui.tui.widgets.job_table import JobTable
from gputui.tui.widgets.metrics_chart import MetricsChart
from tests.tui.fixed_run import NOW, fixed_run
from tests.tui.fixed_sweep import fixed_sweep

THEMES = ["dark", "light", "high-contrast"]
SIZES = [(80, 24), (200, 50)]
RUN_DIR = Path("/tmp/gputui-snapshot-run")  # fixed: the header shows it


@pytest.fixture(autouse=True)
def _fixed_host(monkeypatch):
    monkeypatch.setattr("socket.gethostname", lambda: "gpu-box")
    monkeypatch.setattr(
        "gputui.tui.refresh.host_line", lambda: "CPU 12% of 16 · mem 31.2/125.8 GiB · swap 0.0/8.0 GiB · load 0.52"
    )
    clock = SimpleNamespace(time=lambda: NOW, monotonic=time.monotonic)
    for module in ("gputui.views.runview", "gputui.clock"):  # gputui.clock: clock.now() is NOW (no boot stamp)
        monkeypatch.setattr(f"{module}.time", clock)


def _probe(count: int, load=None) -> SimulatedProbe:
    return SimulatedProbe(count, 24.0, load=load, clock=lambda: 1000.0)


def _waits_for(kind, n):
    async def run_before(pilot) -> None:
        for _ in range(100):
            if len(pilot.app.query(kind)) >= n and pilot.app.gpus:
                break
            await pilot.pause(0.05)
        await pilot.pause(0.3)

    return run_before


def _layout(mode: str):
    async def run_before(pilot) -> None:
        await _waits_for(JobTable if pilot.app.view is not None else GpuLine, 1)(pilot)
        if mode != "auto":
            pilot.app.query_one(GpuPanels).mode = mode
            await pilot.pause(0.3)

    return run_before


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("gpus", [1, 8])
def test_monitor(snap_compare, size, gpus):
    app = GpuTuiApp(interval=60, probe=_probe(gpus))
    assert snap_compare(app, terminal_size=size, run_before=_waits_for(GpuPanels, 1))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_before_launch(snap_compare, size):
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    app = GpuTuiApp(job_path=RUN_DIR / "job.toml", run_dir=RUN_DIR, interval=60, probe=_probe(8))
    assert snap_compare(app, terminal_size=size, run_before=_waits_for(GpuPanels, 1))


def _live_run():
    """The fixed run with a real scheduler lock held, and two tasks running on GPUs 0-3."""
    run_dir = fixed_run(RUN_DIR, 10, running=2)
    lock = RunLock(RunPaths(run_dir))
    assert lock.try_acquire("scheduler")
    return run_dir, lock


@pytest.mark.parametrize("theme", THEMES)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_live(snap_compare, theme, size):
    run_dir, lock = _live_run()
    load = {g: [(0, 12 * GIB)] for g in range(4)}
    app = GpuTuiApp(run_dir=run_dir, theme=theme, interval=60, probe=_probe(8, load=lambda: load))
    try:
        assert snap_compare(app, terminal_size=size, run_before=_layout("auto"))
    finally:
        lock.release()


@pytest.mark.parametrize(("size", "layout"), [((200, 50), "compact"), ((80, 24), "full")], ids=str)
def test_live_other_layouts(snap_compare, size, layout):
    run_dir, lock = _live_run()
    app = GpuTuiApp(run_dir=run_dir, interval=60, probe=_probe(8))
    try:
        assert snap_compare(app, terminal_size=size, run_before=_layout(layout))
    finally:
        lock.release()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("readonly", [False, True], ids=["finished", "readonly"])
def test_finished(snap_compare, size, readonly):
    run_dir = fixed_run(
        RUN_DIR,
    )
    load = {0: [(0, 12 * GIB)], 1: [(0, 12 * GIB)]}
    app = GpuTuiApp(run_dir=run_dir, interval=60, readonly=readonly, probe=_probe(8, load=lambda: load))
    assert snap_compare(app, terminal_size=size, run_before=_waits_for(JobTable, 1))


def _on_trial(task_id: str, *keys: str):
    """The table's cursor on `task_id`, `keys` pressed, and its metrics charted."""

    async def run_before(pilot) -> None:
        app = pilot.app
        for _ in range(100):
            if app.query_one(JobTable).row_count and app.gpus:
                break
            await pilot.pause(0.05)
        table = app.query_one(JobTable)
        table.move_cursor(row=table.row_ids.index(task_id))
        await pilot.press(*keys)
        for _ in range(100):
            if app.query_one(MetricsChart).names:
                break
            await pilot.pause(0.05)
        await pilot.pause(0.3)

    return run_before


@pytest.mark.parametrize(("size", "keys"), [((200, 50), ()), ((80, 24), ("c",))], ids=["200x50", "80x24-chart"])
def test_sweep_live(snap_compare, size, keys):
    """A sweep between stages: task1 ranked (★ promoted), task2 running with its metrics charted (beside the
    log at 200 columns; instead of it at 80, after c), task3 still to come."""
    run_dir = fixed_sweep(RUN_DIR)
    lock = RunLock(RunPaths(run_dir))
    assert lock.try_acquire("scheduler")
    load = {g: [(0, 12 * GIB)] for g in range(2)}
    app = GpuTuiApp(run_dir=run_dir, interval=60, probe=_probe(8, load=lambda: load))
    try:
        assert snap_compare(app, terminal_size=size, run_before=_on_trial("task2-0", *keys))
    finally:
        lock.release()
