"""Tasks sharing a GPU ([resources] share_gpu = true) with real workers on simulated GPUs: one per GPU until the
job's memory is measured, then several on one GPU as their measured peaks fit, never beside another run's task,
and one per GPU again for the rest of the run after a task ran out of GPU memory sharing one."""

from __future__ import annotations

import json
import signal

from gputui.engine.accounting import Meter
from gputui.engine.packing import Packing
from gputui.engine.rules.packing import Measured
from gputui.engine.run_state import RunState
from gputui.gpus.probe import GIB
from gputui.jobs.loader import load_jobspec
from gputui.rundir.meta import read_meta
from gputui.rundir.store import Store
from tests.conftest import JobFactory, gputui, gputui_bg, keeper_of, wait_for

SHARED = "memory_per_worker_gb = 4\nshare_gpu = true"  # each worker shows 4 GB on its simulated GPU


def _sharing_job(make_job, **kw):
    job = make_job(gpus_per_worker=1, max_parallel=8, **kw)
    job.write_text(job.read_text().replace("max_parallel = 8", f"max_parallel = 8\n{SHARED}"))
    return job


def _intervals(factory: JobFactory) -> list[dict]:
    """Each worker's run: task, attempt, gpus, start and end time (end: its finish or fail)."""
    runs: dict[tuple[str, int], dict] = {}
    for e in factory.events():
        key = (e["task"], e["attempt"])
        if e["event"] == "start":
            runs[key] = {"task": e["task"], "attempt": e["attempt"], "gpus": e["gpus"], "start": e["t"]}
        else:
            runs[key]["end"] = e["t"]
    return sorted(runs.values(), key=lambda r: r["start"])


def _reasons(run_dir, word: str) -> list[str]:
    r = gputui("status", "--run-dir", run_dir, "--json")
    tasks = json.loads(r.stdout)["tasks"] if r.returncode in (0, 1) else []
    return [t["reason"] for t in tasks if word in (t.get("reason") or "")]


def _most_at_once(runs: list[dict]) -> int:
    edges = sorted([(r["start"], 1) for r in runs] + [(r["end"], -1) for r in runs])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def test_once_measured_several_tasks_share_the_gpu_as_their_peaks_fit(make_job, tmp_path, reaper):
    job = _sharing_job(make_job, num_workers=6, sleep=2.0)
    sched = gputui_bg("run", "--jobs", job, "--simulate", "1x24", log=tmp_path / "run.log")
    reaper.append(sched)
    waits = wait_for(lambda: _reasons(make_job.run_dir, "max_tasks_per_gpu"), timeout=60, what="a wait")
    assert waits == ["needs 1 GPU, 0 free: GPU 0 in use by this run (4 tasks, max_tasks_per_gpu 4)"]
    assert sched.wait(60) == 0
    out = (tmp_path / "run.log").read_text()

    runs = _intervals(make_job)
    assert {run["gpus"] for run in runs} == {"0"} and len(runs) == 6
    first, rest = runs[0], runs[1:]
    assert all(run["start"] >= first["end"] for run in rest)  # alone until measured
    # 24 GB, 4 GiB measured + margin = 4.9 GiB a task: four fit together, the cap (max_tasks_per_gpu = 4); three
    # where the first one's process was still ending as they went on (it counts as one of the four)
    assert _most_at_once(rest) in (3, 4)
    assert (
        "placing by measured peak 4.0 GiB (+ margin: 4.9 GiB a task, from 1 done attempt) instead of "
        "memory_per_worker_gb 4" in out
    )
    assert "on GPU 0 (sharing it with 3 others)" in out
    status = gputui("status", "--run-dir", make_job.run_dir).stdout  # what the run plans by, asked afterwards
    assert (
        "memory: placing by measured peak 4.0 GiB (+ margin: 4.9 GiB a task, from 6 done attempts) instead of "
        "memory_per_worker_gb 4; tasks share GPUs" in status
    )


def test_as_many_share_a_gpu_as_its_memory_holds_and_the_others_say_why_they_wait(make_job, tmp_path, reaper):
    job = _sharing_job(make_job, num_workers=5, sleep=2.0)
    sched = gputui_bg("run", "--jobs", job, "--simulate", "1x12", log=tmp_path / "run.log")
    reaper.append(sched)
    waits = wait_for(lambda: _reasons(make_job.run_dir, "too little memory"), timeout=60, what="a wait for memory")
    assert waits[0] == (
        "needs 1 GPU, 0 free: GPU 0 in use by this run (2 tasks; too little memory left for another: planned "
        "4.9 GiB a task: measured peak 4.0 GiB + margin)"
    )
    assert sched.wait(60) == 0
    runs = _intervals(make_job)
    assert _most_at_once(runs[1:]) == 2  # 12 GB: two of 4.9 GiB planned, not three


def test_without_share_gpu_one_task_per_gpu_as_before(make_job):
    job = make_job(gpus_per_worker=1, max_parallel=8, num_workers=3, sleep=0.5)
    r = gputui("run", "--jobs", job, "--simulate", "1x24")
    assert r.returncode == 0, r.stdout + r.stderr
    assert _most_at_once(_intervals(make_job)) == 1
    assert "placing by measured" not in r.stdout and "sharing it" not in r.stdout
    assert "memory:" not in gputui("status", "--run-dir", make_job.run_dir).stdout  # a job silent on memory


