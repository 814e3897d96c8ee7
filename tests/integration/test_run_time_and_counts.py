"""What the app's header and `gputui status` say of a run's counts and its elapsed time, and that they agree:
every task counted (pending ones too), and the time no scheduler drove the run left out."""

from __future__ import annotations

import signal
import time

import pytest

from gputui import clock
from gputui.api.status import read_status
from gputui.rundir.paths import RunLock, RunPaths
from gputui.views.printer import progress_line
from gputui.views.run_pages import PagedRunView
from tests.conftest import gputui, gputui_bg, wait_for


def header_elapsed(run_dir) -> float:
    view = PagedRunView(run_dir)
    try:
        snap = view.snapshot()
        return snap.elapsed(snap.taken_at)
    finally:
        view.close()


def test_status_counts_the_tasks_a_stopped_run_left_pending(make_job, tmp_path, reaper):
    job = make_job(num_workers=4, max_parallel=2, sleep=60.0)
    sched = gputui_bg("run", "--jobs", job, "--quiet", log=tmp_path / "sched.log")
    reaper.append(sched)
    wait_for(lambda: len(make_job.running()) == 2, what="two workers")
    sched.send_signal(signal.SIGINT)  # the two running are stopped and wait again, with the two never started
    sched.wait(60)
    out = gputui("status", "--run-dir", make_job.run_dir).stdout
    assert "0/4 done, 0 running, 4 pending, 0 failed, elapsed " in out, out
    view = PagedRunView(make_job.run_dir)
    try:
        assert view.snapshot().counts == read_status(make_job.run_dir).counts == {"pending": 4}
    finally:
        view.close()


def test_progress_line_adds_up_to_every_task_in_the_headers_order():
    counts = {"done": 2, "running": 1, "paused": 1, "pending": 3, "retrying": 1, "failed": 1, "killed": 1}
    line = progress_line(counts, 12.0)
    assert line == "2/10 done, 1 running, 1 paused, 3 pending, 1 retrying, 1 failed, 1 killed, elapsed 12.0s"


def test_the_gap_between_a_run_that_ended_and_its_relaunch_is_not_counted(make_job):
    job = make_job(num_workers=2, max_attempts=1, worker_args="--fail-attempts 1")
    assert gputui("run", "--jobs", job).returncode == 1  # both shards failed for good: the run ended
    run_dir = make_job.run_dir
    ended = read_status(run_dir).spent()
    assert header_elapsed(run_dir) == pytest.approx(ended, abs=0.01), "the header and status agree"
    time.sleep(1.5)  # the run stands still a while (a user away), then is retried and launched again
    assert gputui("retry", "--run-dir", run_dir, "shard-0").returncode == 0
    lock = RunLock(RunPaths(run_dir))  # the relaunched scheduler: it holds the run, shard-0 waits for it
    assert lock.try_acquire("scheduler")
    try:
        since = lock.holder()["since"]
        status = read_status(run_dir)
        assert status.scheduler_live and status.counts["pending"] == 1
        waiting = clock.between(since, status.taken_at)  # since this scheduler took the run
        assert status.spent() == pytest.approx(ended + waiting, abs=0.01), "not the 1.5 s before it"
        view = PagedRunView(run_dir)
        try:
            snap = view.snapshot()
            assert snap.active_s == pytest.approx(ended + clock.between(since, snap.taken_at), abs=0.01)
        finally:
            view.close()
    finally:
        lock.release()
    assert read_status(run_dir).spent() == pytest.approx(ended, abs=0.01), "stopped: nothing waits any more"
