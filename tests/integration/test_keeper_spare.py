"""`gputui run` starts its keeper as its first step (executors/keeper_spare.py), so the keeper's Python start-up
overlaps the scheduler's: the run's keeper is that one, in the job's folder; a run refused leaves none behind."""

from __future__ import annotations

import psutil

from tests.conftest import gputui, gputui_bg, keeper_of, wait_for


def _spares() -> set[int]:
    found = set()
    for p in psutil.process_iter(["pid", "cmdline"]):
        if "gputui.executors.keeper --spare" in " ".join(p.info["cmdline"] or ()):
            found.add(p.info["pid"])
    return found


def test_the_runs_keeper_is_the_one_started_with_gputui_run(make_job, reaper, tmp_path):
    job = make_job(num_workers=2, sleep=3)
    sched = gputui_bg("run", "--jobs", job, log=tmp_path / "run.log")
    reaper.append(sched)
    keeper = keeper_of(sched)
    assert keeper.cmdline()[-1] == "--spare"
    wait_for(lambda: len(make_job.running()) == 2, what="both workers")
    assert keeper.cwd() == str(job.parent)  # the job's folder (its workdir), told once the run was known
    assert {w.ppid() for w in map(psutil.Process, make_job.running().values())} <= {
        c.pid for c in keeper.children()
    }  # each worker's parent is a waiter the keeper forked
    assert sched.wait(60) == 0
    assert (make_job.run_dir / "keeper.log").exists()


def test_a_refused_run_leaves_no_keeper_behind(make_job, reaper, tmp_path):
    job = make_job(num_workers=2, sleep=3)
    first = gputui_bg("run", "--jobs", job, log=tmp_path / "first.log")
    reaper.append(first)
    wait_for(lambda: make_job.events(), what="the first scheduler to launch")
    ours = {c.pid for c in psutil.Process(first.pid).children()}
    before = _spares() - ours
    r = gputui("run", "--jobs", job, timeout=30)
    assert r.returncode == 2 and "already driven by gputui" in r.stderr
    wait_for(lambda: not (_spares() - ours - before), timeout=10, what="the refused run's spare keeper to exit")
