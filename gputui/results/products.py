"""What a run leaves per task and per sweep, rewritten as tasks settle: a task's metrics.csv and summary.json
(from the events its worker reported; a shard's only once it reported any), and a sweep's results.csv /
results.jsonl (one row per settled trial, readable by pandas as it is). Every file is replaced atomically."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

from gputui.files.atomic import atomic_write_text, dumps_json
from gputui.hooks.reader import read_all
from gputui.jobs.tasks import SHARD, TRIAL, Status, TaskRecord
from gputui.results.task_summary import write_metrics_csv, write_task_summary
from gputui.rundir.paths import RunPaths
from gputui.rundir.store import Store


def write_task_products(
    store: Store, paths: RunPaths, task_ids: Iterable[str], goals: dict[str, str], *, fsync: bool = True
) -> None:
    """metrics.csv and summary.json of each task, from every attempt's events (the curve of the last).
    `fsync=False` as tasks settle: derived files, so the run's end writes again (durably) any that a
    power loss left empty or missing (`unwritten_products`), and the scheduler's turn waits on no disk."""
    for task_id in task_ids:
        task = store.task(task_id)
        if task is None or task.attempts == 0 or not has_products(paths, task):
            continue
        attempts = store.attempts(task_id)
        events = read_all(paths.events(task_id, task.attempts))
        folder = paths.task_dir(task_id)
        folder.mkdir(parents=True, exist_ok=True)
        write_metrics_csv(events, folder / "metrics.csv", fsync=fsync)
        write_task_summary(
            folder / "summary.json",
            task_id=task_id,
            params=dict(task.info.get("params") or {}),
            status=task.status,
            attempts=task.attempts,
            durations=[a.duration for a in attempts if a.duration is not None],
            exit_code=task.exit_code,
            events=events,
            goal_by_metric=goals,
            fsync=fsync,
        )


def has_products(paths: RunPaths, task: TaskRecord) -> bool:
    """Every trial and step has its folder; a shard only once its worker reported through gputui.hooks.
    Otherwise its metrics.csv would be a header and its summary.json what exports/tasks.json already
    says: three files per shard of noise, which cost a short shard more than its own work."""
    return task.kind != SHARD or paths.events(task.id, task.attempts).exists() or paths.task_dir(task.id).exists()


def unwritten_products(paths: RunPaths, tasks: Iterable[TaskRecord]) -> list[str]:
    """The tasks whose products were not written since they last ended (their settle wrote them, unless
    the run stopped first, or a power loss left them empty): what the run's end still has to write,
    instead of every task again."""
    found = []
    for t in tasks:
        if t.attempts == 0 or not has_products(paths, t):
            continue
        try:
            written = [(paths.task_dir(t.id) / name).stat() for name in ("summary.json", "metrics.csv")]
        except OSError:
            written = []
        fresh = written and t.ended_at is not None and all(s.st_size and s.st_mtime >= t.ended_at for s in written)
        if not fresh:
            found.append(t.id)
    return found


def trial_rows(tasks: Iterable[TaskRecord], store: Store, metric: str) -> list[dict]:
    """One row per settled trial, in plan order."""
    rows = []
    for t in sorted(tasks, key=lambda t: t.index):
        if t.kind != TRIAL or t.status not in Status.FINAL:
            continue
        durations = [a.duration for a in store.attempts(t.id) if a.duration is not None]
        rows.append(
            {
                "stage": t.info.get("stage"),
                "stage_index": t.info.get("stage_index"),
                "trial_id": t.id,
                "params": dict(t.info.get("params") or {}),
                "parent_id": t.info.get("parent_id"),
                metric: t.metric,
                "status": t.status,
                "rank": t.rank,
                "promoted": t.promoted,
                "output_dir": t.info.get("output_dir"),
                "duration_s": round(sum(durations), 3) if durations else None,
                "note": t.note or t.reason,
            }
        )
    return rows


def write_trial_results(store: Store, paths: RunPaths, metric: str) -> None:
    """results.csv (a column per parameter) and results.jsonl (params as one object) in the run directory."""
    rows = trial_rows(store.tasks(), store, metric)
    params = list(dict.fromkeys(name for row in rows for name in row["params"]))
    after = ["parent_id", metric, "status", "rank", "promoted", "output_dir", "duration_s", "note"]
    columns = ["stage", "stage_index", "trial_id", *params, *after]
    buf = io.StringIO()
    out = csv.DictWriter(buf, columns, lineterminator="\n", extrasaction="ignore")
    out.writeheader()
    for row in rows:
        out.writerow({k: "" if v is None else v for k, v in {**row, **row["params"]}.items()})
    paths.results.mkdir(parents=True, exist_ok=True)
    atomic_write_text(paths.results / "results.csv", buf.getvalue())
    lines = "".join(dumps_json(row, indent=None) + "\n" for row in rows)  # strict: a NaN param is null
    atomic_write_text(paths.results / "results.jsonl", lines)
