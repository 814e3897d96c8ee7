"""A run directory planned and recorded by the engine (`open_for_job`, as a launch does), its tasks' statuses
then set through the store with fixed times and every status: for looks and for keys."""

from __future__ import annotations

import shutil
from pathlib import Path

from gputui.jobs.loader import load_jobspec
from gputui.jobs.spec import JobSpec
from gputui.jobs.tasks import Status
from gputui.rundir.opening import open_for_job
from gputui.rundir.paths import RunPaths
from gputui.rundir.rebuild import write_identity
from gputui.rundir.store import Store

T0 = 1_700_000_000.0
NOW = T0 + 300
SCHEDULER_ID = "5f1c2a9e-0000-4000-8000-000000000000"


def shard_file(root: Path, n_tasks: int) -> Path:
    """A job of `n_tasks` shards of 50 ids each ([0, 50), [50, 100), ...)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "ids.csv").write_text("id\n" + "".join(f"{i}\n" for i in range(n_tasks * 50)))
    path = root / "continuation.toml"
    path.write_text(
        '[job]\nname = "continuation"\ncommand = "python w.py"\nstop_grace_s = 10\n'
        f'[shards]\ninput = "ids.csv"\nid_column = "id"\nnum_workers = {n_tasks}\n'
        "[resources]\nmemory_per_worker_gb = 12\n[retry]\nmax_attempts = 3\n"
    )
    return path


def recorded(job_file: Path, run_dir: Path) -> JobSpec:
    """The job planned and recorded by the engine as a launch does (meta, plan, first tasks), the run lock let
    go. Its scheduler id is fixed, for the snapshots' header: the directory is given it as a run's identity
    first, which the engine keeps."""
    job = load_jobspec(job_file, run_dir=run_dir)
    write_identity(RunPaths(run_dir), SCHEDULER_ID, job.name)
    open_for_job(job).close()
    return job


def fixed_run(root: Path, n_tasks: int = 6, running: int = 0) -> Path:
    """A run directory recorded by the engine, then given fixed times and every status; with `running`,
    that many tasks after the first four are running (the second one paused), the next retrying."""
    shutil.rmtree(root, ignore_errors=True)
    recorded(shard_file(root, n_tasks), root)
    store = Store.open(RunPaths(root).db)
    plan = [Status.DONE, Status.DONE, Status.FAILED, Status.KILLED]
    if running:
        plan += [Status.RUNNING, Status.PAUSED][:running] + [Status.RUNNING] * (running - 2) + [Status.RETRYING]
    plan += [Status.PENDING] * n_tasks
    with store.transaction():
        for i, status in enumerate(plan[:n_tasks]):
            if status == Status.PENDING:
                continue
            log = root / "logs" / f"shard-{i}.attempt1.log"
            live = status in (Status.RUNNING, Status.PAUSED)
            log.write_text(f"shard [{i * 50}, {(i + 1) * 50})\nprocessed {20 if live else 50}/50 rows\n")
            store.start_attempt(f"shard-{i}", 1, (2 * i % 8, 2 * i % 8 + 1), ["python", "w.py"], str(log), T0 + i)
            if live:
                store.update_attempt(f"shard-{i}", 1, status=status)
                store.update_task(
                    f"shard-{i}", status=status, attempts=1, gpus=(2 * i % 8, 2 * i % 8 + 1), started_at=T0 + i
                )
                continue
            code = {Status.DONE: 0, Status.FAILED: 1, Status.KILLED: -15, Status.RETRYING: 1}[status]
            reason = {
                Status.FAILED: "CUDA out of memory: torch.OutOfMemoryError",
                Status.KILLED: "killed by user",
                Status.RETRYING: "exit 1: ValueError: bad row [id=7]",
            }
            store.update_attempt(
                f"shard-{i}",
                1,
                status=Status.FAILED if status == Status.RETRYING else status,
                exit_code=code,
                ended_at=T0 + 60 + i,
            )
            if status == Status.RETRYING:
                store.update_task(f"shard-{i}", next_try_at=NOW + 42)
            store.update_task(
                f"shard-{i}",
                status=status,
                attempts=1,
                gpus=(2 * i % 8, 2 * i % 8 + 1),
                exit_code=code,
                started_at=T0 + i,
                ended_at=T0 + 60 + i,
                reason=reason.get(status),
            )
    store.close()
    return root
