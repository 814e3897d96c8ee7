"""Human-readable copies of the run's set-up and task state, beside the database (never read back)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import asdict

from gputui.files.atomic import atomic_write_chunks, atomic_write_json
from gputui.jobs.kinds.registry import kind_of
from gputui.jobs.spec import JobSpec
from gputui.rundir import task_json
from gputui.rundir.paths import RunPaths
from gputui.rundir.store import Store


def write_config(paths: RunPaths, job: JobSpec, scheduler_id: str, gpu_backend: str) -> None:
    """The scheduler config and global arguments, as the seed's users kept them."""
    atomic_write_json(
        paths.exports / "config.json",
        {
            "job": job.name,
            "job_file": str(job.path),
            "run_dir": str(paths.root),
            "scheduler_id": scheduler_id,
            "gpu_backend": gpu_backend,
            "argv": list(sys.argv),
            "command": list(job.command),
            "workdir": str(job.workdir),
            "env": dict(job.env),
            "params": dict(job.params),
            "kind": job.kind,
            kind_of(job).table: asdict(job.kind_spec),  # the kind's table as read ([shards], [sweep] ...)
            "resources": vars(job.resources),
            "retry": vars(job.retry),
            "outputs": vars(job.outputs),
            "stop_grace_s": job.stop_grace_s,
            "alerts": vars(job.alerts),
        },
    )


def write_tasks(paths: RunPaths, store: Store) -> None:
    """Every task's arguments, status and attempts (the seed's worker_args_*.json), one task a line; each made by
    SQLite as it is written (rundir.task_json), so a run of 100,000 tasks is written in a moment, never held."""

    def lines() -> Iterator[bytes]:
        batch, first = [], True
        for row in task_json.export_rows(store):
            batch.append(row)
            if len(batch) == 1000:
                yield (("[\n" if first else ",\n") + ",\n".join(batch)).encode()
                batch, first = [], False
        if batch:
            yield (("[\n" if first else ",\n") + ",\n".join(batch)).encode()
            first = False
        yield b"[\n]\n" if first else b"\n]\n"

    atomic_write_chunks(paths.exports / "tasks.json", lines(), fsync=False)
