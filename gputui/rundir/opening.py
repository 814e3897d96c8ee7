"""Opening a run: plan the job, take the run lock, create or check the state, record the set-up."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path

from gputui.executors.journal import rotate
from gputui.executors.ownership import new_scheduler_id
from gputui.files.atomic import atomic_write_text
from gputui.jobs.kinds.base import Recorded
from gputui.jobs.kinds.changes import SAFE_CHANGES
from gputui.jobs.kinds.registry import kind_of
from gputui.jobs.plans import Plan, plan_job
from gputui.jobs.spec import JobSpec
from gputui.jobs.tasks import Status
from gputui.rundir import rebuild, run_registry
from gputui.rundir.meta import JobFacts, OutputSettings, RunIdentity, RunMeta, read_meta, write_meta
from gputui.rundir.paths import RunLock, RunPaths
from gputui.rundir.store import Store


class PlanMismatch(RuntimeError):
    """The job file now plans other tasks than the run directory was started with."""


@dataclass
class Run:
    paths: RunPaths
    store: Store
    lock: RunLock
    notes: list[str] = field(default_factory=list)  # what opening it did that the user should hear of

    @property
    def meta(self) -> RunMeta:
        """What the run is, as its state says now (read each time: its scheduler records itself as it starts)."""
        return read_meta(self.store)

    @property
    def scheduler_id(self) -> str:
        return self.meta.identity.scheduler_id

    @property
    def simulate(self) -> str | None:
        """How this run's GPUs are probed: the `--simulate` it was started with, if any."""
        return self.meta.simulate

    def close(self) -> None:
        self.store.close()
        self.lock.release()


def open_for_job(
    job: JobSpec,
    role: str = "scheduler",
    *,
    rebuild_state: bool = False,
    simulate: str | None = None,
    retry_failed: bool = True,
) -> Run:
    """Take the run lock, then create the state or check it still matches the job's plan.

    `simulate` is remembered, so a later start or an attached app probes GPUs the same way;
    `retry_failed=False` leaves tasks that failed for good as they are (only pending work runs).

    State that is missing while the directory holds an earlier run (or that `rebuild_state` sets
    aside) is rebuilt from the journal, keeping that run's identity (see rebuild.py)."""
    paths = RunPaths(job.run_dir)
    lock = RunLock(paths)
    lock.acquire(role)  # before reading anything: a live scheduler must not be raced
    notes: list[str] = []
    try:
        plan = plan_job(job)
        paths.make()
        if rebuild_state:
            aside = rebuild.set_aside(paths)
            if aside is not None:
                notes.append(f"moved the state aside to {aside} (left as it was)")
        store = Store.open(paths.db, create=True)  # refuses damaged state, or another run's copied in
        try:
            notes += _init_or_check(store, paths, job, plan, retry_failed, simulate)
        except BaseException:
            store.close()
            raise
    except BaseException:
        lock.release()
        raise
    atomic_write_text(paths.job_copy, job.text)
    if job.outputs is not None:
        job.outputs.dir.mkdir(parents=True, exist_ok=True)
    notes += run_registry.record(paths.root, job, read_meta(store).identity)  # for `gputui ls`; never fails
    return Run(paths, store, lock, notes)


def open_existing(run_dir: str | Path, *, readonly: bool = False) -> tuple[RunPaths, Store]:
    paths = RunPaths(Path(run_dir).resolve())
    if not paths.db.exists():
        raise FileNotFoundError(f"{paths.root} is not a gputui run directory (no state.db)")
    return paths, Store.open(paths.db, readonly=readonly)


def _changed_output_key(recorded: OutputSettings | None, job: JobSpec, old: str | None) -> str:
    now = OutputSettings.of(job)
    if recorded is not None:  # recorded: say exactly which key
        if recorded.dir != now.dir:
            return "[outputs].dir"
        if recorded.pattern != now.pattern:
            return "[outputs].pattern"
        was, now_params = recorded.params, now.params
        for name in sorted(set(was) | set(now_params)):
            if was.get(name) != now_params.get(name):
                return f"[params].{name} (used in [outputs].pattern)"
        return "[outputs].pattern"
    # a run recorded before these settings were kept: judge from the paths
    if old and job.outputs is not None and not Path(old).is_relative_to(job.outputs.dir):
        return "[outputs].dir"
    return "[outputs].pattern"


