"""`i`: the selected task's processes as a tree, refreshed every second (CPU, memory, GPU memory)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from gputui.api.machine import CpuSampler
from gputui.gpus.probe import GIB, GpuSnapshot
from gputui.tui import glyphs
from gputui.views.processes import TreeRow, process_tree
from gputui.views.runview import RunView


def tree_table(rows: list[TreeRow]) -> Table:
    table = Table(box=None, pad_edge=False, expand=True, header_style="bold")
    for name, justify in (("PID", "right"), ("CPU%", "right"), ("RSS", "right"), ("GPU MEM", "right")):
        table.add_column(name, justify=justify, no_wrap=True)
    table.add_column("COMMAND", ratio=1, no_wrap=True, overflow="ellipsis")
    g = glyphs.now()
    for row in rows:
        table.add_row(
            str(row.pid),
            g.dash if row.cpu_percent is None else f"{row.cpu_percent:.0f}",
            g.dash if row.rss is None else f"{row.rss / 2**20:.0f} MiB",
            g.dash if row.gpu_memory is None else f"{row.gpu_memory / GIB:.1f} GiB",
            Text("  " * row.depth + (g.branch if row.depth else "") + row.command),
        )
    return table


def gpu_memory_by_pid(gpus: list[GpuSnapshot]) -> dict[int, int]:
    """pid -> bytes it holds on these GPUs."""
    return {p.pid: p.used_memory or 0 for g in gpus for p in g.processes}


class ProcessTreeScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape", "close", "Close"), Binding("i", "close", "Close", show=False)]

    def __init__(self, view: RunView, task_id: str, gpu_memory_of) -> None:
        """`gpu_memory_of()`: pid -> bytes on GPUs, from the app's latest GPU sample."""
        super().__init__()
        self.view, self.task_id, self.gpu_memory_of = view, task_id, gpu_memory_of
        self._cpu = CpuSampler()
        self.rows: list[TreeRow] = []  # as last shown

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(f"{self.task_id}: processes (this run's only)", classes="dialog-title", markup=False)
            with VerticalScroll():
                yield Static(f"reading /proc{glyphs.now().ellipsis}", id="tree")
            yield Label(f"esc close{glyphs.now().sep}refreshed every second", classes="dialog-keys", markup=False)

    def on_mount(self) -> None:
        self.sample()
        self.set_interval(1.0, self.sample)

    @work(thread=True, exclusive=True, exit_on_error=False)
    def sample(self) -> None:
        refs = self.view.processes([self.task_id]).get(self.task_id, [])
        rows = process_tree(refs, self.gpu_memory_of(), self._cpu)
        self.app.call_from_thread(self._show, rows)

    def _show(self, rows: list[TreeRow]) -> None:
        self.rows = rows
        self.query_one("#tree", Static).update(
            tree_table(rows) if rows else Text("no process of this task is running")
        )

    def action_close(self) -> None:
        self.dismiss(None)
