"""A simulated GPU follows the task on it: busy while its process runs, idle while it is paused (SIGSTOP), with
its memory still held either way, as a real GPU's would be."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from gputui.gpus.probe import GIB
from gputui.gpus.simulated import BASELINE_USED, SimulatedProbe, stopped
from tests.conftest import wait_for


@pytest.fixture
def worker():
    proc = subprocess.Popen(["sleep", "60"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_a_paused_tasks_gpu_goes_idle_and_keeps_its_memory(worker):
    probe = SimulatedProbe(2, 80.0, load=lambda: {0: [(worker, 2 * GIB)]}, clock=lambda: 0.0)
    busy, free = probe.snapshot()
    assert busy.utilization >= 85 and busy.power >= 280 and free.utilization == 0
    os.kill(worker, signal.SIGSTOP)  # what `p` does to the task's process tree
    wait_for(lambda: stopped(worker), what="the worker stopped")
    paused = probe.snapshot()[0]
    assert paused.utilization == 0 and paused.power < 100 and paused.temperature < busy.temperature
    assert paused.memory_used == busy.memory_used == BASELINE_USED + 2 * GIB, "its memory stays"
    assert [p.pid for p in paused.processes] == [worker]
    os.kill(worker, signal.SIGCONT)
    wait_for(lambda: not stopped(worker), what="the worker resumed")
    assert probe.snapshot()[0].utilization >= 85


def test_a_load_that_knows_a_task_is_paused_says_so_without_a_pid():
    tasks = {0: [(0, 2 * GIB, False)], 1: [(0, 2 * GIB, False), (0, 2 * GIB)]}  # pid 0: not known yet
    paused, shared = SimulatedProbe(2, 80.0, load=lambda: tasks, clock=lambda: 0.0).snapshot()
    assert paused.utilization == 0 and paused.memory_used == BASELINE_USED + 2 * GIB
    assert shared.utilization >= 85, "a GPU is busy while any task on it is at work"


def test_the_apps_simulated_gpus_of_a_paused_task_are_idle():
    from gputui.jobs.tasks import Status, TaskRecord
    from gputui.views.runview import RunSnapshot, TaskView

    def task(n: int, status: str, gpus: tuple[int, ...]) -> TaskView:
        return TaskView(
            TaskRecord(f"shard-{n}", n, n, n + 1, 1, status, 1, 3, gpus, None, None, None, None, None), None
        )

    run = RunSnapshot(
        "/r", "job", "abcdef12", True, tasks=[task(0, Status.PAUSED, (0, 1)), task(1, Status.RUNNING, (2,))]
    )
    gpus = SimulatedProbe(4, 80.0, load=lambda: run.simulated_load(2 * GIB), clock=lambda: 0.0).snapshot()
    assert [g.utilization > 0 for g in gpus] == [False, False, True, False]
    assert [g.memory_used > BASELINE_USED for g in gpus] == [True, True, True, False]
