"""The job table: one row per task, drawn line by line from the tasks it is given.

A line-API widget rather than a DataTable: a DataTable invalidates every rendered row when any cell
changes, so a running task's elapsed time ticking each second redrew the whole table. Here each row is
rendered once per change of its own cells and only the rows on screen are drawn, so 2,000 tasks fill at
once and a tick repaints only the rows that changed. Columns follow the width: GPU-hours and peak GPU
memory from 150 cells; at 80 the range, rate and tries give way (the task bar shows them) so the reason
still shows. A sweep's trials show their stage, parameters, parent, metric and rank instead of a range, a
pipeline's steps what they wait for; their columns (as the job kind lists them) give way one by one as the width
shrinks. Lines after the rows name what is not planned yet (a sweep's later stages).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from gputui.jobs.tasks import Status
from gputui.text_safety import visible
from gputui.tui import modes
from gputui.tui.cells import fit
from gputui.tui.widgets.job_rows import (
    FILTERS,
    FULL_FROM,
    LAYOUTS,
    MIN_REASON,
    PAD,
    PROGRESS,
    SIZED,
    SORTS,
    STATUS_STYLES,
    WIDE_FROM,
    WIDTHS,
    RowContext,
    ordered,
    row_cells,
    sized_widths,
    table_shape,
    verb_acts,
)
from gputui.views.kinds import Columns
from gputui.views.runview import TaskView


def _over(strip: Strip, style: Style) -> Strip:
    """`style` laid over every segment (a cursor's background wins over the row's)."""
    return Strip(Segment.apply_style(iter(strip), post_style=style), strip.cell_length)


class JobTable(ScrollView, can_focus=True):
    """Keys act on the highlighted task; the app decides (confirmations, read-only) and acts."""

    BINDINGS = [
        Binding("p", "request('pause')", "Pause/resume"),
        Binding("k", "request('kill')", "Kill"),
        Binding("r", "request('retry')", "Retry"),
        Binding("enter", "request('open')", "Pin log"),
        Binding("s", "cycle_sort", "Sort", show=False),
        Binding("v", "cycle_filter", "Filter", show=False),
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "cursor_to(0)", "First", show=False),
        Binding("end", "cursor_to(-1)", "Last", show=False),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "job-table--header",
        "job-table--cursor",
        "job-table--odd",
        "job-table--to-come",
    }
    DEFAULT_CSS = """
    JobTable { background: $surface; scrollbar-gutter: stable; overflow-x: hidden; }
    JobTable > .job-table--header { text-style: bold; background: $panel; }
    JobTable > .job-table--cursor { background: $block-cursor-blurred-background; }
    JobTable:focus > .job-table--cursor { background: $block-cursor-background; color: $block-cursor-foreground;
        text-style: bold; }
    JobTable > .job-table--odd { background: $foreground 4%; }
    JobTable > .job-table--to-come { color: $foreground-muted; text-style: italic; }
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
    cursor_row: reactive[int] = reactive(0, init=False)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._views: dict[str, TaskView] = {}
        self._cells: dict[str, dict[str, str]] = {}
        self._order: list[str] = []
        self._row_of: dict[str, int] = {}
        self._strips: dict[str, Strip] = {}  # rendered rows, dropped when their cells or the looks change
        self._now = 0.0
        self.column_widths: dict[str, int] = {}
        self.rows_rendered = 0  # rows drawn afresh (not from the cache): what a tick costs
        self._header: Strip | None = None
        self._looks: tuple[Style, Style, Style, Style] | None = None  # cursor, odd, header, to come
        self.shape = Columns()  # the rows' kind's columns: none (a shard's) keeps the fixed layouts, else fitted
        self._row_context = RowContext()
        self._sized: dict[str, int] = {}  # trials and steps: columns sized to their contents
        self._shown: tuple[str, ...] = LAYOUTS["wide"]
        self._to_come: tuple[str, ...] = ()  # lines after the rows: what is not planned yet
        self._columns: tuple = (Columns(), {}, None)  # (shape, sized widths, metric): the columns' terms
        self._titles: dict[str, str] = {}  # column -> its header, where not its name

    def on_mount(self) -> None:
        self._size_columns(self.scrollable_content_region.width or self.size.width)

    # -- shape ---------------------------------------------------------------------------------
    @property
    def columns_shown(self) -> tuple[str, ...]:
        return self._shown if self.shape.fitted else LAYOUTS[self.layout]

    @property
    def to_come(self) -> tuple[str, ...]:
        """The lines shown after the rows (with the view showing all tasks)."""
        return self._to_come if self.filter_by == "all" else ()

    @property
    def row_count(self) -> int:
        return len(self._order)

    @property
    def row_ids(self) -> list[str]:
        return list(self._order)

    def row_text(self, task_id: str) -> list[str]:
        """The cells of a task's row as shown (columns of the current layout)."""
        cells = self._cells.get(task_id, {})
        return [cells.get(c, "") for c in self.columns_shown]

    def _size_columns(self, width: int) -> None:
        fixed = {**WIDTHS, "progress": PROGRESS[self.layout], **self._sized}
        shown = self._fit(fixed, width) if self.shape.fitted else self.columns_shown
        flex = shown[-1]  # the reason (a trial's note): what room is left
        used = sum(fixed[c] + 2 * PAD for c in shown if c != flex)
        reason = max(MIN_REASON, width - used - 2 * PAD)
        self.column_widths = {c: fixed.get(c, reason) if c != flex else reason for c in shown}
        self._strips.clear()
        self._header = None

    def _fit(self, fixed: dict[str, int], width: int) -> tuple[str, ...]:
        """A trial's or step's columns that fit `width`, leaving the last (the note) its least; `fixed` may
        narrow the parameters to make them fit."""
        shown = list(self.shape.fitted)

        def need() -> int:
            return sum(fixed[c] + 2 * PAD for c in shown[:-1]) + MIN_REASON + 2 * PAD

        for column in self.shape.gives_way:
            if need() <= width:
                break
            shown.remove(column)
        if need() > width and "params" in shown:
            fixed["params"] = max(SIZED["params"][0], fixed["params"] - (need() - width))
        self._shown = tuple(shown)
        return self._shown

    def on_resize(self, event: events.Resize) -> None:
        width = event.size.width
        layout = "full" if width >= FULL_FROM else "wide" if width >= WIDE_FROM else "narrow"
        if layout != self.layout:
            self.layout = layout  # its watcher resizes the columns
        else:
            self._size_columns(self.scrollable_content_region.width or event.size.width)
            self.refresh()

    def watch_layout(self) -> None:
        self._cells = {
            tid: row_cells(v, self._now, self.layout, self._row_context) for tid, v in self._views.items()
        }
        self._size_columns(self.scrollable_content_region.width or self.size.width)
        self.refresh()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips.clear()
        self._header = None
        self._looks = None

    def _styles(self) -> tuple[Style, Style, Style, Style]:
        if self._looks is None:
            style = self.get_component_rich_style
            odd = Style(bgcolor=style("job-table--odd").bgcolor)  # stripes change the background only
            header, to_come = style("job-table--header"), style("job-table--to-come")
            self._looks = (style("job-table--cursor"), odd, header, to_come)
        return self._looks

    # -- updates -------------------------------------------------------------------------------
    def update_tasks(
        self, views: Sequence[TaskView], now: float, *, metric: str | None = None, to_come: Sequence[str] = ()
    ) -> None:
        """Take the tasks' new state; repaint only rows whose cells changed (and all, if the order or the
        columns did). `metric`: what a sweep ranks trials by; `to_come`: lines for what is not planned yet."""
        before = self.selected_status
        selected = self.selected_id
        self._views = {v.task.id: v for v in views}
        self._now = now
        shape = table_shape(views)
        if shape.fitted:
            self._row_context = RowContext(metric, {v.task.id: v.task.status for v in views})
        changed: dict[str, tuple[int, int]] = {}  # task -> the cells (x from, x to) that changed
        cells_by_id = {}
        for v in views:
            cells = row_cells(v, now, self.layout, self._row_context if shape.fitted else None)
            old = self._cells.get(v.task.id)
            if old != cells:
                changed[v.task.id] = self._span(old, cells)
                self._strips.pop(v.task.id, None)
            cells_by_id[v.task.id] = cells
        self._cells = cells_by_id
        sized = sized_widths(shape, list(cells_by_id.values()), metric)
        columns = (shape, sized, metric if shape.fitted else None)
        if columns != self._columns:  # other columns (or widths, or titles): every row is drawn again
            self._columns = columns
            self.shape, self._sized, self._titles = shape, sized, {**shape.titles}
            if "metric" in shape.fitted:
                self._titles["metric"] = metric or "metric"
            self._size_columns(self.scrollable_content_region.width or self.size.width)
            self.refresh()
        to_come = tuple(to_come)
        if to_come != self._to_come:
            self._to_come = to_come
            self._order = []  # the virtual height changes: set it again below
        order = ordered(views, self.filter_by, self.sort_by)
        if order != self._order:
            self._set_order(order, keep=selected)
        else:
            top = round(self.scroll_y)
            for task_id, (x0, x1) in changed.items():
                row = self._row_of.get(task_id)
                if row is not None and top <= row < top + self.size.height:  # only what changed is drawn
                    self.refresh(Region(x0, row - top + 1, x1 - x0, 1))
        if self.selected_status != before:
            self.refresh_bindings()

    def _span(self, old: dict[str, str] | None, new: dict[str, str]) -> tuple[int, int]:
        """The x range covering the cells that differ (a ticking elapsed: that column only)."""
        x, lo, hi = 0, None, 0
        for column, width in self.column_widths.items():
            end = x + width + 2 * PAD
            if old is None or old.get(column) != new.get(column):
                lo = x if lo is None else lo
                hi = end
            x = end
        return (0, self.size.width) if lo is None or old is None else (lo, hi)

    def _set_order(self, order: list[str], keep: str | None) -> None:
        self._order = order
        self._row_of = {task_id: i for i, task_id in enumerate(order)}
        self.virtual_size = Size(self.size.width, len(order) + len(self.to_come) + 1)
        row = self._row_of.get(keep, min(self.cursor_row, max(0, len(order) - 1))) if keep else 0
        self.set_reactive(JobTable.cursor_row, max(0, min(row, len(order) - 1)))
        self._scroll_to_cursor()
        self.refresh()
        if self.selected_id is not None and self.selected_id != keep:
            self.post_message(self.TaskSelected(self.selected_id))

    def _reorder(self) -> None:
        self._set_order(ordered(list(self._views.values()), self.filter_by, self.sort_by), keep=self.selected_id)

    def watch_sort_by(self) -> None:
        self._reorder()

    def watch_filter_by(self) -> None:
        self._reorder()

    # -- drawing -------------------------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        if y == 0:
            return self._header_strip(width)
        row = round(self.scroll_y) + y - 1
        if row >= len(self._order):
            return self._to_come_strip(row - len(self._order), width)
        task_id = self._order[row]
        strip = self._strips.get(task_id)
        if strip is None or strip.cell_length != width:
            strip = self._strips[task_id] = self._render_row(task_id, width)
            self.rows_rendered += 1
        cursor, odd, _, _ = self._styles()
        if row == self.cursor_row:
            return _over(strip, cursor)
        return _over(strip, odd) if row % 2 else strip

    def _header_strip(self, width: int) -> Strip:
        if self._header is None or self._header.cell_length != width:
            style = self.rich_style + self._styles()[2]
            titles = self._titles
            text = "".join(" " * PAD + fit(titles.get(c, c), w) + " " * PAD for c, w in self.column_widths.items())
            self._header = Strip([Segment(fit(text, width), style)])
        return self._header

    def _to_come_strip(self, index: int, width: int) -> Strip:
        lines = self.to_come
        if index >= len(lines):
            return Strip.blank(width, self.rich_style)
        style = self.rich_style + self._styles()[3]
        return Strip([Segment(fit(" " * PAD + "┄ " + visible(lines[index]), width), style)])

    def _render_row(self, task_id: str, width: int) -> Strip:
        base = self.rich_style
        cells = self._cells[task_id]
        segments, used = [], 0
        for column, w in self.column_widths.items():
            value = cells.get(column, "")
            style = base + STATUS_STYLES[value] if column == "status" and value in STATUS_STYLES else base
            # Segments go to the terminal as they are: the last guard against a worker's escape sequences.
            segments.append(Segment(" " * PAD + fit(visible(value), w) + " " * PAD, style))
            used += w + 2 * PAD
        strip = Strip(segments, used)
        return strip.crop_extend(0, width, base)

    # -- cursor --------------------------------------------------------------------------------
    def watch_cursor_row(self, old: int, new: int) -> None:
        top = round(self.scroll_y)
        for row in (old, new):
            self.refresh(Region(0, row - top + 1, self.size.width, 1))
        self._scroll_to_cursor()
        if self.selected_id is not None:
            self.post_message(self.TaskSelected(self.selected_id))
        self.refresh_bindings()

    def _scroll_to_cursor(self) -> None:
        rows = max(1, self.size.height - 1)
        top = round(self.scroll_y)
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False, immediate=True)
        elif self.cursor_row >= top + rows:
            self.scroll_to(y=self.cursor_row - rows + 1, animate=False, immediate=True)

    def move_cursor(self, *, row: int) -> None:
        if self._order:
            self.cursor_row = max(0, min(row, len(self._order) - 1))

    def action_cursor(self, step: int) -> None:
        self.move_cursor(row=self.cursor_row + step)

    def action_page(self, step: int) -> None:
        self.move_cursor(row=self.cursor_row + step * max(1, self.size.height - 2))

    def action_cursor_to(self, row: int) -> None:
        self.move_cursor(row=row if row >= 0 else len(self._order) - 1)

    def on_click(self, event: events.Click) -> None:
        if event.y >= 1:
            self.move_cursor(row=round(self.scroll_y) + event.y - 1)

    # -- selection and keys --------------------------------------------------------------------
    @property
    def selected_id(self) -> str | None:
        return self._order[self.cursor_row] if 0 <= self.cursor_row < len(self._order) else None

    @property
    def selected(self) -> TaskView | None:
        return self._views.get(self.selected_id or "")

    @property
    def selected_status(self) -> str | None:
        view = self.selected
        return None if view is None else view.task.status

    def action_cycle_sort(self) -> None:
        self.sort_by = SORTS[(SORTS.index(self.sort_by) + 1) % len(SORTS)]

    def action_cycle_filter(self) -> None:
        self.filter_by = FILTERS[(FILTERS.index(self.filter_by) + 1) % len(FILTERS)]

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
