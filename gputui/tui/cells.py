"""Text in terminal cells: the one helper the line-drawn widgets share."""

from __future__ import annotations

from rich.cells import cell_len, set_cell_size

from gputui.tui import glyphs


def fit(text: str, width: int) -> str:
    """`text` in exactly `width` cells: padded, or cut with an ellipsis."""
    if cell_len(text) <= width:
        return set_cell_size(text, max(0, width))
    return set_cell_size(text, max(0, width - 1)) + glyphs.now().ellipsis if width > 0 else ""
