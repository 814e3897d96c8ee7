"""Before launch the job table reads the plan a page at a time (views/task_page.plan_page): every view of the
table must show what the plan's full list of rows showed (job_rows.ordered over a TaskView per task)."""

from __future__ import annotations

from gputui.jobs.kinds.base import NewTask
from gputui.jobs.loader import load_jobspec
from gputui.jobs.plans import plan_job
from gputui.tui.widgets.job_rows import ordered
from gputui.views.runview import PlanTasks, planned_run
from gputui.views.task_page import FILTERS, SORTS, TableQuery, TableWindow, plan_page


def read_all(tasks: PlanTasks, query: TableQuery, limit: int) -> list[str]:
    """Every row of the query's order, read `limit` rows at a time."""
    rows: dict[int, str] = {}
    total = plan_page(tasks, TableWindow(query, 0, limit)).total
    for at in range(0, max(1, total), limit):
        page = plan_page(tasks, TableWindow(query, at, limit))
        assert page.total == total
        rows.update((page.offset + i, task_id) for i, task_id in enumerate(page.ids))
    return [rows[i] for i in range(total)]


def test_every_view_of_a_plan_reads_the_order_its_full_list_gives(make_job):
    job = load_jobspec(make_job(ids=50, num_workers=23))
    tasks = planned_run(job, plan_job(job)).tasks
    full = list(tasks)
    assert len(full) == 23 and all(v.task.status == "pending" and v.attempt is None for v in full)
    for flt in FILTERS:
        for sort in SORTS:
            assert read_all(tasks, TableQuery(flt, sort), 5) == ordered(full, flt, sort), (flt, sort)


def test_a_plan_listed_out_of_launch_order_shows_in_launch_order():
    new = [NewTask(f"t{i}", index, "step", after=("t0",) if i else ()) for i, index in enumerate([2, 0, 3, 1])]
    tasks = PlanTasks(new, 3)
    assert [v.task.id for v in tasks] == ["t0", "t1", "t2", "t3"], "plan order when iterated"
    page = plan_page(tasks, TableWindow(TableQuery(), 0, 10))
    assert page.ids == ordered(list(tasks), "all", "id") == ["t1", "t3", "t0", "t2"]
    assert page.statuses == {"t0": "pending"}, "what the rows wait for: planned, so pending"
    assert tasks.position("t2") == 3 and tasks.position("nope") is None
    assert tasks.find("t3").task.index == 1 and tasks.find("nope") is None


def test_the_selected_task_is_followed_when_it_moved_away_from_the_cursor(make_job):
    job = load_jobspec(make_job(ids=1000, num_workers=1000))
    tasks = planned_run(job, plan_job(job)).tasks
    kept = plan_page(tasks, TableWindow(TableQuery(), 100, 50, selected="shard-120", cursor=120))
    assert (kept.offset, kept.selected_at, kept.ids[0]) == (100, 120, "shard-100")
    moved = plan_page(tasks, TableWindow(TableQuery(), 0, 50, selected="shard-700", cursor=3))
    assert moved.selected_at == 700 and "shard-700" in moved.ids, "the page around it (the cursor follows)"
    end = plan_page(tasks, TableWindow(TableQuery(), 990, 50))
    assert (end.total, end.offset, end.ids[-1]) == (1000, 950, "shard-999"), "never past the last row"
    # Found by id without a scan or a task made for each (ShardTasks.index_of), as the store would find it.
    assert tasks.find("shard-999").task.low == 999 and tasks.position("shard-999") == 999
    assert [tasks.find(t) for t in ("shard-1000", "shard-07", "shard--1", "999")] == [None] * 4
    none = plan_page(tasks, TableWindow(TableQuery("done"), 0, 50, selected="shard-0", cursor=0))
    assert (none.total, none.ids, none.selected_at) == (0, [], None)
