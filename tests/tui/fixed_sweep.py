"""A sweep's run directory planned and recorded by the engine (`open_for_job`, as a launch does), its trials'
statuses then set through the store with fixed times (like fixed_run.py): stage task1 ranked by the sweep's
own rule, stage task2 running (two trials reporting metrics through an events file), stage task3 to come."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from gputui.jobs.kinds.registry import on_settle
from gputui.jobs.spec import JobSpec
from gputui.jobs.tasks import Status
from gputui.rundir.paths import RunPaths
from gputui.rundir.store import Store
from tests.tui.fixed_run import T0, recorded

STAGES = {
    "task1": [{"lr": 1e-3, "bs": 32}, {"lr": 3e-4, "bs": 32}, {"lr": 1e-4, "bs": 64}, {"lr": 3e-5, "bs": 64}],
    "task2": [{"lr": 3e-4}, {"lr": 1e-4}, {"lr": 3e-5}],
    "task3": [{"lr": 1e-5}, {"lr": 3e-6}],
}
RESULTS = {  # task1's trials: (status, val_acc, reason); the sweep's rule ranks them and promotes the top 2
    "task1-0": (Status.DONE, 0.912, None),
    "task1-1": (Status.DONE, 0.934, None),
    "task1-2": (Status.DONE, 0.871, None),
    "task1-3": (Status.FAILED, None, "CUDA out of memory"),
}


def toml_params(sets: list[dict]) -> str:
    return ", ".join("{ " + ", ".join(f"{k} = {v!r}" for k, v in p.items()) + " }" for p in sets)


def sweep_file(folder: Path, inherit: bool = False) -> Path:
    lines = [
        "[job]",
        'name = "finetune"',
        'kind = "sweep"',
        'command = "python train.py --lr {lr} --init {parent_output} --out {output_dir}"',
        "stop_grace_s = 10",
        "[sweep]",
        'metric = "val_acc"',
        'goal = "max"',
        "top_k = 2",
    ]
    for name, sets in STAGES.items():
        lines += ["[[sweep.stage]]", f'name = "{name}"', f"params = [{toml_params(sets)}]"]
        if inherit and name != "task1":
            lines.append("inherit = true")  # a promoted trial keeps its parent's bs
    lines += ["[resources]", "memory_per_worker_gb = 12", "[retry]", "max_attempts = 1"]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "finetune.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


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


def fixed_sweep(root: Path, inherit: bool = False) -> Path:
    shutil.rmtree(root, ignore_errors=True)
    job = recorded(sweep_file(root, inherit), root)
    store = Store.open(root / "state.db")
    with store.transaction():
        for i, (task_id, (status, metric, reason)) in enumerate(RESULTS.items()):
            _start(store, root, task_id, status, (i,), T0 + i)
            code = 0 if status == Status.DONE else 1
            store.update_attempt(task_id, 1, status=status, exit_code=code, ended_at=T0 + 120 + i)
            store.update_task(task_id, exit_code=code, ended_at=T0 + 120 + i, metric=metric, reason=reason)
        _expand(store, job)  # task1 ranked, task2 planned from its top 2
        for i, task_id in enumerate(("task2-0", "task2-1")):
            _start(store, root, task_id, Status.RUNNING, (i,), T0 + 130 + i)
            store.update_attempt(task_id, 1, status=Status.RUNNING)
    store.close()
    paths = RunPaths(root)
    write_metrics(paths, "task2-0", range(0, 40))
    write_metrics(paths, "task2-1", range(0, 25))
    return root


def _expand(store: Store, job: JobSpec) -> None:
    """The job kind's rule applied to the tasks so far, its decision stored as the scheduler stores it."""
    e = on_settle(job, store.tasks())
    store.add_tasks(e.new, budget=job.retry.max_attempts)
    for task_id, fields in e.updates.items():
        store.update_task(task_id, **fields)
    for task_id, kind, message in e.events:
        store.add_event(kind, message, task_id)


PIPELINE = [("prep", ()), ("train", ("prep",)), ("eval", ("train",)), ("report", ("train", "eval"))]


def pipeline_file(folder: Path) -> Path:
    lines = ["[job]", 'name = "finetune"', 'kind = "pipeline"', "stop_grace_s = 10"]
    for name, after in PIPELINE:
        lines += ["[[pipeline.step]]", f'name = "{name}"', f'command = "run {name}"']
        lines.append(f"after = {json.dumps(after)}")
    lines += ["[resources]", "memory_per_worker_gb = 12", "[retry]", "max_attempts = 2"]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pipeline.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def fixed_pipeline(root: Path) -> Path:
    """A pipeline's run, recorded by the engine: prep done, train running, eval and report waiting."""
    shutil.rmtree(root, ignore_errors=True)
    recorded(pipeline_file(root), root)
    store = Store.open(root / "state.db")
    with store.transaction():
        _start(store, root, "prep", Status.DONE, (0,), T0)
        store.update_attempt("prep", 1, status=Status.DONE, exit_code=0, ended_at=T0 + 30)
        store.update_task("prep", status=Status.DONE, exit_code=0, ended_at=T0 + 30)
        _start(store, root, "train", Status.RUNNING, (0,), T0 + 31)
        store.update_attempt("train", 1, status=Status.RUNNING)
    store.close()
    return root