def _check_outputs(store: Store, job: JobSpec, plan: Plan) -> None:
    """Refuse a job file whose outputs would no longer be where the run recorded them (read a page at a time)."""
    tasks = iter(plan.tasks)
    while page := list(itertools.islice(tasks, 500)):
        recorded = store.outputs_of([t.id for t in page])
        for task in page:
            _check_output(store, job, task.id, recorded.get(task.id), task.output)


def _check_output(store: Store, job: JobSpec, task_id: str, old: str | None, new: str | None) -> None:
    if old != new:
        key = _changed_output_key(read_meta(store).job.outputs, job, old)
        raise PlanMismatch(
            f"{job.path}: {key} changed since {store.path.parent} started: {task_id}'s output was "
            f"{old or '(none)'}, it would now be {new or '(none)'}; outputs already recorded would be stranded, "
            f"so this is refused.\n  Restore {key.split(' ')[0]}, or start afresh with another --run-dir. What "
            f"may change safely between runs: {SAFE_CHANGES}."
        )


def _refuse_changed_plan(store: Store, meta: RunMeta, job: JobSpec, plan: Plan, changed: bool) -> None:
    """Refuse a job file whose plan is not the one the run recorded: another kind, or what its kind says."""
    was = meta.job.kind
    if was != job.kind:
        raise PlanMismatch(
            f"{store.path.parent} was started as a {was} job; the job file {job.path} is now a {job.kind} "
            f"job ([job].kind). Restore it, or start afresh with another --run-dir."
        )
    recorded = Recorded(meta.identity.plan_definition, store.tasks, store.path.parent)
    refusal = kind_of(job).refusal(job, plan, recorded, changed)
    if refusal is not None:
        raise PlanMismatch(refusal)


def plan_refusal(job: JobSpec) -> str | None:
    """What `open_for_job` would refuse of this job file on the run directory it names (another plan, outputs
    moved), asked by a reader: no lock taken, nothing written. None when it would open it (or no run is there)."""
    paths = RunPaths(job.run_dir)
    if not paths.db.exists():
        return None
    store = Store.open(paths.db, readonly=True)
    try:
        was = read_meta(store)
        recorded = was.identity.plan_fingerprint
        if recorded is None:
            return None
        plan = plan_job(job)
        try:
            _refuse_changed_plan(store, was, job, plan, changed=recorded != plan.fingerprint)
            _check_outputs(store, job, plan)
        except PlanMismatch as e:
            return str(e)
        return None
    finally:
        store.close()


def _init_or_check(
    store: Store, paths: RunPaths, job: JobSpec, plan: Plan, retry_failed: bool, simulate: str | None
) -> list[str]:
    was = read_meta(store)
    recorded = was.identity.plan_fingerprint
    if recorded is not None:
        _refuse_changed_plan(store, was, job, plan, changed=recorded != plan.fingerprint)
        _check_outputs(store, job, plan)
    with store.transaction():
        notes = []
        identity = was.identity
        if recorded is None:
            previous = rebuild.previous_scheduler_id(paths)  # this directory held a run: keep its identity
            if previous is None:
                rotate(paths.journal)
            scheduler_id = previous or new_scheduler_id()
            identity = RunIdentity(scheduler_id, time.time(), plan.fingerprint, plan.definition)
            store.add_tasks(plan.tasks, budget=job.retry.max_attempts)
            if previous is not None:
                notes.append(rebuild.from_journal(store, paths, scheduler_id))
            rebuild.write_identity(paths, scheduler_id, job.name)
        elif retry_failed:
            # Tasks that failed for good get a fresh set of attempts when the run is started again.
            for t in store.iter_tasks((Status.FAILED,)):
                store.update_task(t.id, status=Status.PENDING, budget=t.attempts + job.retry.max_attempts)
        write_meta(store, was.opened(identity, JobFacts.of(job, plan), simulate))
    return notes


def check_app_target(jobs: Path | None, run_dir: Path | None, simulate: str | None) -> Path | None:
    """What an app (in a terminal or served to a browser) would refuse, refused before any screen: a bad
    `--simulate`, a bad job file, a folder that is not a run, damaged or foreign state. Returns the run dir."""
    from gputui.gpus.detect import check_simulate_spec
    from gputui.jobs.loader import load_jobspec

    check_simulate_spec(simulate)
    if jobs is not None:
        run_dir = load_jobspec(jobs, run_dir=run_dir).run_dir
    elif run_dir is not None and not (run_dir / "state.db").exists():
        raise FileNotFoundError(f"{run_dir} is not a gputui run directory (no state.db)")
    if run_dir is not None and (run_dir / "state.db").exists():
        open_existing(run_dir, readonly=True)[1].close()
    return run_dir
