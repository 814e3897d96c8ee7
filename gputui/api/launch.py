"""Running a job: here in the foreground until every task has settled (`gputui run`), or as a detached
background run that outlives its starter (the app's `l`)."""

from __future__ import annotations

from pathlib import Path

from gputui.api.background import StartFailed, start_scheduler
from gputui.api.planning import load_job
from gputui.jobs.spec import JobSpec
from gputui.rundir.status_cache import MIN_TASKS

__all__ = ["StartFailed", "run_job", "start_in_background"]


def run_job(
    job: str | Path | JobSpec,
    *,
    run_dir: str | Path | None = None,
    simulate: str | None = None,
    show_output: bool = True,
    progress_every: float = 30.0,
    rebuild_state: bool = False,
    only_pending: bool = False,
) -> int:
    """Run the job headless, as `gputui run` does, and return its exit status: 0 when every task is done
    (and merged, where the job merges), 1 when some is not, 130 when stopped. Progress and worker output
    (unless `show_output` is False) go to stdout. Raises JobSpecError, as `gputui plan` does, where a command
    cannot start here (its program or script missing, not executable). `only_pending`: tasks that failed for
    good stay failed.
    `simulate`: simulated GPUs, e.g. "4x24" (remembered by the run, so a later start probes the same)."""
    from gputui.api.headless import run_headless
    from gputui.engine.attempt import Options
    from gputui.jobs.startable import check_startable
    from gputui.rundir.opening import open_for_job
    from gputui.views.printer import Printer

    if not isinstance(job, JobSpec):
        job = load_job(job, run_dir)
    check_startable(job)  # a command that cannot start here is refused before anything is written
    run = open_for_job(job, rebuild_state=rebuild_state, simulate=simulate, retry_failed=not only_pending)
    try:
        opts = Options(simulate=run.simulate, show_output=show_output, progress_every=progress_every)
        code = run_headless(job, run, opts, Printer(show_output=show_output))
        large = sum(run.store.status_counts().values()) >= MIN_TASKS
    finally:
        run.close()
    if large:  # its `status --json` is read from here on in a moment
        from gputui.api.status import keep_json

        keep_json(run.paths.root)
    return code


def start_in_background(
    job_file: str | Path,
    run_dir: str | Path,
    *,
    simulate: str | None = None,
    only_pending: bool = False,
    timeout: float = 15.0,
) -> int:
    """Start `gputui run` detached (its output to the run's scheduler.log) and return its pid once it holds
    the run; closing whatever started it never stops the run. Raises StartFailed with what it said."""
    return start_scheduler(Path(job_file), Path(run_dir), simulate, timeout, only_pending=only_pending)
