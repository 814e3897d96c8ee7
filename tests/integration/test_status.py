"""`gputui status`: its exit status says whether every task is done, and every log path can be copied whole,
however narrow the terminal."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.conftest import gputui


def test_exit_status_says_whether_every_task_is_done(make_job, tmp_path):
    job = make_job(num_workers=2)
    assert gputui("run", "--jobs", job).returncode == 0
    for flag in ((), ("--json",)):
        assert gputui("status", "--run-dir", make_job.run_dir, *flag).returncode == 0
    failing = make_job(num_workers=2, max_attempts=1, worker_args="--fail-attempts 1")
    run_dir = tmp_path / "failing"
    assert gputui("run", "--jobs", failing, "--run-dir", run_dir).returncode == 1
    for flag in ((), ("--json",)):
        assert gputui("status", "--run-dir", run_dir, *flag).returncode == 1
    assert gputui("status", "--run-dir", tmp_path / "nope").returncode == 2
    assert "exit status: 0 every task is done; 1 some task is not done" in " ".join(
        gputui("status", "--help").stdout.split()
    )


def test_json_names_every_tasks_latest_log(make_job):
    job = make_job(num_workers=3, max_attempts=2, worker_args="--fail-attempts 1")
    assert gputui("run", "--jobs", job).returncode == 0
    tasks = json.loads(gputui("status", "--run-dir", make_job.run_dir, "--json").stdout)["tasks"]
    for t in tasks:
        assert t["log_path"] == str(make_job.run_dir / "logs" / f"{t['id']}.attempt2.log")
        assert "finish [" in Path(t["log_path"]).read_text()


def test_log_paths_are_printed_whole_on_a_narrow_terminal(make_job, tmp_path):
    job = make_job(num_workers=2, max_attempts=1, worker_args="--fail-attempts 1")
    run_dir = tmp_path / "a-run-directory-with-a-name-long-enough-to-overflow-an-eighty-column-terminal"
    assert gputui("run", "--jobs", job, "--run-dir", run_dir).returncode == 1
    r = gputui("status", "--run-dir", run_dir, env=os.environ | {"COLUMNS": "80"})
    assert r.returncode == 1
    for task in ("shard-0", "shard-1"):
        log = str(run_dir / "logs" / f"{task}.attempt1.log")
        assert len(log) > 80 and f"{task} log: {log}\n" in r.stdout, r.stdout
