from __future__ import annotations

from gputui.jobs.tasks import Status
from gputui.views.run_pages import PagedRunView
from gputui.views.runview import RunView
from tests.conftest import gputui, gputui_bg, wait_for


def test_snapshot_of_a_finished_run(make_job):
    assert gputui("run", "--jobs", make_job(num_workers=2)).returncode == 0
    view = RunView(make_job.run_dir)
    snap = view.snapshot()
    assert snap.job_name == "test" and not snap.scheduler_live and len(snap.scheduler_id) == 36
    assert [v.task.status for v in snap.tasks] == ["done", "done"]
    assert all(v.attempt is not None and v.elapsed is not None for v in snap.tasks)
    assert snap.counts["done"] == 2 and snap.gpu_holders() == {}
    view.close()


def test_snapshot_of_a_missing_run_is_none(tmp_path):
    assert RunView(tmp_path / "nothing").snapshot() is None


def test_snapshot_never_writes_to_the_run(make_job):
    assert gputui("run", "--jobs", make_job(num_workers=1)).returncode == 0
    db = make_job.run_dir / "state.db"
    before = db.stat().st_mtime_ns
    for _ in range(3):
        RunView(make_job.run_dir).snapshot()
    assert db.stat().st_mtime_ns == before


def test_a_view_kept_open_sees_each_commit(make_job):
    """A verb's commit (here `gputui retry --force` on a stopped run) shows on the next snapshot."""
    assert gputui("run", "--jobs", make_job(num_workers=2)).returncode == 0
    view = RunView(make_job.run_dir)
    first = view.snapshot()
    assert view.snapshot().tasks[0].task == first.tasks[0].task
    assert gputui("retry", "--force", "--run-dir", make_job.run_dir, "shard-0").returncode == 0
    assert [v.task.status for v in view.snapshot().tasks] == [Status.PENDING, Status.DONE]
    view.close()


def test_a_running_task_s_progress_comes_from_its_hook_events_before_its_log(tmp_path):
    """`gputui.hooks.progress(done, total)` drives the progress column (and the run's rate and ETA); the log's
    `k/N` lines are the fallback for workers that do not use the hooks."""
    import json

    from gputui.rundir.paths import RunPaths
    from gputui.views.runview import RunView
    from tests.tui.fixed_sweep import fixed_sweep

    root = fixed_sweep(tmp_path / "run")
    (root / "logs" / "task2-1.attempt1.log").write_text("batch 3/10\n")
    with open(RunPaths(root).events("task2-0", 1), "a") as f:
        f.write(json.dumps({"t": 1.0, "event": "progress", "done": 30, "total": 120}) + "\n")
    view = RunView(root)
    try:
        tasks = {v.task.id: v for v in view.snapshot().tasks}
    finally:
        view.close()
    assert (tasks["task2-0"].progress.done, tasks["task2-0"].progress.total) == (30, 120)
    assert (tasks["task2-1"].progress.done, tasks["task2-1"].progress.total) == (3, 10)  # no hook progress


def test_a_view_kept_open_sees_a_second_run_of_its_directory(make_job):
    """The app (its view, with two connections) stays open over a run that ends and is started again (`l` on a
    finished run): the second scheduler's commits show. Opening the second connection used to read the file's
    header with open() and close(), which ends every POSIX lock the process holds on it: the first scheduler
    then removed the WAL both connections still read, and they showed the first run's state for good."""
    job = make_job(num_workers=2, worker_args="--fail-attempts 1", max_attempts=1, sleep=1)
    view = PagedRunView(make_job.run_dir, job)
    assert view.snapshot() is None
    first = gputui_bg("run", "--jobs", job, log=make_job.root / "first.log")
    wait_for(lambda: view.snapshot() and view.snapshot().counts[Status.RUNNING], what="the first run's workers")
    assert first.wait(60) == 1
    assert sorted(v.task.status for v in view.snapshot().tasks) == [Status.FAILED, Status.FAILED]
    make_job(num_workers=2)  # now it succeeds
    assert gputui("run", "--jobs", job).returncode == 0  # the failed tasks run again
    assert [v.task.status for v in view.snapshot().tasks] == [Status.DONE, Status.DONE]
    view.close()
