"""The front door, `gputui.api`, on real runs: the documented example as written, the status the CLI prints,
and the verbs reaching a live scheduler and a run that has none."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from gputui import api
from tests.conftest import gputui, proc_state, wait_for

DOC = Path(__file__).parents[2] / "docs" / "api.md"


def _block(text: str, language: str) -> str:
    blocks = re.findall(rf"^```{language}\n(.*?)^```", text, re.S | re.M)
    assert len(blocks) == 1, f"docs/api.md: expected one {language} block, found {len(blocks)}"
    return blocks[0]


def test_the_documented_example_runs_as_written(tmp_path):
    doc = DOC.read_text()
    (tmp_path / "job.toml").write_text(_block(doc, "toml"))
    (tmp_path / "ids.csv").write_text("data_id\n" + "".join(f"{i}\n" for i in range(30)))
    code = _block(doc, "python")
    assert 15 <= len(code.splitlines()) <= 25, "about twenty lines"
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "demo (shards): 3 shards: [0, 10), [10, 20), [20, 30)" in out
    assert "all done: True" in out
    assert "shard-0 done ids 0 to 10" in out and "shard-2 done ids 20 to 30" in out  # each task's own log
    assert "wait: 0 ['ids 10 to 20']" in out  # every task had ended; shard-1's log, line by line
    assert "True shard-0: queued again" in out
    assert "Counter({'done': 2, 'pending': 1})" in out
    assert "1 Simulated GPU" in out


def test_status_is_what_status_json_prints(make_job):
    job = make_job(num_workers=3, gpus_per_worker=1)
    assert gputui("run", "--jobs", job, "--simulate", "2").returncode == 0
    with api.open_run(make_job.run_dir) as run:
        status = run.status()
        assert status.all_done and not status.scheduler_live and status.gpu_totals()["gpus_simulated"]
        printed = json.loads(gputui("status", "--run-dir", make_job.run_dir, "--json").stdout)
        assert json.loads(status.to_json()) == printed
        assert [t.id for t in run.tasks()] == [t["id"] for t in printed["tasks"]]
        assert str(run.log_path("shard-1")) == printed["tasks"][1]["log_path"]
        assert run.logs("shard-1") == [run.log_path("shard-1")]


def test_open_run_refuses_a_folder_that_holds_no_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a gputui run directory"):
        api.open_run(tmp_path)


@pytest.fixture
def background(make_job):
    """A run started as the app's `l` starts it, with two long workers; its scheduler is ended afterwards."""
    job = make_job(ids=30, num_workers=3, max_parallel=2, sleep=600, stop_grace_s=1)
    pid = api.start_in_background(job, make_job.run_dir)
    yield make_job, pid
    try:
        for proc in [*psutil.Process(pid).children(recursive=True), psutil.Process(pid)]:
            proc.kill()
    except psutil.Error:
        pass


def test_verbs_reach_a_live_scheduler_and_a_run_without_one(background):
    make_job, pid = background
    workers = wait_for(lambda: len(make_job.running()) == 2 and make_job.running(), what="two workers")
    run = api.open_run(make_job.run_dir)
    assert run.status().scheduler_live and run.status().scheduler_pid == pid

    paused = run.pause(["shard-0"])
    assert paused.ok and "shard-0" in paused.report, paused.report
    wait_for(lambda: proc_state(workers["shard-0"]) == psutil.STATUS_STOPPED, what="the worker stopped")
    assert proc_state(workers["shard-1"]) != psutil.STATUS_STOPPED
    assert run.resume(["shard-0"]).ok
    wait_for(lambda: proc_state(workers["shard-0"]) != psutil.STATUS_STOPPED, what="the worker continued")

    unknown = api.send(make_job.run_dir, api.Pause(["shard-9"]))
    assert not unknown.ok and "no such task in this run: shard-9" in unknown.report

    assert api.send(make_job.run_dir, api.Stop()).ok  # the scheduler ends the run; it is no longer live
    wait_for(lambda: not psutil.pid_exists(pid) or proc_state(pid) == psutil.STATUS_ZOMBIE, what="it ended")
    killed = run.kill(None)  # no scheduler: applied here, under the run lock
    assert killed.ok, killed.report
    assert {t.status for t in run.tasks()} == {"killed"}
    retried = run.retry(["shard-2"])
    assert retried.ok and "shard-2: queued again" in retried.report
    assert {t.id: t.status for t in run.tasks()}["shard-2"] == "pending"
