"""The job table's lines as strips: a row of cells, the header, a line of what is to come. Pure (styles and
cells in, a strip out), so the table only decides which line goes where."""

from __future__ import annotations

from collections.abc import Mapping

from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip

from gputui.text_safety import visible
from gputui.tui import glyphs
from gputui.tui.cells import fit
from gputui.tui.widgets.job_rows import PAD, STATUS_STYLES


def over(strip: Strip, style: Style) -> Strip:
    """`style` laid over every segment (a cursor's background wins over the row's)."""
    return Strip(Segment.apply_style(iter(strip), post_style=style), strip.cell_length)


def row_strip(cells: Mapping[str, str], widths: Mapping[str, int], base: Style, width: int) -> Strip:
    """One task's row: each column's cell in its width (the status coloured by its value)."""
    segments, used = [], 0
    for column, w in widths.items():
        value = cells.get(column, "")
        style = base + STATUS_STYLES[value] if column == "status" and value in STATUS_STYLES else base
        # Segments go to the terminal as they are: the last guard against a worker's escape sequences.
        segments.append(Segment(" " * PAD + fit(visible(value), w) + " " * PAD, style))
        used += w + 2 * PAD
    return Strip(segments, used).crop_extend(0, width, base)


def header_strip(widths: Mapping[str, int], titles: Mapping[str, str], style: Style, width: int) -> Strip:
    text = "".join(" " * PAD + fit(glyphs.plain(titles.get(c, c)), w) + " " * PAD for c, w in widths.items())
    return Strip([Segment(fit(text, width), style)])


def to_come_strip(line: str, style: Style, width: int) -> Strip:
    return Strip([Segment(fit(" " * PAD + glyphs.now().to_come + visible(line), width), style)])


Cells = Mapping[str, str]  # column -> text


def changed_cells(
    widths: Mapping[str, int], old: Mapping[str, Cells], new: Mapping[str, Cells], full: int
) -> dict[str, tuple[int, int]]:
    """Task -> the x range of its row's cells that changed (rows new or changed only)."""
    return {t: changed_span(widths, old.get(t), cells, full) for t, cells in new.items() if old.get(t) != cells}


def changed_span(widths: Mapping[str, int], old: Cells | None, new: Cells, full: int) -> tuple[int, int]:
    """The x range covering the cells that differ (a ticking elapsed: that column only); `full` cells for a
    new row."""
    x, lo, hi = 0, None, 0
    for column, width in widths.items():
        end = x + width + 2 * PAD
        if old is None or old.get(column) != new.get(column):
            lo = x if lo is None else lo
            hi = end
        x = end
    return (0, full) if lo is None or old is None else (lo, hi)
