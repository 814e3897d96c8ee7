"""Pause, resume, kill and retry reach our whole process tree, and nothing that is not ours."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys

import psutil
import pytest

from gputui.executors import ownership
from tests.conftest import gone, gputui, gputui_bg, proc_state, wait_for


def _status(run_dir) -> dict:
    return {t["id"]: t for t in json.loads(gputui("status", "--run-dir", run_dir, "--json").stdout)["tasks"]}


def _decoy(argv: list[str], env_tag: dict | None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUTUI_")}
    env.update(env_tag or {})
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
def live_run(make_job, reaper, tmp_path):
    """A live scheduler with two long-running workers (each with a child and a setsid grandchild)."""
    job = make_job(
        ids=20,
        num_workers=2,
        max_parallel=2,
        sleep=600,
        stop_grace_s=1,
        worker_args=f"--spawn-children --children-file {tmp_path}/children-{{task_id}}.json",
    )
    sched = gputui_bg("run", "--jobs", job, log=tmp_path / "sched.log")
    reaper.append(sched)
    pids = wait_for(lambda: len(make_job.running()) == 2 and make_job.running(), what="two workers")
    children = {
        t: wait_for(lambda t=t: _read_json(tmp_path / f"children-{t}.json"), what="children") for t in pids
    }
    return make_job, sched, pids, children


def _read_json(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def test_killed_task_can_be_retried(live_run, tmp_path):
    make_job, sched, pids, children = live_run
    assert gputui("kill", "--run-dir", make_job.run_dir, "--all").returncode == 0
    sched.wait(30)
    r = gputui("retry", "--run-dir", make_job.run_dir, "shard-0")
    assert r.returncode == 0 and "queued again" in r.stdout
    assert _status(make_job.run_dir)["shard-0"]["status"] == "pending"
    assert _status(make_job.run_dir)["shard-1"]["status"] == "killed"


def test_control_verbs_act_directly_when_no_scheduler_is_live(live_run):
    make_job, sched, pids, children = live_run
    sched.send_signal(signal.SIGKILL)  # workers keep running, orphaned
    sched.wait(5)
    assert not gone(pids["shard-0"])
    r = gputui("kill", "--run-dir", make_job.run_dir, "shard-0")
    assert r.returncode == 0, r.stdout + r.stderr
    for pid in (pids["shard-0"], *children["shard-0"]):
        wait_for(lambda pid=pid: gone(pid), what=f"pid {pid} gone")
    assert not gone(pids["shard-1"])


def test_stale_record_whose_pid_was_reused_is_never_signalled(live_run, reaper):
    make_job, sched, pids, children = live_run
    sched.send_signal(signal.SIGKILL)
    sched.wait(5)
    # The worker and its tree die while nobody watches; a stranger then holds a pid we recorded.
    for pid in (pids["shard-0"], *children["shard-0"]):
        os.kill(pid, signal.SIGKILL)
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    reaper.append(stranger)
    start = ownership.ref_of(stranger.pid).start
    db = sqlite3.connect(make_job.run_dir / "state.db")
    with db:
        db.execute(
            "UPDATE attempts SET worker_pid=?, worker_start=?, waiter_pid=?, waiter_start=?, cgroup=NULL "
            "WHERE task_id='shard-0'",
            (stranger.pid, start - 1000, stranger.pid, start - 1000),
        )  # same pid, another start time: another process
    db.close()
    for verb in ("pause", "kill"):
        gputui(verb, "--run-dir", make_job.run_dir, "shard-0")
    assert stranger.poll() is None and proc_state(stranger.pid) != psutil.STATUS_STOPPED


def test_ctrl_c_stops_only_our_workers_and_restart_finishes(make_job, reaper, tmp_path):
    job = make_job(ids=20, num_workers=2, max_parallel=2, sleep=2.0, stop_grace_s=1)
    sched = gputui_bg("run", "--jobs", job, log=tmp_path / "sched.log")
    reaper.append(sched)
    pids = wait_for(lambda: len(make_job.running()) == 2 and make_job.running(), what="two workers")
    decoy = _decoy(psutil.Process(pids["shard-0"]).cmdline(), None)
    reaper.append(decoy)
    sched.send_signal(signal.SIGINT)
    assert sched.wait(30) == 130
    assert all(gone(p) for p in pids.values())
    assert decoy.poll() is None
    assert {t["status"] for t in _status(make_job.run_dir).values()} == {"pending"}
    r = gputui("run", "--jobs", job)
    assert r.returncode == 0, r.stdout
    # The interrupted attempt does not count against the task's attempts.
    assert all(t["budget"] - t["attempts"] == 2 for t in _status(make_job.run_dir).values())


def test_hangup_detaches_and_work_goes_on(make_job, reaper, tmp_path):
    job = make_job(ids=20, num_workers=2, max_parallel=2, sleep=1.5)
    sched = gputui_bg("run", "--jobs", job, log=tmp_path / "sched.log")
    reaper.append(sched)
    pids = wait_for(lambda: len(make_job.running()) == 2 and make_job.running(), what="two workers")
    sched.send_signal(signal.SIGHUP)
    assert sched.wait(30) == 0
    assert "detached" in (tmp_path / "sched.log").read_text()
    assert not any(gone(p) for p in pids.values())
    r = gputui("run", "--jobs", job)
    assert r.returncode == 0 and "re-adopted" in r.stdout
    assert sum(e["event"] == "start" for e in make_job.events()) == 2


def _stranger_with_copied_tags(make_job, reaper, tmp_path, attempt: str, *, kill_waiter: bool):
    """A 2-GPU run of two 2-GPU shards whose scheduler and keeper (and shard-0's waiter) were SIGKILLed, and a
    stranger outside any gputui tree carrying shard-0's tags with `attempt`: (job file, stranger)."""
    from tests.integration.test_reliability import _cgroups_usable

    if not _cgroups_usable():
        pytest.skip("cgroup v2 with cgroup.kill is not writable here")
    job = make_job(ids=20, num_workers=2, gpus_per_worker=2, max_parallel=2, sleep=2.0, stop_grace_s=1)
    sched = gputui_bg("run", "--jobs", job, "--simulate", "2", log=tmp_path / "first.log")
    reaper.append(sched)
    worker = wait_for(lambda: make_job.running().get("shard-0"), what="shard-0's worker")
    waiter = [psutil.Process(worker).parent()] if kill_waiter else []
    for proc in [sched, *psutil.Process(sched.pid).children(), *waiter]:
        proc.send_signal(signal.SIGKILL)
    sched.wait(5)
    scheduler_id = json.loads((make_job.run_dir / "run.json").read_text())["scheduler_id"]
    tags = {"GPUTUI_SCHEDULER_ID": scheduler_id, "GPUTUI_TASK_ID": "shard-0", "GPUTUI_ATTEMPT": attempt}
    decoy = subprocess.Popen(["sleep", "600"], env=tags, start_new_session=True)
    reaper.append(decoy)
    wait_for(lambda: gone(worker), what="shard-0's worker to end")
    return job, decoy


def test_copied_tags_outside_a_dead_attempts_cgroup_neither_hold_its_gpus_nor_get_signalled(
    make_job, reaper, tmp_path
):
    """Attack N10: scheduler, keeper and waiters SIGKILLed, then a stranger started with an attempt's tags
    (`env -i ... setsid sleep`). The attempt had a cgroup and the stranger is not in it, so it is not the
    attempt's: the retry may have the GPUs at once, the stranger is left alone, and no message claims the
    attempt had no cgroup."""
    job, decoy = _stranger_with_copied_tags(make_job, reaper, tmp_path, "1", kill_waiter=True)
    starts = [
        line for line in (make_job.run_dir / "attempts.journal").read_text().splitlines() if line[:6] == "start "
    ]
    assert starts and all(line.split()[7] != "-" for line in starts)  # every start record names a cgroup

    r = gputui("run", "--jobs", job, "--simulate", "2", timeout=90)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "has no cgroup" not in r.stdout
    assert f"pid {decoy.pid}" in r.stdout and "copied" in r.stdout  # said once, as what it is
    assert decoy.poll() is None and proc_state(decoy.pid) != psutil.STATUS_STOPPED
    assert {t["status"] for t in _status(make_job.run_dir).values()} == {"done"}


def test_a_rebuilt_state_does_not_take_copied_tags_of_an_unknown_attempt_for_its_own(make_job, reaper, tmp_path):
    """The same stranger, tagged with an attempt number the journal never saw, and the state lost: the rebuild
    records a tagged process it cannot place only if it is in that attempt's cgroup of this run (a worker
    whose start record was lost is); outside it, the tags were copied, so nothing waits for it."""
    job, decoy = _stranger_with_copied_tags(make_job, reaper, tmp_path, "7", kill_waiter=False)
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        (make_job.run_dir / name).unlink(missing_ok=True)

    r = gputui("run", "--jobs", job, "--simulate", "2", timeout=90)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rebuilt the run's state" in r.stdout and "1 process(es) outside this run's cgroups" in r.stdout
    assert decoy.poll() is None and proc_state(decoy.pid) != psutil.STATUS_STOPPED
    statuses = _status(make_job.run_dir)
    assert {t["status"] for t in statuses.values()} == {"done"} and statuses["shard-0"]["attempts"] < 7


def test_a_rebuild_knows_a_worker_in_a_cgroup_it_made_below_its_attempts_and_never_launches_beside_it(
    make_job, reaper, tmp_path
):
    """A worker that moved itself into a cgroup below its attempt's, its start record lost with the state:
    the rebuild finds it by its tag, places it by its cgroup (at or below `gputui-<run>/<task>.<n>`, not only
    exactly there) and waits for it; its shard is never launched beside it, and its cgroups are removed."""
    from gputui.executors import cgroup as cgroups
    from tests.integration.test_reliability import _cgroups_usable

    if not _cgroups_usable():
        pytest.skip("cgroup v2 with cgroup.kill is not writable here")
    job = make_job(ids=20, num_workers=2, max_parallel=2, sleep=6.0)
    sched = gputui_bg("run", "--jobs", job, log=tmp_path / "first.log")
    reaper.append(sched)
    worker = wait_for(lambda: make_job.running().get("shard-0"), what="shard-0's worker")
    attempt_cgroup = wait_for(lambda: cgroups.of(worker), what="its cgroup")
    assert attempt_cgroup.endswith("/shard-0.1")
    below = os.path.join(attempt_cgroup, "own")
    os.mkdir(below)
    with open(os.path.join(below, "cgroup.procs"), "w") as f:  # as the worker could do itself
        f.write(str(worker))
    for proc in [sched, *psutil.Process(sched.pid).children()]:  # the scheduler and keeper; waiters go on
        proc.send_signal(signal.SIGKILL)
    sched.wait(5)
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        (make_job.run_dir / name).unlink(missing_ok=True)
    for journal in (make_job.run_dir / "attempts.journal", make_job.run_dir / "logs" / "exits.journal"):
        kept = [line for line in journal.read_text().splitlines(True) if line.split()[1] != "shard-0"]
        journal.write_text("".join(kept))  # its start record never reached the journal
    assert not gone(worker), "the worker ended before the rebuild: make it sleep longer"

    r = gputui("run", "--jobs", job, timeout=90)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rebuilt the run's state" in r.stdout and "copied tags" not in r.stdout, r.stdout
    starts = [e["task"] for e in make_job.events() if e["event"] == "start"]
    assert starts.count("shard-0") == 1, starts  # waited for, never launched beside it
    assert {t["status"] for t in _status(make_job.run_dir).values()} == {"done"}
    wait_for(lambda: not os.path.exists(attempt_cgroup), what="its cgroups removed, the one below it too")
