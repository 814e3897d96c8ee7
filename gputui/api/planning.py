"""What a job would run, read without running or writing anything: its tasks, and for a `[resources].mode`
the GPUs per worker and workers chosen on the GPUs seen now, with the arithmetic."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from gputui.engine.run_modes import size_gpus
from gputui.gpus.probe import GpuSnapshot
from gputui.jobs.gpu_plan import Decision, NoFit
from gputui.jobs.loader import JobSpecError, load_jobspec
from gputui.jobs.plans import Plan, plan_job
from gputui.jobs.spec import JobSpec
from gputui.jobs.startable import check_startable
from gputui.rundir.meta import read_meta
from gputui.rundir.opening import check_app_target, open_existing

if TYPE_CHECKING:  # (the app's view of a plan: not imported by `gputui run`)
    from gputui.views.runview import PlannedRun

__all__ = ["JobPlan", "JobSpec", "check_app_target", "load_job", "plan", "read_plan", "sized_plan"]


def load_job(job_file: str | Path | None, run_dir: str | Path | None = None) -> JobSpec:
    """The job file read and checked (raises JobSpecError saying which key is wrong). Without a job file,
    the one `run_dir`'s run was started with. `run_dir` defaults to runs/<name> beside the job file."""
    if job_file is None:
        if run_dir is None:
            raise FileNotFoundError("gputui run needs --jobs FILE (or --run-dir of an existing run)")
        _, store = open_existing(run_dir, readonly=True)
        try:
            job_file = read_meta(store).job.file
        finally:
            store.close()
    return load_jobspec(Path(job_file), run_dir=None if run_dir is None else Path(run_dir))


@dataclass(frozen=True)
class JobPlan:
    """A job and the tasks it would start with."""

    job: JobSpec
    plan: Plan

    @property
    def headline(self) -> str:
        """'name (kind): what it runs', in one line."""
        return f"{self.job.name} ({self.job.kind}): {self.plan.description}"

    @property
    def mode(self) -> str | None:
        """The job's run mode (None: it names its GPUs per worker itself)."""
        return self.job.resources.mode

    def size(self, gpus: Sequence[GpuSnapshot]) -> Decision:
        """The run mode decided on these GPUs, as the scheduler decides it at launch. Raises NoFit, with the
        arithmetic, when the model fits nowhere here."""
        return size_gpus(self.job, gpus)


def plan(job_file: str | Path, *, run_dir: str | Path | None = None) -> JobPlan:
    """The job's plan as `gputui run` would start it (reads the job file and, for shards, the input). Raises
    JobSpecError where a command cannot start here (its program or script missing: jobs/startable.py)."""
    job = load_job(job_file, run_dir)
    check_startable(job, str(job_file))
    return JobPlan(job, plan_job(job))


def read_plan(job_path: Path, run_dir: Path | None) -> tuple[JobSpec | None, PlannedRun]:
    """The job's plan as the app shows it before launch. A job file that cannot be planned gives a
    PlannedRun saying why (it may be being edited: it is read again when it changes)."""
    from gputui.views.runview import no_plan, planned_run

    try:
        job = load_jobspec(job_path, run_dir=run_dir)
        plan = planned_run(job, plan_job(job))
    except Exception as e:
        return None, no_plan(str(e).splitlines()[0] if str(e) else type(e).__name__)
    try:  # a command that cannot start here: said before `l`, which refuses it (as `gputui run` does)
        check_startable(job, str(job_path))
    except JobSpecError as e:
        plan = replace(plan, no_fit=str(e).splitlines()[0])
    return job, plan


def sized_plan(job: JobSpec, plan: PlannedRun, gpus: list[GpuSnapshot]) -> PlannedRun:
    """The plan with its run mode decided on these GPUs, as the scheduler will decide it at launch."""
    mode = job.resources.mode
    if mode is None or not gpus or plan.error:
        return plan
    try:
        d = size_gpus(job, gpus)
        sizing = f"{mode}: {d.gpus_per_worker} GPU/worker × {d.workers} at once"
        sizing += f", mem util {d.gpu_memory_utilization:.2f}"
        return replace(plan, sizing=sizing)
    except NoFit as e:
        return replace(plan, no_fit=f"{mode}: {str(e).splitlines()[0]}")
