"""The job table: one row per task, updated by keyed diffs (never rebuilt per tick)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import DataTable

from gputui.records import Status
from gputui.runview import TaskView
from gputui.status_view import STATUS_STYLE

COLUMNS = ("id", "range", "GPUs", "status", "progress", "rate", "ETA", "attempts", "elapsed", "reason")
# Fixed widths where values grow after the first row is drawn (update_cell does not widen columns).
WIDTHS = {"status": 8, "progress": 22, "rate": 9, "ETA": 7, "attempts": 8, "elapsed": 7}
FILTERS = ("all", "active", "failed", "done", "pending")
SORTS = ("id", "status", "elapsed")
_STATUS_ORDER = {
    s: i
    for i, s in enumerate(
        (Status.FAILED, Status.RETRYING, Status.RUNNING, Status.PAUSED, Status.PENDING, Status.KILLED, Status.DONE)
    )
}


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _coarse(seconds: float | None) -> str:
    """Elapsed time in 10 s steps (whole minutes past 10 min): a table whose every row changed each
    second would be redrawn whole each second, which is most of an idle app's CPU."""
    if seconds is None:
        return ""
    step = 10 if seconds < 600 else 60
    return _clock(seconds // step * step)


def row_cells(view: TaskView) -> tuple:
    """The cells of one task's row: plain values and styled text (classes style by status)."""
    t, p = view.task, view.progress
    status = Text(t.status, style=STATUS_STYLE.get(t.status, ""))
    progress = ""
    if p is not None:
        width = 10
        filled = round(p.fraction * width)
        progress = f"{'█' * filled}{'░' * (width - filled)} {p.done}/{p.total}"
    elif t.status == Status.DONE:
        progress = "█" * 10 + " done"
    rate = f"{p.rate:.1f}/s" if p is not None and p.rate else ""
    eta = _clock(p.eta) if p is not None and p.eta is not None else ""
    reason = (t.reason or "").replace("\n", " ")
    return (
        t.id,
        t.range_label,
        ",".join(map(str, t.gpus)) or "-",
        status,
        progress,
        rate,
        eta,
        f"{t.attempts}/{t.budget}",
        _coarse(view.elapsed),
        reason[:80],
    )


def matches(view: TaskView, flt: str) -> bool:
    s = view.task.status
    return (
        flt == "all"
        or (flt == "active" and s in (Status.RUNNING, Status.PAUSED, Status.RETRYING))
        or (flt == "failed" and s in (Status.FAILED, Status.KILLED, Status.RETRYING))
        or (flt == "done" and s == Status.DONE)
        or (flt == "pending" and s in (Status.PENDING, Status.RETRYING))
    )


class JobTable(DataTable):
    """Keys act on the highlighted task; the app decides (confirmations, read-only) and acts."""

    BINDINGS = [
        Binding("p", "request('pause')", "Pause/resume"),
        Binding("k", "request('kill')", "Kill"),
        Binding("r", "request('retry')", "Retry"),
        Binding("enter", "request('open')", "Log", show=False),
        Binding("s", "cycle_sort", "Sort"),
        Binding("v", "cycle_filter", "Filter"),
    ]

    @dataclass
    class TaskSelected(Message):
        """The highlighted task changed (the app shows its log)."""

        task_id: str

        def can_replace(self, message: Message) -> bool:  # a burst of moves collapses to the last
            return isinstance(message, JobTable.TaskSelected)

    @dataclass
    class ActionRequested(Message):
        verb: str  # pause | resume | kill | retry | open
        task_id: str
        status: str

    sort_by: reactive[str] = reactive("id")
    filter_by: reactive[str] = reactive("all")

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._views: dict[str, TaskView] = {}
        self._cells: dict[str, tuple] = {}
        self._order: list[str] = []

    def on_mount(self) -> None:
        for name in COLUMNS:
            self.add_column(name, key=name, width=WIDTHS.get(name))

    # -- updates -------------------------------------------------------------------------------
    def update_tasks(self, views: Sequence[TaskView]) -> None:
        """Keyed diff: remove rows whose tasks left the filter, update only changed cells, add new ones."""
        self._views = {v.task.id: v for v in views}
        wanted = [v for v in views if matches(v, self.filter_by)]
        wanted_ids = {v.task.id for v in wanted}
        changed_order = False
        with self.app.batch_update():
            for task_id in [k for k in self._cells if k not in wanted_ids]:
                self.remove_row(task_id)
                del self._cells[task_id]
                changed_order = True
            for v in wanted:
                cells = row_cells(v)
                old = self._cells.get(v.task.id)
                if old is None:
                    self.add_row(*cells, key=v.task.id)
                    changed_order = True
                elif old != cells:
                    for col, new, prev in zip(COLUMNS, cells, old, strict=True):
                        if new != prev:
                            self.update_cell(v.task.id, col, new)
                    if old[3] != cells[3] and self.sort_by == "status":
                        changed_order = True
                self._cells[v.task.id] = cells
            if changed_order:
                self._apply_sort()

    def _apply_sort(self) -> None:
        views = self._views

        def index(task_id: str) -> int:
            return views[task_id].task.index if task_id in views else 0

        if self.sort_by == "status":
            self.sort("status", "id", key=lambda cells: (_STATUS_ORDER.get(str(cells[0]), 99), index(cells[1])))
        elif self.sort_by == "elapsed":
            self.sort("id", key=lambda task_id: -(views[task_id].elapsed or 0.0) if task_id in views else 0.0)
        else:
            self.sort("id", key=index)

    # -- reactions -----------------------------------------------------------------------------
    def watch_sort_by(self) -> None:
        if self.is_mounted:
            self._apply_sort()

    def watch_filter_by(self) -> None:
        if self.is_mounted:
            self.update_tasks(list(self._views.values()))

    def action_cycle_sort(self) -> None:
        self.sort_by = SORTS[(SORTS.index(self.sort_by) + 1) % len(SORTS)]
        self.notify(f"sorted by {self.sort_by}")

    def action_cycle_filter(self) -> None:
        self.filter_by = FILTERS[(FILTERS.index(self.filter_by) + 1) % len(FILTERS)]
        self.notify(f"showing {self.filter_by} tasks")

    @property
    def selected_id(self) -> str | None:
        if self.row_count == 0:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except Exception:
            return None

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value is not None:
            self.post_message(self.TaskSelected(event.row_key.value))

    def action_request(self, verb: str) -> None:
        task_id = self.selected_id
        if task_id is None:
            return
        status = self._views[task_id].task.status if task_id in self._views else ""
        if verb == "pause" and status == Status.PAUSED:
            verb = "resume"
        self.post_message(self.ActionRequested(verb, task_id, status))
