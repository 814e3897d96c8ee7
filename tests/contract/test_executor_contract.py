"""What every executor guarantees, written once and run against each (`local`, `ray`, `slurm`: see
backends.py): real job files through the `gputui` CLI, real processes and signals, on this machine.

A new executor gets its specification here: a Backend for it in backends.py, and these tests pass.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import textwrap
from collections import Counter
from pathlib import Path

import psutil
import pytest

from tests.conftest import gone, gputui, proc_state, wait_for
from tests.contract.backends import another_runs_tags, look_alike
from tests.integration.test_crash_resume import _finished_once_and_never_restarted
from tests.integration.test_job_kinds import EXPECTED, Kinds, results


def merged_ids(run_dir: Path) -> Counter:
    with open(run_dir / "outputs" / "merged.csv", newline="") as f:
        return Counter(int(r["data_id"]) for r in csv.DictReader(f))


def statuses(run_dir: Path) -> dict[str, dict]:
    return {t["id"]: t for t in json.loads(gputui("status", "--run-dir", run_dir, "--json").stdout)["tasks"]}


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# -- running ---------------------------------------------------------------------------------------
def test_shards_run_each_on_a_gpu_of_its_own_and_every_id_is_merged_once(backend, make_job):
    job = backend.job(make_job, ids=40, num_workers=8, gpus_per_worker=1, max_parallel=8, sleep=0.5)
    r = backend.run(job)
    assert r.returncode == 0, r.stdout + r.stderr
    assert backend.says_gpus in r.stdout
    events = make_job.events()
    starts = [e for e in events if e["event"] == "start"]
    assert len(starts) == 8 and {e["attempt"] for e in starts} == {1}
    assert all(e["gpus"] in {"0", "1", "2", "3"} for e in starts), [e["gpus"] for e in starts]
    # Each running task had its own GPU: no two that ran at once shared one.
    spans = {e["task"]: [e["t"], None, e["gpus"]] for e in starts}
    for e in events:
        if e["event"] == "finish":
            spans[e["task"]][1] = e["t"]
    for a, (s1, e1, g1) in spans.items():
        for b, (s2, e2, g2) in spans.items():
            if a < b and s1 < e2 and s2 < e1:
                assert g1 != g2, f"{a} and {b} ran at once on GPU {g1}"
    assert merged_ids(make_job.run_dir) == Counter({i: 2 for i in range(40)})  # coverage: none lost, none twice
    assert all(t["gpu_seconds"] > 0 for t in statuses(make_job.run_dir).values()), "GPU time of the GPU it got"
    backend.check_shard_run(make_job.run_dir, r.stdout, starts)


def test_a_sweep_and_a_pipeline_run(backend, tmp_path):
    (tmp_path / "init").mkdir()
    kinds = Kinds(tmp_path)
    sweep = backend.add_to(kinds.sweep())
    sweep_dir = tmp_path / "sweep-run"
    r = backend.run(sweep, "--run-dir", sweep_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    ranked = {row.trial_id: (row.rank, bool(row.promoted)) for row in results(sweep_dir).itertuples()}
    assert ranked == {trial: (rank, promoted) for trial, (_, _, rank, promoted) in EXPECTED.items()}
    assert set(kinds.starts(sweep_dir).values()) == {1}

    steps = [
        {"name": "prep"},
        {"name": "train", "after": ["prep"], "needs": ["prep"]},
        {"name": "eval", "after": ["train"]},
    ]
    pipeline = backend.add_to(kinds.pipeline(steps))
    run_dir = tmp_path / "pipeline-run"
    r = backend.run(pipeline, "--run-dir", run_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    assert [e["task"] for e in kinds.events(run_dir) if e["event"] == "start"] == ["prep", "train", "eval"]
    backend.check_sweep_and_pipeline(sweep_dir, r.stdout)


# -- refusals --------------------------------------------------------------------------------------
def test_a_task_asking_more_gpus_than_any_node_has_is_refused_before_launch(backend, make_job):
    job = backend.job(make_job, ids=4, num_workers=1, gpus_per_worker=5)
    r = backend.run(job, timeout=120)
    assert r.returncode != 0
    for said in backend.refuses_too_many_gpus:
        assert said in r.stderr + r.stdout
    assert "Traceback" not in r.stderr + r.stdout
    assert not make_job.events(), "nothing was launched"


# Only a backend reached over the network can be unreachable: the local executor is this machine.
@pytest.mark.parametrize("backend", ["ray", "slurm"], indirect=True)
def test_an_unreachable_backend_is_a_clear_error(backend, make_job, tmp_path):
    job = backend.job(make_job, ids=4, num_workers=1, gpus_per_worker=1)
    env, said = backend.unreachable(job, tmp_path)
    r = backend.run(job, timeout=200, env=os.environ | env)
    assert r.returncode != 0
    assert said in r.stderr + r.stdout
    assert "Traceback" not in r.stderr + r.stdout
    assert not make_job.events(), "nothing was launched"


# -- attempts that die -----------------------------------------------------------------------------
def test_an_attempt_killed_from_outside_is_retried(backend, make_job, reaper, tmp_path):
    job = backend.job(make_job, ids=20, num_workers=2, gpus_per_worker=1, sleep=4)
    sched = backend.run_bg(job, log=tmp_path / "run.log")
    reaper.append(sched)
    running = wait_for(lambda: make_job.running().get("shard-0"), timeout=60, what="shard-0 running")
    os.kill(running, signal.SIGKILL)  # from outside gputui, on the node
    assert sched.wait(120) == 0, (tmp_path / "run.log").read_text()
    said = (tmp_path / "run.log").read_text()
    assert "killed by SIGKILL" in said and "attempt 2/3" in said, said
    attempts = [e["attempt"] for e in make_job.events() if e["event"] == "start" and e["task"] == "shard-0"]
    assert attempts == [1, 2]
    assert statuses(make_job.run_dir)["shard-0"]["attempts"] == 2
    assert merged_ids(make_job.run_dir) == Counter({i: 2 for i in range(20)})


def test_an_attempt_past_its_time_limit_is_ended_as_a_kill_ends_it_and_fails_without_retries(backend, make_job):
    """[job].time_limit_s: its tree ended through the executor (SIGTERM, SIGKILL after the grace), counted from
    when its node started it; failed with the limit as its reason, not retried (as Slurm's TIMEOUT)."""
    job = backend.job(make_job, ids=4, num_workers=2, gpus_per_worker=1, sleep=60, stop_grace_s=1)
    job.write_text(job.read_text().replace("stop_grace_s = 1\n", "stop_grace_s = 1\ntime_limit_s = 2\n", 1))
    r = backend.run(job, "--quiet", timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    for t in statuses(make_job.run_dir).values():
        assert t["status"] == "failed" and t["attempts"] == 1, t
        assert t["reason"].startswith("time limit (2s) reached after 2s"), t
    assert all(gone(pid) for pid in make_job.running().values())
    assert not any(e["event"] == "finish" for e in make_job.events())


# -- the scheduler dies ----------------------------------------------------------------------------
def test_a_scheduler_sigkilled_mid_run_is_rerun_adopts_its_attempts_and_runs_each_shard_once(
    backend, make_job, reaper, tmp_path
):
    job = backend.job(make_job, ids=60, num_workers=6, gpus_per_worker=1, max_parallel=2, sleep=2)
    sched = backend.run_bg(job, log=tmp_path / "first.log")
    reaper.append(sched)
    wait_for(
        lambda: sum(e["event"] == "finish" for e in make_job.events()) >= 1 and len(make_job.running()) == 2,
        timeout=90,
        what="a shard done, two running",
    )
    sched.send_signal(signal.SIGKILL)
    sched.wait(5)
    alive = make_job.running()
    assert alive and all(psutil.pid_exists(p) for p in alive.values()), "attempts must outlive their scheduler"
    r = backend.run(job)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "re-adopted" in r.stdout
    starts, finishes = _finished_once_and_never_restarted(make_job.events())
    assert len(finishes) == 6
    assert set(starts.values()) == {1}, f"the running ones were adopted, not started again: {starts}"
    assert merged_ids(make_job.run_dir) == Counter({i: 2 for i in range(60)})


def test_a_scheduler_sigkilled_again_and_again_still_runs_each_shard_once(backend, make_job, reaper, tmp_path):
    job = backend.job(make_job, ids=30, num_workers=6, gpus_per_worker=1, max_parallel=3, sleep=0.4)
    for i in range(4):
        sched = backend.run_bg(job, log=tmp_path / f"run{i}.log")
        reaper.append(sched)
        n = len(make_job.events())
        wait_for(lambda n=n, s=sched: len(make_job.events()) > n or s.poll() is not None, timeout=90,
                 what="progress")  # fmt: skip
        if sched.poll() is not None:
            break
        sched.send_signal(signal.SIGKILL)
        sched.wait(5)
    r = backend.run(job)
    assert r.returncode == 0, r.stdout + r.stderr
    _, finishes = _finished_once_and_never_restarted(make_job.events())
    assert len(finishes) == 6
    assert merged_ids(make_job.run_dir) == Counter({i: 2 for i in range(30)})


# -- control verbs ---------------------------------------------------------------------------------
@pytest.fixture
def live_run(backend, make_job, reaper, tmp_path):
    """A live scheduler with two long-running workers (each with a child and a child in its own session, as
    torchrun ranks and vLLM engines start): (scheduler, worker pid per task, their children per task)."""
    job = backend.job(
        make_job,
        ids=20,
        num_workers=2,
        gpus_per_worker=1,
        max_parallel=2,
        sleep=600,
        stop_grace_s=1,
        worker_args=f"--spawn-children --children-file {tmp_path}/children-{{task_id}}.json",
    )
    sched = backend.run_bg(job, log=tmp_path / "sched.log")
    reaper.append(sched)
    pids = wait_for(lambda: len(make_job.running()) == 2 and make_job.running(), timeout=60, what="two workers")
    children = {t: wait_for(lambda t=t: read_json(tmp_path / f"children-{t}.json"), what="children") for t in pids}
    yield sched, pids, children
    gputui("kill", "--run-dir", make_job.run_dir, "--all")
    sched.wait(60)


def test_pause_and_resume_stop_and_continue_the_whole_tree(backend, live_run, make_job):
    sched, pids, children = live_run
    r = gputui("pause", "--run-dir", make_job.run_dir, "shard-0")
    assert r.returncode == 0, r.stdout + r.stderr
    assert backend.says_paused in r.stdout
    tree = [pids["shard-0"], children["shard-0"][0]]  # the child that left the session: the test below
    wait_for(lambda: all(proc_state(p) == psutil.STATUS_STOPPED for p in tree), what="the tree stopped (state T)")
    assert proc_state(pids["shard-1"]) != psutil.STATUS_STOPPED, "the other task is untouched"
    assert statuses(make_job.run_dir)["shard-0"]["status"] == "paused"
    backend.check_paused(make_job.run_dir, "shard-0", True)

    r = gputui("resume", "--run-dir", make_job.run_dir, "shard-0")
    assert r.returncode == 0, r.stdout + r.stderr
    wait_for(lambda: all(proc_state(p) != psutil.STATUS_STOPPED for p in tree), what="the tree continued")
    assert statuses(make_job.run_dir)["shard-0"]["status"] == "running"
    backend.check_paused(make_job.run_dir, "shard-0", False)


def test_kill_reaches_the_whole_tree_and_nothing_else(backend, live_run, make_job, reaper):
    sched, pids, children = live_run
    argv = psutil.Process(pids["shard-0"]).cmdline()  # on the node, the same command line, not ours
    decoys = [look_alike(argv, None, reaper), look_alike(argv, another_runs_tags(), reaper)]
    r = gputui("kill", "--run-dir", make_job.run_dir, "shard-0")
    assert r.returncode == 0, r.stdout + r.stderr
    for pid in (pids["shard-0"], children["shard-0"][0]):  # the child that left the session: the test below
        wait_for(lambda pid=pid: gone(pid), what=f"pid {pid} gone")
    assert not gone(pids["shard-1"]) and not any(gone(p) for p in children["shard-1"])
    wait_for(lambda: statuses(make_job.run_dir)["shard-0"]["status"] == "killed", what="killed status")
    # A killed task stays killed: it is not retried behind the user's back (the decoys record starts too).
    ours = [e for e in make_job.events() if e["pid"] not in {d.pid for d in decoys}]
    assert sum(e["event"] == "start" and e["task"] == "shard-0" for e in ours) == 1

    r = gputui("kill", "--run-dir", make_job.run_dir, "--all")
    assert r.returncode == 0, r.stdout + r.stderr
    for pid in (pids["shard-1"], children["shard-1"][0]):
        wait_for(lambda pid=pid: gone(pid), what=f"pid {pid} gone")
    for d in decoys:
        assert d.poll() is None and proc_state(d.pid) != psutil.STATUS_STOPPED, "a decoy was signalled"
    # With every task killed, the scheduler ends the run and says so.
    assert sched.wait(60) == 1
    assert {t["status"] for t in statuses(make_job.run_dir).values()} == {"killed"}
    backend.check_nothing_left(make_job.run_dir)


# A child that starts its own session (as torchrun ranks and vLLM engines do) leaves its parent's process group.
# The local executor still reaches it (each attempt has a cgroup of its own, or a subreaper); on Ray and Slurm the
# runner on the node reaches it by the attempt's tags and the runner's mark in its environment (node_tree.py).
def test_pause_resume_and_kill_reach_a_child_that_left_the_session(backend, live_run, make_job):
    """Each wait for the child starts once its worker was reached: a few seconds are plenty then."""
    sched, pids, children = live_run
    worker, own_session = pids["shard-0"], children["shard-0"][1]
    assert os.getsid(own_session) != os.getsid(worker)  # it really escaped the session
    assert gputui("pause", "--run-dir", make_job.run_dir, "shard-0").returncode == 0
    wait_for(lambda: proc_state(worker) == psutil.STATUS_STOPPED, what="the worker stopped")
    wait_for(lambda: proc_state(own_session) == psutil.STATUS_STOPPED, timeout=3, what="the child stopped")
    assert gputui("resume", "--run-dir", make_job.run_dir, "shard-0").returncode == 0
    wait_for(lambda: proc_state(worker) != psutil.STATUS_STOPPED, what="the worker continued")
    wait_for(lambda: proc_state(own_session) != psutil.STATUS_STOPPED, timeout=3, what="the child continued")
    assert gputui("kill", "--run-dir", make_job.run_dir, "shard-0").returncode == 0
    wait_for(lambda: gone(worker), what="the worker gone")
    wait_for(lambda: gone(own_session), timeout=5, what="the child that left the session gone")
    assert gputui("kill", "--run-dir", make_job.run_dir, "--all").returncode == 0  # the other task's, too
    wait_for(lambda: gone(pids["shard-1"]), what="the other worker gone")
    wait_for(lambda: gone(children["shard-1"][1]), timeout=5, what="the other child that left the session gone")


def test_kill_all_leaves_a_foreign_look_alike_running_the_same_command(backend, tmp_path, reaper):
    sleeper = tmp_path / "sleeper"  # the same command for both: /bin/sh <sleeper>
    sleeper.write_text("#!/bin/sh\nsleep 300\n")
    sleeper.chmod(0o755)
    argv = ["/bin/sh", str(sleeper)]
    foreign = backend.foreign_twin(argv, tmp_path, reaper)
    theirs = foreign.pids()
    (tmp_path / "ids.csv").write_text("data_id\n" + "".join(f"{i}\n" for i in range(3)))
    job = tmp_path / "job.toml"
    job.write_text(
        textwrap.dedent(f"""
        [job]
        name = "ours"
        command = "{sleeper}"
        stop_grace_s = 2
        [shards]
        input = "ids.csv"
        shard_size = 1
        [resources]
        gpus_per_worker = 1
        """)
        + backend.executor
    )
    sched = backend.run_bg(job, log=tmp_path / "run.log")
    reaper.append(sched)

    def ours() -> list[int]:
        found = psutil.process_iter(["cmdline"])
        return [p.pid for p in found if p.info["cmdline"] == argv and p.pid not in theirs]

    mine = wait_for(lambda: len(ours()) == 3 and ours(), timeout=90, what="our 3 tasks running beside theirs")
    run_dir = tmp_path / "runs" / "ours"
    r = gputui("kill", "--run-dir", run_dir, "--all")
    assert r.returncode == 0, r.stdout + r.stderr
    wait_for(lambda: all(gone(p) for p in mine), timeout=30, what="our tasks ended")
    backend.check_nothing_left(run_dir)
    for pid in theirs:
        assert proc_state(pid) not in ("gone", psutil.STATUS_ZOMBIE, psutil.STATUS_STOPPED), "it was signalled"
    foreign.check_untouched()
    assert sched.wait(60) == 1
    assert {t["status"] for t in statuses(run_dir).values()} == {"killed"}
    foreign.stop()
