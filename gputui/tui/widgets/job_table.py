"""The job table: one row per task, drawn line by line, holding only the rows around what is on screen.

A line-API widget rather than a DataTable: a DataTable invalidates every rendered row when any cell
changes, so a running task's elapsed time ticking each second redrew the whole table. Here each row is
rendered once per change of its own cells, only the rows on screen are drawn, and a tick repaints only the
rows that changed. Rows come a page at a time (`show_page`; views/task_page.py), a run's read from its store
and, before launch, a job plan's made from its tasks (or all at once: `update_tasks`): the table is as tall as
the run, holds the rows on screen and `MARGIN` each way, and asks for others (`RowsWanted`) before the cursor or
the scroll reaches them: 100,000 tasks cost what a few hundred do. Columns follow the width: GPU-hours and peak
GPU memory from 150 cells; at 80 the range, rate and tries give way (the task bar shows them) so the reason
still shows. A sweep's trials show their stage, parameters,
parent, metric and rank instead of a range, a pipeline's steps what they wait for; their columns (as the job
kind lists them) give way one by one as the width shrinks, the progress last: at 80 cells a running trial or
step keeps its 5-cell bar and step count, as a shard does, its params (or waits) cut where that makes room.
Lines after the rows name what is not planned yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
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
from gputui.tui import modes
from gputui.tui.widgets.job_rows import (
    FILTERS,
    FULL_FROM,
    WIDE_FROM,
    RowContext,
    fitted_widths,
    ordered,
    row_cells,
    sized_widths,
    table_shape,
    verb_acts,
)
from gputui.tui.widgets.table_strips import changed_cells, header_strip, over, row_strip, to_come_strip
from gputui.views.kinds import Columns
from gputui.views.runview import TaskView
from gputui.views.task_page import SORTS, TableQuery, TableWindow, TaskPage, fresher

TAG_MARK = "*"  # in a tagged row's first cell of padding (plain ASCII: every terminal, every font)


class JobTable(ScrollView, can_focus=True):
    """Keys act on the highlighted task; the app decides (confirmations, read-only) and acts."""

    BINDINGS = [
        Binding("p", "request('pause')", "Pause/resume"),
        Binding("k", "request('kill')", "Kill"),
        Binding("r", "request('retry')", "Retry"),
        Binding("space", "toggle_tag", "Tag", show=False),
        Binding("escape", "clear_tags", "Clear tags", show=False),
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
        "job-table--tagged",
    }
    DEFAULT_CSS = """
    JobTable { background: $surface; scrollbar-gutter: stable; overflow-x: hidden; }
    JobTable > .job-table--header { text-style: bold; background: $panel; }
    JobTable > .job-table--cursor { background: $block-cursor-blurred-background; }
    JobTable:focus > .job-table--cursor { background: $block-cursor-background; color: $block-cursor-foreground;
        text-style: bold; }
    JobTable > .job-table--odd { background: $foreground 4%; }
    JobTable > .job-table--to-come { color: $foreground-muted; text-style: italic; }
    JobTable > .job-table--tagged { color: $accent; text-style: bold; }
    JobTable.-stale { opacity: 50%; }
    """
    MARGIN = 60  # rows of a run held beyond those on screen, each way

    @dataclass
    class TaskSelected(Message):
        """The highlighted task changed (the app shows its log): as read then (the row may be let go since)."""

        task_id: str
        view: TaskView | None = None

        def can_replace(self, message: Message) -> bool:  # a burst of moves collapses to the last
            return isinstance(message, JobTable.TaskSelected)

    @dataclass
    class ActionRequested(Message):
        verb: str  # pause | resume | kill | retry | open
        task_id: str
        status: str

    @dataclass
    class BatchRequested(Message):
        """A verb on every tagged task (`task_ids`, in the order they were tagged): the app confirms once."""

        verb: str  # pause | kill | retry (pause on tasks none of which runs: resume)
        task_ids: tuple[str, ...]

    @dataclass
    class RowsWanted(Message):
        """Rows of a run soon on screen and not held: the app reads `window`'s page for `show_page`."""

        window: TableWindow

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, JobTable.RowsWanted)

    sort_by: reactive[str] = reactive("id")
    filter_by: reactive[str] = reactive("all")
    layout: reactive[str] = reactive("wide", init=False)
    cursor_row: reactive[int] = reactive(0, init=False)
    tag_count: reactive[int] = reactive(0, init=False)  # tasks tagged (space), for the task bar

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._paged = False  # a run's rows, read a page at a time (else a plan's, all given)
        self._plan: list[TaskView] = []  # a plan's rows, ordered here
        self._total = 0  # rows the view shows
        self._at: dict[int, str] = {}  # row -> task, for the rows held
        self._row_of: dict[str, int] = {}
        self._views: dict[str, TaskView] = {}
        self._cells: dict[str, dict[str, str]] = {}
        self._strips: dict[str, Strip] = {}  # rendered rows, dropped when their cells or the looks change
        self._announced: str | None = None  # the task last said to be selected (TaskSelected)
        self._asked: TableWindow | None = None  # the rows asked for and not come yet
        self.rows_query = TableQuery()  # the view the rows held are of (a run's next comes a page later)
        self._now = 0.0
        self.column_widths: dict[str, int] = {}
        self.rows_rendered = 0  # rows drawn afresh (not from the cache): what a tick costs
        self._header: Strip | None = None
        self._looks: tuple[Style, Style, Style, Style, Style] | None = None  # cursor, odd, header, to come, tag
        self.shape = Columns()  # the rows' kind's columns: none (a shard's) keeps the fixed layouts, else fitted
        self._row_context = RowContext()
        self._sized: dict[str, int] = {}  # trials and steps: columns sized to their contents
        self._to_come: tuple[str, ...] = ()  # lines after the rows: what is not planned yet
        self._columns: tuple = (Columns(), {}, None)  # (shape, sized widths, metric): the columns' terms
        self._titles: dict[str, str] = {}  # column -> its header, where not its name
        self._tagged: dict[str, None] = {}  # tagged task ids, in the order tagged: kept across pages and views

    def on_mount(self) -> None:
        self._size_columns(self.scrollable_content_region.width or self.size.width)

    # -- shape ---------------------------------------------------------------------------------
    @property
    def columns_shown(self) -> tuple[str, ...]:
        return tuple(self.column_widths)

    @property
    def to_come(self) -> tuple[str, ...]:
        """The lines shown after the rows (with the view showing all tasks)."""
        return self._to_come if self.filter_by == "all" else ()

    @property
    def row_count(self) -> int:
        return self._total

    @property
    def row_ids(self) -> list[str]:
        """The tasks of the rows held, in order: every row of a plan, or of a run of a few hundred."""
        return [self._at[row] for row in sorted(self._at)]

    def row_text(self, task_id: str) -> list[str]:
        """The cells of a task's row as shown (columns of the current layout)."""
        cells = self._cells.get(task_id, {})
        return [cells.get(c, "") for c in self.columns_shown]

    def view_of(self, task_id: str) -> TaskView | None:  # a task of a row held, as last read
        return self._views.get(task_id)

    def _size_columns(self, width: int) -> None:
        self.column_widths = fitted_widths(self.shape, self.layout, self._sized, width)
        self._strips.clear()
        self._header = None

    def on_resize(self, event: events.Resize) -> None:
        width = event.size.width
        layout = "full" if width >= FULL_FROM else "wide" if width >= WIDE_FROM else "narrow"
        if layout != self.layout:
            self.layout = layout  # its watcher resizes the columns
        else:
            self._size_columns(self.scrollable_content_region.width or event.size.width)
            self.refresh()
        self._want_rows()

    def watch_layout(self) -> None:
        context = self._row_context if self.shape.fitted else None
        self._cells = {tid: row_cells(v, self._now, self.layout, context) for tid, v in self._views.items()}
        self._size_columns(self.scrollable_content_region.width or self.size.width)
        self.refresh()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips.clear()
        self._header = None
        self._looks = None

    def _styles(self) -> tuple[Style, Style, Style, Style, Style]:
        if self._looks is None:
            style = self.get_component_rich_style
            odd = Style(bgcolor=style("job-table--odd").bgcolor)  # stripes change the background only
            header, to_come = style("job-table--header"), style("job-table--to-come")
            tagged = style("job-table--tagged", partial=True)
            self._looks = (style("job-table--cursor"), odd, header, to_come, tagged)
        return self._looks

    # -- updates -------------------------------------------------------------------------------
    def update_tasks(
        self, views: Sequence[TaskView], now: float, *, metric: str | None = None, to_come: Sequence[str] = ()
    ) -> None:
        """Every row at once (a plan's); repaint only rows whose cells changed (and all, if the order or the
        columns did). `metric`: what a sweep ranks trials by; `to_come`: lines for what is not planned yet."""
        self._paged, self._plan, self._now = False, list(views), now
        by_id = {v.task.id: v for v in views}
        shown = tuple(by_id[t] for t in ordered(views, self.filter_by, self.sort_by))
        statuses = {v.task.id: v.task.status for v in views}
        self._take(TaskPage(self.window, len(shown), 0, shown, None, statuses), views, metric, to_come, False)

    def show_page(
        self,
        page: TaskPage,
        now: float,
        *,
        live: Sequence[TaskView] = (),
        metric: str | None = None,
        to_come: Sequence[str] = (),
    ) -> None:
        """A run's rows around what is on screen, out of `page.total` (`live`: tasks as the last snapshot read
        them, with their progress: a page read on a key has none). A page of another view is dropped (and this
        one's asked for, unless it is on its way)."""
        if page.query != self.query:
            if self._asked is None:
                self._ask(self.window)
            return
        self._asked = None  # what came may not be what was asked: held rows are checked again below
        seen = {v.task.id: v for v in live}
        views = tuple(fresher(v, seen.get(v.task.id)) for v in page.views)
        self._paged, self._plan, self._now = True, [], now
        statuses = {**page.statuses, **{v.task.id: v.task.status for v in views}}
        page = replace(page, views=views, statuses=statuses)
        self._take(page, views, metric, to_come, page.window.selected == self.selected_id)
        self._want_rows()

    def _take(
        self, page: TaskPage, views: Sequence[TaskView], metric: str | None, to_come: Sequence[str], follow: bool
    ) -> None:
        """Take the page's rows (`views`: every task held, the rows' and a plan's others) as of `_now`; `follow`:
        the cursor follows its task to the page's `selected_at`."""
        before, self.rows_query = self.selected_status, page.query
        statuses, follow_to = page.statuses, page.selected_at if follow else None
        self._views = {v.task.id: v for v in views}
        shape = table_shape(views)
        if shape.fitted:
            self._row_context = RowContext(metric, statuses)
        context = self._row_context if shape.fitted else None
        cells_by_id = {v.task.id: row_cells(v, self._now, self.layout, context) for v in views}
        changed = changed_cells(self.column_widths, self._cells, cells_by_id, self.size.width)
        self._cells = cells_by_id
        self._strips = {t: strip for t, strip in self._strips.items() if t in cells_by_id and t not in changed}
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
        at = {page.offset + i: v.task.id for i, v in enumerate(page.views)}
        moved = follow_to is not None and follow_to != self.cursor_row
        if moved or to_come != self._to_come or at != self._at or page.total != self._total:
            self._to_come = to_come
            self._set_rows(at, page.total, follow_to)
        else:
            top = round(self.scroll_y)
            for task_id, (x0, x1) in changed.items():
                row = self._row_of.get(task_id)
                if row is not None and top <= row < top + self.size.height:  # only what changed is drawn
                    self.refresh(Region(x0, row - top + 1, x1 - x0, 1))
        if self.selected_status != before:
            self.refresh_bindings()

    def _set_rows(self, at: dict[int, str], total: int, follow: int | None) -> None:
        """The cursor stays on its task where it can (`follow`: that task's row in a run's new order), else on
        its row; on the first row the first time."""
        keep, had = self.selected_id, self._total
        self._at, self._total = at, total
        self._row_of = {task_id: row for row, task_id in at.items()}
        self.virtual_size = Size(self.size.width, total + len(self.to_come) + 1)
        if follow is None:
            follow = self._row_of.get(keep, self.cursor_row) if had else 0
        self.set_reactive(JobTable.cursor_row, max(0, min(follow, total - 1)))
        self._scroll_to_cursor()
        self.refresh()
        self._announce()
        self._want_rows()

    def _announce(self) -> None:
        """Say which task is selected, once per change (a row not read yet says it when it comes)."""
        selected = self.selected_id
        if selected is not None and selected != self._announced:
            self._announced = selected
            self.post_message(self.TaskSelected(selected, self._views.get(selected)))

    @property
    def query(self) -> TableQuery:
        return TableQuery(self.filter_by, self.sort_by)

    @property
    def window(self) -> TableWindow:
        """The rows a run's page should hold now: those on screen and `MARGIN` each way."""
        top, rows = round(self.scroll_y), max(1, self.size.height - 1)
        start = max(0, top - self.MARGIN)
        return TableWindow(self.query, start, rows + top - start + self.MARGIN, self.selected_id, self.cursor_row)

    def _want_rows(self) -> None:
        """Ask for a run's rows before they are on screen: once fewer than half the margin are held beyond
        it, either way (once per window)."""
        if not self._paged:
            return
        top, rows, near = round(self.scroll_y), max(1, self.size.height - 1), self.MARGIN // 2
        if all(row in self._at for row in range(max(0, top - near), min(self._total, top + rows + near))):
            return
        if self.window != self._asked:
            self._ask(self.window)

    def _ask(self, window: TableWindow) -> None:
        self._asked = window
        self.post_message(self.RowsWanted(window))

    def _reorder(self) -> None:
        if self._paged:  # the rows held stay until the new order's page comes
            self._ask(self.window)
            return
        order, self.rows_query = ordered(self._plan, self.filter_by, self.sort_by), self.query
        self._set_rows(dict(enumerate(order)), len(order), None)

    watch_sort_by = watch_filter_by = _reorder

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        self._want_rows()

    # -- drawing -------------------------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        if y == 0:
            return self._header_strip(width)
        row = round(self.scroll_y) + y - 1
        if row >= self._total:
            return self._to_come_strip(row - self._total, width)
        task_id = self._at.get(row)
        strip = self._strips.get(task_id) if task_id is not None else Strip.blank(width, self.rich_style)
        if task_id is not None and (strip is None or strip.cell_length != width):
            strip = self._strips[task_id] = self._render_row(task_id, width)
            self.rows_rendered += 1
        cursor, odd, *_ = self._styles()
        if row == self.cursor_row:
            return over(strip, cursor)
        return over(strip, odd) if row % 2 else strip

    def _header_strip(self, width: int) -> Strip:
        if self._header is None or self._header.cell_length != width:
            style = self.rich_style + self._styles()[2]
            self._header = header_strip(self.column_widths, self._titles, style, width)
        return self._header

    def _to_come_strip(self, index: int, width: int) -> Strip:
        lines = self.to_come
        if index >= len(lines):
            return Strip.blank(width, self.rich_style)
        return to_come_strip(lines[index], self.rich_style + self._styles()[3], width)

    def _render_row(self, task_id: str, width: int) -> Strip:
        strip = row_strip(self._cells[task_id], self.column_widths, self.rich_style, width)
        if task_id not in self._tagged:
            return strip
        tagged = self._styles()[4]  # a tagged row: its mark in the first cell's padding, the row in the tag's look
        mark = Strip([Segment(TAG_MARK, self.rich_style + tagged)], 1)
        return Strip.join([mark, over(strip.crop(1, width), tagged)])

    # -- cursor --------------------------------------------------------------------------------
    def watch_cursor_row(self, old: int, new: int) -> None:
        top = round(self.scroll_y)
        for row in (old, new):
            self.refresh(Region(0, row - top + 1, self.size.width, 1))
        self._scroll_to_cursor()
        self._announce()
        self._want_rows()
        self.refresh_bindings()

    def _scroll_to_cursor(self) -> None:
        """Forced: rows that just came may not have their scrollbar laid out yet (Textual then refuses)."""
        rows = max(1, self.size.height - 1)
        top = round(self.scroll_y)
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False, immediate=True, force=True)
        elif self.cursor_row >= top + rows:
            self.scroll_to(y=self.cursor_row - rows + 1, animate=False, immediate=True, force=True)

    def move_cursor(self, *, row: int) -> None:
        if self._total:
            self.cursor_row = max(0, min(row, self._total - 1))

    def action_cursor(self, step: int) -> None:
        self.move_cursor(row=self.cursor_row + step)

    def action_page(self, step: int) -> None:
        self.move_cursor(row=self.cursor_row + step * max(1, self.size.height - 2))

    def action_cursor_to(self, row: int) -> None:
        self.move_cursor(row=row if row >= 0 else self._total - 1)

    def on_click(self, event: events.Click) -> None:
        if event.y >= 1:
            self.move_cursor(row=round(self.scroll_y) + event.y - 1)

    # -- selection and keys --------------------------------------------------------------------
    @property
    def selected_id(self) -> str | None:
        return self._at.get(self.cursor_row)

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
        mode = getattr(self.app, "mode", modes.LIVE)
        if action == "clear_tags":
            return bool(self._tagged)
        if action == "toggle_tag":
            return self.selected_id is not None and mode in (modes.LIVE, modes.FINISHED)
        if action != "request":
            return True
        verb = str(parameters[0])
        if self._tagged and verb != "open":  # on the tagged tasks: whichever of them it applies to
            return any(verb_acts(verb, status, mode) for status in Status.ALL)
        view = self.selected
        if view is None:
            return False
        if verb == "open":
            return view.attempt is not None
        return verb_acts(verb, view.task.status, mode)

    def action_request(self, verb: str) -> None:
        if self._tagged and verb != "open":
            self.post_message(self.BatchRequested(verb, self.tagged))
            return
        view = self.selected
        if view is None:
            return
        status = view.task.status
        if verb == "pause" and status == Status.PAUSED:
            verb = "resume"
        self.post_message(self.ActionRequested(verb, view.task.id, status))

    # -- tags ----------------------------------------------------------------------------------
    @property
    def tagged(self) -> tuple[str, ...]:
        """The tagged tasks' ids, in the order they were tagged (rows held or not, shown by the view or not)."""
        return tuple(self._tagged)

    def action_toggle_tag(self) -> None:
        task_id = self.selected_id
        if task_id is None:
            return
        if task_id in self._tagged:
            del self._tagged[task_id]
        else:
            self._tagged[task_id] = None
        self._tags_changed([task_id])

    def action_clear_tags(self) -> None:
        self.clear_tags()

    def clear_tags(self) -> None:
        changed, self._tagged = list(self._tagged), {}
        self._tags_changed(changed)

    def _tags_changed(self, task_ids: Sequence[str]) -> None:
        """Those rows drawn again (only those), the count said, the keys' footer brought up to date."""
        top = round(self.scroll_y)
        for task_id in task_ids:
            self._strips.pop(task_id, None)
            row = self._row_of.get(task_id)
            if row is not None and top <= row < top + self.size.height:
                self.refresh(Region(0, row - top + 1, self.size.width, 1))
        self.tag_count = len(self._tagged)
        self.refresh_bindings()
