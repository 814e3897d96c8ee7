"""The job table: one row per task, updated by keyed diffs (never rebuilt per tick).

Columns follow the width: at 80 columns the range and long bars give way so the reason still shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text
from textual.binding import Binding
from textual.events import Resize
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import DataTable

from gputui.records import Status
from gputui.runview import TaskView
from gputui.status_view import STATUS_STYLE
from gputui.tui import modes

WIDE = ("id", "range", "GPUs", "status", "progress", "rate", "ETA", "tries", "elapsed", "reason")
NARROW = ("id", "GPUs", "status", "progress", "ETA", "elapsed", "reason")  # the task bar shows the rest
NARROW_BELOW = 120  # table cells: below this the narrow column set is used
# Fixed widths: values grow after the first row is drawn, and update_cell does not widen columns.
WIDTHS = {"id": 9, "range": 12, "GPUs": 5, "status": 8, "rate": 8, "ETA": 7, "tries": 5, "elapsed": 7}
BAR = {"wide": 10, "narrow": 5}
PROGRESS = {"wide": 22, "narrow": 14}
MIN_REASON = 12
FILTERS = ("all", "active", "failed", "done", "pending")
SORTS = ("id", "status", "elapsed")
_STATUS_ORDER = {
    s: i
    for i, s in enumerate(
        (Status.FAILED, Status.RETRYING, Status.RUNNING, Status.PAUSED, Status.PENDING, Status.KILLED, Status.DONE)
    )
}


def clock(seconds: float | None) -> str:
    """'1:02:03', '2:03'; empty when unknown."""
    if seconds is None:
        return ""
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def row_cells(view: TaskView, now: float, layout: str = "wide") -> dict[str, object]:
    """The cells of one task's row by column: plain values and styled text."""
    t, p = view.task, view.progress
    status = Text(t.status, style=STATUS_STYLE.get(t.status, ""))
    width = BAR[layout]
    progress = ""
    if t.status == Status.RETRYING and t.next_try_at is not None:
        progress = f"next try in {clock(t.next_try_at - now)}"
    elif p is not None:
        filled = round(p.fraction * width)
        progress = f"{'█' * filled}{'░' * (width - filled)} {p.done}/{p.total}"
    elif t.status == Status.DONE:
        progress = "█" * width + " done"
    running = t.status == Status.RUNNING
    rate = f"{p.rate:.1f}/s" if running and p is not None and p.rate else ""
    eta = clock(p.eta) if running and p is not None and p.eta is not None else ""
    if t.status == Status.PAUSED:
        rate = "paused"
    a = view.attempt
    elapsed = None if a is None else (a.ended_at or now) - a.started_at
    return {
        "id": t.id,
        "range": t.range_label,
        "GPUs": ",".join(map(str, t.gpus)) or "-",
        "status": status,
        "progress": progress,
        "rate": rate,
        "ETA": eta,
        "tries": f"{t.attempts}/{t.budget}",
        "elapsed": clock(elapsed),
        "reason": Text((t.reason or "").replace("\n", " "), no_wrap=True, overflow="ellipsis"),
    }


def matches(view: TaskView, flt: str) -> bool:
    s = view.task.status
    return (
        flt == "all"
        or (flt == "active" and s in (Status.RUNNING, Status.PAUSED, Status.RETRYING))
        or (flt == "failed" and s in (Status.FAILED, Status.KILLED, Status.RETRYING))
        or (flt == "done" and s == Status.DONE)
        or (flt == "pending" and s in (Status.PENDING, Status.RETRYING))
    )


def verb_acts(verb: str, status: str, mode: str) -> bool:
    """Whether `verb` does anything to a task in `status` while the app is in `mode`."""
    if verb == "pause":
        return mode == modes.LIVE and status in Status.LIVE
    if verb == "kill":
        return mode in (modes.LIVE, modes.FINISHED) and status not in Status.FINAL
    if verb == "retry":
        return mode in (modes.LIVE, modes.FINISHED) and status in (Status.FAILED, Status.KILLED, Status.RETRYING)
    return True


