"""The small pieces GPU views are built from: formatted numbers, a stretching bar, a fixed-scale history."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import RenderResult
from textual.reactive import reactive
from textual.widget import Widget

from gputui.gpus.probe import GIB, GpuSnapshot

DASH = "–"
BARS = "▁▂▃▄▅▆▇█"


def format_memory(used: int | None, total: int | None) -> str:
    """'12.3 / 24.0 GiB'; a dash stands for what the GPU cannot tell."""
    used_s = DASH if used is None else f"{used / GIB:.1f}"
    total_s = DASH if total is None else f"{total / GIB:.1f}"
    return f"{used_s} / {total_s} GiB"


def format_sensors(snapshot: GpuSnapshot, *, short: bool = False) -> str:
    """'70°C  310 / 350 W' ('70°C 310W' when short), with dashes where the driver does not say."""
    temp = DASH if snapshot.temperature is None else f"{snapshot.temperature:.0f}"
    if short:
        return f"{temp:>3}°C {DASH if snapshot.power is None else f'{snapshot.power:.0f}':>3}W"
    if snapshot.power is None:
        power = f"{DASH} W"
    elif snapshot.power_limit is None:
        power = f"{snapshot.power:.0f} W"
    else:
        power = f"{snapshot.power:.0f} / {snapshot.power_limit:.0f} W"
    return f"{temp}°C  {power}"


def memory_fraction(snapshot: GpuSnapshot) -> float | None:
    if snapshot.memory_total <= 0:
        return None
    return min(1.0, max(0.0, snapshot.memory_used / snapshot.memory_total))


def util_fraction(snapshot: GpuSnapshot) -> float | None:
    if snapshot.utilization is None:
        return None
    return min(1.0, max(0.0, snapshot.utilization / 100.0))


def load_level(fraction: float | None) -> str:
    """low / mid / high / empty: the component class a bar of this load is drawn with."""
    if fraction is None:
        return "empty"
    return "high" if fraction >= 0.85 else "mid" if fraction >= 0.5 else "low"


def bar(fraction: float | None, width: int) -> tuple[str, str]:
    """The filled and the empty part of a `width`-cell bar."""
    filled = round((fraction or 0.0) * width)
    return "━" * filled, "━" * (width - filled)


def sparkline(samples: tuple[float | None, ...], width: int) -> str:
    """The newest `width` samples (0..1) as block characters, right-aligned; unknown samples blank."""
    shown = samples[-width:] if width > 0 else ()
    return "".join(" " if v is None else BARS[min(7, max(0, round(v * 7)))] for v in shown).rjust(width)


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

    fraction: reactive[float | None] = reactive(None)
    suffix: reactive[str] = reactive("")
    suffix_width: reactive[int] = reactive(0)  # pad the numbers so stacked meters' bars line up

    def __init__(self, label: str, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.label = label

    def render(self) -> RenderResult:
        text = Text(no_wrap=True, overflow="ellipsis", end="")
        text.append(f"{self.label:<4} ", self.get_component_rich_style("gpu-meter--label"))
        suffix = f" {self.suffix.rjust(self.suffix_width)}"
        bar_width = self.size.width - text.cell_len - len(suffix)
        if bar_width >= 3:
            filled, empty = bar(self.fraction, bar_width)
            text.append(filled, self.get_component_rich_style(f"gpu-meter--{load_level(self.fraction)}"))
            text.append(empty, self.get_component_rich_style("gpu-meter--empty"))
        text.append(suffix)
        return text


class GpuHistory(Widget):
    """A fixed-scale sparkline of recent samples (0..1), newest on the right.

    Textual's `Sparkline` scales between the data's own min and max, so a steady 5% would fill the row;
    a fixed 0..1 scale keeps idle GPUs looking idle.
    """

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
        text.append(
            sparkline(self.samples, max(0, self.size.width - text.cell_len)),
            self.get_component_rich_style("gpu-history--bar"),
        )
        return text
