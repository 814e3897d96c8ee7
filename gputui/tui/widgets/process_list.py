"""The monitor-mode table of GPU processes, marking the ones this gputui run owns.

Rows are built elsewhere (no I/O here) and applied as a keyed diff, so a tick touches only the cells
that changed and the cursor stays on the same process. A filter (`/`, `--only`, `--user`, `--pid`) narrows
the rows shown. `k` only asks (a message): whether a process may be ended, and ending it, is the process
panel's, by one rule (`gputui.views.processes.end_process`: the user's own processes only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.cells import cell_len
from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import DataTable

from gputui.gpus.probe import GIB
from gputui.text_safety import visible
from gputui.tui import glyphs
from gputui.views.processes import ProcessFilter

OURS_MARK = glyphs.UNICODE.ours  # as drawn with Unicode glyphs (`glyphs.now().ours` is what is drawn)
MAX_COMMAND_CELLS = 60
COLUMNS: tuple[tuple[str, str], ...] = (
    ("ours", "ours"),
    ("gpu", "GPU"),
    ("pid", "PID"),
    ("user", "USER"),
    ("mem", "GPU MEM"),
    ("sm", "%SM"),
    ("cpu", "CPU%"),
    ("task", "TASK"),
    ("command", "COMMAND"),
)
_RIGHT = frozenset({"gpu", "pid", "mem", "sm", "cpu"})
SORTS = ("gpu", "memory", "cpu")  # `s` cycles; memory and CPU: the largest first


@dataclass(frozen=True)
class ProcessRow:
    """One process on one GPU; `ours` when its pid belongs to this gputui run."""

    gpu: int
    pid: int
    user: str
    used_memory: int | None  # bytes; None when the driver does not say
    command: str
    ours: bool
    task_id: str | None = None  # the gputui task it belongs to
    sm_util: float | None = None  # %SM, where NVML gives it
    cpu_percent: float | None = None

    @property
    def key(self) -> str:
        """The table row key: a pid may use several GPUs, so the GPU is part of it."""
        return f"{self.gpu}:{self.pid}"


def truncate(text: str, width: int = MAX_COMMAND_CELLS) -> str:
    """Cut `text` to `width` cells with an ellipsis, on one line."""
    text = " ".join(text.split())
    if cell_len(text) <= width:
        return text
    out, used = [], 0
    for ch in text:
        used += cell_len(ch)
        if used > width - 1:
            break
        out.append(ch)
    return "".join(out) + glyphs.now().ellipsis


def cell_strings(row: ProcessRow, command_width: int = MAX_COMMAND_CELLS) -> dict[str, str]:
    """What each column shows for `row`; compared between ticks to find the cells that changed."""
    dash = glyphs.now().dash
    mem = dash if row.used_memory is None else f"{row.used_memory / GIB:.1f} GiB"
    return {
        "ours": glyphs.now().ours if row.ours else "",
        "gpu": str(row.gpu),
        "pid": str(row.pid),
        "user": row.user,
        "mem": mem,
        "sm": dash if row.sm_util is None else f"{row.sm_util:.0f}",
        "cpu": dash if row.cpu_percent is None else f"{row.cpu_percent:.0f}",
        "task": row.task_id or "",
        "command": truncate(visible(row.command), command_width),  # any user's argv: controls shown
    }


class ProcessList(DataTable):
    """GPU processes, one row per (GPU, pid), keyed `f"{gpu}:{pid}"`, sorted by GPU then pid, or (`s`)
    by GPU memory or CPU, largest first.

    Cells are rich `Text`, never markup, so a command line containing "[" shows as written.

    `only` (GPU indices, from `--only`) always narrows the rows; `filter` (`/`; `--user`, `--pid`) is the
    one a user edits and `esc` clears.
    """

    BINDINGS = [
        Binding("s", "cycle_sort", "Sort"),
        Binding("slash", "edit_filter", "Filter"),
        Binding("k", "end_process", "End process"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]
    sort_by: reactive[str] = reactive("gpu", init=False)
    filter: reactive[ProcessFilter] = reactive(ProcessFilter, init=False)

    class FilterWanted(Message):
        """`/`: the user wants to edit the filter."""

    class EndWanted(Message):
        """`k`: the user wants the highlighted process ended (the panel checks whose it is, and asks)."""

        def __init__(self, row: ProcessRow) -> None:
            super().__init__()
            self.row = row

    class Filtered(Message):
        """The rows shown changed by filter: `shown` of `total`."""

        def __init__(self, shown: int, total: int) -> None:
            super().__init__()
            self.shown, self.total = shown, total

    DEFAULT_CSS = """
    ProcessList { height: 1fr; }
    ProcessList > .process-list--ours { color: $success; text-style: bold; }
    """
    COMPONENT_CLASSES = DataTable.COMPONENT_CLASSES | {"process-list--ours"}

    def __init__(
        self,
        *,
        command_width: int = MAX_COMMAND_CELLS,
        only: frozenset[int] = frozenset(),
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, name=name, id=id, classes=classes)
        self.command_width = command_width
        self.only = only
        self._all: Sequence[ProcessRow] = ()  # every row handed in, before the filters
        self._counts = (0, 0)
        self._shown: dict[str, dict[str, str]] = {}
        self._rows: dict[str, ProcessRow] = {}
        self._pending: Sequence[ProcessRow] | None = None
        self._ready = False
        self._resort = False

    def on_mount(self) -> None:
        self._ready = True  # `is_mounted` only turns true after the Mount handlers have run
        for key, label in COLUMNS:
            self.add_column(Text(label, justify="right" if key in _RIGHT else "left"), key=key)
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self.update_processes(pending)

    def action_edit_filter(self) -> None:
        self.post_message(self.FilterWanted())

    def action_end_process(self) -> None:
        row = self.highlighted_process
        if row is not None:
            self.post_message(self.EndWanted(row))

    def action_clear_filter(self) -> None:
        self.filter = ProcessFilter()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "clear_filter":
            return bool(self.filter)  # else esc goes on to the app
        return True

    def watch_filter(self) -> None:
        self.refresh_bindings()
        if self._ready:
            self.update_processes(self._all)

    def shows(self, row: ProcessRow) -> bool:
        """Whether the filters let `row` through."""
        if self.only and row.gpu not in self.only:
            return False
        return self.filter.matches(gpu=row.gpu, pid=row.pid, user=row.user, command=row.command)

    def action_cycle_sort(self) -> None:
        self.sort_by = SORTS[(SORTS.index(self.sort_by) + 1) % len(SORTS)]

    def watch_sort_by(self) -> None:
        self._apply_sort()

    def _apply_sort(self) -> None:
        rows = self._rows
        self.sort(
            "gpu", "pid", key=lambda cells: sort_key(rows[f"{cells[0].plain}:{cells[1].plain}"], self.sort_by)
        )
        self._resort = False

    @property
    def rows_by_key(self) -> dict[str, ProcessRow]:
        """The rows now shown, by row key (a copy)."""
        return dict(self._rows)

    @property
    def highlighted_process(self) -> ProcessRow | None:
        """The process under the cursor, if any."""
        if not self.row_count or not self.is_valid_row_index(self.cursor_row):
            return None
        row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        return self._rows.get(row_key.value or "")

    def _cell(self, column: str, value: str) -> Text:
        if column == "ours":
            return Text(value, style=self.get_component_rich_style("process-list--ours"), end="")
        return Text(value, justify="right" if column in _RIGHT else "left", no_wrap=True, end="")

    def update_processes(self, rows: Sequence[ProcessRow]) -> None:
        """Show `rows`: remove gone keys, update changed cells only, add new keys, keep the cursor's row."""
        if not self._ready:
            self._pending = rows  # columns need the app's console; applied on mount
            return
        self._all = rows
        wanted = {row.key: row for row in rows if self.shows(row)}
        if (len(wanted), len(rows)) != self._counts:
            self._counts = (len(wanted), len(rows))
            self.post_message(self.Filtered(*self._counts))
        current = self.highlighted_process
        cursor_key = current.key if current is not None else None
        added = False
        with self.app.batch_update():
            for key in [k for k in self._shown if k not in wanted]:
                self.remove_row(key)
                del self._shown[key], self._rows[key]
            for key, row in wanted.items():
                new = cell_strings(row, self.command_width)
                old = self._shown.get(key)
                if old is None:
                    self.add_row(*(self._cell(col, new[col]) for col, _ in COLUMNS), key=key)
                    added = True
                else:
                    if self.sort_by != "gpu" and (row.used_memory, row.cpu_percent) != (
                        self._rows[key].used_memory,
                        self._rows[key].cpu_percent,
                    ):
                        self._resort = True
                    for col, _ in COLUMNS:
                        if new[col] != old[col]:
                            grow = cell_len(new[col]) > self.columns[col].content_width  # type: ignore[index]
                            self.update_cell(key, col, self._cell(col, new[col]), update_width=grow)
                self._shown[key] = new
                self._rows[key] = row
            if added or self._resort:
                self._apply_sort()
            if cursor_key is not None and cursor_key in self._rows:
                index = self.get_row_index(cursor_key)
                if index != self.cursor_row:
                    self.move_cursor(row=index, scroll=False)


def sort_key(row: ProcessRow, by: str) -> tuple:
    """Numeric orders: GPU 10 after GPU 9; the most memory or CPU first (unknown last)."""
    if by == "memory":
        return (-(row.used_memory or -1), row.gpu, row.pid)
    if by == "cpu":
        return (-(row.cpu_percent if row.cpu_percent is not None else -1), row.gpu, row.pid)
    return (row.gpu, row.pid)
