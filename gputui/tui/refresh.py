"""One refresh of everything the app shows, gathered off the event loop (a thread) and handed over as one
message: the run, the GPUs, their processes, other runs' reservations, the host line."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from textual.message import Message

from gputui.api.machine import (
    TASK_MEMORY_GB,
    CpuSampler,
    GpuProcessInfo,
    Reservations,
    gpu_processes,
    held_by_other_runs,
    open_probe,
    reservations,
    simulated_holders,
)
from gputui.api.planning import JobSpec, read_plan, sized_plan
from gputui.gpus.probe import GIB, GpuProbe, GpuSnapshot, NoGpuError
from gputui.tui import glyphs
from gputui.views.executor_facts import cluster_gpus_of
from gputui.views.run_pages import PagedRunView
from gputui.views.runview import MetricSeries, PlannedRun, RunSnapshot, RunView
from gputui.views.task_page import TableWindow, TaskPage


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
    plan: PlannedRun | None = None  # before launch: the job's plan, read from its job file (nothing written)
    page: TaskPage | None = None  # the job table's rows around what it shows
    task_status: dict[str, str] = field(default_factory=dict)  # the status of each task a GPU process is of
    cpu_tasks: bool = False  # the job asks no GPU per worker: none found is no fault (gpu_error stays None)


@dataclass
class PageRead(Message):
    """Rows of the job table read in a thread, for a key that moved to rows it did not hold."""

    page: TaskPage


@dataclass
class SeriesRead(Message):
    """A task's metrics over steps, read in a thread when it was selected."""

    task_id: str
    series: MetricSeries | None


def host_line() -> str:
    """'CPU 12% · mem 3.2/15.6 GiB · swap 0.0/2.0 GiB · load 0.52 0.40 0.33', like nvitop's host panel."""
    mem, swap = psutil.virtual_memory(), psutil.swap_memory()
    load = " ".join(f"{x:.2f}" for x in psutil.getloadavg())
    sep = glyphs.now().sep
    return (
        f"CPU {psutil.cpu_percent():.0f}% of {psutil.cpu_count()}{sep}mem {(mem.total - mem.available) / GIB:.1f}/"
        f"{mem.total / GIB:.1f} GiB{sep}swap {swap.used / GIB:.1f}/{swap.total / GIB:.1f} GiB{sep}load {load}"
    )


def probe_failure(e: NoGpuError) -> str:
    """One line with each backend's reason, as `gputui gpus` gives them: 'No GPU could be probed: nvml: …;
    torch: … (try --simulate 4x24)'."""
    lines = str(e).splitlines()
    reasons = [line.strip() for line in lines[1:] if line.startswith(" ")]
    said = " ".join([lines[0] if lines else "No GPU could be probed:", "; ".join(reasons)]).strip()
    return f"{said} (try --simulate 4x24)"


