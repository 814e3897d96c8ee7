"""metrics.csv and summary.json from a worker's events, read back the way users read them."""

from __future__ import annotations

import json
import math

import pandas as pd

from gputui.hooks.reader import Event
from gputui.results.task_summary import write_metrics_csv, write_task_summary


def _events() -> list[Event]:
    return [
        Event(t=1.0, kind="progress", done=1, total=3),
        Event(t=1.1, kind="metrics", step=1, values={"loss": 0.9, "lr": 0.1}),
        Event(t=1.2, kind="metrics", step=2, values={"loss": 0.4, "lr": 0.1}),
        Event(t=1.3, kind="metrics", step=2, values={"val_acc": 0.7}),
        Event(t=1.4, kind="metrics", step=3, values={"loss": math.nan, "lr": 0.1}),
        Event(t=1.5, kind="metrics", step=3, values={"val_acc": 0.65}),
        Event(t=1.6, kind="done", values={"val_acc": 0.66, "loss": 0.5}),
    ]


def test_metrics_csv_columns_and_rows(tmp_path):
    path = tmp_path / "metrics.csv"
    write_metrics_csv(_events(), path)
    df = pd.read_csv(path)
    assert list(df.columns) == ["step", "loss", "lr", "val_acc"]
    assert df["step"].tolist() == [1, 2, 2, 3, 3]
    assert df["loss"].iloc[:2].tolist() == [0.9, 0.4]
    assert math.isnan(df["loss"].iloc[3])  # a NaN loss stays NaN
    assert df["val_acc"].isna().tolist() == [True, True, False, True, False]
    assert not list(tmp_path.glob(".*.tmp"))


def test_metrics_csv_with_no_metrics_has_only_the_header(tmp_path):
    path = tmp_path / "metrics.csv"
    write_metrics_csv([Event(t=1.0, kind="healthy")], path)
    assert path.read_text() == "step\n"


def test_summary_json(tmp_path):
    path = tmp_path / "summary.json"
    returned = write_task_summary(
        path,
        task_id="lr=0.1",
        params={"lr": 0.1, "batch_size": 32},
        status="succeeded",
        attempts=2,
        durations=[1.5, 2.5],
        exit_code=0,
        events=_events(),
        goal_by_metric={"val_acc": "max"},
    )
    summary = json.loads(path.read_text())
    assert summary == returned
    assert summary["task_id"] == "lr=0.1"
    assert summary["params"] == {"lr": 0.1, "batch_size": 32}
    assert summary["status"] == "succeeded" and summary["attempts"] == 2 and summary["exit_code"] == 0
    assert summary["durations_s"] == [1.5, 2.5] and summary["total_duration_s"] == 4.0
    assert summary["final_metrics"] == {"loss": 0.5, "lr": 0.1, "val_acc": 0.66}
    assert summary["best_metrics"] == {"loss": 0.4, "lr": 0.1, "val_acc": 0.7}


def test_summary_json_writes_non_finite_as_null_and_metrics_csv_as_words(tmp_path):
    # Strict JSON, as every JSON file the run writes (signals, summary.json, results.jsonl): null, never "nan".
    path = tmp_path / "summary.json"
    events = [Event(t=1.0, kind="metrics", step=1, values={"loss": math.nan, "grad": math.inf, "low": -math.inf})]
    returned = write_task_summary(
        path,
        task_id="t",
        params={},
        status="failed",
        attempts=1,
        durations=[],
        exit_code=None,
        events=events,
    )
    summary = json.loads(path.read_text(), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert summary["final_metrics"] == {"loss": None, "grad": None, "low": None}
    assert summary["best_metrics"] == {"loss": None, "grad": None, "low": None}
    assert summary["exit_code"] is None and summary["total_duration_s"] == 0.0
    assert returned == summary
    write_metrics_csv(events, tmp_path / "metrics.csv")  # CSV is not JSON: pandas reads these as floats
    assert (tmp_path / "metrics.csv").read_text().splitlines() == ["step,loss,grad,low", "1,nan,inf,-inf"]


def test_the_runs_end_writes_only_products_its_settles_did_not(tmp_path):
    from gputui.jobs.tasks import SHARD, TRIAL, Status, TaskRecord
    from gputui.results.products import unwritten_products
    from gputui.rundir.paths import RunPaths

    paths = RunPaths(tmp_path)

    def task(task_id: str, attempts: int, ended_at: float | None, kind: str = SHARD) -> TaskRecord:
        fields = (task_id, 0, 0, 1, 1, Status.DONE, attempts, 3, (), None, 0, 1.0, ended_at, None)
        return TaskRecord(*fields, kind=kind)

    for task_id in ("written", "older", "emptied"):
        (paths.task_dir(task_id)).mkdir(parents=True)
        (paths.task_dir(task_id) / "summary.json").write_text("{}" if task_id != "emptied" else "")
        (paths.task_dir(task_id) / "metrics.csv").write_text("step\n")
    now = (paths.task_dir("written") / "summary.json").stat().st_mtime
    paths.events("missing", 1).parent.mkdir(parents=True)
    paths.events("missing", 1).write_text('{"t": 1, "event": "progress", "done": 1, "total": 2}\n')
    tasks = [
        task("written", 1, now - 5),  # settled, then its products written
        task("older", 2, now + 5),  # ended again after they were written (a crash before its settle wrote them)
        task("emptied", 1, now - 5),  # written without fsync as it settled, then a power loss
        task("missing", 1, now - 5),  # it reported, and settled in a session that stopped before writing them
        task("trial", 1, now - 5, TRIAL),  # a trial has them, reported or not
        task("quiet", 1, now - 5),  # a shard that reported nothing has none
        task("never-ran", 0, None),
    ]
    assert unwritten_products(paths, tasks) == ["older", "emptied", "missing", "trial"]
