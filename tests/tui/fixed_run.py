"""A run directory written directly, with fixed times and every status: for looks and for keys."""

from __future__ import annotations

import shutil
from pathlib import Path

from gputui.engine.store import Store
from gputui.jobs.kinds import NewTask
from gputui.jobs.tasks import SHARD, Status

T0 = 1_700_000_000.0
NOW = T0 + 300


def fixed_run(root: Path, n_tasks: int = 6, running: int = 0) -> Path:
    """A run directory whose state is written directly, with fixed times and every status; with
    `running`, that many tasks after the first four are running (the second one paused), the next retrying."""
    shutil.rmtree(root, ignore_errors=True)
    (root / "logs").mkdir(parents=True)
    store = Store.open(root / "state.db", create=True)
    store.add_tasks([NewTask(f"shard-{i}", i, SHARD, i * 50, (i + 1) * 50, 50) for i in range(n_tasks)], budget=3)
    plan = [Status.DONE, Status.DONE, Status.FAILED, Status.KILLED]
    if running:
        plan += [Status.RUNNING, Status.PAUSED][:running] + [Status.RUNNING] * (running - 2) + [Status.RETRYING]
    plan += [Status.PENDING] * n_tasks
    with store.transaction():
        for k, v in {
            "scheduler_id": "5f1c2a9e-0000-4000-8000-000000000000",
            "job_name": "continuation",
            "stop_grace_s": 10,
            "memory_per_worker_gb": 12,
        }.items():
            store.set_meta(k, v)
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
