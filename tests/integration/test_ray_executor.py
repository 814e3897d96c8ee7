"""The same job files on a real Ray cluster: a head on 127.0.0.1 with four declared GPUs, started here.

Ray binds its servers to the node's address; with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 that address is
127.0.0.1, so nothing listens beyond loopback. The cluster's tasks run on this machine, so the tests can
see their processes (and their tags) as a user on the node would.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from gputui.rundir.store import Store
from gputui.tui.refresh import Gatherer
from gputui.views.runview import RunView
from tests import ray_cluster
from tests.conftest import gone, gputui, gputui_bg, proc_state, wait_for
from tests.integration.test_job_kinds import EXPECTED, Kinds, results


@pytest.fixture(scope="module")
def ray_env():
    """Every Ray process of these tests (the head, the bridges, a foreign driver) inherits RAY_ENV."""
    with ray_cluster.environment():
        yield


@pytest.fixture(scope="module")
def ray_head(ray_env):
    """A Ray head with 4 fake GPUs on loopback, for the module's tests; its address."""
    with ray_cluster.ray_head(gpus=4) as address:
        yield address


def on_ray(address: str) -> str:
    return f'\n[executor]\nkind = "ray"\naddress = "{address}"\n'


def shard_job(make_job, address: str, **kw) -> Path:
    return make_job(extra=on_ray(address), **kw)


def merged_ids(run_dir: Path) -> Counter:
    with open(run_dir / "outputs" / "merged.csv", newline="") as f:
        return Counter(int(r["data_id"]) for r in csv.DictReader(f))


