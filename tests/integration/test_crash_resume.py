"""Kill the scheduler at any moment; the same command again finishes the run, losing and repeating nothing."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
from collections import Counter

from tests.conftest import gputui, gputui_bg, wait_for


def _finished_once_and_never_restarted(events):
    starts, finishes = Counter(), Counter()
    finish_time = {}
    for e in sorted(events, key=lambda e: e["t"]):
        key = (e["low"], e["high"])
        if e["event"] == "start":
            assert key not in finish_time, f"shard {key} started again after it had finished"
            starts[key] += 1
        elif e["event"] == "finish":
            finishes[key] += 1
            finish_time[key] = e["t"]
    assert set(finishes.values()) == {1}, f"shards finished more than once: {finishes}"
    return starts, finishes


def test_worker_that_died_while_scheduler_was_down_is_settled_from_its_exit_status(make_job, reaper, tmp_path):
    job = make_job(ids=20, num_workers=2, max_parallel=2, sleep=1.0)
    sched = gputui_bg("run", "--jobs", job, log=tmp_path / "first.log")
    reaper.append(sched)
    wait_for(lambda: sum(e["event"] == "start" for e in make_job.events()) >= 2, what="two workers")
    sched.send_signal(signal.SIGKILL)
    sched.wait(5)
    # Both workers finish while no scheduler runs.
    wait_for(lambda: sum(e["event"] == "finish" for e in make_job.events()) >= 2, what="workers to finish")
    journal = make_job.run_dir / "attempts.journal"
    wait_for(lambda: journal.read_text().count("exit ") == 2, what="both exits in the journal")
    r = gputui("run", "--jobs", job)
    assert r.returncode == 0, r.stdout
    assert "launch" not in r.stdout  # nothing was run again
    starts, _ = _finished_once_and_never_restarted(make_job.events())
    assert sum(starts.values()) == 2


def test_second_scheduler_on_same_run_dir_is_refused(make_job, reaper, tmp_path):
    job = make_job(num_workers=2, sleep=3)
    first = gputui_bg("run", "--jobs", job, log=tmp_path / "first.log")
    reaper.append(first)
    wait_for(lambda: make_job.events(), what="first scheduler to launch")
    db = make_job.run_dir / "state.db"
    before = sqlite3.connect(db).execute("SELECT count(*) FROM attempts").fetchone()[0]
    r = gputui("run", "--jobs", job, timeout=30)
    assert r.returncode == 2
    assert "already driven by gputui" in r.stderr and f"pid {first.pid}" in r.stderr
    assert sqlite3.connect(db).execute("SELECT count(*) FROM attempts").fetchone()[0] == before


def test_run_dir_deleted_under_a_live_scheduler_is_not_taken_by_a_second_one(make_job, reaper, tmp_path):
    """`rm -rf` of a running run's directory, then the same command: the first scheduler's tasks still
    write to that path, so the second is refused, naming the first, until it is stopped."""
    job = make_job(num_workers=2, sleep=3)
    first = gputui_bg("run", "--jobs", job, log=tmp_path / "first.log")
    reaper.append(first)
    wait_for(lambda: make_job.events(), what="first scheduler to launch")
    shutil.rmtree(make_job.run_dir)
    r = gputui("run", "--jobs", job, timeout=30)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "deleted and made again" in r.stderr and f"pid {first.pid}" in r.stderr
    assert not (make_job.run_dir / "state.db").exists()  # nothing was started over it
    first.send_signal(signal.SIGTERM)
    first.wait(30)
    r = gputui("run", "--jobs", job, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr  # once it is stopped, the path is free


def test_changed_plan_is_refused_with_explanation(make_job):
    job = make_job(num_workers=2)
    assert gputui("run", "--jobs", job).returncode == 0
    job.write_text(job.read_text().replace("num_workers = 2", "num_workers = 3"))
    r = gputui("run", "--jobs", job)
    assert r.returncode == 2
    assert "2 shards" in r.stderr and "3 shards" in r.stderr and "--run-dir" in r.stderr


def test_unreadable_state_is_kept_not_overwritten(make_job):
    job = make_job(num_workers=2)
    db = make_job.run_dir / "state.db"
    db.parent.mkdir(parents=True)
    garbage = b"this is not an sqlite database, but somebody's precious file\n" * 100
    db.write_bytes(garbage)
    r = gputui("run", "--jobs", job)
    assert r.returncode == 2
    assert "is not an SQLite database" in r.stderr and "left untouched" in r.stderr
    assert "--rebuild-state" in r.stderr and "Traceback" not in r.stderr
    assert db.read_bytes() == garbage


def test_lost_state_is_rebuilt_from_done_manifests(make_job):
    job = make_job(num_workers=3)
    assert gputui("run", "--jobs", job).returncode == 0
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        (make_job.run_dir / name).unlink(missing_ok=True)
    r = gputui("run", "--jobs", job)
    assert r.returncode == 0, r.stdout
    assert "rebuilt the run's state" in r.stdout and "launch" not in r.stdout  # settled from the journal
    _finished_once_and_never_restarted(make_job.events())


def test_exports_hold_config_and_per_task_arguments(make_job):
    job = make_job(num_workers=2)
    assert gputui("run", "--jobs", job).returncode == 0
    config = json.loads((make_job.run_dir / "exports" / "config.json").read_text())
    assert config["scheduler_id"] and config["resources"]["max_parallel"] == 2
    tasks = {t["id"]: t for t in json.loads((make_job.run_dir / "exports" / "tasks.json").read_text())}
    task = tasks["shard-1"]
    assert task["status"] == "done" and task["range"] == [20, 40]
    argv = task["attempt_log"][0]["command"]
    assert argv[argv.index("--low") + 1] == "20" and argv[argv.index("--high") + 1] == "40"
