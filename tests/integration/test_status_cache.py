"""A large finished run's `status --json` comes from its status cache (rundir.status_cache): byte for byte what
SQLite would print, and never once the state has changed, the cache is damaged, or a scheduler drives the run.
`gputui status` takes the run's active time from it (measured from 100,000 attempts, it took most of a second)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import gputui, wait_for

SMALL = {"GPUTUI_STATUS_CACHE_MIN": "3"}  # a cache from 3 tasks on, instead of 10,000


def _status_json(run_dir: Path) -> bytes:
    cmd = [sys.executable, "-m", "gputui", "status", "--json", "--run-dir", str(run_dir)]
    return subprocess.run(cmd, capture_output=True, timeout=60, check=False).stdout


def _from_sqlite(run_dir: Path) -> bytes:
    """What status --json prints with no cache to read."""
    cache = run_dir / "cache" / "status.jsonl"
    kept = cache.read_bytes() if cache.exists() else None
    cache.unlink(missing_ok=True)
    try:
        return _status_json(run_dir)
    finally:
        if kept is not None:
            cache.write_bytes(kept)


def _run(job: Path, run_dir: Path, *extra: str, env: dict | None = None) -> None:
    r = gputui("run", "--jobs", job, "--run-dir", run_dir, "--quiet", *extra, env=os.environ | (env or SMALL))
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_finished_runs_status_json_is_kept_and_printed_as_sqlite_prints_it(make_job, tmp_path):
    job = make_job(ids=8, num_workers=4, worker_args="--fail-attempts 1")  # each task retried once
    run_dir = tmp_path / "run"
    _run(job, run_dir)
    cache = run_dir / "cache" / "status.jsonl"
    assert cache.exists()
    printed = _status_json(run_dir)
    assert printed == _from_sqlite(run_dir)
    doc = json.loads(printed)
    assert doc["all_done"] and not doc["scheduler_live"] and [t["attempts"] for t in doc["tasks"]] == [2] * 4

    # `gputui status` takes the run's active time from it: the same time as measured from every attempt.
    kept = gputui("status", "--run-dir", run_dir).stdout
    cache.rename(tmp_path / "aside")
    assert gputui("status", "--run-dir", run_dir).stdout == kept and "elapsed" in kept
    (tmp_path / "aside").rename(cache)

    # Damaged (cut short, or not JSON): ignored, and SQLite answers.
    whole = cache.read_bytes()
    for damaged in (whole[:-10], b"not json\n" + whole.split(b"\n", 1)[1]):
        cache.write_bytes(damaged)
        assert _status_json(run_dir) == printed


def test_a_state_changed_after_the_cache_was_kept_is_read_from_sqlite(make_job, tmp_path):
    job = make_job(ids=8, num_workers=4)
    run_dir = tmp_path / "run"
    _run(job, run_dir)
    before = json.loads(_status_json(run_dir))
    assert [t["status"] for t in before["tasks"]] == ["done"] * 4
    r = gputui("retry", "--run-dir", run_dir, "--force", "shard-1")  # no scheduler: applied to the state at once
    assert r.returncode == 0, r.stdout + r.stderr
    after = _status_json(run_dir)
    assert [t["status"] for t in json.loads(after)["tasks"]] == ["done", "pending", "done", "done"]
    assert after == _from_sqlite(run_dir)


def test_no_cache_is_read_while_a_scheduler_drives_the_run(make_job, tmp_path):
    job = make_job(ids=8, num_workers=4)
    run_dir = tmp_path / "run"
    _run(job, run_dir)
    assert gputui("retry", "--run-dir", run_dir, "--force", "shard-2").returncode == 0
    slow = make_job(ids=8, num_workers=4, sleep=30)  # the same job file, its worker now slow
    assert slow == job
    log = tmp_path / "run.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gputui", "run", "--jobs", str(job), "--run-dir", str(run_dir)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=os.environ | SMALL,
        )
    try:
        doc = wait_for(
            lambda: (
                (d := json.loads(_status_json(run_dir) or b"{}")).get("scheduler_live")
                and d["tasks"][2]["status"] == "running"
                and d
            ),
            what="the retried task running under a live scheduler",
        )
        assert doc["scheduler_pid"] == proc.pid and not doc["all_done"]
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_a_small_run_keeps_no_cache(make_job, tmp_path):
    job = make_job(ids=4, num_workers=2)
    run_dir = tmp_path / "run"
    _run(job, run_dir, env={"GPUTUI_STATUS_CACHE_MIN": "3"})
    assert not (run_dir / "cache").exists()
    assert json.loads(_status_json(run_dir))["all_done"]
