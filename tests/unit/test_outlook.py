"""The job's overall rate and ETA (views.runview.outlook) and how the header says them: the rate in what the rows
count (their rates added up, never "ids"), and an ETA the rows cannot contradict."""

from __future__ import annotations

import pytest

from gputui.jobs.tasks import Status, TaskRecord
from gputui.tui.widgets.job_rows import hms
from gputui.tui.widgets.run_header import progress_text
from gputui.views.progress import Progress
from gputui.views.runview import RunSnapshot, TaskView, Totals, outlook


def task(n: int, status: str, ids: int = 75, kind: str = "shard") -> TaskRecord:
    return TaskRecord(
        f"{kind}-{n}", n, n * ids, (n + 1) * ids, ids, status, 1, 3, (), None, None, None, None, None, kind=kind
    )


def going(n: int, done: int, total: int, rate: float, ids: int = 75, kind: str = "shard") -> TaskView:
    """A running task whose worker says `done/total` at `rate` per second (its row's progress, rate and ETA)."""
    return TaskView(task(n, Status.RUNNING, ids, kind), None, Progress(done, total, rate, (total - done) / rate))


def test_with_nothing_waiting_the_job_ends_with_its_slowest_running_task():
    rows = [  # the audit's 4 shards after shard-1 was killed and retried: its row says 6:44 left
        going(0, 96, 129, 0.5),
        going(1, 32, 139, 0.265),
        going(2, 90, 140, 0.5),
        going(3, 80, 135, 0.45),
    ]
    look = outlook(rows)
    assert look.eta >= max(v.progress.eta for v in rows)
    assert look.rate == pytest.approx(0.5 + 0.265 + 0.5 + 0.45), "the rows' rates added up"


def test_waiting_tasks_add_their_work_spread_over_the_slots_that_run():
    # two slots, each task 100 rows at 1 row/s (100 s a task of 10 ids), both halfway; four 10-id tasks wait
    rows = [going(0, 50, 100, 1.0, ids=10), going(1, 50, 100, 1.0, ids=10)]
    waiting = [TaskView(task(n, Status.PENDING, ids=10), None) for n in range(2, 5)]
    retrying = [TaskView(task(5, Status.RETRYING, ids=10), None)]
    look = outlook(rows + waiting + retrying)
    assert look.eta == pytest.approx((50 + 50 + 4 * 100) / 2)  # 250 s: two more rounds and a half
    failed = [TaskView(task(6, Status.FAILED, ids=10), None), TaskView(task(7, Status.KILLED, ids=10), None)]
    assert outlook(rows + waiting + retrying + failed) == look, "tasks failed or killed for good never run"
    totals = Totals(
        {Status.RUNNING: 2, Status.PENDING: 3, Status.RETRYING: 1}, {Status.PENDING: 30.0, Status.RETRYING: 10.0}
    )
    assert outlook(rows, totals) == look, "the same from every task's totals where only the live ones are held"


def test_a_paused_task_adds_its_work_left_but_no_slot():
    rows = [going(0, 50, 100, 1.0, ids=10)]
    paused = TaskView(task(1, Status.PAUSED, ids=10), None, Progress(20, 100))
    assert outlook([*rows, paused]).eta == pytest.approx(50 + 80)
    assert outlook([paused]) == outlook([]) == outlook([TaskView(task(0, Status.RUNNING), None)])
    assert outlook([]).rate is None and outlook([]).eta is None, "no pace until a running task has one"


def test_the_header_says_the_pace_in_the_rows_units_and_an_eta_no_row_contradicts():
    rows = [going(0, 96, 129, 0.5), going(1, 32, 139, 0.265)]
    run = RunSnapshot("/r", "job", "abcdef12", False, tasks=rows)
    line = progress_text(run, 0.0).plain
    assert "0.765/s" in line and "ids" not in line
    assert f"ETA {hms(rows[1].progress.eta)}" in line  # 6:44, the slowest row's
    trials = [going(n, 10 * n, 100, 2.0, ids=1, kind="trial") for n in range(1, 4)]  # steps of a sweep's trials
    line = progress_text(RunSnapshot("/r", "sweep", "abcdef12", False, tasks=trials), 0.0).plain
    assert "6/s" in line and "ids" not in line
