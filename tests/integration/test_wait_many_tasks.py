"""`wait` on a run of 100,000 tasks: it tells of the task that ends, not of the 99,999 that had ended before it
began, and reads the counts by status to know when (task ids only once some task has ended)."""

from __future__ import annotations

import threading

from gputui import api
from gputui.jobs.kinds.base import NewTask
from gputui.jobs.tasks import Status
from gputui.rundir.paths import RunLock, RunPaths
from gputui.rundir.store import Store
from tests.conftest import wait_for

MANY = 100_000


def test_wait_on_a_run_of_many_tasks_tells_of_the_one_that_ends(tmp_path, monkeypatch):
    paths = RunPaths(tmp_path / "run")
    paths.root.mkdir()
    store = Store.open(paths.db, create=True)
    store.add_tasks((NewTask(f"shard-{i}", i, "shard", i, i + 1) for i in range(MANY)), budget=1)
    with store.transaction():
        for i in range(MANY - 1):
            store.update_task(f"shard-{i}", status=Status.DONE, exit_code=0)
        store.update_task(f"shard-{MANY - 1}", status=Status.RUNNING)
    lock = RunLock(paths)  # this test is the run's scheduler
    assert lock.try_acquire("scheduler")

    reads: list[str] = []
    real_read = Store.read

    def read(self, sql, params=()):
        reads.append(sql)
        return real_read(self, sql, params)

    monkeypatch.setattr(Store, "read", read)
    monkeypatch.setattr(Store, "tasks", lambda self: (_ for _ in ()).throw(AssertionError("every task read")))
    ended, outcome, started = [], [], []

    def waiting() -> None:
        outcome.append(api.wait(paths.root, timeout=120, poll=0.05, on_end=ended.append, on_start=started.append))

    waiter = threading.Thread(target=waiting)
    waiter.start()
    wait_for(lambda: started, what="wait's first look")
    assert started == [f"waiting for 1 of {MANY} task(s): {MANY - 1}/{MANY} done, 1 running"]
    with store.transaction():
        store.update_task(f"shard-{MANY - 1}", status=Status.DONE, exit_code=0)
    waiter.join(120)
    lock.release()
    store.close()
    (result,) = outcome
    assert result.code == 0 and result.counts == {Status.DONE: MANY} and result.message == f"{MANY}/{MANY} done"
    assert [(e.id, e.status) for e in ended] == [(f"shard-{MANY - 1}", Status.DONE)]
    # the ids of ended tasks were read twice: on the first look and once the last one ended
    assert sum("status IN" in sql for sql in reads) == 2, reads
