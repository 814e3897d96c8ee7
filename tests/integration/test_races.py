"""Races between the scheduler, its keeper, the waiters and the user, opened wide by freezing one (SIGSTOP)."""

from __future__ import annotations

import json
import signal

import psutil

from tests.conftest import gputui, gputui_bg, keeper_of, wait_for


def _status(run_dir) -> dict:
    r = gputui("status", "--run-dir", run_dir, "--json")
    if r.returncode not in (0, 1):  # the run's state is not created yet (1: not every task is done)
        return {}
    return {t["id"]: t for t in json.loads(r.stdout)["tasks"]}


def test_kill_sent_before_the_worker_exists_still_stops_it_and_no_copy_runs(make_job, reaper, tmp_path):
    job = make_job(
        ids=10,
        num_workers=1,
        sleep=30,
        backoff_s=4,
        stop_grace_s=1,
        worker_args="--fail-attempts 1 --fail-early",
    )
    sched = gputui_bg("run", "--jobs", job, log=tmp_path / "sched.log")
    reaper.append(sched)
    # Attempt 1 has ended and been settled: the scheduler now waits out the backoff before attempt 2.
    wait_for(
        lambda: _status(make_job.run_dir).get("shard-0", {}).get("status") == "retrying", what="attempt 1 settled"
    )
    waiters = keeper_of(sched).children()
    for w in waiters:
        w.suspend()  # attempt 2's launch request will wait in its waiter's channel
    try:
        wait_for(lambda: _status(make_job.run_dir)["shard-0"]["attempts"] == 2, what="attempt 2 requested")
        r = gputui("kill", "--run-dir", make_job.run_dir, "shard-0")
        assert r.returncode == 0 and "killed 0 process(es)" in r.stdout
    finally:
        for w in waiters:
            w.resume()
    # The waiter now spawns attempt 2; the scheduler stops it as soon as it hears of it.
    assert sched.wait(30) == 1, (tmp_path / "sched.log").read_text()
    journal = (make_job.run_dir / "attempts.journal").read_text().splitlines()
    assert any(line.startswith("start shard-0 2 ") for line in journal)  # it was spawned...
    assert any(line.startswith("exit shard-0 2 -15 ") for line in journal)  # ...and stopped by SIGTERM
    assert _status(make_job.run_dir)["shard-0"]["status"] == "killed"
    assert not any(e["event"] == "finish" for e in make_job.events())


def test_worker_whose_exit_is_not_yet_recorded_is_waited_for_not_run_again(make_job, reaper, tmp_path):
    job = make_job(ids=10, num_workers=1, sleep=1.0)
    sched = gputui_bg("run", "--jobs", job, log=tmp_path / "first.log")
    reaper.append(sched)
    worker = wait_for(lambda: make_job.running().get("shard-0"), what="the worker")
    waiter = psutil.Process(psutil.Process(worker).ppid())  # its parent, which records its end
    waiter.suspend()  # the worker will end, but its exit cannot be recorded yet
    try:
        wait_for(lambda: any(e["event"] == "finish" for e in make_job.events()), what="the worker to finish")
        sched.send_signal(signal.SIGKILL)
        sched.wait(5)
        second = gputui_bg("run", "--jobs", job, log=tmp_path / "second.log")
        reaper.append(second)
        wait_for(lambda: "re-adopted" in (tmp_path / "second.log").read_text(), what="re-adoption")
        assert second.poll() is None  # it waits for the exit status instead of calling the attempt lost
    finally:
        waiter.resume()
    assert second.wait(30) == 0, (tmp_path / "second.log").read_text()
    assert sum(e["event"] == "start" for e in make_job.events()) == 1
    assert _status(make_job.run_dir)["shard-0"]["attempts"] == 1


def test_retry_is_refused_while_the_last_attempt_may_still_run(make_job, reaper, tmp_path):
    job = make_job(ids=10, num_workers=1, sleep=30, stop_grace_s=1)
    sched = gputui_bg("run", "--jobs", job, log=tmp_path / "sched.log")
    reaper.append(sched)
    wait_for(lambda: any(e["event"] == "start" for e in make_job.events()), what="the worker")
    worker = next(e["pid"] for e in make_job.events() if e["event"] == "start")
    sched.send_signal(signal.SIGKILL)  # no scheduler now; the worker runs on
    sched.wait(5)
    db_kill = gputui("kill", "--run-dir", make_job.run_dir, "shard-0")
    assert db_kill.returncode == 0
    wait_for(lambda: not psutil.pid_exists(worker) or psutil.Process(worker).status() == "zombie", what="kill")
    r = gputui("retry", "--run-dir", make_job.run_dir, "shard-0")
    assert r.returncode == 0, r.stdout  # its end is in the journal now: the retry may go ahead
    assert _status(make_job.run_dir)["shard-0"]["status"] == "pending"
