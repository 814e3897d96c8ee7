"""`gputui run`: the run orchestrated without a screen. The scheduler drives the tasks; once they are all
settled the run's products are made here (merge, summary, report), so the engine never calls up into
results or views."""

from __future__ import annotations

import time

from gputui.engine.attempt import Options
from gputui.engine.scheduler import DETACHED, STOPPED, Scheduler
from gputui.jobs.kinds.registry import kind_of
from gputui.jobs.spec import JobSpec
from gputui.jobs.tasks import Status
from gputui.results.finalize import OutputCheck, merge_run, write_summary
from gputui.results.products import launched_tasks, unwritten_products, write_results, write_task_products
from gputui.rundir.opening import Run
from gputui.views.printer import Printer


def run_headless(job: JobSpec, run: Run, opts: Options, out: Printer) -> int:
    """The exit status: 0 when every task is done (and merged, where the job merges), 130 when stopped."""
    started = time.monotonic()
    opts.on_merge = lambda verify: merge_run(run.store, run.paths, verify)
    opts.on_settled = lambda task_ids: write_products(job, run, task_ids, fsync=False)
    opts.check_output = OutputCheck(run.store)
    ended = Scheduler(job, run, out, opts).run()
    if ended == STOPPED:
        return 130
    if ended == DETACHED:
        return 0
    return finish(job, run, out, time.monotonic() - started)


def write_products(job: JobSpec, run: Run, task_ids: list[str], *, fsync: bool = True) -> None:
    """Each settled task's metrics.csv and summary.json; the kind's table of results (a sweep's)."""
    kind, store = kind_of(job), run.store
    ranking = kind.ranking(job.kind_spec)
    write_task_products(store, run.paths, task_ids, dict([ranking]) if ranking else {}, fsync=fsync)

    def durations(task_id: str) -> list[float]:
        return [a.duration for a in store.attempts(task_id) if a.duration is not None]

    table = kind.results(job.kind_spec, store.tasks, durations)
    if table is not None:
        write_results(run.paths, table)


def finish(job: JobSpec, run: Run, out: Printer, elapsed: float) -> int:
    store, paths = run.store, run.paths
    write_products(job, run, unwritten_products(paths, launched_tasks(store)))  # a page at a time
    meta, counts = run.meta, store.status_counts()
    ok = counts[Status.DONE] == sum(counts.values()) and not meta.run_failed
    if ok and meta.job.merged:
        line = merge_run(store, paths)
        out.info(line)
        ok = not line.startswith("merge failed")
    summary_path, report_path = write_summary(store, paths)
    out.progress(counts, elapsed)
    out.info(f"summary: {summary_path}, report: {report_path}")
    for t in store.tasks_page([s for s in Status.ALL if s != Status.DONE], limit=10):
        out.info(f"{t.id} {t.range_label} {t.status}: {t.reason or ''}")
    if meta.run_failed:
        out.info(f"the run failed: {meta.run_failed}")
    return 0 if ok else 1
