"""`gputui set max_parallel=N` on a live run (and for its next start), and [job].time_limit_s: through the real
CLI, scheduler and workers."""

from __future__ import annotations

import json
import signal
import time

from tests.conftest import gone, gputui, gputui_bg, wait_for


def _status(run_dir) -> dict:
    return json.loads(gputui("status", "--run-dir", run_dir, "--json").stdout)


def _tasks(run_dir) -> dict:
    return {t["id"]: t for t in _status(run_dir)["tasks"]}


def _alive(make_job) -> dict[str, int]:
    """Workers running now (a killed one never records its finish)."""
    return {t: p for t, p in make_job.running().items() if not gone(p)}


def _holds(predicate, seconds: float) -> bool:
    """`predicate` stays true for `seconds` (checked every 0.1 s)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not predicate():
            return False
        time.sleep(0.1)
    return True


def test_max_parallel_raised_and_lowered_on_a_live_run_and_kept_for_its_next_start(make_job, reaper, tmp_path):
    job = make_job(ids=16, num_workers=8, max_parallel=1, sleep=600, stop_grace_s=1)
    run_dir = make_job.run_dir
    sched = gputui_bg("run", "--jobs", job, log=tmp_path / "sched.log")
    reaper.append(sched)
    wait_for(lambda: len(_alive(make_job)) == 1, what="one worker")

    r = gputui("set", "--run-dir", run_dir, "max_parallel=3")
    assert r.returncode == 0, r.stderr
    assert "max_parallel 1 → 3" in r.stdout
    wait_for(lambda: len(_alive(make_job)) == 3, what="three workers at once")
    assert _holds(lambda: len(_alive(make_job)) == 3, 1.0)  # no more than three
    shown = gputui("status", "--run-dir", run_dir)
    assert "max_parallel 3 (set; job file says 1)" in shown.stdout
    st = _status(run_dir)
    assert (st["max_parallel"], st["max_parallel_set"], st["max_parallel_job"]) == (3, True, 1)

    # Lowered: nothing running is stopped; new launches wait until fewer than 2 run.
    running = _alive(make_job)
    r = gputui("set", "--run-dir", run_dir, "max_parallel=-1")
    assert r.returncode == 0 and "max_parallel 3 → 2" in r.stdout, r
    assert _holds(lambda: _alive(make_job) == running, 1.5)
    reasons = wait_for(
        lambda: (
            {t["reason"] for t in _tasks(run_dir).values() if t["status"] == "pending"}
            == {"max_parallel (2) reached"}
            or None
        ),
        what="the pending tasks' reason naming the new value",
    )
    assert reasons
    first = sorted(running)[0]
    assert gputui("kill", "--run-dir", run_dir, first).returncode == 0
    assert _holds(lambda: len(_alive(make_job)) == 2, 1.5)  # 2 run: none starts in its place
    assert gputui("kill", "--run-dir", run_dir, sorted(running)[1]).returncode == 0
    wait_for(lambda: len(_alive(make_job)) == 2 and set(_alive(make_job)) - set(running), what="one started")

    # Kept in the run's state: a scheduler started again for the run takes it up.
    sched.send_signal(signal.SIGINT)
    sched.wait(30)
    wait_for(lambda: not _alive(make_job), what="the workers stopped")
    sched = gputui_bg("run", "--run-dir", run_dir, log=tmp_path / "sched2.log")
    reaper.append(sched)
    wait_for(lambda: len(_alive(make_job)) == 2, what="two workers after the restart")
    assert _holds(lambda: len(_alive(make_job)) == 2, 1.0)
    assert "max_parallel 2 (set; job file says 1)" in gputui("status", "--run-dir", run_dir).stdout

    # Back to the job file's.
    r = gputui("set", "--run-dir", run_dir, "max_parallel=job")
    assert r.returncode == 0 and "max_parallel 2 → 1" in r.stdout, r
    assert "max_parallel" not in gputui("status", "--run-dir", run_dir).stdout.splitlines()[2]
    assert _status(run_dir)["max_parallel_set"] is False
    sched.send_signal(signal.SIGINT)
    sched.wait(30)


def test_set_with_no_scheduler_is_kept_for_the_next_start(make_job, reaper, tmp_path):
    job = make_job(ids=8, num_workers=4, max_parallel=1, sleep=600, stop_grace_s=1)
    run_dir = make_job.run_dir
    sched = gputui_bg("run", "--jobs", job, log=tmp_path / "sched.log")
    reaper.append(sched)
    wait_for(lambda: len(_alive(make_job)) == 1, what="one worker")
    sched.send_signal(signal.SIGINT)
    sched.wait(30)

    r = gputui("set", "--run-dir", run_dir, "max_parallel=2")
    assert r.returncode == 0, r.stderr
    assert "max_parallel 1 → 2" in r.stdout and "next start" in r.stdout
    assert "max_parallel 2 (set; job file says 1)" in gputui("status", "--run-dir", run_dir).stdout
    sched = gputui_bg("run", "--run-dir", run_dir, log=tmp_path / "sched2.log")
    reaper.append(sched)
    wait_for(lambda: len(_alive(make_job)) == 2, what="two workers")
    assert _holds(lambda: len(_alive(make_job)) == 2, 1.0)
    sched.send_signal(signal.SIGINT)
    sched.wait(30)


def test_bad_settings_exit_2_saying_what_was_expected(make_job, tmp_path):
    make_job(ids=2, num_workers=1)
    run_dir = make_job.run_dir
    for bad, said in (
        ("max_parallel=0", "expected a whole number 1 or more"),
        ("max_parallel=x", "expected a whole number 1 or more"),
        ("max_parallel=+0", "expected a whole number 1 or more"),
        ("max_parallel=", "expected a whole number 1 or more"),
        ("parallel=3", "unknown setting 'parallel'; expected one of: max_parallel=N"),
        ("max_parallel", "is not KEY=VALUE"),
    ):
        r = gputui("set", "--run-dir", run_dir, bad)
        assert r.returncode == 2, (bad, r)
        assert said in r.stderr, (bad, r.stderr)
    r = gputui("set", "--run-dir", tmp_path / "nowhere", "max_parallel=2")
    assert r.returncode == 2 and "nowhere" in r.stderr


def test_an_attempt_past_its_time_limit_is_stopped_and_fails_without_retries(make_job):
    job = make_job(ids=4, num_workers=2, max_parallel=2, sleep=30, stop_grace_s=1, extra="time_limit_s = 1")
    started = time.monotonic()
    r = gputui("run", "--jobs", job, "--quiet", timeout=60)
    assert time.monotonic() - started < 20, "stopped at its limit, not after its 30 s"
    assert r.returncode == 1, r.stdout + r.stderr
    assert "time limit (1s) reached after 1s; stopping it" in r.stdout
    tasks = _tasks(make_job.run_dir)
    for t in tasks.values():
        assert t["status"] == "failed" and t["attempts"] == 1, t  # a time limit is not retried (Slurm's TIMEOUT)
        assert t["reason"].startswith("time limit (1s) reached after "), t
    assert not _alive(make_job)
    shown = gputui("status", "--run-dir", make_job.run_dir).stdout
    assert "time limit (1s) reached" in shown


def test_time_paused_does_not_count_toward_the_limit(make_job, reaper, tmp_path):
    job = make_job(ids=2, num_workers=1, max_parallel=1, sleep=60, stop_grace_s=1, extra="time_limit_s = 3")
    run_dir = make_job.run_dir
    sched = gputui_bg("run", "--jobs", job, log=tmp_path / "sched.log")
    reaper.append(sched)
    wait_for(lambda: _alive(make_job), what="its worker")
    assert gputui("pause", "--run-dir", run_dir, "shard-0").returncode == 0
    paused_at = time.monotonic()
    assert _holds(lambda: _tasks(run_dir)["shard-0"]["status"] == "paused", 4.0)  # past its 3 s, paused
    assert gputui("resume", "--run-dir", run_dir, "shard-0").returncode == 0
    t = wait_for(lambda: (t := _tasks(run_dir)["shard-0"])["status"] == "failed" and t, timeout=30)
    assert time.monotonic() - paused_at > 4.0
    assert t["reason"].startswith("time limit (3s) reached after 3s"), t
    sched.wait(30)


def test_a_scheduler_re_attached_to_a_paused_attempt_does_not_count_its_pause(make_job, reaper, tmp_path):
    job = make_job(ids=2, num_workers=1, max_parallel=1, sleep=60, stop_grace_s=1, extra="time_limit_s = 4")
    run_dir = make_job.run_dir
    sched = gputui_bg("run", "--jobs", job, log=tmp_path / "sched.log")
    reaper.append(sched)
    wait_for(lambda: _alive(make_job), what="its worker")
    assert gputui("pause", "--run-dir", run_dir, "shard-0").returncode == 0
    sched.send_signal(signal.SIGHUP)  # detached: the paused worker stays
    assert sched.wait(30) == 0
    time.sleep(5)  # past its 4 s, paused
    sched = gputui_bg("run", "--run-dir", run_dir, log=tmp_path / "sched2.log")
    reaper.append(sched)
    assert _holds(lambda: _tasks(run_dir)["shard-0"]["status"] == "paused", 1.5)  # re-adopted, not over its limit
    assert gputui("resume", "--run-dir", run_dir, "shard-0").returncode == 0
    t = wait_for(lambda: (t := _tasks(run_dir)["shard-0"])["status"] == "failed" and t, timeout=30)
    assert t["reason"].startswith("time limit (4s) reached after 4s"), t
    sched.wait(30)
