"""GPU-hours and peak GPU memory with real workers on simulated GPUs: recorded per attempt while tasks run
and when they end, shown by `gputui status`, summary.json and report.md, and always marked simulated."""

from __future__ import annotations

import json
import signal
import sqlite3

from gputui.rundir.schema import SCHEMA_VERSION
from tests.conftest import gputui, gputui_bg, wait_for

GIB = 2**30


def _gpu_job(make_job, **kw):
    job = make_job(gpus_per_worker=2, max_parallel=2, **kw)
    job.write_text(job.read_text().replace("max_parallel = 2", "max_parallel = 2\nmemory_per_worker_gb = 3"))
    return job


def _status(run_dir) -> dict:
    return json.loads(gputui("status", "--run-dir", run_dir, "--json").stdout)


def test_each_task_gets_its_gpu_hours_and_peak_memory_marked_simulated(make_job):
    job = _gpu_job(make_job, num_workers=2, sleep=2.0)
    r = gputui("run", "--jobs", job, "--simulate", "4x24")
    assert r.returncode == 0, r.stdout + r.stderr

    summary = json.loads((make_job.run_dir / "summary.json").read_text())
    for task in summary["tasks"]:
        (attempt,) = task["attempt_details"]
        # Held from launch to end on 2 GPUs; the simulation gives each GPU 3 GiB of the task's.
        assert abs(attempt["gpu_seconds"] - 2 * attempt["duration"]) < 0.01, attempt
        assert task["peak_memory"] == 2 * 3 * GIB and task["peak_memory_gib"] == 6.0
        assert task["gpu_hours"] == round(task["gpu_seconds"] / 3600, 2) and task["gpus_simulated"] is True
    assert summary["gpu_seconds"] == round(sum(t["gpu_seconds"] for t in summary["tasks"]), 3)
    assert summary["peak_memory_gib"] == 6.0 and summary["gpus_simulated"] is True
    report = (make_job.run_dir / "report.md").read_text()
    assert "| GPU-hours | Energy | Peak GPU memory |" in report  # energy: tests/integration/test_energy.py
    assert all(f"| 0.00 | {t['energy_j'] / 3600:.2f} Wh | 6.0 GiB |" in report for t in summary["tasks"])
    assert "SIMULATED GPUs" in report

    status = _status(make_job.run_dir)
    assert status["gpus_simulated"] is True and status["peak_memory_gib"] == 6.0
    assert [t["peak_memory"] for t in status["tasks"]] == [6 * GIB, 6 * GIB]
    assert all(t["gpu_seconds"] > 0 and t["gpus_simulated"] for t in status["tasks"])
    text = gputui("status", "--run-dir", make_job.run_dir).stdout
    assert "GPU-h" in text and "6.0 GiB" in text and "SIMULATED GPUs" in text


def test_a_running_task_shows_its_gpu_time_while_it_runs(make_job, reaper, tmp_path):
    job = _gpu_job(make_job, num_workers=1, sleep=60.0)
    sched = gputui_bg("run", "--jobs", job, "--simulate", "2x24", log=tmp_path / "sched.log")
    reaper.append(sched)
    running = wait_for(
        lambda: [t for t in _status_or_none(make_job.run_dir) if t["gpu_seconds"] and t["peak_memory"]],
        what="GPU figures written while the task runs",
    )
    assert running[0]["status"] == "running" and running[0]["peak_memory"] == 6 * GIB
    sched.send_signal(signal.SIGINT)
    assert sched.wait(60) == 130


def _status_or_none(run_dir) -> list[dict]:
    r = gputui("status", "--run-dir", run_dir, "--json")
    return json.loads(r.stdout)["tasks"] if r.returncode in (0, 1) else []


def test_cpu_tasks_have_no_gpu_columns_and_zero_gpu_time(make_job):
    job = make_job(num_workers=2)
    assert gputui("run", "--jobs", job).returncode == 0
    status = _status(make_job.run_dir)
    assert [t["gpu_seconds"] for t in status["tasks"]] == [0.0, 0.0] and status["peak_memory"] is None
    assert "GPU-h" not in gputui("status", "--run-dir", make_job.run_dir).stdout
    assert "GPU-hours" not in (make_job.run_dir / "report.md").read_text()


def test_a_run_written_before_gpu_accounting_is_shown_and_resumed_not_refused(make_job):
    job = make_job(num_workers=2)
    assert gputui("run", "--jobs", job).returncode == 0
    db = make_job.run_dir / "state.db"
    conn = sqlite3.connect(db)  # back to schema 2: what the previous gputui left
    for column in ("gpu_seconds", "peak_memory", "gpus_simulated"):
        conn.execute(f"ALTER TABLE attempts DROP COLUMN {column}")
    conn.execute("UPDATE meta SET value='2' WHERE key='schema_version'")
    conn.commit()
    conn.close()

    r = gputui("status", "--run-dir", make_job.run_dir, "--json")
    assert r.returncode == 0, r.stderr
    assert [(t["status"], t["gpu_seconds"]) for t in json.loads(r.stdout)["tasks"]] == [("done", None)] * 2
    r = gputui("run", "--jobs", job)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "launch" not in r.stdout  # nothing run again
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (str(SCHEMA_VERSION),)
    conn.close()