class JobTable(DataTable):
    """Keys act on the highlighted task; the app decides (confirmations, read-only) and acts."""

    BINDINGS = [
        Binding("p", "request('pause')", "Pause/resume"),
        Binding("k", "request('kill')", "Kill"),
        Binding("r", "request('retry')", "Retry"),
        Binding("enter", "request('open')", "Pin log"),
        Binding("s", "cycle_sort", "Sort", show=False),
        Binding("v", "cycle_filter", "Filter", show=False),
    ]
    DEFAULT_CSS = """
    JobTable.-stale { opacity: 50%; }
    """

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
    layout: reactive[str] = reactive("wide", init=False)

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._views: dict[str, TaskView] = {}
        self._cells: dict[str, dict[str, object]] = {}
        self._now = 0.0
        self._reason_width = 0

    @property
    def columns_shown(self) -> tuple[str, ...]:
        return WIDE if self.layout == "wide" else NARROW

    def on_mount(self) -> None:
        self._add_columns()

    def _add_columns(self) -> None:
        shown = self.columns_shown
        fixed = {**WIDTHS, "progress": PROGRESS[self.layout]}
        used = sum(fixed[c] + 2 * self.cell_padding for c in shown if c != "reason")
        self._reason_width = max(MIN_REASON, self.size.width - used - 2 * self.cell_padding - 2)
        for name in shown:
            self.add_column(name, key=name, width=fixed.get(name, self._reason_width))

    def on_resize(self, event: Resize) -> None:
        layout = "narrow" if event.size.width < NARROW_BELOW else "wide"
        if layout != self.layout:
            self.layout = layout
        elif self.is_mounted and self.columns:
            self._rebuild()  # the reason column takes what the others leave

    def watch_layout(self) -> None:
        self._rebuild()

    def _rebuild(self) -> None:
        selected = self.selected_id
        self.clear(columns=True)
        self._cells.clear()
        self._add_columns()
        self.update_tasks(list(self._views.values()), self._now)
        if selected is not None and selected in self._cells:
            self.move_cursor(row=self.get_row_index(selected), animate=False)

    # -- updates -------------------------------------------------------------------------------
    def update_tasks(self, views: Sequence[TaskView], now: float) -> None:
        """Keyed diff: remove rows whose tasks left the filter, update only changed cells, add new ones."""
        before = self.selected_status
        self._views = {v.task.id: v for v in views}
        self._now = now
        wanted = [v for v in views if matches(v, self.filter_by)]
        wanted_ids = {v.task.id for v in wanted}
        shown = self.columns_shown
        changed_order = False
        with self.app.batch_update():
            for task_id in [k for k in self._cells if k not in wanted_ids]:
                self.remove_row(task_id)
                del self._cells[task_id]
                changed_order = True
            for v in wanted:
                cells = row_cells(v, now, self.layout)
                old = self._cells.get(v.task.id)
                if old is None:
                    self.add_row(*(cells[c] for c in shown), key=v.task.id)
                    changed_order = True
                elif old != cells:
                    for col in shown:
                        if cells[col] != old[col]:
                            self.update_cell(v.task.id, col, cells[col])
                    if old["status"] != cells["status"] and self.sort_by == "status":
                        changed_order = True
                self._cells[v.task.id] = cells
            if changed_order:
                self._apply_sort()
        if self.selected_status != before:
            self.refresh_bindings()

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
            self.update_tasks(list(self._views.values()), self._now)

    def action_cycle_sort(self) -> None:
        self.sort_by = SORTS[(SORTS.index(self.sort_by) + 1) % len(SORTS)]

    def action_cycle_filter(self) -> None:
        self.filter_by = FILTERS[(FILTERS.index(self.filter_by) + 1) % len(FILTERS)]

    @property
    def selected_id(self) -> str | None:
        if self.row_count == 0:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except Exception:
            return None

    @property
    def selected(self) -> TaskView | None:
        return self._views.get(self.selected_id or "")

    @property
    def selected_status(self) -> str | None:
        view = self.selected
        return None if view is None else view.task.status

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value is not None:
            self.post_message(self.TaskSelected(event.row_key.value))
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action != "request":
            return True
        view, mode = self.selected, getattr(self.app, "mode", modes.LIVE)
        if view is None:
            return False
        verb = str(parameters[0])
        if verb == "open":
            return view.attempt is not None
        return verb_acts(verb, view.task.status, mode)

    def action_request(self, verb: str) -> None:
        view = self.selected
        if view is None:
            return
        status = view.task.status
        if verb == "pause" and status == Status.PAUSED:
            verb = "resume"
        self.post_message(self.ActionRequested(verb, view.task.id, status))
