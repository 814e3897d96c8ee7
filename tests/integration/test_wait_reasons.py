"""Every waiting task says why it waits, in `gputui status --json` (and so the table and `gputui status`): a GPU
another gputui run holds (naming that run), this run's own tasks on the GPUs, max_parallel, free memory below the
job's bar, a retry's back-off; and the reason is gone once the task runs. Real runs through the CLI, on simulated
GPUs; workers wait for a gate file the test opens, so nothing hangs on timing."""

from __future__ import annotations

import json
import os
import pwd
import re
import signal
import sqlite3
import sys
import time
from pathlib import Path

from gputui.views.waiting import BEHIND, NO_SCHEDULER
from tests.conftest import gputui, gputui_bg, wait_for

GATED = """
import sys, time
from pathlib import Path
gate, attempt = Path(sys.argv[1]), int(sys.argv[2])
if attempt in [int(a) for a in sys.argv[3].split(",") if a]:
    sys.exit(1)
while not gate.exists():
    time.sleep(0.05)
"""


def _job(root: Path, name: str, shards: int, gpus: int, resources: str = "", retry: str = "") -> Path:
    """A job of `shards` shards whose workers end once `root/go` exists (those on an attempt listed in
    `root/fail` first fail at once)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "w.py").write_text(GATED)
    (root / "data.csv").write_text("data_id\n" + "".join(f"{i}\n" for i in range(shards)))
    fail = (root / "fail").read_text().strip() if (root / "fail").exists() else ""
    job = root / "job.toml"
    job.write_text(f"""
[job]
name = "{name}"
command = "{sys.executable} {root / "w.py"} {root / "go"} {{attempt}} '{fail}'"
stop_grace_s = 2
[shards]
input = "data.csv"
num_workers = {shards}
[resources]
gpus_per_worker = {gpus}
{resources}
[retry]
{retry or "max_attempts = 1"}
""")
    return job


def _tasks(run_dir: Path) -> dict[str, dict]:
    r = gputui("status", "--run-dir", run_dir, "--json")
    if r.returncode not in (0, 1):
        return {}
    return {t["id"]: t for t in json.loads(r.stdout)["tasks"]}


def _run(job: Path, log: Path, *simulate: str):
    return gputui_bg("run", "--jobs", job, "--run-dir", job.parent / "runs" / "r", "--quiet", *simulate, log=log)


def _when(run_dir: Path, ok, what: str) -> dict[str, dict]:
    def seen():
        tasks = _tasks(run_dir)
        return tasks if tasks and ok(tasks) else None

    return wait_for(seen, timeout=60, interval=0.2, what=what)


def test_a_task_waiting_for_a_gpu_another_run_holds_names_that_run_and_says_nothing_once_it_runs(tmp_path):
    holder = _job(tmp_path / "a", "holder", shards=1, gpus=1)
    holder_run = holder.parent / "runs" / "r"
    first = _run(holder, tmp_path / "a.log", "--simulate", "shared:1x24")
    try:
        _when(holder_run, lambda ts: ts["shard-0"]["status"] == "running", "the holder's task to run")
        job = _job(tmp_path / "b", "waiter", shards=2, gpus=1)
        run_dir = job.parent / "runs" / "r"
        second = _run(job, tmp_path / "b.log", "--simulate", "shared:1x24")
        try:
            me = pwd.getpwuid(os.getuid()).pw_name
            other = f"needs 1 GPU, 0 free: GPU 0 held by {me} (run holder, task shard-0)"
            tasks = _when(
                run_dir,
                lambda ts: all(t["reason"] == other for t in ts.values()),
                "both waiting tasks to name the run holding the GPU",
            )
            assert {t["status"] for t in tasks.values()} == {"pending"}
            shown = gputui("status", "--run-dir", run_dir).stdout
            assert f"held by {me} (run holder" in shown, shown

            (holder.parent / "go").touch()  # the holder ends: the first task runs, the second waits for it
            tasks = _when(run_dir, lambda ts: ts["shard-0"]["status"] == "running", "the first task to run")
            assert tasks["shard-0"]["reason"] is None
            ours = "needs 1 GPU, 0 free: GPU 0 in use by this run"
            _when(run_dir, lambda ts: ts["shard-1"]["reason"] == ours, "the second to wait for the first")

            (job.parent / "go").touch()
            assert second.wait(60) == 0
            assert [t["reason"] for t in _tasks(run_dir).values()] == [None, None]
        finally:
            second.kill()
    finally:
        (holder.parent / "go").touch()
        first.wait(60)


def test_tasks_beyond_max_parallel_say_so_until_their_turn(tmp_path):
    job = _job(tmp_path, "cpu", shards=3, gpus=0, resources="max_parallel = 1")
    run_dir = job.parent / "runs" / "r"
    sched = _run(job, tmp_path / "run.log")
    try:
        tasks = _when(
            run_dir,
            lambda ts: (
                ts["shard-0"]["status"] == "running"
                and ts["shard-1"]["reason"] == ts["shard-2"]["reason"] == "max_parallel (1) reached"
            ),
            "the tasks behind the running one to say max_parallel",
        )
        assert tasks["shard-0"]["reason"] is None
        (job.parent / "go").touch()
        assert sched.wait(60) == 0
        assert [t["reason"] for t in _tasks(run_dir).values()] == [None, None, None]
    finally:
        sched.kill()


def test_a_gpu_below_the_free_memory_bar_is_named_with_the_bar_and_the_reason_goes_when_the_run_stops(tmp_path):
    # A simulated 24 GB GPU shows a few hundred MB used by the driver: 23.9 GB free is never there.
    job = _job(tmp_path, "big", shards=1, gpus=1, resources="min_free_memory_gb = 23.9")
    run_dir = job.parent / "runs" / "r"
    sched = _run(job, tmp_path / "run.log", "--simulate", "1x24")
    try:
        _when(
            run_dir,
            lambda ts: ts["shard-0"]["reason"] == "needs 1 GPU, 0 free: GPU 0 below 23.9 GB free",
            "the task to say which GPU lacks the memory it asks for",
        )
        sched.send_signal(signal.SIGINT)  # our own `gputui run`: stopped, it leaves no reason it gave behind
        sched.wait(60)
        task = _tasks(run_dir)["shard-0"]
        assert task["status"] == "pending" and task["reason"] == NO_SCHEDULER  # what it waits for now
    finally:
        sched.kill()


def test_a_retrying_task_says_when_it_is_tried_again_and_why_the_last_try_failed(tmp_path):
    (tmp_path / "fail").write_text("1")
    job = _job(tmp_path, "flaky", shards=1, gpus=0, retry="max_attempts = 2\nbackoff_s = 600")
    (job.parent / "go").touch()
    run_dir = job.parent / "runs" / "r"
    sched = _run(job, tmp_path / "run.log")
    try:
        task = _when(run_dir, lambda ts: ts["shard-0"]["status"] == "retrying", "the task to retry")["shard-0"]
        due = time.strftime("%H:%M:%S", time.localtime(task["next_try_at"]))
        assert re.fullmatch(rf"retry at {due} \(backoff\): .*exit.*1.*", task["reason"]), task["reason"]

        assert gputui("retry", "--run-dir", run_dir, "shard-0").returncode == 0  # now, not in 10 minutes
        assert sched.wait(60) == 0
        assert _tasks(run_dir)["shard-0"]["reason"] is None
    finally:
        sched.kill()


def test_pipeline_steps_say_which_steps_they_wait_for(tmp_path):
    (tmp_path / "w.py").write_text(GATED)
    step = f"{sys.executable} {tmp_path / 'w.py'} {tmp_path / 'go'} {{attempt}} ''"
    job = tmp_path / "job.toml"
    job.write_text(f"""
