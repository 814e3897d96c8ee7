"""All GPUs at once, laid out like nvitop: full cards when they fit, one line per GPU when they do not.

`grid_shape` decides (pure, tested directly); the app tells the grid how many lines it may take
(`fit`), so the choice follows the terminal, never the grid's own height. `g` cycles auto/full/compact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from textual.app import ComposeResult
from textual.binding import Binding
from textual.events import Resize
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Static

from gputui.gpus.probe import GpuSnapshot
from gputui.tui.widgets.gpu_panel import GpuLine, GpuPanel, GpuState, line_label

MODES = ("auto", "full", "compact")
MIN_PANEL_WIDTH = 38  # cells; below this a card's bars and numbers stop fitting side by side
MIN_LINE_WIDTH = 72  # cells for one GPU line with both bars, sensors and a task id
PANEL_HEIGHT = 9  # lines of a card: border, title, two bars, sensors, two histories, tasks


@dataclass(frozen=True)
class GridShape:
    kind: str  # "full" | "compact"
    columns: int
    height: int  # lines all GPUs need in this shape


def _balanced(count: int, width: int, min_width: int) -> tuple[int, int]:
    """(columns, rows): as many columns as fit, then balanced (8 in room for 5 give 4+4, not 5+3)."""
    rows = math.ceil(count / max(1, width // min_width))
    return math.ceil(count / rows), rows


def grid_shape(mode: str, width: int, budget: int, count: int) -> GridShape:
    """The shape for `count` GPUs in `width` cells when the grid may take `budget` lines.

    auto: full cards with history when they fit the budget, else one line per GPU (nvitop's compact).
    """
    if count <= 0:
        return GridShape("compact", 1, 1)
    columns, rows = _balanced(count, width, MIN_PANEL_WIDTH)
    full = GridShape("full", columns, rows * PANEL_HEIGHT)
    columns, rows = _balanced(count, width, MIN_LINE_WIDTH)
    compact = GridShape("compact", columns, rows)
    if mode == "full":
        return full
    if mode == "compact":
        return compact
    return full if full.height <= budget else compact


class GpuPanels(Widget, can_focus=True):
    """A grid of GPU views keyed by GPU index, or a message when there is no GPU.

    Views are reused across ticks and recomposed only when the set of GPUs or the shape's kind changes.
    It scrolls (and takes focus) only when even one line per GPU does not fit its budget.
    """

    DEFAULT_CSS = """
    GpuPanels {
        layout: grid;
        grid-size: 1;
        grid-rows: auto;
        grid-gutter: 0 1;
        height: auto;
        overflow-y: auto;
    }
    GpuPanels.-compact { grid-gutter: 0 3; }
    GpuPanels:focus { background: $boost; }
    GpuPanels #no-gpu { width: 1fr; height: auto; padding: 0 1; color: $text-muted; }
    """
    BINDINGS = [
        Binding("g", "cycle_mode", "GPU layout"),
        Binding("up", "scroll_up", "Scroll up", show=False),
        Binding("down", "scroll_down", "Scroll down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home", "scroll_home", "Top", show=False),
        Binding("end", "scroll_end", "Bottom", show=False),
    ]

    NO_GPU_MESSAGE = "No GPU visible. Run with --simulate N (e.g. --simulate 4x24) to try gputui without one."
    WAITING_MESSAGE = "Looking for GPUs..."

    mode: reactive[str] = reactive("auto")
    shape: reactive[GridShape] = reactive(GridShape("compact", 1, 1), init=False)

    def __init__(
        self, *, only: frozenset[int] = frozenset(), id: str | None = None, classes: str | None = None
    ) -> None:
        """`only`: these GPU indices alone are shown (`--only`); empty: every GPU."""
        super().__init__(id=id, classes=classes)
        self.only = only
        self._states: dict[int, GpuState] = {}
        self._views: dict[int, GpuPanel | GpuLine] = {}
        self._budget = 1_000
        self._message = self.WAITING_MESSAGE

    def compose(self) -> ComposeResult:
        self._views = {}
        if not self._states:
            yield Static(self._message, id="no-gpu", markup=False)
            return
        states = [self._states[index] for index in sorted(self._states)]
        if self.shape.kind == "full":
            self._views = {s.snapshot.index: GpuPanel(s) for s in states}
        else:
            width = max(3, *(len(line_label(s.snapshot)) for s in states))
            self._views = {s.snapshot.index: GpuLine(s, label_width=width) for s in states}
        yield from self._views.values()

    @property
    def panels(self) -> Mapping[int, GpuPanel | GpuLine]:
        """The views on screen by GPU index (read-only)."""
        return MappingProxyType(self._views)

    def history(self, index: int) -> tuple[tuple[float | None, ...], tuple[float | None, ...]]:
        """(utilisation, memory) samples of one GPU as fractions 0..1, oldest first."""
        state = self._states[index]
        return tuple(state.util), tuple(state.memory)

    def update_gpus(
        self,
        snapshots: Sequence[GpuSnapshot],
        holders: Mapping[int, Sequence[str]] = MappingProxyType({}),
        ghosts: Mapping[int, str] = MappingProxyType({}),
        *,
        message: str | None = None,
    ) -> None:
        """Show one tick: update views in place; recompose only when GPUs come or go.

        With no snapshots, `message` (else the no-GPU hint) says why.
        """
        wanted = {snap.index: snap for snap in snapshots if not self.only or snap.index in self.only}
        changed = wanted.keys() != self._states.keys()
        for index in [i for i in self._states if i not in wanted]:
            del self._states[index]
        for index, snap in wanted.items():
            state = self._states.setdefault(index, GpuState(snap))
            state.record(snap, holders.get(index, ()), ghosts.get(index))
        if not wanted:
            text = message or self.NO_GPU_MESSAGE
            if snapshots and self.only:  # GPUs here, none of them asked for
                here = ", ".join(str(s.index) for s in snapshots)
                text = f"None of the GPUs --only names ({', '.join(map(str, sorted(self.only)))}) is here: {here}."
            changed = changed or text != self._message
            self._message = text
        if changed:
            self._reshape(force=True)
        else:
            for view in self._views.values():
                view.show()

    def fit(self, budget: int) -> None:
        """The most lines the grid may take (the app keeps the rest for the table and logs)."""
        self._budget = max(1, budget)
        self.styles.max_height = self._budget
        self._reshape()

    def on_resize(self, event: Resize) -> None:
        self._reshape()

    def _reshape(self, force: bool = False) -> None:
        width = self.content_size.width or self.app.size.width
        shape = grid_shape(self.mode, width, self._budget, len(self._states))
        kind_changed = shape.kind != self.shape.kind
        self.set_reactive(GpuPanels.shape, shape)
        self.styles.grid_size_columns = shape.columns
        self.set_class(shape.kind == "compact", "-compact")
        self.can_focus = shape.height > self._budget  # only then is there anything to scroll to
        if force or kind_changed:
            self.refresh(recompose=True)

    def watch_mode(self) -> None:
        self._reshape()

    def action_cycle_mode(self) -> None:
        self.mode = MODES[(MODES.index(self.mode) + 1) % len(MODES)]
        self.notify(f"GPU layout: {self.mode} ({self.shape.kind})")
