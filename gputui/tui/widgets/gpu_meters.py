"""The small pieces GPU views are built from: formatted numbers, bars, a fixed-scale history."""

from __future__ import annotations

from rich.style import Style
from textual.widget import Widget

from gputui.gpus.probe import GIB, GpuSnapshot
from gputui.tui import glyphs


def format_memory(used: int | None, total: int | None) -> str:
    """'12.3 / 24.0 GiB'; a dash stands for what the GPU cannot tell."""
    DASH = glyphs.now().dash
    used_s = DASH if used is None else f"{used / GIB:.1f}"
    total_s = DASH if total is None else f"{total / GIB:.1f}"
    return f"{used_s} / {total_s} GiB"


def format_sensors(snapshot: GpuSnapshot, *, short: bool = False) -> str:
    """'70°C  310 / 350 W' ('70°C 310W' when short), with dashes where the driver does not say."""
    DASH, deg = glyphs.now().dash, glyphs.now().degree
    temp = DASH if snapshot.temperature is None else f"{snapshot.temperature:.0f}"
    if short:
        return f"{temp:>3}{deg}C {DASH if snapshot.power is None else f'{snapshot.power:.0f}':>3}W"
    if snapshot.power is None:
        power = f"{DASH} W"
    elif snapshot.power_limit is None:
        power = f"{snapshot.power:.0f} W"
    else:
        power = f"{snapshot.power:.0f} / {snapshot.power_limit:.0f} W"
    return f"{temp}{deg}C  {power}"


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
    line = glyphs.now().bar
    return line * filled, line * (width - filled)


def sparkline(samples: tuple[float | None, ...], width: int) -> str:
    """The newest `width` samples (0..1) as block characters, right-aligned; unknown samples blank.

    A fixed 0..1 scale: Textual's `Sparkline` scales between the data's own min and max, so a steady 5%
    would fill the row; here an idle GPU looks idle."""
    shown = samples[-width:] if width > 0 else ()
    bars = glyphs.now().sparks
    return "".join(" " if v is None else bars[min(7, max(0, round(v * 7)))] for v in shown).rjust(width)


class StyledWidget(Widget):
    """A widget that looks its component styles up once per style change, not on every render
    (`get_component_rich_style` walks the DOM; these widgets render every second)."""

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._memo: dict[str, Style] = {}

    def style_of(self, name: str) -> Style:
        memo = self.__dict__.setdefault("_memo", {})
        if name not in memo:
            memo[name] = self.get_component_rich_style(name)
        return memo[name]
