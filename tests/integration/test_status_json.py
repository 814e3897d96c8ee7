"""`gputui status --json` is read by tools and printed to terminals: strict JSON in pure ASCII, so a worker's
control characters (C1, DEL, bidi), whether made visible by the engine or raw in a state.db older than the
sanitiser, are escaped, never sent to the terminal. Each task's row, made by SQLite, holds exactly what its record
holds, for every kind of job."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gputui.files.atomic import dumps_json
from gputui.rundir import task_json
from gputui.rundir.store import Store
from tests.conftest import gputui
from tests.integration.test_job_kinds import STAGES, Kinds

LAST_LINE = "bad \x1b]0;T\x07 \x9b2J \u202eevil\x7f end"


def _strict(data: bytes):
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(data.decode("ascii"), parse_constant=refuse)


def _status_json(run_dir: Path, expect: int | None = 1) -> bytes:
    cmd = [sys.executable, "-m", "gputui", "status", "--json", "--run-dir", str(run_dir)]
    out = subprocess.run(cmd, capture_output=True, timeout=60, cwd=run_dir)
    assert out.returncode == expect or expect is None, out.stderr
    assert max(out.stdout) < 0x7F, out.stdout  # ASCII, and no DEL either
    return out.stdout


def test_status_json_is_ascii_and_strict_whatever_a_worker_printed(tmp_path):
    (tmp_path / "w.py").write_text(f"import sys\nprint({LAST_LINE!r})\nsys.exit(1)\n")
    with open(tmp_path / "data.csv", "w", newline="") as f:
        csv.writer(f).writerows([["data_id"], [0], [1]])
    job = tmp_path / "job.toml"
    job.write_text(f"""
[job]
name = "controls"
command = "{sys.executable} w.py"
[shards]
input = "data.csv"
num_workers = 1
[resources]
gpus_per_worker = 0
[retry]
max_attempts = 1
[outputs]
pattern = "out_{{low}}_{{high}}.csv"
""")
    run_dir = tmp_path / "runs" / "controls"
    assert gputui("run", "--jobs", job, "--run-dir", run_dir, "--quiet", cwd=tmp_path).returncode == 1

    task = _strict(_status_json(run_dir))["tasks"][0]  # the engine's reason: its controls made visible
    assert task["reason"] == "exit code 1: bad ␛]0;T␇ \\x9b2J \\u202eevil␡ end"

    store = Store.open(run_dir / "state.db")  # a state.db older than the sanitiser holds the raw text
    store.update_task(task["id"], reason=LAST_LINE)
    store.close()
    assert _strict(_status_json(run_dir))["tasks"][0]["reason"] == LAST_LINE  # escaped on the way, not lost


@pytest.fixture
def kinds(tmp_path) -> Kinds:
    (tmp_path / "init").mkdir()
    return Kinds(tmp_path)


def _rows_and_records(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """Each task's row as `status --json` makes it (SQLite), and as its record and latest attempt give it."""
    store = Store.open(run_dir / "state.db", readonly=True)
    try:
        rows = [json.loads(row) for row in task_json.rows(store)]
        records = []
        for t in store.tasks():
            last = (store.attempts_of([t.id]).get(t.id) or [None])[-1]
            records.append(json.loads(task_json.ascii_json(task_json.task_json(t, last))))
        return rows, records
    finally:
        store.close()


def test_each_task_row_holds_what_its_record_holds_for_every_kind(kinds, make_job, tmp_path, monkeypatch):
    sweep = kinds.sweep(STAGES[:2], name="sweep")  # params, metrics, ranks, promotions, parents
    pipeline = kinds.pipeline(  # steps waiting for others, one failed, its follower skipped with a reason
        [
            {"name": "prep"},
            {"name": "train", "after": ["prep"], "mode": "fail"},
            {"name": "eval", "after": ["train"]},
        ]
    )
    shards = make_job(num_workers=3, gpus_per_worker=1, max_attempts=2, worker_args="--fail-attempts 1")
    runs = [(sweep, ()), (pipeline, ()), (shards, ("--simulate", "2"))]  # shards: retried, on simulated GPUs
    seen = []
    for n, (job, extra) in enumerate(runs):
        r = gputui("run", "--jobs", job, "--run-dir", tmp_path / f"run{n}", *extra)
        assert r.returncode in (0, 1), r.stdout + r.stderr
        rows, records = _rows_and_records(tmp_path / f"run{n}")
        assert rows == records and len(rows) > 1
        monkeypatch.setattr(task_json, "_has_json", lambda store: False)  # an SQLite without JSON functions
        assert _rows_and_records(tmp_path / f"run{n}") == (records, records)
        monkeypatch.undo()
        printed = _strict(_status_json(tmp_path / f"run{n}", expect=None))
        assert printed["tasks"] == records
        seen.append(records)
    sweep_rows, pipeline_rows, records = seen
    assert {t["rank"] for t in sweep_rows} >= {1, 2} and any(t["promoted"] for t in sweep_rows)
    assert all(t["metric"] and t["info"]["params"] for t in sweep_rows)
    assert [(t["after"], t["status"]) for t in pipeline_rows][1:] == [(["prep"], "failed"), (["train"], "skipped")]
    assert {t["status"] for t in records} == {"done"} and all(t["gpu_seconds"] and t["duration"] for t in records)
    assert all(t["energy_j"] for t in records)  # simulated GPUs' energy: tests/integration/test_energy.py
    assert [t["attempts"] for t in records] == [2, 2, 2] and records[0]["log_path"].endswith("attempt2.log")


def test_exported_tasks_hold_what_their_records_hold(kinds, make_job, tmp_path, monkeypatch):
    pipeline = kinds.pipeline([{"name": "prep"}, {"name": "train", "after": ["prep"], "mode": "fail"}])
    shards = make_job(num_workers=3, gpus_per_worker=1, max_attempts=2, worker_args="--fail-attempts 1")
    for n, (job, extra) in enumerate([(pipeline, ()), (shards, ("--simulate", "2"))]):
        run_dir = tmp_path / f"run{n}"
        assert gputui("run", "--jobs", job, "--run-dir", run_dir, *extra).returncode in (0, 1)
        exported = json.loads((run_dir / "exports" / "tasks.json").read_text())  # written by the scheduler
        store = Store.open(run_dir / "state.db", readonly=True)
        try:
            records = [
                json.loads(dumps_json(task_json.export_json(t, store.output_of(t.id), store.attempts(t.id))))
                for t in store.tasks()
            ]
            monkeypatch.setattr(task_json, "_has_json", lambda store: False)  # an SQLite without JSON functions
            python = [json.loads(row) for row in task_json.export_rows(store)]
            monkeypatch.undo()
        finally:
            store.close()
        assert exported == records == python and len(records) > 1
    assert [len(t["attempt_log"]) for t in exported] == [2, 2, 2] and exported[0]["attempt_log"][0]["waiter"][
        "pid"
    ]
    assert exported[0]["output"].endswith(".csv") and exported[0]["attempt_log"][1]["command"][0] == sys.executable
