"""One refresh of everything the app shows, gathered off the event loop (a thread) and handed over as one
message: the run, the GPUs, their processes, other runs' reservations, the host line."""

from __future__ import annotations

from dataclasses import dataclass, field

import psutil
from textual.message import Message

from gputui.engine.monitor import (
    CpuSampler,
    GpuProcessInfo,
    gpu_processes,
    held_by_other_runs,
    reservations,
    simulated_holders,
)
from gputui.gpus.detect import open_probe
from gputui.gpus.probe import GIB, GpuProbe, GpuSnapshot, NoGpuError
from gputui.gpus.simulated import TASK_MEMORY_GB
from gputui.views.runview import RunSnapshot, RunView


@dataclass
class Refreshed(Message):
    """One refresh's results, gathered in a thread."""

    run: RunSnapshot | None
    gpus: list[GpuSnapshot]
    gpu_error: str | None
    processes: list[GpuProcessInfo] = field(default_factory=list)
    run_error: str | None = None
    other_runs: dict[int, str] = field(default_factory=dict)  # GPU index -> which other gputui run holds it
    host: str = ""  # monitor mode: CPU, memory, swap, load


def host_line() -> str:
    """'CPU 12% · mem 3.2/15.6 GiB · swap 0.0/2.0 GiB · load 0.52 0.40 0.33', like nvitop's host panel."""
    mem, swap = psutil.virtual_memory(), psutil.swap_memory()
    load = " ".join(f"{x:.2f}" for x in psutil.getloadavg())
    return (
        f"CPU {psutil.cpu_percent():.0f}% of {psutil.cpu_count()} · mem {(mem.total - mem.available) / GIB:.1f}/"
        f"{mem.total / GIB:.1f} GiB · swap {swap.used / GIB:.1f}/{swap.total / GIB:.1f} GiB · load {load}"
    )


class Gatherer:
    """Holds what lives across refreshes: the run view, the GPU probe (opened on first use, the way the
    run was started when no `--simulate` is given), the CPU sampler, the last run snapshot."""

    def __init__(self, view: RunView | None, simulate: str | None, probe: GpuProbe | None) -> None:
        self.view, self.simulate, self.probe = view, simulate, probe
        self.run: RunSnapshot | None = None
        self._cpu = CpuSampler()

    def gather(self) -> Refreshed:
        run, run_error = None, None
        try:
            run = self.view.snapshot() if self.view is not None else None
        except Exception as e:  # unreadable now (being created, damaged, gone): say so, keep the last view
            run, run_error = self.run, str(e).splitlines()[0]
            self.view.close()
        self.run = run
        gpus, error = [], None
        try:
            if self.probe is None:
                # A run remembers how its GPUs were probed: re-attaching needs no --simulate.
                simulate = self.simulate or (run.meta.get("simulate") if run is not None else None)
                self.probe = open_probe(simulate, load=self._simulated_load)
            gpus = self.probe.snapshot()
        except NoGpuError as e:
            error = str(e).splitlines()[0] + " (try --simulate 4x24)"
        except Exception as e:  # a flaky driver must not take the app down
            error = f"GPU probe failed: {e}"
        scheduler_id = run.scheduler_id if run else None
        processes = gpu_processes(gpus, scheduler_id, self._cpu) if gpus else []
        held = reservations(gpus)
        monitor = self.view is None
        if monitor:
            processes += simulated_holders(gpus, held)
        other_runs = held_by_other_runs(held, scheduler_id)
        return Refreshed(run, gpus, error, processes, run_error, other_runs, host_line() if monitor else "")

    def _simulated_load(self):
        """Simulated GPUs show our running tasks' declared memory, as the scheduler's do."""
        run = self.run
        if run is None:
            return {}
        per_task = int((run.meta.get("memory_per_worker_gb") or TASK_MEMORY_GB) * GIB)
        return {g: [(0, per_task)] * len(ids) for g, ids in run.gpu_holders().items()}
