"""The app's view of a run: every task counted, but only the live ones, the selected one and the rows the
table shows read (a page around what is on screen), so a run of 100,000 tasks costs the app what one of a
few hundred does. What the whole run says (counts, how far, what is to come, how long it ran) is read as
totals, or once per change that moves it, never task by task each refresh.

Blocking (SQLite, log tails): call `snapshot` from a thread, as RunView's.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from gputui import clock
from gputui.jobs.kinds.registry import named
from gputui.jobs.tasks import Status, TaskRecord
from gputui.rundir import task_order
from gputui.rundir.meta import MetaReader, RunMeta
from gputui.rundir.records import AttemptRecord
from gputui.rundir.store import Store
from gputui.views.metrics import file_stamp
from gputui.views.runview import RunSnapshot, RunView, Totals, active_seconds
from gputui.views.task_page import TableWindow, TaskPage, TaskPages
from gputui.views.waiting import unsaid_reason

WINDOW = 150  # rows read from the first until the table says which it shows (more than a screen holds)
FIRST_IDS = 8  # ids named per status (what `l` says of tasks that failed for good, or wait)
NAMED = (Status.FAILED, Status.PENDING, Status.RETRYING)


class PagedRunView(RunView):
    def __init__(self, run_dir: str | Path, job_path: str | Path | None = None) -> None:
        super().__init__(run_dir, job_path)
        self.pages = TaskPages(self.paths.db)
        self.window = TableWindow(limit=WINDOW)
        self.page: TaskPage | None = None  # the table's rows as the last snapshot read them
        self._read: tuple[TaskPage, Totals] | None = None
        self._read_key: tuple = ()
        self._meta = MetaReader()
        self._one_id: tuple[tuple, bool] | None = None  # (the tasks planned, whether each covers one id)
        self._to_come: tuple[tuple, list[str]] | None = None  # (tasks planned, stopped) -> the lines
        self._active: tuple[tuple, float, clock.Stamp] | None = None  # (what it was measured at, seconds, when)

    def show(self, window: TableWindow) -> None:
        """The rows the table shows now (any thread: the next snapshot reads them)."""
        self.window = window

    def snapshot(self) -> RunSnapshot | None:
        snap = super().snapshot()
        if snap is None or self._read is None:
            return snap
        page, totals = self._read
        by_id = {v.task.id: v for v in snap.tasks}  # with progress, metrics and where they run
        live = snap.scheduler_live
        views = (by_id.get(v.task.id) or replace(v, unsaid=unsaid_reason(v.task, live)) for v in page.views)
        self.page = replace(page, views=tuple(views))
        snap = replace(snap, totals=totals)
        return replace(snap, to_come=self._lines_to_come(snap.meta, totals), active_s=self._active_s(snap))

    def _read_state(self) -> tuple[RunMeta, list[TaskRecord], dict[str, list[AttemptRecord]]]:
        """Meta, and the tasks the app shows with their attempts: the table's page, the live tasks and the
        selected one; read again when the database changed, the table moved, or every 10 s."""
        key = (tuple(file_stamp(p) for p in self._db_files), self.window, self.selected)
        now = time.monotonic()
        if self._state is not None and key == self._read_key and now - self._state_at < 10.0:
            return self._state
        store = self._store
        page = self.pages.read(self.window)
        tasks = {v.task.id: v.task for v in page.views}
        history = {v.task.id: list(v.history) for v in page.views}
        more = store.tasks_where(f"t.status IN ({','.join('?' * len(Status.LIVE))})", sorted(Status.LIVE))
        for selected in {self.selected, self.window.selected} - set(tasks) - {None}:
            more += [t for t in [store.task(selected)] if t is not None]
        more = list({t.id: t for t in more if t.id not in tasks}.values())
        for task_id, attempts in store.attempts_of([t.id for t in more]).items():
            history.setdefault(task_id, []).extend(attempts)
        tasks.update((t.id, t) for t in more)
        self._read = page, self._totals(store)
        self._state = (self._meta.read(store), sorted(tasks.values(), key=lambda t: t.index), history)
        self._read_key, self._state_at = key, now
        return self._state

    def _totals(self, store: Store) -> Totals:
        """Every task counted by status, and the ids they cover: as counted where each covers one (known once
        per set of tasks), else summed."""
        counts = task_order.status_counts(store)
        planned = task_order.task_count(store)
        if self._one_id is None or self._one_id[0] != planned:
            self._one_id = planned, task_order.one_id_each(store)
        sizes = counts if self._one_id[1] else task_order.status_sizes(store)
        first = {s: task_order.first_ids(store, s, FIRST_IDS) for s in NAMED if s in counts}
        return Totals(counts, {s: float(n) for s, n in sizes.items()}, first)

    def _lines_to_come(self, meta: RunMeta, totals: Totals) -> list[str]:
        """What the kind has not planned yet, from every task planned so far: read again only when tasks were
        added or the run stopped, and never for a kind that plans nothing later (nothing to come before any
        task was planned)."""
        kind, definition, stopped = named(meta.job.kind), meta.identity.plan_definition, bool(meta.run_failed)
        if not kind.to_come(definition, [], stopped):
            return []
        key = (sum(totals.counts.values()), stopped)
        if self._to_come is None or self._to_come[0] != key:
            self._to_come = key, kind.to_come(definition, self._store.tasks(), stopped)
        return self._to_come[1]

    def _active_s(self, snap: RunSnapshot) -> float:
        """How long the run has been active (RunView's measure over every attempt). While it moves it only
        grows with the clock, so it is measured over the attempts once, then when the run stops or starts
        moving, or its state changes while it stands still."""
        moving = snap.scheduler_live and not snap.finished
        since = self._scheduler_since() if moving else None
        known = self._active
        if known is not None and moving and known[0] == ("moving", since):
            return known[1] + clock.between(known[2], snap.taken_at)
        key = ("moving", since) if moving else ("still", self._read_key[0])
        if known is None or known[0] != key:
            bridge = snap.meta.job.backoff_max_s + 5.0
            known = (
                key,
                active_seconds(task_order.attempt_times(self._store), snap.taken_at, bridge, since),
                snap.taken_at,
            )
        self._active = known
        return known[1] + (clock.between(known[2], snap.taken_at) if moving else 0.0)

    def ids(self, statuses: list[str]) -> list[str]:
        """Ids of the tasks in these statuses now, in plan order (any thread): what `l` runs again."""
        return self.pages.ids(statuses)

    def statuses(self, task_ids: list[str]) -> dict[str, str]:
        """The status of each of these tasks now (any thread)."""
        return self.pages.statuses(task_ids)

    def unfinished(self) -> tuple[list[str], list[str]]:
        """(ids of every task not finished, those of them ever tried): what `K` kills, and whose processes it
        names (any thread)."""
        return self.pages.unfinished()

    def close(self) -> None:
        super().close()
        self.pages.close()
        self._read = None
