"""One GPU, two ways: a full `GpuPanel` card (bars, sensors, history) and a one-line `GpuLine`.

Both only display what they are handed (`show`); probing happens elsewhere, off the event loop, and the
history lives in the grid so switching layouts keeps it. A tick changes reactives, never recomposes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.app import RenderResult
from textual.geometry import Region
from textual.reactive import reactive
from textual.strip import Strip

from gputui.gpus.probe import GIB, GpuSnapshot
from gputui.tui import glyphs
from gputui.tui.cells import fit
from gputui.tui.widgets.gpu_meters import (
    StyledWidget,
    bar,
    format_memory,
    format_sensors,
    load_level,
    memory_fraction,
    sparkline,
    util_fraction,
)

HISTORY_LENGTH = 120  # samples kept per GPU; at a 1 s tick, the last two minutes
NODE_WIDTH = 20  # a longer cluster node name is cut on a compact line (the full cards show it whole)


@dataclass
class GpuState:
    """What the views of one GPU show: the latest sample, who holds it, and its recent history."""

    snapshot: GpuSnapshot
    holders: tuple[str, ...] = ()
    ghost: str | None = None
    util: deque[float | None] = field(default_factory=lambda: deque(maxlen=HISTORY_LENGTH))
    memory: deque[float | None] = field(default_factory=lambda: deque(maxlen=HISTORY_LENGTH))

    def record(self, snapshot: GpuSnapshot, holders: Sequence[str], ghost: str | None) -> None:
        self.snapshot, self.holders, self.ghost = snapshot, tuple(holders), ghost or None
        self.util.append(util_fraction(snapshot))
        self.memory.append(memory_fraction(snapshot))

    def seen(self, samples: int) -> tuple:
        """All a view of it draws, with the newest `samples` of history: equal, the view is unchanged."""
        util, memory = tuple(self.util), tuple(self.memory)
        start = max(0, len(util) - samples)
        return self.snapshot, self.holders, self.ghost, util[start:], memory[start:]


class GpuPanel(StyledWidget):
    """One GPU as a card: name and SIMULATED badge, memory and utilisation bars, sensors, utilisation and
    memory history, our tasks (and other runs') on it, a ghost-memory warning.

    Drawn by one `render`: a card whose numbers move every second costs one widget repaint, not one per
    row (each repaint has a fixed cost in Textual that dwarfs drawing a line).
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "gpu-panel--title",
        "gpu-panel--badge",
        "gpu-panel--label",
        "gpu-panel--low",
        "gpu-panel--mid",
        "gpu-panel--high",
        "gpu-panel--empty",
        "gpu-panel--history",
        "gpu-panel--ghost",
    }
    DEFAULT_CSS = """
    GpuPanel {
        height: auto;
        width: 1fr;
        border: round $foreground 30%;
        padding: 0 1;
    }
    GpuPanel.-ghost { border: round $warning; }
    GpuPanel > .gpu-panel--title { text-style: bold; }
    GpuPanel > .gpu-panel--badge { background: $warning; color: $text; }
    GpuPanel > .gpu-panel--label { color: $text-muted; }
    GpuPanel > .gpu-panel--low { color: $success; }
    GpuPanel > .gpu-panel--mid { color: $warning; }
    GpuPanel > .gpu-panel--high { color: $error; }
    GpuPanel > .gpu-panel--empty { color: $foreground 15%; }
    GpuPanel > .gpu-panel--history { color: $accent; }
    GpuPanel > .gpu-panel--ghost { color: $warning; }
    """

    def __init__(self, state: GpuState, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.state = state
        self.index = state.snapshot.index
        self._drawn: list[list[tuple[str, Style]]] = []
        self._drawn_width = 0
        self._seen: tuple | None = None  # what show() last drew

    def show(self) -> None:
        """Repaint the lines whose text changed since the last tick, and only those."""
        ghost = bool(self.state.ghost)
        if ghost != self.has_class("-ghost"):  # one line more or less: the grid must lay out again
            self.set_class(ghost, "-ghost")
            self.refresh(layout=True)
        width = self.content_size.width
        if not width:
            return
        seen = (width, self.state.seen(width))
        if seen == self._seen:  # an idle GPU: nothing to compute, nothing to draw
            return
        self._seen = seen
        lines, before = self.lines(width), self._drawn
        self._drawn, self._drawn_width = lines, width
        for y, line in enumerate(lines):
            if y >= len(before) or line != before[y]:
                self.refresh(Region(0, y, width, 1))  # content coordinates

    def on_mount(self) -> None:
        self.show()

    def lines(self, width: int) -> list[list[tuple[str, Style]]]:
        """The card's lines at `width` cells, as (text, style) pieces: drawn as they are, no layout."""
        state, snap, style = self.state, self.state.snapshot, self.style_of
        g = glyphs.now()
        title = f"{snap.where or f'GPU {snap.index}'}{g.sep}{snap.name}"
        badge = " SIMULATED " if snap.simulated else " LOST " if snap.lost else ""  # lost: fallen off the bus
        if badge:
            title_line = [
                (fit(title, width - len(badge) - 1) + " ", style("gpu-panel--title")),
                (badge, style("gpu-panel--badge")),
            ]
        else:
            title_line = [(title, style("gpu-panel--title"))]
        util = g.dash if snap.utilization is None else f"{snap.utilization:.0f}%"
        memory = format_memory(snap.memory_used, snap.memory_total)
        numbers = max(len(format_memory(snap.memory_total, snap.memory_total)), len(memory))
        label = style("gpu-panel--label")
        lines = [
            title_line,
            self._bar("mem", memory_fraction(snap), memory.rjust(numbers), width),
            self._bar("util", util_fraction(snap), util.rjust(numbers), width),
            [(format_sensors(snap), label)],
            [("util ", label), (sparkline(tuple(state.util), width - 5), style("gpu-panel--history"))],
            [("mem  ", label), (sparkline(tuple(state.memory), width - 5), style("gpu-panel--history"))],
            [(f"tasks: {', '.join(state.holders)}", Style())] if state.holders else [("tasks: none", label)],
        ]
        if state.ghost:
            ghost = state.ghost if state.ghost.startswith(g.warning) else f"{g.warning} {state.ghost}"
            lines.append([(ghost, style("gpu-panel--ghost"))])
        return lines

    def text(self) -> list[str]:
        """The card's lines as plain text (what a user reads)."""
        return ["".join(t for t, _ in line).rstrip() for line in self.lines(self.content_size.width)]

    def _bar(self, label: str, fraction: float | None, numbers: str, width: int) -> list[tuple[str, Style]]:
        room = width - 5 - len(numbers) - 1
        pieces = [(f"{label:<4} ", self.style_of("gpu-panel--label"))]
        if room >= 3:
            filled, empty = bar(fraction, room)
            pieces += [
                (filled, self.style_of(f"gpu-panel--{load_level(fraction)}")),
                (empty, self.style_of("gpu-panel--empty")),
            ]
        return [*pieces, (f" {numbers}", Style())]

    def get_content_height(self, container, viewport, width: int) -> int:
        return 8 if self.state.ghost else 7

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._drawn_width = 0  # a theme change: draw every line again in the new colours
        self._seen = None

    def render_line(self, y: int) -> Strip:
        width = self.content_size.width
        base = self.rich_style
        if self._drawn_width != width:  # first drawn, or resized
            self._drawn, self._drawn_width = self.lines(width), width
        lines = self._drawn
        if y >= len(lines):
            return Strip.blank(width, base)
        strip = Strip([Segment(text, base + style) for text, style in lines[y]])
        return strip.crop_extend(0, width, base) if strip.cell_length != width else strip


class GpuLine(StyledWidget):
    """One GPU on one line, nvitop's compact view: index, memory bar, utilisation bar, temperature,
    power, who holds it. Drawn by one `render`, so eight GPUs cost eight short lines, nothing more."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "gpu-line--index",
        "gpu-line--label",
        "gpu-line--low",
        "gpu-line--mid",
        "gpu-line--high",
        "gpu-line--empty",
        "gpu-line--ghost",
        "gpu-line--tasks",
    }
    DEFAULT_CSS = """
    GpuLine { height: 1; width: 1fr; }
    GpuLine > .gpu-line--index { text-style: bold; }
    GpuLine > .gpu-line--label { color: $text-muted; }
    GpuLine > .gpu-line--low { color: $success; }
    GpuLine > .gpu-line--mid { color: $warning; }
    GpuLine > .gpu-line--high { color: $error; }
    GpuLine > .gpu-line--empty { color: $foreground 15%; }
    GpuLine > .gpu-line--ghost { color: $warning; text-style: bold; }
    GpuLine > .gpu-line--tasks { color: $accent; }
    """

    version: reactive[int] = reactive(0)  # bumped by `show`: one repaint per tick, only of this line

    def __init__(
        self, state: GpuState, *, label_width: int = 3, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__(id=id, classes=classes)
        self.state = state
        self.index = state.snapshot.index
        self.label_width = label_width  # the widest label of the grid's lines, so their bars line up
        self._seen: tuple | None = None

    def show(self) -> None:
        seen = self.state.seen(0)  # no history on this line
        if seen != self._seen:  # an idle GPU costs no repaint
            self._seen = seen
            self.version += 1

    def render(self) -> RenderResult:
        snap, state = self.state.snapshot, self.state
        style = self.style_of
        width = self.size.width
        g = glyphs.now()
        mem_text = f" {snap.memory_used / GIB:4.1f}/{snap.memory_total / GIB:.0f}G"
        util_text = " " + (f"{g.dash:>3}" if snap.utilization is None else f"{snap.utilization:3.0f}") + "%"
        sensors = "  " + format_sensors(snap, short=True)
        holders = ", ".join(state.holders)
        name = line_label(snap).rjust(self.label_width)
        fixed = len(name) + 2 + 4 + len(mem_text) + 7 + len(util_text) + len(sensors)
        bars = max(0, width - fixed - 1)
        room_for_tasks = max(0, bars - 24)  # bars keep at least 12 cells each
        if holders and room_for_tasks >= 8:
            cut = f"{holders[: room_for_tasks - 2]}{g.ellipsis}"
            shown = holders if len(holders) <= room_for_tasks - 1 else cut
            tasks = " " + shown
        elif holders:
            tasks = f" {g.ours}{len(state.holders)}"
        else:
            tasks = ""
        bars = max(0, bars - len(tasks))
        mem_w, util_w = bars - bars // 2, bars // 2
        text = Text(no_wrap=True, overflow="ellipsis", end="")
        mark = g.warning if state.ghost else ("~" if snap.simulated else " ")
        text.append(f"{name}{mark} ", style("gpu-line--ghost" if state.ghost else "gpu-line--index"))
        for label, fraction, width_, numbers in (
            ("mem ", memory_fraction(snap), mem_w, mem_text),
            ("  util ", util_fraction(snap), util_w, util_text),
        ):
            text.append(label, style("gpu-line--label"))
            filled, empty = bar(fraction, width_)
            text.append(filled, style(f"gpu-line--{load_level(fraction)}"))
            text.append(empty, style("gpu-line--empty"))
            text.append(numbers)
        text.append(sensors, style("gpu-line--label"))
        text.append(tasks, style("gpu-line--tasks"))
        return text


def line_label(snap: GpuSnapshot) -> str:
    """A compact line's name for its GPU: the index here; on a cluster, the node and its index there
    (`node-3:1`), since the lines have no title to say which node."""
    if not snap.where:
        return str(snap.index)
    node, _, index = snap.where.rpartition(" GPU ")
    node = node if len(node) <= NODE_WIDTH else node[: NODE_WIDTH - 1] + glyphs.now().ellipsis
    return f"{node}:{index}"
