"""When GPU samples raise an alert: an idle GPU of a running task (once per idle stretch), and memory held
by a process of one of our tasks that is no longer running. Snapshots stand in for the NVML hardware."""

from __future__ import annotations

import os
import subprocess
import sys

from gputui.engine.gpuwatch import GHOST_AFTER_S, GhostWatch, IdleWatch
from gputui.gpus.probe import GIB, GpuProcess, GpuSnapshot


def _gpu(index: int, util: float | None, *pids: int) -> GpuSnapshot:
    procs = tuple(GpuProcess(pid, 2 * GIB) for pid in pids)
    return GpuSnapshot(index, "GPU", f"GPU-{index}", 80 * GIB, 2 * GIB, util, processes=procs)


def test_an_idle_gpu_of_a_running_task_alerts_once_per_idle_stretch():
    watch = IdleWatch(minutes=10)
    task = (("shard-0", 1), (0, 1))
    assert watch.sample([_gpu(0, 0.0), _gpu(1, 95.0)], [task], now=0.0) == []
    assert watch.sample([_gpu(0, 0.0), _gpu(1, 95.0)], [task], now=599.0) == []
    found = watch.sample([_gpu(0, 0.0), _gpu(1, 95.0)], [task], now=600.0)
    assert [(f.task_id, f.gpu) for f in found] == [("shard-0", 0)] and "10 min" in found[0].message
    assert watch.sample([_gpu(0, 0.0), _gpu(1, 95.0)], [task], now=1800.0) == []  # same stretch: said once
    watch.sample([_gpu(0, 40.0), _gpu(1, 95.0)], [task], now=1801.0)  # busy again: the stretch is over
    watch.sample([_gpu(0, 0.0), _gpu(1, 95.0)], [task], now=1802.0)
    assert len(watch.sample([_gpu(0, 0.0), _gpu(1, 95.0)], [task], now=2402.0)) == 1


def test_gpus_that_cannot_tell_or_tasks_not_running_never_count_as_idle():
    watch = IdleWatch(minutes=1)
    task = (("shard-0", 1), (0,))
    watch.sample([_gpu(0, None)], [task], now=0.0)
    assert watch.sample([_gpu(0, None)], [task], now=3600.0) == []
    watch.sample([_gpu(0, 0.0)], [], now=0.0)  # e.g. paused: the scheduler does not pass it
    assert watch.sample([_gpu(0, 0.0)], [], now=3600.0) == []


def test_memory_of_an_ended_tasks_process_is_a_ghost_once_it_stays():
    env = dict(os.environ, GPUTUI_SCHEDULER_ID="sched-1", GPUTUI_TASK_ID="shard-0", GPUTUI_ATTEMPT="1")
    code = "import time; print('ready', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"  # running as itself, with its own environment
        watch = GhostWatch("sched-1")
        gpus = [_gpu(0, 0.0), _gpu(1, 0.0, proc.pid)]
        assert watch.sample(gpus, {"shard-0": "running"}, now=0.0) == []  # its task runs: not a ghost
        assert watch.sample(gpus, {"shard-0": "failed"}, now=100.0) == []  # just seen: it may be ending
        found = watch.sample(gpus, {"shard-0": "failed"}, now=100.0 + GHOST_AFTER_S)
        assert [(f.task_id, f.gpu) for f in found] == [("shard-0", 1)]
        assert f"pid {proc.pid}" in found[0].message and "2.0 GiB" in found[0].message
        assert watch.sample(gpus, {"shard-0": "failed"}, now=1000.0) == []  # said once
        assert GhostWatch("another-run").sample(gpus, {"shard-0": "failed"}, now=0.0) == []
    finally:
        proc.kill()
        proc.wait()


def test_the_ghost_watch_reads_task_statuses_where_asked_not_a_copy_per_sample():
    from types import SimpleNamespace

    from gputui.engine.run_state import Statuses

    tasks = {"shard-0": SimpleNamespace(status="running"), "shard-1": SimpleNamespace(status="done")}
    statuses = Statuses(tasks)
    assert statuses.get("shard-1") == "done" and statuses.get("gone") is None and len(statuses) == 2
    tasks["shard-0"].status = "failed"  # read as it is now
    assert dict(statuses) == {"shard-0": "failed", "shard-1": "done"}
