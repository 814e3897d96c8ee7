"""How the app looks: 80x24 and 200x50, 1 and 8 GPUs, every theme (pytest-textual-snapshot).

Snapshots check looks only; behaviour is checked by assertions in test_app.py. Everything on screen is
made deterministic: simulated GPUs with a fixed clock, a fixed host name, a run with fixed times.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gputui.gpus.probe import GIB
from gputui.gpus.simulated import SimulatedProbe
from gputui.records import Status
from gputui.store import Store
from gputui.tui.app import GpuTuiApp
from gputui.tui.widgets.gpu_panel import GpuPanel
from gputui.tui.widgets.job_table import JobTable

THEMES = ["dark", "light", "high-contrast"]
SIZES = [(80, 24), (200, 50)]
RUN_DIR = Path("/tmp/gputui-snapshot-run")  # fixed: the header shows it
T0 = 1_700_000_000.0


@pytest.fixture(autouse=True)
def _fixed_host(monkeypatch):
    monkeypatch.setattr("socket.gethostname", lambda: "gpu-box")


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


def _fixed_run(n_tasks: int = 6) -> Path:
    """A run directory whose state is written directly, with fixed times and every status."""
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    (RUN_DIR / "logs").mkdir(parents=True)
    store = Store.open(RUN_DIR / "state.db", create=True)
    store.add_tasks([(f"shard-{i}", i, i * 50, (i + 1) * 50, 50, None) for i in range(n_tasks)], budget=3)
    plan = [Status.DONE, Status.DONE, Status.FAILED, Status.KILLED, Status.PENDING, Status.PENDING]
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
            log.write_text(f"shard [{i * 50}, {(i + 1) * 50})\nprocessed 50/50 rows\n")
            store.start_attempt(f"shard-{i}", 1, (2 * i % 8, 2 * i % 8 + 1), ["python", "w.py"], str(log), T0 + i)
            code = {Status.DONE: 0, Status.FAILED: 1, Status.KILLED: -15}[status]
            reason = {Status.FAILED: "CUDA out of memory: torch.OutOfMemoryError", Status.KILLED: "killed by user"}
            store.update_attempt(f"shard-{i}", 1, status=status, exit_code=code, ended_at=T0 + 60 + i)
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


@pytest.mark.parametrize("theme", THEMES)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("gpus", [1, 8])
def test_monitor(snap_compare, theme, size, gpus):
    app = GpuTuiApp(theme=theme, interval=60, probe=_probe(gpus))
    assert snap_compare(app, terminal_size=size, run_before=_waits_for(GpuPanel, gpus))


@pytest.mark.parametrize("theme", THEMES)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_job_run(snap_compare, theme, size):
    run_dir = _fixed_run()
    load = {0: [(0, 12 * GIB)], 1: [(0, 12 * GIB)]}
    app = GpuTuiApp(run_dir=run_dir, theme=theme, interval=60, probe=_probe(8, load=lambda: load))
    assert snap_compare(app, terminal_size=size, run_before=_waits_for(JobTable, 1))
