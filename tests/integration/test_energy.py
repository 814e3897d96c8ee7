"""Energy per task with real workers on simulated GPUs: each GPU's (simulated) energy counter shared among the
attempts on it, written with the GPU accounting, shown by `gputui status` (and --json), summary.json and
report.md, marked simulated; and a run written before energy was measured still reads and resumes."""

from __future__ import annotations

import json
import signal
import sqlite3

import pytest

from gputui.rundir.schema import MIGRATIONS, SCHEMA_VERSION
from tests.conftest import gputui, gputui_bg, wait_for

BUSY_W = (280.0, 322.0)  # what a simulated GPU at work draws (gpus/simulated.py)


def _status(run_dir) -> dict:
    r = gputui("status", "--run-dir", run_dir, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def test_each_task_gets_the_energy_of_its_gpu_and_the_run_their_sum(make_job):
    job = make_job(num_workers=2, gpus_per_worker=1, sleep=2.0)
    r = gputui("run", "--jobs", job, "--simulate", "2x24")
    assert r.returncode == 0, r.stdout + r.stderr

    summary = json.loads((make_job.run_dir / "summary.json").read_text())
    tasks = summary["tasks"]
    for task in tasks:
        (attempt,) = task["attempt_details"]
        # About its GPU's power x its time on it: the first moments at the mean of idle and busy power (the
        # simulation's counter), the rest at work.
        seconds = attempt["gpu_seconds"]
        assert seconds > 1.5 and 0.6 * BUSY_W[0] * seconds <= task["energy_j"] <= 1.05 * BUSY_W[1] * seconds, task
        assert attempt["energy_j"] == task["energy_j"] and task["energy_estimated"] is False
        assert task["gpus_simulated"] is True and task["energy_kwh"] == round(task["energy_j"] / 3.6e6, 6)
    assert summary["energy_j"] == pytest.approx(sum(t["energy_j"] for t in tasks), abs=0.002)
    assert summary["energy_estimated"] is False and summary["gpus_simulated"] is True

    report = (make_job.run_dir / "report.md").read_text()
    assert "| GPU-hours | Energy | Peak GPU memory |" in report
    wh = [f"{t['energy_j'] / 3600:.2f} Wh" for t in tasks]
    assert all(f"| {w} |" in report for w in wh), report
    assert (
        f"energy {summary['energy_j'] / 3600:.2f} Wh" in report and "memory and energy are what the sim" in report
    )

    status = _status(make_job.run_dir)
    assert [t["energy_j"] for t in status["tasks"]] == [t["energy_j"] for t in tasks]
    assert status["energy_j"] == pytest.approx(summary["energy_j"], abs=0.002) and not status["energy_estimated"]
    text = gputui("status", "--run-dir", make_job.run_dir).stdout
    assert "sim energy" in text and all(w in text for w in wh), text
    assert f"energy {summary['energy_j'] / 3600:.2f} Wh" in text and "memory and energy as simulated" in text


def test_a_run_written_before_energy_is_shown_without_it_and_resumed(make_job):
    job = make_job(num_workers=2, gpus_per_worker=1)
    assert gputui("run", "--jobs", job, "--simulate", "2x24").returncode == 0
    db = make_job.run_dir / "state.db"
    conn = sqlite3.connect(db)  # back to schema 5: what the gputui before energy left
    for statement in MIGRATIONS[5]:
        conn.execute(f"ALTER TABLE attempts DROP COLUMN {statement.split()[5]}")
    conn.execute("UPDATE meta SET value='5' WHERE key='schema_version'")
    conn.commit()
    conn.close()

    status = _status(make_job.run_dir)
    assert [(t["status"], t["energy_j"]) for t in status["tasks"]] == [("done", None)] * 2
    assert status["energy_j"] is None and all(t["gpu_seconds"] > 0 for t in status["tasks"])
    text = gputui("status", "--run-dir", make_job.run_dir).stdout
    assert "GPU-h" in text and "energy" not in text
    r = gputui("run", "--jobs", job, "--simulate", "2x24")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "launch" not in r.stdout  # nothing run again
    report = (make_job.run_dir / "report.md").read_text()
    assert "| GPU-hours | Peak GPU memory |" in report and "energy" not in report.lower()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (str(SCHEMA_VERSION),)
    conn.close()


def test_a_readopted_attempt_keeps_the_energy_recorded_before_the_scheduler_died(make_job, reaper, tmp_path):
    job = make_job(num_workers=1, gpus_per_worker=1, sleep=8.0)
    sched = gputui_bg("run", "--jobs", job, "--simulate", "1x24", log=tmp_path / "sched.log")
    reaper.append(sched)
    seen = wait_for(
        lambda: [t["energy_j"] for t in _tasks_or_none(make_job.run_dir) if (t["energy_j"] or 0) > 100],
        what="energy written while the task runs",
    )
    sched.send_signal(signal.SIGKILL)  # its worker runs on, watched by the keeper
    sched.wait(30)
    r = gputui("run", "--jobs", job, "--simulate", "1x24")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "re-adopted" in r.stdout and "launch" not in r.stdout
    (task,) = json.loads((make_job.run_dir / "summary.json").read_text())["tasks"]
    # What was recorded, and more: what no scheduler watched meanwhile is not counted, the rest is.
    assert seen[0] + 100 < task["energy_j"] <= 1.05 * BUSY_W[1] * task["gpu_seconds"]


def _tasks_or_none(run_dir) -> list[dict]:
    r = gputui("status", "--run-dir", run_dir, "--json")
    return json.loads(r.stdout)["tasks"] if r.returncode in (0, 1) else []
