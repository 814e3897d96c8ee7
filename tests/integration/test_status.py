"""`gputui status`: its exit status says whether every task is done, every log path can be copied whole, however
narrow the terminal, and a long run lists what runs or needs a look, counting the rest."""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from pathlib import Path

from tests.conftest import gputui, gputui_bg, wait_for


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


def test_a_long_run_lists_what_runs_or_needs_a_look_and_counts_the_rest(tmp_path, reaper):
    (tmp_path / "ids.csv").write_text("data_id\n" + "".join(f"{i}\n" for i in range(150)))
    job = tmp_path / "job.toml"
    job.write_text("""
[job]
name = "long"
command = "sh -c 'case {low} in 7|99) exit 3;; 140) sleep 60;; esac'"
[shards]
input = "ids.csv"
shard_size = 1
[resources]
gpus_per_worker = 0
max_parallel = 8
[retry]
max_attempts = 1
""")
    run_dir = tmp_path / "runs" / "long"
    sched = gputui_bg("run", "--jobs", job, "--quiet", log=tmp_path / "sched.log")
    reaper.append(sched)

    def counts():
        r = gputui("status", "--run-dir", run_dir, "--json")
        tasks = json.loads(r.stdout)["tasks"] if r.returncode == 1 else []
        return Counter(t["status"] for t in tasks) == {"done": 147, "failed": 2, "running": 1} and r

    wait_for(counts, timeout=60, what="147 done, 2 failed, shard-140 running")
    out = gputui("status", "--run-dir", run_dir).stdout
    rows = [line.split()[:3] for line in out.splitlines() if line.startswith("shard-") and " log: " not in line]
    assert rows == [["shard-7", "[7,", "8)"], ["shard-99", "[99,", "100)"], ["shard-140", "[140,", "141)"]], out
    for task in ("shard-7", "shard-99"):
        assert f"{task} log: {run_dir / 'logs' / f'{task}.attempt1.log'}\n" in out
    assert "… and 147 more tasks: 147 done (--all lists every task)\n" in out
    assert "147/150 done, 1 running, 2 failed" in out
    every = gputui("status", "--run-dir", run_dir, "--all").stdout
    listed = [line.split()[0] for line in every.splitlines() if line.startswith("shard-") and " log: " not in line]
    assert listed == [f"shard-{i}" for i in range(150)] and every.count("task ") == 1, every
    sched.send_signal(signal.SIGINT)
    assert sched.wait(60) == 130
