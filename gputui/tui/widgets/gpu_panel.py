"""Live GPU panels: one compact card per GPU, laid out in a grid that adapts to the terminal.

The panels only display snapshots handed to them (`update_gpus`); probing happens elsewhere, off the
event loop. Each tick updates child widgets in place, so a refresh costs a few repaints, not a recompose.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult, RenderResult
from textual.containers import Horizontal
from textual.events import Resize
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Label, Static

from gputui.gpus.probe import GIB, GpuSnapshot

HISTORY_LENGTH = 60  # samples kept per GPU; at a 1 s tick, the last minute
MIN_PANEL_WIDTH = 38  # cells; below this a panel's bars and numbers stop fitting side by side
FULL_PANEL_HEIGHT = 10  # lines a full panel needs (border, header, 2 bars, sensors, 2 histories, tasks, ghost)
DASH = "–"


def format_memory(used: int | None, total: int | None) -> str:
    """'12.3 / 24.0 GiB'; a dash stands for what the GPU cannot tell."""
    used_s = DASH if used is None else f"{used / GIB:.1f}"
    total_s = DASH if total is None else f"{total / GIB:.1f}"
    return f"{used_s} / {total_s} GiB"


def format_sensors(snapshot: GpuSnapshot, *, short: bool = False) -> str:
    """'70°C  310 / 350 W' ('70°C 310W' when short), with dashes where the driver does not say."""
    temp = DASH if snapshot.temperature is None else f"{snapshot.temperature:.0f}"
    if short:
        return f"{temp}°C {DASH if snapshot.power is None else f'{snapshot.power:.0f}'}W"
    if snapshot.power is None:
        power = f"{DASH} W"
    elif snapshot.power_limit is None:
        power = f"{snapshot.power:.0f} W"
    else:
        power = f"{snapshot.power:.0f} / {snapshot.power_limit:.0f} W"
    return f"{temp}°C  {power}"


def _memory_fraction(snapshot: GpuSnapshot) -> float | None:
    if snapshot.memory_total <= 0:
        return None
    return min(1.0, max(0.0, snapshot.memory_used / snapshot.memory_total))


def _util_fraction(snapshot: GpuSnapshot) -> float | None:
    if snapshot.utilization is None:
        return None
    return min(1.0, max(0.0, snapshot.utilization / 100.0))


def grid_shape(width: int, height: int, count: int) -> tuple[int, bool]:
    """(columns, compact) for `count` panels in a width x height area.

    Columns are balanced (8 GPUs in room for 5 give 4+4, not 5+3); compact when full panels would not fit
    the height, so 8 GPUs on 80x24 still show at once.
    """
    if count <= 0:
        return 1, False
    max_columns = max(1, width // MIN_PANEL_WIDTH)
    rows = math.ceil(count / max_columns)
    columns = math.ceil(count / rows)
    return columns, rows * FULL_PANEL_HEIGHT > height


class GpuMeter(Widget):
    """A one-line bar 'mem ━━━━━━━╺━━━ 12.3 / 24.0 GiB' that stretches to its width.

    Colour follows load (low/mid/high component classes), so the app's theme decides the palette.
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "gpu-meter--label",
        "gpu-meter--low",
        "gpu-meter--mid",
        "gpu-meter--high",
        "gpu-meter--empty",
    }
    DEFAULT_CSS = """
    GpuMeter { height: 1; width: 1fr; }
    GpuMeter > .gpu-meter--label { color: $text-muted; }
    GpuMeter > .gpu-meter--low { color: $success; }
    GpuMeter > .gpu-meter--mid { color: $warning; }
    GpuMeter > .gpu-meter--high { color: $error; }
    GpuMeter > .gpu-meter--empty { color: $foreground 15%; }
    """
    MID, HIGH = 0.5, 0.85

    fraction: reactive[float | None] = reactive(None)
    suffix: reactive[str] = reactive("")
    suffix_width: reactive[int] = reactive(0)  # pad the numbers so stacked meters' bars line up

    def __init__(self, label: str, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.label = label

    def render(self) -> RenderResult:
        width = self.size.width
        text = Text(no_wrap=True, overflow="ellipsis", end="")
        text.append(f"{self.label:<4} ", self.get_component_rich_style("gpu-meter--label"))
        suffix = f" {self.suffix.rjust(self.suffix_width)}"
        bar_width = width - text.cell_len - len(suffix)
        if bar_width >= 3:
            fraction = self.fraction or 0.0
            filled = round(fraction * bar_width)
            if self.fraction is None:
                level = "empty"
            else:
                level = "high" if fraction >= self.HIGH else "mid" if fraction >= self.MID else "low"
            text.append("━" * filled, self.get_component_rich_style(f"gpu-meter--{level}"))
            text.append("━" * (bar_width - filled), self.get_component_rich_style("gpu-meter--empty"))
        text.append(suffix)
        return text


class GpuHistory(Widget):
    """A fixed-scale sparkline of recent samples (0..1), newest on the right.

    Textual's `Sparkline` scales between the data's own min and max, so a steady 5% would fill the row;
    a fixed 0..1 scale keeps idle GPUs looking idle.
    """

    BARS = "▁▂▃▄▅▆▇█"
    COMPONENT_CLASSES: ClassVar[set[str]] = {"gpu-history--label", "gpu-history--bar"}
    DEFAULT_CSS = """
    GpuHistory { height: 1; width: 1fr; }
    GpuHistory > .gpu-history--label { color: $text-muted; }
    GpuHistory > .gpu-history--bar { color: $accent; }
    """

    samples: reactive[tuple[float | None, ...]] = reactive(())

    def __init__(self, label: str, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.label = label

    def render(self) -> RenderResult:
        text = Text(no_wrap=True, end="")
        text.append(f"{self.label:<4} ", self.get_component_rich_style("gpu-history--label"))
        room = max(0, self.size.width - text.cell_len)
        shown = self.samples[-room:] if room else ()
        bars = "".join(" " if v is None else self.BARS[min(7, max(0, round(v * 7)))] for v in shown).rjust(room)
        text.append(bars, self.get_component_rich_style("gpu-history--bar"))
        return text


class GpuPanel(Widget):
    """One GPU: name, memory and utilisation bars, sensors, recent history, our tasks, ghost memory.

    State lives in reactives (`snapshot`, `tasks`, `ghost`, `compact`); their watchers update the child
    widgets in place. Setting them before mount is fine: `on_mount` syncs everything once.
    """

    DEFAULT_CSS = """
    GpuPanel {
        height: auto;
        width: 1fr;
        border: round $foreground 30%;
        padding: 0 1;
    }
    GpuPanel.-ghost { border: round $warning; }
    GpuPanel #header { height: 1; }
    GpuPanel #title { width: 1fr; text-style: bold; text-wrap: nowrap; text-overflow: ellipsis; }
    GpuPanel .gpu-badge { width: auto; margin-left: 1; padding: 0 1; background: $warning; color: $text; }
    GpuPanel #sensors, GpuPanel #tasks, GpuPanel #ghost {
        width: 1fr; height: 1; text-wrap: nowrap; text-overflow: ellipsis;
    }
    GpuPanel #sensors { color: $text-muted; }
    GpuPanel #tasks.-empty { color: $text-muted; }
    GpuPanel #ghost { color: $warning; display: none; }
    GpuPanel.-ghost #ghost { display: block; }

    GpuPanel.-compact { border: none; padding: 0 1 0 0; }
    GpuPanel.-compact #header { background: $boost; }
    GpuPanel.-compact #sensors, GpuPanel.-compact GpuHistory, GpuPanel.-compact #tasks.-empty {
        display: none;
    }
    """

    snapshot: reactive[GpuSnapshot | None] = reactive(None, repaint=False)
    tasks: reactive[tuple[str, ...]] = reactive((), repaint=False)
    ghost: reactive[str | None] = reactive(None, repaint=False)
    compact: reactive[bool] = reactive(False, repaint=False, toggle_class="-compact")

    def __init__(
        self,
        snapshot: GpuSnapshot,
        tasks: Sequence[str] = (),
        ghost: str | None = None,
        *,
        history: int = HISTORY_LENGTH,
        compact: bool = False,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes)
        self.index = snapshot.index
        self._ready = False
        self._util_history: deque[float | None] = deque(maxlen=history)
        self._mem_history: deque[float | None] = deque(maxlen=history)
        self.set_reactive(GpuPanel.compact, compact)
        self.set_class(compact, "-compact")
        self.update_gpu(snapshot, tasks, ghost)

    def compose(self) -> ComposeResult:
        with Horizontal(id="header"):
            yield Label(id="title", markup=False)
            yield Label("SIMULATED", id="badge", classes="gpu-badge")
        yield GpuMeter("mem", id="mem")
        yield GpuMeter("util", id="util")
        yield Label(id="sensors", markup=False)
        yield GpuHistory("util", id="util-history")
        yield GpuHistory("mem", id="mem-history")
        yield Label(id="tasks", markup=False)
        yield Label(id="ghost", markup=False)

    def on_mount(self) -> None:
        # Children are looked up once; a tick then only touches their reactives.
        if not self.query("#title"):  # removed (or the app closing) before its children were mounted
            return
        self._title = self.query_one("#title", Label)
        self._badge = self.query_one("#badge", Label)
        self._mem = self.query_one("#mem", GpuMeter)
        self._util = self.query_one("#util", GpuMeter)
        self._sensors = self.query_one("#sensors", Label)
        self._util_spark = self.query_one("#util-history", GpuHistory)
        self._mem_spark = self.query_one("#mem-history", GpuHistory)
        self._tasks_label = self.query_one("#tasks", Label)
        self._ghost_label = self.query_one("#ghost", Label)
        self._ready = True  # `is_mounted` only turns true after the Mount handlers have run
        self._sync_snapshot()
        self._sync_tasks()
        self._sync_ghost()
        self._sync_history()

    def update_gpu(self, snapshot: GpuSnapshot, tasks: Sequence[str] = (), ghost: str | None = None) -> None:
        """Show a new sample. Cheap: reactives and two history rows change, nothing is recomposed."""
        self._util_history.append(_util_fraction(snapshot))
        self._mem_history.append(_memory_fraction(snapshot))
        self.snapshot = snapshot
        self.tasks = tuple(tasks)
        self.ghost = ghost or None
        self._sync_history()

    @property
    def util_history(self) -> tuple[float | None, ...]:
        """Recent utilisation samples as fractions 0..1 (None: unknown), oldest first."""
        return tuple(self._util_history)

    @property
    def mem_history(self) -> tuple[float | None, ...]:
        """Recent memory-use samples as fractions of total, oldest first."""
        return tuple(self._mem_history)

    def watch_snapshot(self) -> None:
        self._sync_snapshot()

    def watch_compact(self) -> None:
        self._sync_snapshot()

    def watch_tasks(self) -> None:
        self._sync_tasks()

    def watch_ghost(self) -> None:
        self._sync_ghost()

    def _sync_snapshot(self) -> None:
        snap = self.snapshot
        if snap is None or not self._ready:
            return
        title = f"GPU {snap.index} · {snap.name}"
        if str(self._title.content) != title:
            self._title.update(title)
        self._badge.display = snap.simulated
        mem, util = self._mem, self._util
        mem.fraction = _memory_fraction(snap)
        mem.suffix = format_memory(snap.memory_used, snap.memory_total)
        util.fraction = _util_fraction(snap)
        util_s = DASH if snap.utilization is None else f"{snap.utilization:.0f}%"
        # Compact panels hide the sensors row, so its numbers ride along on the utilisation bar.
        util.suffix = f"{util_s:>4} {format_sensors(snap, short=True)}" if self.compact else f"{util_s:>4}"
        # Reserve room for a full GPU's numbers so bars keep their length as memory grows.
        widest_mem = len(format_memory(snap.memory_total, snap.memory_total))
        mem.suffix_width = util.suffix_width = max(widest_mem, len(mem.suffix), len(util.suffix))
        self._sensors.update(format_sensors(snap), layout=False)

    def _sync_tasks(self) -> None:
        if not self._ready:
            return
        self._tasks_label.update(f"tasks: {', '.join(self.tasks)}" if self.tasks else "tasks: none", layout=False)
        self._tasks_label.set_class(not self.tasks, "-empty")

    def _sync_ghost(self) -> None:
        self.set_class(bool(self.ghost), "-ghost")
        if not self._ready:
            return
        text = self.ghost or ""
        if text and not text.startswith("⚠"):
            text = f"⚠ {text}"
        self._ghost_label.update(text, layout=False)

    def _sync_history(self) -> None:
        if not self._ready:
            return
        self._util_spark.samples = tuple(self._util_history)
        self._mem_spark.samples = tuple(self._mem_history)


class GpuPanels(Widget):
    """A grid of `GpuPanel`s keyed by GPU index, with a message when there is no GPU.

    Panels are reused across ticks and only created or removed when the set of GPU indices changes.
    Columns and compact mode follow the widget's own size, so give it a definite height (default 1fr).
    """

    DEFAULT_CSS = """
    GpuPanels {
        layout: grid;
        grid-size: 1;
        grid-rows: auto;
        grid-gutter: 0 1;
        height: 1fr;
        overflow-y: auto;
    }
    GpuPanels.-compact { grid-gutter: 0 2; }
    GpuPanels #no-gpu { width: 1fr; height: auto; padding: 1 2; color: $text-muted; }
    """

    NO_GPU_MESSAGE = "No GPU visible. Run with --simulate N (e.g. --simulate 4x24) to try gputui without one."
    WAITING_MESSAGE = "Looking for GPUs…"

    columns: reactive[int] = reactive(1, repaint=False)
    compact: reactive[bool] = reactive(False, repaint=False, toggle_class="-compact")

    def __init__(
        self,
        *,
        no_gpu_message: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes)
        self.no_gpu_message = no_gpu_message or self.NO_GPU_MESSAGE
        self._panels: dict[int, GpuPanel] = {}

    def compose(self) -> ComposeResult:
        yield Static(self.WAITING_MESSAGE, id="no-gpu", markup=False)

    @property
    def panels(self) -> Mapping[int, GpuPanel]:
        """The live panels by GPU index (read-only view)."""
        return MappingProxyType(self._panels)

    def update_gpus(
        self,
        snapshots: Sequence[GpuSnapshot],
        tasks_by_gpu: Mapping[int, Sequence[str]] = MappingProxyType({}),
        ghosts: Mapping[int, str] = MappingProxyType({}),
    ) -> None:
        """Show one tick of snapshots: update panels in place; add/remove only when GPUs come or go."""
        wanted = {snap.index: snap for snap in snapshots}
        gone = [i for i in self._panels if i not in wanted]
        for index in gone:
            self._panels.pop(index).remove()
        new_panels: list[GpuPanel] = []
        for index in sorted(wanted):
            snap, tasks, ghost = wanted[index], tasks_by_gpu.get(index, ()), ghosts.get(index)
            panel = self._panels.get(index)
            if panel is None:
                panel = GpuPanel(snap, tasks, ghost, compact=self.compact)
                self._panels[index] = panel
                new_panels.append(panel)
            else:
                panel.update_gpu(snap, tasks, ghost)
        for panel in new_panels:
            self._mount_in_order(panel)
        message = self.query_one("#no-gpu", Static)
        if not wanted:
            message.update(self.no_gpu_message)
        message.display = not wanted
        if gone or new_panels:
            self._relayout()

    def _mount_in_order(self, panel: GpuPanel) -> None:
        """Mount so panels stay in GPU-index order even when a GPU appears in the middle."""
        after = [p for i, p in self._panels.items() if i > panel.index and p.is_attached and p is not panel]
        if after:
            self.mount(panel, before=min(after, key=lambda p: p.index))
        else:
            self.mount(panel)

    def on_resize(self, event: Resize) -> None:
        self._relayout(event.size.width, event.size.height)

    def _relayout(self, width: int | None = None, height: int | None = None) -> None:
        size = self.content_size
        width = size.width if width is None else width
        height = size.height if height is None else height
        if width <= 0 or height <= 0:
            return  # not laid out yet; on_resize will come
        self.columns, self.compact = grid_shape(width, height, len(self._panels))

    def watch_columns(self, columns: int) -> None:
        self.styles.grid_size_columns = columns

    def watch_compact(self, compact: bool) -> None:
        for panel in self._panels.values():
            panel.compact = compact