def test_another_run_never_gets_a_gpu_the_run_shares(make_job, tmp_path, reaper):
    job = _sharing_job(make_job, num_workers=5, sleep=3.0)
    sched = gputui_bg("run", "--jobs", job, "--simulate", "shared:1x24", log=tmp_path / "a.log")
    reaper.append(sched)
    wait_for(lambda: len(make_job.running()) >= 2, timeout=60, what="tasks sharing GPU 0")

    other = JobFactory(tmp_path / "b")
    (tmp_path / "b").mkdir()
    b_job = other(gpus_per_worker=1, max_parallel=1, num_workers=1, sleep=0.2)
    r = gputui("run", "--jobs", b_job, "--simulate", "shared:1x24")
    assert r.returncode == 0, r.stdout + r.stderr
    assert sched.wait(60) == 0

    mine, theirs = _intervals(make_job), _intervals(other)
    assert len(mine) == 5 and len(theirs) == 1
    for run in mine:  # never on the GPU at once
        assert run["end"] <= theirs[0]["start"] or run["start"] >= theirs[0]["end"], (run, theirs)
    assert "waiting for GPUs: needs 1 GPU, 0 free: GPU 0 held by" in r.stdout


def test_a_shared_gpu_stays_claimed_while_a_task_on_it_lives_after_its_scheduler_died(make_job, tmp_path, reaper):
    job = _sharing_job(make_job, num_workers=5, sleep=4.0)
    sched = gputui_bg("run", "--jobs", job, "--simulate", "shared:1x24", log=tmp_path / "a.log")
    reaper.append(sched)
    wait_for(lambda: len(make_job.running()) == 4, timeout=60, what="four tasks sharing GPU 0")
    keeper = keeper_of(sched)
    sched.send_signal(signal.SIGKILL)  # the scheduler's own copy of the claim goes with it
    keeper.send_signal(signal.SIGKILL)
    sched.wait(5)

    other = JobFactory(tmp_path / "b")
    (tmp_path / "b").mkdir()
    r = gputui("run", "--jobs", other(gpus_per_worker=1, num_workers=1, sleep=0.2), "--simulate", "shared:1x24")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "waiting for GPUs: needs 1 GPU, 0 free: GPU 0 held by" in r.stdout
    (theirs,) = _intervals(other)
    orphans = [run for run in _intervals(make_job) if run["attempt"] == 1 and run["task"] != "shard-0"]
    assert len(orphans) == 4 and all(run["end"] <= theirs["start"] for run in orphans)  # never beside them

    r = gputui("run", "--jobs", job, "--simulate", "shared:1x24")  # the run started again: nothing runs twice
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(run["task"] for run in _intervals(make_job)) == [f"shard-{i}" for i in range(5)]


def test_running_out_of_memory_sharing_a_gpu_turns_sharing_off_for_the_rest_of_the_run(make_job):
    oom = "--fail-mode oom --fail-attempts 1 --fail-tasks shard-2 --fail-early"
    job = _sharing_job(make_job, num_workers=6, sleep=1.5, worker_args=oom)
    r = gputui("run", "--jobs", job, "--simulate", "1x24")
    assert r.returncode == 0, r.stdout + r.stderr

    line = "shard-2 ran out of GPU memory sharing GPU 0 with 3 others: one task per GPU from now on"
    assert r.stdout.count(line) == 1
    runs = _intervals(make_job)
    assert {run["gpus"] for run in runs} == {"0"} and len(runs) == 7
    packed = {(run["task"], run["attempt"]) for run in runs[1:5]}  # shard-0 alone, then four together
    assert ("shard-2", 1) in packed
    after = [run for run in runs[1:] if (run["task"], run["attempt"]) not in packed]
    assert {(run["task"], run["attempt"]) for run in after} == {("shard-2", 2), ("shard-5", 1)}
    for run in after:  # its retry, and every task after it, alone on the GPU
        assert all(o is run or o["end"] <= run["start"] or o["start"] >= run["end"] for o in runs), run
    store = Store.open(make_job.run_dir / "state.db", readonly=True)
    try:
        assert read_meta(store).packing_off == line
        events = [tuple(e) for e in store.read("SELECT kind, message FROM events WHERE kind = 'packing'")]
        # A scheduler started again reads it all back: the switch (no GPU shared), the measured peaks.
        again = Packing(load_jobspec(job), store, Meter(True), RunState(store))
        assert (again.off, again.keeping, again.sharing) == (line, False, False)
        assert store.done_peaks() == (6, 4 * GIB) and again.measured() == Measured(4 * GIB, 6)
    finally:
        store.close()
    assert events == [("packing", line)]
    status = gputui("status", "--run-dir", make_job.run_dir).stdout
    assert f"; sharing off: {line}" in status.replace("\n", " ")
    as_json = json.loads(gputui("status", "--json", "--run-dir", make_job.run_dir).stdout)
    assert as_json["memory"].endswith(f"; sharing off: {line}")
