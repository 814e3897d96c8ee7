"""A sweep's run directory written directly (like fixed_run.py): stage task1 ranked, stage task2 running
(two trials reporting metrics through an events file), stage task3 still to come."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from gputui.engine.rundir import RunPaths
from gputui.engine.store import Store
from gputui.jobs.kinds import NewTask
from gputui.jobs.tasks import STEP, TRIAL, Status
from tests.tui.fixed_run import T0

STAGES = {
    "task1": [{"lr": 1e-3, "bs": 32}, {"lr": 3e-4, "bs": 32}, {"lr": 1e-4, "bs": 64}, {"lr": 3e-5, "bs": 64}],
    "task2": [{"lr": 3e-4}, {"lr": 1e-4}, {"lr": 3e-5}],
    "task3": [{"lr": 1e-5}, {"lr": 3e-6}],
}
RANKED = {  # task1's trials: (status, val_acc, rank, promoted, note, reason)
    "task1-0": (Status.DONE, 0.912, 2, True, "promoted to task2", None),
    "task1-1": (Status.DONE, 0.934, 1, True, "promoted to task2", None),
    "task1-2": (Status.DONE, 0.871, 3, False, None, None),
    "task1-3": (Status.FAILED, None, None, False, "not ranked: failed", "CUDA out of memory"),
}
META = {
    "scheduler_id": "5f1c2a9e-0000-4000-8000-000000000000",
    "job_name": "finetune",
    "job_kind": "sweep",
    "sweep": {"metric": "val_acc", "goal": "max", "top_k": 2},
    "plan_definition": {
        "metric": "val_acc",
        "goal": "max",
        "top_k": 2,
        "stages": [{"name": n, "params": p} for n, p in STAGES.items()],
    },
    "stop_grace_s": 10,
    "memory_per_worker_gb": 12,
}


def trial(stage: str, stage_index: int, i: int, params: dict, parent: str | None, root: Path) -> NewTask:
    info = {
        "stage": stage,
        "stage_index": stage_index,
        "trial": i,
        "params": params,
        "parent_id": parent,
        "parent_output": None if parent is None else str(root / "trials" / parent),
        "output_dir": str(root / "trials" / f"{stage}-{i}"),
    }
    return NewTask(f"{stage}-{i}", stage_index * 100_000 + i, TRIAL, info=info)


def curve(step: int) -> dict[str, float]:
    """A training curve: loss falls, val_acc rises."""
    return {
        "loss": round(2.0 * math.exp(-step / 12) + 0.3, 4),
        "val_acc": round(0.95 - 0.6 * math.exp(-step / 10), 4),
    }


def write_metrics(paths: RunPaths, task_id: str, steps: range, attempt: int = 1) -> Path:
    """Append metrics events for `steps` to the attempt's events file, as gputui.hooks writes them."""
    path = paths.events(task_id, attempt)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        for step in steps:
            f.write(json.dumps({"t": T0 + step, "event": "metrics", "step": step, "values": curve(step)}) + "\n")
    return path


def _start(store: Store, root: Path, task_id: str, status: str, gpus: tuple[int, ...], at: float) -> None:
    log = root / "logs" / f"{task_id}.attempt1.log"
    log.write_text(f"{task_id}: training\n")
    store.start_attempt(task_id, 1, gpus, ["python", "train.py"], str(log), at)
    store.update_task(task_id, status=status, attempts=1, gpus=gpus, started_at=at)


def fixed_sweep(root: Path) -> Path:
    shutil.rmtree(root, ignore_errors=True)
    (root / "logs").mkdir(parents=True)
    paths = RunPaths(root)
    store = Store.open(root / "state.db", create=True)
    first = [trial("task1", 1, i, p, None, root) for i, p in enumerate(STAGES["task1"])]
    second = [
        trial("task2", 2, n, p, parent, root)
        for n, (parent, p) in enumerate((parent, p) for parent in ("task1-1", "task1-0") for p in STAGES["task2"])
    ]
    store.add_tasks(first + second, budget=1)
    with store.transaction():
        for key, value in META.items():
            store.set_meta(key, value)
        for i, (task_id, (status, metric, rank, promoted, note, reason)) in enumerate(RANKED.items()):
            _start(store, root, task_id, status, (i,), T0 + i)
            code = 0 if status == Status.DONE else 1
            store.update_attempt(task_id, 1, status=status, exit_code=code, ended_at=T0 + 120 + i)
            store.update_task(
                task_id,
                status=status,
                exit_code=code,
                ended_at=T0 + 120 + i,
                metric=metric,
                rank=rank,
                promoted=promoted,
                note=note,
                reason=reason,
            )
        for i, task_id in enumerate(("task2-0", "task2-1")):
            _start(store, root, task_id, Status.RUNNING, (i,), T0 + 130 + i)
            store.update_attempt(task_id, 1, status=Status.RUNNING)
    store.close()
    write_metrics(paths, "task2-0", range(0, 40))
    write_metrics(paths, "task2-1", range(0, 25))
    return root


PIPELINE = [("prep", ()), ("train", ("prep",)), ("eval", ("train",)), ("report", ("train", "eval"))]


def fixed_pipeline(root: Path) -> Path:
    """A pipeline's run: prep done, train running, eval and report waiting."""
    shutil.rmtree(root, ignore_errors=True)
    (root / "logs").mkdir(parents=True)
    store = Store.open(root / "state.db", create=True)
    steps = [
        NewTask(name, i, STEP, info={"step": name, "command": ["run", name], "gpus": 1}, after=after)
        for i, (name, after) in enumerate(PIPELINE)
    ]
    store.add_tasks(steps, budget=2)
    with store.transaction():
        for key, value in {**META, "job_kind": "pipeline", "sweep": None, "plan_definition": None}.items():
            store.set_meta(key, value)
        _start(store, root, "prep", Status.DONE, (0,), T0)
        store.update_attempt("prep", 1, status=Status.DONE, exit_code=0, ended_at=T0 + 30)
        store.update_task("prep", status=Status.DONE, exit_code=0, ended_at=T0 + 30)
        _start(store, root, "train", Status.RUNNING, (0,), T0 + 31)
        store.update_attempt("train", 1, status=Status.RUNNING)
    store.close()
    return root