class Gatherer:
    """Holds what lives across refreshes: the run view, the GPU probe (opened on first use, the way the
    run was started when no `--simulate` is given), the CPU sampler, the last run snapshot, and before
    launch the job's plan (read again only when the job file changes)."""

    def __init__(
        self,
        view: RunView | None,
        simulate: str | None,
        probe: GpuProbe | None,
        job_path: Path | None = None,
    ) -> None:
        self.view, self.simulate, self.probe = view, simulate, probe
        self.job_path = job_path
        self.run: RunSnapshot | None = None
        self._cpu = CpuSampler()
        self._claims: tuple[object, Reservations | None] | None = None  # (for which probe and run, the map)
        self._job: JobSpec | None = None
        self._plan: PlannedRun | None = None
        self._plan_stamp: tuple | None = None
        self._sized: tuple[tuple, PlannedRun] | None = None  # the plan sized on GPUs with this free memory
        self._lock = threading.Lock()  # a refresh asked for while one runs waits for it (one view, one reader)

    def gather(self) -> Refreshed:
        with self._lock:
            return self._gather()

    def series(self, task_id: str) -> MetricSeries | None:
        """The task's metrics over steps, and the task whose series the next refreshes carry."""
        if self.view is None:
            return None
        with self._lock:
            self.view.select(task_id)
            return self.view.read_series(task_id)

    def page(self, window: TableWindow) -> TaskPage | None:
        """The job table's rows in `window` now, read on their own connection (a refresh under way goes on)."""
        if not isinstance(self.view, PagedRunView) or self.view.page is None:  # none read yet: a refresh brings it
            return None
        return self.view.pages.read(window)

    def _read_plan(self, gpus: list[GpuSnapshot]) -> PlannedRun | None:
        if self.job_path is None or self.view is None:
            return None
        try:
            st = os.stat(self.job_path)
        except OSError:  # no job file (yet): nothing to show; `l` says why it cannot start
            self._job = self._plan = self._plan_stamp = None
            return None
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp != self._plan_stamp:
            (self._job, self._plan), self._plan_stamp = read_plan(self.job_path, self.view.paths.root), stamp
        if self._job is None or self._job.resources.mode is None:
            return self._plan
        key = (stamp, tuple((g.index, round(g.memory_free / GIB, 1)) for g in gpus))
        if self._sized is None or self._sized[0] != key:
            self._sized = key, sized_plan(self._job, self._plan, gpus)
        return self._sized[1]

    def _gather(self) -> Refreshed:
        run, run_error = None, None
        try:
            run = self.view.snapshot() if self.view is not None else None
        except Exception as e:  # unreadable now (being created, damaged, gone): say so, keep the last view
            run, run_error = self.run, str(e).splitlines()[0]
            self.view.close()
        self.run = run
        gpus, error, no_gpu = [], None, None
        try:
            on_cluster = cluster_gpus_of(run, self.simulate)  # the cluster's GPUs, not this machine's
            if on_cluster is not None:
                gpus, error = on_cluster
            else:
                if self.probe is None:
                    # A run remembers how its GPUs were probed: re-attaching needs no --simulate.
                    simulate = self.simulate or (run.meta.simulate if run is not None else None)
                    self.probe = open_probe(simulate, load=self._simulated_load)
                gpus = self.probe.snapshot()
        except NoGpuError as e:
            no_gpu = e
        except Exception as e:  # a flaky driver must not take the app down
            error = f"GPU probe failed: {e}"
        scheduler_id = run.scheduler_id if run else None
        here = [g for g in gpus if not g.where]  # a cluster's GPUs are not this machine's to look into
        processes = gpu_processes(here, scheduler_id, self._cpu) if here else []
        claims = self._claims_of(run)
        held = reservations(here, claims) if claims is not None else {}
        monitor = self.view is None
        if monitor:
            processes += simulated_holders(gpus, held)
        other_runs = held_by_other_runs(held, scheduler_id)
        plan = self._read_plan(gpus) if run is None and run_error is None else None
        page, ours = None, {}
        if isinstance(self.view, PagedRunView) and run is not None and run_error is None:
            page = self.view.page
            ours = self.view.statuses([p.task_id for p in processes if p.task_id is not None])
        elif run is not None:  # a view of every task (as scripts and tests make it)
            ours = {v.task.id: v.task.status for v in run.tasks}
        host = host_line() if monitor else ""
        cpu_tasks = self._cpu_tasks(run)
        if no_gpu is not None and not cpu_tasks:
            error = probe_failure(no_gpu)
        return Refreshed(
            run, gpus, error, processes, run_error, other_runs, host, plan, page, ours, cpu_tasks=cpu_tasks
        )

    def _claims_of(self, run: RunSnapshot | None) -> Reservations | None:
        """The map this probe's GPUs are claimed in: the machine's, or the run's own for its private simulated GPUs
        (none for private simulated GPUs with no run: nobody holds them)."""
        run_dir = self.view.paths.root if self.view is not None and run is not None else None
        key = (id(self.probe), run_dir)
        if self._claims is None or self._claims[0] != key:
            self._claims = key, Reservations.for_probe(self.probe, run_dir)
        return self._claims[1]

    def _cpu_tasks(self, run: RunSnapshot | None) -> bool:
        """Whether the job runs CPU tasks only (`gpus_per_worker = 0`, no run mode sizing it): as the run
        recorded it, else as its job file says."""
        if run is not None:
            return run.meta.job.gpus_per_worker == 0
        job = self._job if self.job_path is not None else None
        return job is not None and job.resources.mode is None and job.resources.gpus_per_worker == 0

    def _simulated_load(self):
        """Simulated GPUs show our running tasks' declared memory, as the scheduler's do (idle while paused)."""
        run = self.run
        if run is None:
            return {}
        return run.simulated_load(int((run.meta.job.memory_per_worker_gb or TASK_MEMORY_GB) * GIB))
