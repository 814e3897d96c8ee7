"""One GPU, two ways: a full `GpuPanel` card (bars, sensors, history) and a one-line `GpuLine`.

Both only display what they are handed (`show`); probing happens elsewhere, off the event loop, and the
history lives in the grid so switching layouts keeps it. A tick changes reactives, never recomposes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult, RenderResult
from textual.containers import Horizontal
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Label

from gputui.gpus.probe import GIB, GpuSnapshot
from gputui.tui.widgets.gpu_meters import (
    DASH,
    GpuHistory,
    GpuMeter,
    bar,
    format_memory,
    format_sensors,
    load_level,
    memory_fraction,
    util_fraction,
)

HISTORY_LENGTH = 120  # samples kept per GPU; at a 1 s tick, the last two minutes


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


class GpuPanel(Widget):
    """One GPU as a card: name and SIMULATED badge, memory and utilisation bars, sensors, utilisation and
    memory history, our tasks (and other runs') on it, a ghost-memory warning."""

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
    """

    def __init__(self, state: GpuState, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.state = state
        self.index = state.snapshot.index
        self._ready = False

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
        self.show()

    def show(self) -> None:
        """Bring the children up to date with `state` (cheap: reactives and a few labels)."""
        if not self._ready:
            return
        state, snap = self.state, self.state.snapshot
        title = f"GPU {snap.index} · {snap.name}"
        if str(self._title.content) != title:
            self._title.update(title)
        self._badge.display = snap.simulated
        mem, util = self._mem, self._util
        mem.fraction = memory_fraction(snap)
        mem.suffix = format_memory(snap.memory_used, snap.memory_total)
        util.fraction = util_fraction(snap)
        util.suffix = DASH if snap.utilization is None else f"{snap.utilization:.0f}%"
        # Reserve room for a full GPU's numbers so bars keep their length as memory grows.
        mem.suffix_width = util.suffix_width = max(
            len(format_memory(snap.memory_total, snap.memory_total)), len(mem.suffix)
        )
        _set(self._sensors, format_sensors(snap))
        self._util_spark.samples = tuple(state.util)
        self._mem_spark.samples = tuple(state.memory)
        holders = state.holders
        _set(self._tasks_label, f"tasks: {', '.join(holders)}" if holders else "tasks: none")
        self._tasks_label.set_class(not holders, "-empty")
        self.set_class(bool(state.ghost), "-ghost")
        ghost = state.ghost or ""
        _set(self._ghost_label, ghost if not ghost or ghost.startswith("⚠") else f"⚠ {ghost}")


def _set(label: Label, text: str) -> None:
    """Update a label only when its text changes: an unchanged label costs no repaint."""
    if str(label.content) != text:
        label.update(text, layout=False)


class GpuLine(Widget):
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

    def __init__(self, state: GpuState, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.state = state
        self.index = state.snapshot.index

    def show(self) -> None:
        self.version += 1

    def render(self) -> RenderResult:
        snap, state = self.state.snapshot, self.state
        style = self.get_component_rich_style
        width = self.size.width
        mem_text = f" {snap.memory_used / GIB:4.1f}/{snap.memory_total / GIB:.0f}G"
        util_text = " " + (f"{DASH:>3}" if snap.utilization is None else f"{snap.utilization:3.0f}") + "%"
        sensors = "  " + format_sensors(snap, short=True)
        holders = ", ".join(state.holders)
        fixed = 5 + 4 + len(mem_text) + 7 + len(util_text) + len(sensors)
        bars = max(0, width - fixed - 1)
        room_for_tasks = max(0, bars - 24)  # bars keep at least 12 cells each
        if holders and room_for_tasks >= 8:
            shown = holders if len(holders) <= room_for_tasks - 1 else f"{holders[: room_for_tasks - 2]}…"
            tasks = " " + shown
        elif holders:
            tasks = f" ●{len(state.holders)}"
        else:
            tasks = ""
        bars = max(0, bars - len(tasks))
        mem_w, util_w = bars - bars // 2, bars // 2
        text = Text(no_wrap=True, overflow="ellipsis", end="")
        mark = "⚠" if state.ghost else ("~" if snap.simulated else " ")
        text.append(f"{snap.index:>3}{mark} ", style("gpu-line--ghost" if state.ghost else "gpu-line--index"))
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
