"""What feeds the job table a run's rows: the page each refresh brings, and a page read in a thread when a key
or the scroll reaches rows the table does not hold (`JobTable.RowsWanted`), rather than at the next refresh.
Before launch, the job plan's rows the same way, a page at a time, made from the plan the last refresh read
(in memory: made at once, no thread). Owned by GpuTuiApp (app.py), as RunControls is; every read of the run
goes through its Gatherer, off the event loop."""

from __future__ import annotations

import time

from textual.app import App

from gputui.tui.refresh import Gatherer, PageRead
from gputui.tui.widgets.job_table import JobTable
from gputui.views.run_pages import PagedRunView
from gputui.views.task_page import TableWindow, TaskPage, plan_page


class TableFeed:
    def __init__(self, app: App, gatherer: Gatherer, view: PagedRunView | None) -> None:
        self.app, self.gatherer, self.view = app, gatherer, view

    def show(self, page: TaskPage) -> None:
        """A page, with what the app's last snapshot says of the run (live tasks, the metric, what is to come)."""
        app = self.app
        run = app.snapshot
        if run is not None:
            table = app.query_one(JobTable)
            table.show_page(page, run.taken_at, live=run.tasks, metric=run.metric, to_come=run.to_come)

    def show_plan(self, window: TableWindow | None = None) -> None:
        """Before launch: `window`'s rows of the app's plan (the table's rows now if None)."""
        app, plan = self.app, getattr(self.app, "plan", None)
        if app.snapshot is None and plan is not None:
            table = app.query_one(JobTable)
            page = plan_page(plan.tasks, window or table.window)
            table.show_page(page, time.time(), metric=plan.metric, to_come=plan.to_come)

    def keep(self, window: TableWindow) -> None:
        """The refreshes read `window`'s rows from now on (the table's, around its cursor)."""
        if self.view is not None:
            self.view.show(window)

    def want(self, window: TableWindow) -> None:
        """The table wants `window`'s rows: the refreshes read them from now on, and they are read now."""
        self.keep(window)
        if self.app.snapshot is None:
            self.show_plan(window)
        elif self.view is not None:
            self.app.run_worker(lambda: self._read(window), thread=True, group="page", exclusive=True,
                                exit_on_error=False)  # fmt: skip

    def _read(self, window: TableWindow) -> None:
        page = self.gatherer.page(window)
        if page is not None:
            self.app.post_message(PageRead(page))