def test_shards_run_as_ray_tasks_each_on_its_own_gpu(ray_head, make_job):
    job = shard_job(make_job, ray_head, ids=40, num_workers=8, gpus_per_worker=1, max_parallel=4, sleep=0.5)
    r = gputui("run", "--jobs", job, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"the Ray cluster at '{ray_head}' (4 GPU(s), 1 node(s))" in r.stdout
    events = make_job.events()
    starts = [e for e in events if e["event"] == "start"]
    assert len(starts) == 8 and {e["attempt"] for e in starts} == {1}
    assert all(e["gpus"] in {"0", "1", "2", "3"} for e in starts), [e["gpus"] for e in starts]
    # Ray gave each running task its own GPU: no two that ran at once shared one.
    spans = {e["task"]: [e["t"], None, e["gpus"]] for e in starts}
    for e in events:
        if e["event"] == "finish":
            spans[e["task"]][1] = e["t"]
    for a, (s1, e1, g1) in spans.items():
        for b, (s2, e2, g2) in spans.items():
            if a < b and s1 < e2 and s2 < e1:
                assert g1 != g2, f"{a} and {b} ran at once on GPU {g1}"
    assert merged_ids(make_job.run_dir) == Counter({i: 2 for i in range(40)})  # coverage: none lost, none twice
    log = (make_job.run_dir / "logs" / "shard-0.attempt1.log").read_text()
    assert "gputui: on Ray node" in log
    status = json.loads(gputui("status", "--run-dir", make_job.run_dir, "--json").stdout)
    assert all(t["gpu_seconds"] > 0 for t in status["tasks"]), "GPU time is accounted for the GPU Ray gave"
    # The app looking at the ended run says why it shows no GPUs, instead of probing this machine's.
    gatherer = Gatherer(RunView(make_job.run_dir), None, None)
    shown = wait_for(lambda: "bridge has left" in ((r := gatherer.gather()).gpu_error or "") and r, what="left")
    assert shown.gpus == [] and "no GPUs to show" in shown.gpu_error


def test_a_sweep_and_a_pipeline_run_on_ray(ray_head, tmp_path):
    (tmp_path / "init").mkdir()
    kinds = Kinds(tmp_path)
    sweep = kinds.sweep()
    sweep.write_text(sweep.read_text() + on_ray(ray_head))
    run_dir = tmp_path / "sweep-run"
    r = gputui("run", "--jobs", sweep, "--run-dir", run_dir, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    ranked = {row.trial_id: (row.rank, bool(row.promoted)) for row in results(run_dir).itertuples()}
    assert ranked == {trial: (rank, promoted) for trial, (_, _, rank, promoted) in EXPECTED.items()}
    assert set(kinds.starts(run_dir).values()) == {1}

    steps = [
        {"name": "prep"},
        {"name": "train", "after": ["prep"], "needs": ["prep"]},
        {"name": "eval", "after": ["train"]},
    ]
    pipeline = kinds.pipeline(steps)
    pipeline.write_text(pipeline.read_text() + on_ray(ray_head))
    run_dir = tmp_path / "pipeline-run"
    r = gputui("run", "--jobs", pipeline, "--run-dir", run_dir, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert [e["task"] for e in kinds.events(run_dir) if e["event"] == "start"] == ["prep", "train", "eval"]


def test_a_task_killed_on_its_node_is_retried(ray_head, make_job, reaper, tmp_path):
    job = shard_job(make_job, ray_head, ids=20, num_workers=2, gpus_per_worker=1, sleep=4)
    sched = gputui_bg("run", "--jobs", job, log=tmp_path / "run.log")
    reaper.append(sched)
    running = wait_for(lambda: make_job.running().get("shard-0"), timeout=60, what="shard-0 running on Ray")
    os.kill(running, signal.SIGKILL)  # from outside gputui, on the node
    assert sched.wait(120) == 0, (tmp_path / "run.log").read_text()
    attempts = [e["attempt"] for e in make_job.events() if e["event"] == "start" and e["task"] == "shard-0"]
    assert attempts == [1, 2]
    assert merged_ids(make_job.run_dir) == Counter({i: 2 for i in range(20)})


def test_attempts_wait_in_rays_queue_and_their_gpu_time_counts_from_their_start(
    ray_head, make_job, reaper, tmp_path
):
    """More attempts are submitted than the cluster has GPUs for (so Ray starts the next the moment one
    ends); those waiting show as queued, and GPU-hours count only the time each held its GPU."""
    job = shard_job(make_job, ray_head, ids=16, num_workers=8, gpus_per_worker=1, sleep=3)
    job.write_text(job.read_text().replace("max_parallel = 2\n", ""))  # gputui's default for Ray
    sched = gputui_bg("run", "--jobs", job, log=tmp_path / "run.log")
    reaper.append(sched)
    gatherer = Gatherer(RunView(make_job.run_dir), None, None)

    def on_and_queued():
        run = gatherer.gather().run
        live = [v for v in run.tasks if v.task.status == "running"] if run is not None else []
        return (sum(bool(v.placed) for v in live), sum(v.placed == "" for v in live))

    wait_for(lambda: on_and_queued() == (4, 4), timeout=60, what="4 tasks on the 4 GPUs, 4 queued in Ray")
    assert sched.wait(120) == 0, (tmp_path / "run.log").read_text()
    store = Store.open(make_job.run_dir / "state.db")
    try:
        attempts = [store.attempt(f"shard-{i}", 1) for i in range(8)]
    finally:
        store.close()
    assert max(a.duration for a in attempts) > 5.5, "the last four waited for a GPU"
    assert all(2.9 < a.gpu_seconds < 4.5 for a in attempts), [a.gpu_seconds for a in attempts]


def test_the_bridge_killed_while_attempts_run_on_ray_ends_them_and_they_are_retried_through_a_new_one(
    ray_head, make_job, reaper, tmp_path
):
    """No local process stands for an attempt on Ray: the run's bridge holds it, and records its start and
    end in the journal as a waiter would. Killed, the bridge takes its Ray tasks with it (Ray ends the tasks
    of a driver that died, their trees on the node included); the scheduler hears nobody will record their
    end, starts a new bridge and runs them again."""
    job = shard_job(make_job, ray_head, ids=10, num_workers=1, gpus_per_worker=1, sleep=60)
    sched = gputui_bg("run", "--jobs", job, log=tmp_path / "run.log")
    reaper.append(sched)
    first = wait_for(lambda: make_job.running().get("shard-0"), timeout=60, what="shard-0 running on Ray")
    journal = make_job.run_dir / "attempts.journal"
    start = next(line.split() for line in journal.read_text().splitlines() if line.startswith("start shard-0 1 "))
    assert start[5:8] == ["-", "-", "-"], "no local worker for an attempt on Ray"
    bridge = psutil.Process(int(start[3]))
    assert "gputui.executors.ray_bridge" in " ".join(bridge.cmdline()), "the bridge holds the attempt"
    assert not bridge.children(), "nothing of the attempt runs under the bridge"
    bridge.kill()
    wait_for(lambda: gone(first), timeout=30, what="the first attempt's tree ended on its node")
    second = wait_for(lambda: make_job.running().get("shard-0") not in (None, first), timeout=60, what="a retry")
    assert second
    starts = [line.split() for line in journal.read_text().splitlines() if line.startswith("start shard-0 2 ")]
    assert int(starts[0][3]) != bridge.pid, "the retry went to a new bridge"
    gputui("kill", "--run-dir", make_job.run_dir, "--all")
    sched.wait(60)
    store = Store.open(make_job.run_dir / "state.db")
    try:
        first_attempt = store.attempt("shard-0", 1)
    finally:
        store.close()
    assert first_attempt.status == "lost" and "the Ray bridge that held it ended first" in first_attempt.reason


FOREIGN = """
import os, subprocess, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False)

@ray.remote(num_gpus=1)
def same_command(pid_file, argv):
    p = subprocess.Popen(argv)
    with open(pid_file, "w") as f:
        f.write(str(p.pid))
    return p.wait()

print(ray.get(same_command.remote(sys.argv[2], sys.argv[3:])), flush=True)
"""


def test_kill_all_leaves_a_foreign_ray_task_running_the_same_command(ray_head, tmp_path, reaper):
    sleeper = tmp_path / "sleeper"  # the same command for both: /bin/sh <sleeper>
    sleeper.write_text("#!/bin/sh\nsleep 300\n")
    sleeper.chmod(0o755)
    command = [str(sleeper)]
    (tmp_path / "foreign.py").write_text(FOREIGN)
    foreign = subprocess.Popen(
        [sys.executable, tmp_path / "foreign.py", ray_head, tmp_path / "foreign.pid", *command],
        stdout=subprocess.PIPE,
        text=True,
    )
    reaper.append(foreign)
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
        + on_ray(ray_head)
    )
    sched = gputui_bg("run", "--jobs", job, log=tmp_path / "run.log")
    reaper.append(sched)

    def sleepers() -> list[psutil.Process]:
        return [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["/bin/sh", str(sleeper)]]

    wait_for(lambda: len(sleepers()) == 4, timeout=90, what="ours (3) and the foreign task running")
    pid_file = tmp_path / "foreign.pid"
    theirs = int(wait_for(lambda: pid_file.exists() and pid_file.read_text(), what="the foreign task's pid"))
    ours = [p for p in sleepers() if p.pid != theirs]
    r = gputui("kill", "--run-dir", tmp_path / "runs" / "ours", "--all")
    assert r.returncode == 0, r.stdout + r.stderr
    wait_for(lambda: all(gone(p.pid) for p in ours), timeout=30, what="our tasks ended")
    assert proc_state(theirs) not in ("gone", psutil.STATUS_ZOMBIE), "the foreign Ray task must be left alone"
    assert foreign.poll() is None
    sched.wait(60)


def test_scheduler_sigkilled_then_rerun_reattaches_to_its_ray_tasks(ray_head, make_job, reaper, tmp_path):
    job = shard_job(make_job, ray_head, ids=60, num_workers=6, gpus_per_worker=1, max_parallel=2, sleep=2)
    sched = gputui_bg("run", "--jobs", job, log=tmp_path / "first.log")
    reaper.append(sched)
    wait_for(
        lambda: sum(e["event"] == "finish" for e in make_job.events()) >= 1 and len(make_job.running()) == 2,
        timeout=90,
        what="a shard done, two running",
    )
    sched.send_signal(signal.SIGKILL)
    sched.wait(5)
    alive = make_job.running()
    assert all(psutil.pid_exists(p) for p in alive.values()), "Ray tasks must outlive their scheduler"
    r = gputui("run", "--jobs", job, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "re-adopted" in r.stdout
    starts = Counter(e["task"] for e in make_job.events() if e["event"] == "start")
    assert set(starts.values()) == {1}, f"every shard ran once: {starts}"
    assert merged_ids(make_job.run_dir) == Counter({i: 2 for i in range(60)})


def test_a_deleted_run_dir_under_ray_tasks_is_a_new_run_not_fed_their_ends(ray_head, make_job, reaper, tmp_path):
    """Scheduler killed, run directory deleted, same command again: a new run, with a bridge of its own. The
    old run's tasks end on the old bridge, which must not record them as the new run's attempts of the
    same names (which would be marked done before they ran)."""
    job = shard_job(make_job, ray_head, ids=20, num_workers=2, gpus_per_worker=1, max_parallel=2, sleep=6)
    sched = gputui_bg("run", "--jobs", job, log=tmp_path / "first.log")
    reaper.append(sched)
    wait_for(lambda: len(make_job.running()) == 2, timeout=90, what="both shards running")
    sched.send_signal(signal.SIGKILL)
    sched.wait(5)
    old = set(make_job.running().values())
    shutil.rmtree(make_job.run_dir)
    rerun = time.time()
    r = gputui("run", "--jobs", job, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    finished = {e["task"] for e in make_job.events() if e["event"] == "finish" and e["pid"] not in old}
    assert finished == {"shard-0", "shard-1"}, "each shard is done once its own new attempt finished"
    assert all(e["t"] > rerun for e in make_job.events() if e["event"] == "finish" and e["pid"] not in old)
    assert merged_ids(make_job.run_dir) == Counter({i: 2 for i in range(20)})


def test_pause_and_resume_stop_and_continue_the_tree_on_its_node(ray_head, make_job, reaper, tmp_path):
    job = shard_job(make_job, ray_head, ids=10, num_workers=1, gpus_per_worker=1, sleep=30)
    sched = gputui_bg("run", "--jobs", job, "--simulate", "4x24", log=tmp_path / "run.log")
    reaper.append(sched)
    pid = wait_for(lambda: make_job.running().get("shard-0"), timeout=60, what="shard-0 running on Ray")
    # The app shows the cluster's GPUs, grouped by node, read on the node (simulated there, like the run).
    gatherer = Gatherer(RunView(make_job.run_dir), None, None)
    shown = wait_for(lambda: (r := gatherer.gather()).gpus and r, timeout=30, what="the cluster's GPU panels")
    node = socket.gethostname()
    assert [g.where for g in shown.gpus] == [f"{node} GPU {i}" for i in range(4)], shown.gpus
    assert [g.index for g in shown.gpus] == [0, 1, 2, 3] and all(g.memory_total == 24 * 2**30 for g in shown.gpus)
    # The table's GPUs column and the panel of the GPU Ray gave say which task holds it.
    placed = {v.task.id: v.placed for v in shown.run.tasks}["shard-0"]
    gpu = next(e["gpus"] for e in make_job.events() if e["event"] == "start" and e["task"] == "shard-0")
    assert placed == f"{node}:{gpu}"
    assert shown.run.gpu_holders(shown.gpus) == {int(gpu): ["shard-0"]}
    r = gputui("pause", "--run-dir", make_job.run_dir, "shard-0")
    assert r.returncode == 0, r.stdout + r.stderr
    wait_for(lambda: proc_state(pid) == psutil.STATUS_STOPPED, timeout=10, what="the worker stopped on its node")
    status = json.loads(gputui("status", "--run-dir", make_job.run_dir, "--json").stdout)
    assert {t["id"]: t["status"] for t in status["tasks"]}["shard-0"] == "paused"
    r = gputui("resume", "--run-dir", make_job.run_dir, "shard-0")
    assert r.returncode == 0, r.stdout + r.stderr
    wait_for(lambda: proc_state(pid) != psutil.STATUS_STOPPED, timeout=10, what="the worker running again")
    gputui("kill", "--run-dir", make_job.run_dir, "--all")
    wait_for(lambda: gone(pid), timeout=30, what="the worker killed")
    sched.wait(60)


def test_a_private_cluster_starts_for_the_run_and_stops_after_it(ray_env, make_job, tmp_path):
    executor = '\n[executor]\nkind = "ray"\naddress = "local"\nnum_gpus = 2\n'
    job = make_job(extra=executor, ids=8, num_workers=2, gpus_per_worker=1)
    r = gputui("run", "--jobs", job, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "(2 GPU(s), 1 node(s))" in r.stdout
    assert merged_ids(make_job.run_dir) == Counter({i: 2 for i in range(8)})

    def bridges() -> list[psutil.Process]:
        return [
            p
            for p in psutil.process_iter(["cmdline"])
            if "gputui.executors.ray_bridge" in (line := " ".join(p.info["cmdline"] or []))
            and str(make_job.run_dir) in line
        ]

    wait_for(lambda: not bridges(), timeout=60, what="the run's Ray bridge (and its private cluster) gone")


def test_an_unreachable_cluster_is_a_clear_error(make_job):
    port = ray_cluster.free_port()  # nothing listens there
    job = shard_job(make_job, f"127.0.0.1:{port}", ids=4, num_workers=1, gpus_per_worker=1)
    r = gputui("run", "--jobs", job, timeout=120)
    assert r.returncode != 0
    assert f"{job}: [executor]: cannot reach the Ray cluster at '127.0.0.1:{port}'" in r.stderr + r.stdout
    assert "Traceback" not in r.stderr + r.stdout


def test_a_task_asking_more_gpus_than_any_node_has_is_refused_before_launch(ray_head, make_job):
    job = shard_job(make_job, ray_head, ids=4, num_workers=1, gpus_per_worker=5)
    r = gputui("run", "--jobs", job, timeout=120)
    assert r.returncode != 0
    assert "gpus_per_worker = 5, but no node of the Ray cluster" in r.stderr + r.stdout
    assert "the largest has 4" in r.stderr + r.stdout
    assert not make_job.events(), "nothing was launched"
