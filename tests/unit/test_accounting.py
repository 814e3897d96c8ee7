"""GPU accounting from GPU samples: time held x GPUs, and the memory of the attempt's own processes only.

Snapshots stand in for the NVML hardware; the processes in them are real ones, told apart by ownership's rule."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gputui.engine.accounting import Meter, attempt_memory
from gputui.executors.ownership import AttemptProcesses, ref_of
from gputui.gpus.probe import GIB, GpuProcess, GpuSnapshot
from gputui.gpus.simulated import SimulatedProbe


def _gpu(index: int, *procs: tuple[int, int | None], util: float = 90.0) -> GpuSnapshot:
    used = sum(m or 0 for _, m in procs)
    return GpuSnapshot(
        index, "GPU", f"GPU-{index}", 80 * GIB, used, util, processes=tuple(GpuProcess(*p) for p in procs)
    )


@pytest.fixture
def child():
    """A real process started by this one: a descendant of this test's 'worker' (this process)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def test_memory_counts_the_attempts_process_tree_on_its_gpus_only(child):
    mine = AttemptProcesses(None, ref_of(os.getpid()), None)
    gpus = [_gpu(0, (child.pid, 3 * GIB), (os.getpid(), GIB)), _gpu(1, (child.pid, 2 * GIB))]
    assert attempt_memory(gpus, mine) == 6 * GIB
    assert attempt_memory(gpus[:1], mine) == 4 * GIB
    foreign = [_gpu(0, (os.getppid(), 5 * GIB))]  # our parent is no descendant of ours
    assert attempt_memory(foreign, mine) is None
    assert attempt_memory([_gpu(0, (child.pid, None))], mine) is None  # the driver does not say: unknown


def test_meter_counts_time_held_times_gpus_and_the_peak(child):
    meter = Meter(simulated=False)
    procs = AttemptProcesses(None, ref_of(os.getpid()), None)
    meter.start(("shard-0", 1), 2, started_at=1000.0)
    meter.sample([_gpu(0, (child.pid, 3 * GIB)), _gpu(1)], [(("shard-0", 1), (0, 1), procs)], now=1010.0)
    meter.sample([_gpu(0, (child.pid, GIB)), _gpu(1)], [(("shard-0", 1), (0, 1), procs)], now=1030.0)
    written = meter.due(now=1030.0)
    assert written == {("shard-0", 1): {"gpu_seconds": 60.0, "peak_memory": 3 * GIB, "gpus_simulated": 0}}
    assert meter.due(now=1031.0) == {}  # at most every few seconds
    final = meter.finish(("shard-0", 1), ended_at=1045.0)
    assert final == {"gpu_seconds": 90.0, "peak_memory": 3 * GIB, "gpus_simulated": 0}
    meter.sample([_gpu(0, (child.pid, 9 * GIB))], [(("shard-0", 1), (0, 1), procs)], now=1050.0)
    assert meter.finish(("shard-0", 1), ended_at=1045.0)["gpu_seconds"] == 90.0  # never past its end
    meter.keep([])  # its end is committed: forgotten
    assert meter.finish(("shard-0", 1), ended_at=1050.0) == {}  # never metered (any more): nothing to write


def test_an_adopted_attempt_counts_from_its_launch_and_keeps_its_recorded_peak():
    meter = Meter(simulated=False)
    meter.start(("shard-0", 2), 1, started_at=500.0, peak=7 * GIB)
    assert meter.finish(("shard-0", 2), ended_at=800.0) == {
        "gpu_seconds": 300.0,
        "peak_memory": 7 * GIB,
        "gpus_simulated": 0,
    }


def test_a_cluster_attempt_counts_from_its_start_on_a_node_not_from_its_time_in_the_queue():
    meter = Meter(simulated=False)
    meter.start(("shard-0", 1), 2, started_at=100.0)  # launched: queued in the cluster
    meter.ran_from(("shard-0", 1), 160.0)  # started on a node a minute later
    assert meter.finish(("shard-0", 1), ended_at=200.0)["gpu_seconds"] == 80.0
    meter.start(("shard-1", 1), 2, started_at=100.0)
    meter.ran_from(("shard-1", 1), None)  # killed while it waited: it never held a GPU
    assert meter.finish(("shard-1", 1), ended_at=200.0)["gpu_seconds"] == 0.0
    meter.start(("shard-2", 1), 1, started_at=100.0)
    meter.ran_from(("shard-2", 1), 99.0)  # a node's clock a little behind ours: never before the launch
    assert meter.finish(("shard-2", 1), ended_at=200.0)["gpu_seconds"] == 100.0


def test_simulated_gpus_give_the_memory_the_simulation_attributes_marked_simulated():
    pid = os.getpid()
    probe = SimulatedProbe(2, 24, load=lambda: {0: [(pid, 5 * GIB)], 1: [(pid, 5 * GIB)]})
    meter = Meter(simulated=True)
    meter.start(("shard-0", 1), 2, started_at=0.0)
    meter.sample(probe.snapshot(), [(("shard-0", 1), (0, 1), AttemptProcesses(None, ref_of(pid), None))], now=3.0)
    final = meter.finish(("shard-0", 1), ended_at=4.0)
    assert {k: final[k] for k in ("gpu_seconds", "peak_memory", "gpus_simulated")} == {
        "gpu_seconds": 8.0,
        "peak_memory": 10 * GIB,
        "gpus_simulated": 1,
    }
    # One sample only: its last second at the GPUs' power (280..322 W each), estimated (test_energy_share.py)
    assert 560 <= final["energy_j"] <= 644 and final["energy_estimated"] == 1


def test_gpu_seconds_are_measured_on_boottime_not_on_a_wall_clock_that_steps():
    """The attempt's launch and samples are clock stamps: +2 h, then back to -1 h, of the wall clock
    meanwhile add nothing and take nothing away; a stamp of another boot falls back to the wall clock."""
    from gputui.clock import Stamp

    boot = "6b1f9c1e-0000-4000-8000-000000000001"
    meter = Meter(simulated=False)
    meter.start(("shard-0", 1), 2, started_at=Stamp(1000.0, 50.0, boot))
    meter.sample([], [(("shard-0", 1), (0, 1), AttemptProcesses(None, None, None))], Stamp(8206.0, 56.0, boot))
    assert meter.due(now=10.0)[("shard-0", 1)]["gpu_seconds"] == 12.0  # 6 s x 2 GPUs, not 2 h
    assert meter.finish(("shard-0", 1), ended_at=Stamp(1000.0 - 3576, 74.0, boot))["gpu_seconds"] == 48.0
    meter.start(("shard-1", 1), 1, started_at=Stamp(1000.0, 50.0, boot))
    other_boot = Stamp(1030.0, 3.0, "6b1f9c1e-0000-4000-8000-000000000002")  # rebooted: wall clock
    assert meter.finish(("shard-1", 1), ended_at=other_boot)["gpu_seconds"] == 30.0
    meter.start(("shard-2", 1), 1, started_at=Stamp(1000.0, 50.0, boot))
    assert meter.finish(("shard-2", 1), ended_at=Stamp(900.0, 1.0, "another"))["gpu_seconds"] == 0.0  # never < 0


def test_written_figures_keep_coming_when_the_clock_given_to_due_goes_back():
    meter = Meter(simulated=False)
    meter.start(("shard-0", 1), 1, started_at=1000.0)
    assert meter.due(now=5000.0)
    meter.finish(("shard-0", 1), ended_at=1010.0)
    assert meter.due(now=1400.0)  # not held back until the clock is back at 5005
