"""A killed task's GPU goes to the next task only once NVML lists none of its processes there. NVML is
the hardware we lack: the snapshots are built by hand, the processes they list are real."""

from __future__ import annotations

import os
import subprocess
import sys

from gputui.engine.monitor import draining
from gputui.gpus.probe import GIB, GpuProcess, GpuSnapshot

SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]


def gpu(index: int, *pids: int, simulated: bool = False) -> GpuSnapshot:
    procs = tuple(GpuProcess(pid, GIB) for pid in pids)
    return GpuSnapshot(index, "H100", f"GPU-{index}", 80 * GIB, GIB, processes=procs, simulated=simulated)


def tagged(task: str) -> subprocess.Popen:
    env = {**os.environ, "GPUTUI_SCHEDULER_ID": "sched-1", "GPUTUI_TASK_ID": task, "GPUTUI_ATTEMPT": "1"}
    return subprocess.Popen(SLEEP, env=env)


def test_gpus_listing_a_leftover_of_ours_or_an_exited_process_are_held_back():
    leftover, running, foreign = tagged("trial-1"), tagged("trial-2"), subprocess.Popen(SLEEP)
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    try:
        snaps = [
            gpu(0, leftover.pid),  # a killed trial's child still on its GPU
            gpu(1, running.pid),  # a running task of ours: its own GPU, not draining
            gpu(2, foreign.pid),  # someone else's job: free memory decides, not this
            gpu(3, exited.pid),  # gone from the process table, still listed by the driver
            gpu(4),
            gpu(5, leftover.pid, simulated=True),  # simulated GPUs list what gputui attributes
        ]
        assert draining(snaps, "sched-1", {"trial-2"}) == {0, 3}
        assert draining(snaps, "another-run", {"trial-2"}) == {3}  # another run's leftovers are its business
    finally:
        for p in (leftover, running, foreign):
            p.kill()
            p.wait()
