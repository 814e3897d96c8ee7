"""What only Ray shows, on a real Ray cluster: a head on 127.0.0.1 with four declared GPUs, the session's.
What every executor guarantees is in tests/contract/ (run there against Ray too).

Ray binds its servers to the node's address; with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 that address is
127.0.0.1, so nothing listens beyond loopback. The cluster's tasks run on this machine, so the tests can
see their processes (and their tags) as a user on the node would.
"""

from __future__ import annotations

import csv
import json
import shutil
import signal
import socket
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from gputui.rundir.store import Store
from gputui.tui.refresh import Gatherer
from gputui.views.runview import RunView
from tests import ray_cluster
from tests.conftest import gone, gputui, gputui_bg, wait_for


@pytest.fixture(scope="module")
def ray_env():
    """Every Ray process of these tests (the head, the bridges, a foreign driver) inherits RAY_ENV."""
    with ray_cluster.environment():
        yield


@pytest.fixture(scope="module")
def ray_head(ray_env, shared_ray_head):
    """The session's Ray head with 4 fake GPUs on loopback (tests/conftest.py); its address."""
    return shared_ray_head


def on_ray(address: str) -> str:
    return f'\n[executor]\nkind = "ray"\naddress = "{address}"\n'


def shard_job(make_job, address: str, **kw) -> Path:
    return make_job(extra=on_ray(address), **kw)


def merged_ids(run_dir: Path) -> Counter:
    with open(run_dir / "outputs" / "merged.csv", newline="") as f:
        return Counter(int(r["data_id"]) for r in csv.DictReader(f))


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


def test_a_task_queued_in_ray_says_so_in_status_json_until_a_node_starts_it(ray_head, make_job, reaper, tmp_path):
    """A submitted task runs as far as the run goes; while it waits in Ray's queue its reason says so, and once
    its runner on a node has started it the reason is gone (issue 25)."""
    job = shard_job(make_job, ray_head, ids=6, num_workers=3, gpus_per_worker=2, sleep=4)
    job.write_text(job.read_text().replace("max_parallel = 2\n", ""))  # gputui's default for Ray: all 3 sent
    sched = gputui_bg("run", "--jobs", job, log=tmp_path / "run.log")
    reaper.append(sched)

    def tasks() -> dict[str, dict]:
        r = gputui("status", "--run-dir", make_job.run_dir, "--json")
        return {t["id"]: t for t in json.loads(r.stdout)["tasks"]} if r.returncode in (0, 1) else {}

    def queued() -> list[str]:
        return [i for i, t in tasks().items() if t["status"] == "running" and t["reason"] == "queued in Ray"]

    waiting = wait_for(queued, timeout=90, interval=0.2, what="a task queued in Ray saying so")[0]
    started = lambda: waiting in make_job.running() and tasks()[waiting]["reason"] is None  # noqa: E731
    wait_for(started, timeout=90, interval=0.2, what="its reason gone once a node started it")
    assert sched.wait(120) == 0, (tmp_path / "run.log").read_text()


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


def test_the_app_shows_the_clusters_gpus_by_node_and_which_task_holds_each(ray_head, make_job, reaper, tmp_path):
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
