from __future__ import annotations

from gputui.engine.store import Store
from gputui.jobs.tasks import Status
from gputui.views.runview import RunView
from tests.conftest import gputui


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
    assert gputui("run", "--jobs", make_job(num_workers=2)).returncode == 0
    view = RunView(make_job.run_dir)
    first = view.snapshot()
    assert view.snapshot().tasks[0].task == first.tasks[0].task
    store = Store.open(make_job.run_dir / "state.db")
    with store.transaction():
        store.update_task("shard-0", status=Status.KILLED, reason="killed by user")
    store.close()
    assert view.snapshot().tasks[0].task.reason == "killed by user"
    view.close()
