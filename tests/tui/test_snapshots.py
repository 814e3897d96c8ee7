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
from gputui.records import Status
from gputui.rundir import RunLock, RunPaths
from gputui.store import Store
from gputui.tui.app import GpuTuiApp
from gputui.tui.widgets.gpu_grid import GpuPanels
from gputui.tui.widgets.gpu_panel import GpuLine
from gputui.tui.widgets.job_table import JobTable

THEMES = ["dark", "light", "high-contrast"]
SIZES = [(80, 24), (200, 50)]
RUN_DIR = Path("/tmp/gputui-snapshot-run")  # fixed: the header shows it
T0 = 1_700_000_000.0


NOW = T0 + 300


@pytest.fixture(autouse=True)
def _fixed_host(monkeypatch):
    monkeypatch.setattr("socket.gethostname", lambda: "gpu-box")
    monkeypatch.setattr(
        "gputui.tui.app.host_line", lambda: "CPU 12% of 16 · mem 31.2/125.8 GiB · swap 0.0/8.0 GiB · load 0.52"
    )
    clock = SimpleNamespace(time=lambda: NOW, monotonic=time.monotonic)
    for module in ("gputui.runview", "gputui.tui.widgets.run_header"):
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


def _fixed_run(n_tasks: int = 6, running: int = 0) -> Path:
    """A run directory whose state is written directly, with fixed times and every status; with
    `running`, that many tasks after the first four are running (the second one paused), the next retrying."""
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    (RUN_DIR / "logs").mkdir(parents=True)
    store = Store.open(RUN_DIR / "state.db", create=True)
    store.add_tasks([(f"shard-{i}", i, i * 50, (i + 1) * 50, 50, None) for i in range(n_tasks)], budget=3)
    plan = [Status.DONE, Status.DONE, Status.FAILED, Status.KILLED]
    if running:
        plan += [Status.RUNNING, Status.PAUSED][:running] + [Status.RUNNING] * (running - 2) + [Status.RETRYING]
    plan += [Status.PENDING] * n_tasks
    with store.transaction():
        for k, v in {
            "scheduler_id": "5f1c2a9e-0000-4000-8000-000000000000",
            "job_name": "continuation",
            "stop_grace_s": 10,
            "memory_per_worker_gb": 12,
        }.items():
            store.set_meta(k, v)
        for i, status in enumerate(plan[:n_tasks]):
            if status == Status.PENDING:
                continue
            log = RUN_DIR / "logs" / f"shard-{i}.attempt1.log"
            live = status in (Status.RUNNING, Status.PAUSED)
            log.write_text(f"shard [{i * 50}, {(i + 1) * 50})\nprocessed {20 if live else 50}/50 rows\n")
            store.start_attempt(f"shard-{i}", 1, (2 * i % 8, 2 * i % 8 + 1), ["python", "w.py"], str(log), T0 + i)
            if live:
                store.update_attempt(f"shard-{i}", 1, status=status)
                store.update_task(
                    f"shard-{i}", status=status, attempts=1, gpus=(2 * i % 8, 2 * i % 8 + 1), started_at=T0 + i
                )
                continue
            code = {Status.DONE: 0, Status.FAILED: 1, Status.KILLED: -15, Status.RETRYING: 1}[status]
            reason = {
                Status.FAILED: "CUDA out of memory: torch.OutOfMemoryError",
                Status.KILLED: "killed by user",
                Status.RETRYING: "exit 1: ValueError: bad row [id=7]",
            }
            store.update_attempt(
                f"shard-{i}",
                1,
                status=Status.FAILED if status == Status.RETRYING else status,
                exit_code=code,
                ended_at=T0 + 60 + i,
            )
            if status == Status.RETRYING:
                store.update_task(f"shard-{i}", next_try_at=NOW + 42)
            store.update_task(
                f"shard-{i}",
                status=status,
                attempts=1,
                gpus=(2 * i % 8, 2 * i % 8 + 1),
                exit_code=code,
                started_at=T0 + i,
                ended_at=T0 + 60 + i,
                reason=reason.get(status),
            )
    store.close()
    return RUN_DIR


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
    run_dir = _fixed_run(10, running=2)
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
    run_dir = _fixed_run()
    load = {0: [(0, 12 * GIB)], 1: [(0, 12 * GIB)]}
    app = GpuTuiApp(run_dir=run_dir, interval=60, readonly=readonly, probe=_probe(8, load=lambda: load))
    assert snap_compare(app, terminal_size=size, run_before=_waits_for(JobTable, 1))