[job]
name = "pipe"
kind = "pipeline"
[[pipeline.step]]
name = "train"
command = "{step}"
[[pipeline.step]]
name = "prep"
command = "{step}"
[[pipeline.step]]
name = "report"
command = "{step}"
after = ["train", "prep"]
[resources]
gpus_per_worker = 0
[retry]
max_attempts = 1
""")
    run_dir = tmp_path / "runs" / "r"
    sched = _run(job, tmp_path / "run.log")
    try:
        tasks = _when(
            run_dir,
            lambda ts: ts["report"]["reason"] == "waits for train, prep",
            "the last step to name the steps it waits for",
        )
        assert tasks["train"]["reason"] is None and tasks["prep"]["reason"] is None
        (tmp_path / "go").touch()
        assert sched.wait(60) == 0
        assert [t["reason"] for t in _tasks(run_dir).values()] == [None, None, None]
    finally:
        sched.kill()


def test_a_long_line_gives_its_first_hundred_tasks_a_reason_and_the_rest_wait_their_turn(tmp_path):
    """The scheduler words the head of the line (the first 100); the others are shown waiting their turn (the
    views' words: nothing written for them), in status --json, status and the app."""
    job = _job(tmp_path, "long", shards=300, gpus=0, resources="max_parallel = 1")
    run_dir = job.parent / "runs" / "r"
    sched = _run(job, tmp_path / "run.log")
    try:
        said = lambda ts: [i for i, t in ts.items() if t["reason"] == "max_parallel (1) reached"]  # noqa: E731
        tasks = _when(run_dir, lambda ts: len(said(ts)) == 100, "the head of the line told why it waits")
        assert said(tasks) == [f"shard-{i}" for i in range(1, 101)]
        behind = [i for i, t in tasks.items() if t["status"] == "pending" and i not in said(tasks)]
        assert len(behind) >= 190 and all(tasks[i]["reason"] == BEHIND for i in behind)
        with sqlite3.connect(run_dir / "state.db") as db:  # written for none of them
            written = dict(db.execute("SELECT id, reason FROM tasks WHERE reason IS NOT NULL"))
        assert not set(written) & set(behind)
        shown = gputui("status", "--run-dir", run_dir, "--all").stdout
        assert "waits its turn" in shown.split("shard-299")[1].splitlines()[0]
    finally:
        sched.send_signal(signal.SIGINT)
        sched.wait(60)
        sched.kill()
