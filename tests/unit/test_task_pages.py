"""The app's view of a run reads a page of tasks, not every task: what it shows must be what the full view
shows. A run made by the real scheduler (every task failing once, then done), some tasks then queued again
by `gputui retry`, read both ways."""

from __future__ import annotations

from itertools import pairwise

import pytest

from gputui.jobs.tasks import Status
from gputui.tui.widgets.job_rows import ordered
from gputui.views.run_pages import PagedRunView
from gputui.views.runview import RunView, outlook
from gputui.views.task_page import FILTERS, TableQuery, TableWindow
from tests.conftest import gputui


@pytest.fixture
def mixed_run(make_job):
    job = make_job(num_workers=12, max_parallel=4, worker_args="--fail-attempts 1", max_attempts=2)
    assert gputui("run", "--jobs", job).returncode == 0
    assert gputui("retry", "--force", "--run-dir", make_job.run_dir, "shard-3", "shard-7").returncode == 0
    return make_job.run_dir


def test_every_view_of_the_table_reads_the_order_the_full_view_gives(mixed_run):
    full = RunView(mixed_run).snapshot().tasks
    paged = PagedRunView(mixed_run)
    try:
        for flt in FILTERS:
            for sort in ("id", "status"):
                expected = ordered(full, flt, sort)
                pages = [paged.pages.read(TableWindow(TableQuery(flt, sort), at, 5)) for at in (0, 5, 10)]
                assert {p.total for p in pages} == {len(expected)}, (flt, sort)
                rows = {p.offset + i: task for p in pages for i, task in enumerate(p.ids)}
                assert [rows[i] for i in range(len(expected))] == expected, (flt, sort)
        by_elapsed = paged.pages.read(TableWindow(TableQuery("all", "elapsed"), 0, 20)).views
        elapsed = [v.elapsed for v in by_elapsed]
        assert len(elapsed) == 12 and all(a >= b - 0.01 for a, b in pairwise(elapsed)), "longest first"
    finally:
        paged.close()


def test_a_page_follows_the_selected_task_when_the_order_moves_it_away_from_the_cursor(mixed_run):
    paged = PagedRunView(mixed_run)
    try:
        by_status = TableQuery("all", "status")  # shard-3 and shard-7 (pending) come before the ten done
        page = paged.pages.read(TableWindow(by_status, 8, 4, selected="shard-7", cursor=11))
        assert page.selected_at == 1 and page.offset == 0 and "shard-7" in page.ids
        still = paged.pages.read(TableWindow(by_status, 8, 4, selected="shard-7", cursor=1))
        assert still.offset == 8, "where the cursor is already on it, the rows asked for"
    finally:
        paged.close()


def test_a_snapshot_of_a_page_counts_and_times_the_whole_run(mixed_run):
    full = RunView(mixed_run).snapshot()
    paged = PagedRunView(mixed_run)
    paged.show(TableWindow(TableQuery(), 0, 2))
    try:
        snap = paged.snapshot()
        assert [v.task.id for v in paged.page.views] == ["shard-0", "shard-1"]
        assert len(snap.tasks) < len(full.tasks), "only the page (and live or selected tasks) read"
        assert snap.counts == full.counts == {Status.DONE: 10, Status.PENDING: 2}
        assert snap.finished == full.finished is False
        assert snap.first_ids([Status.PENDING], 8) == ["shard-3", "shard-7"]
        assert outlook(snap.tasks, snap.totals) == outlook(full.tasks)
        assert snap.active_s == pytest.approx(full.active_s, abs=0.01)
        assert snap.to_come == full.to_come
        assert paged.unfinished() == (["shard-3", "shard-7"], ["shard-3", "shard-7"])
    finally:
        paged.close()
