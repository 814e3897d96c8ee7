"""How the log pane draws one line of a worker's log, apart from the pane that scrolls and follows it.

The text is made safe to show first (`text_safety.log_line`): colours kept (the decoder applies them),
every other escape sequence dropped (title, clear, cursor moves, DCS, APC: Rich's decoder lets `ESC c` and
8-bit CSI through), the rest made visible; of a line a progress bar redrew, what follows the last `\\r`.
Tabs are expanded. A line that goes on past the right edge ends with a marker that says so.
"""

from __future__ import annotations

from rich.ansi import AnsiDecoder
from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip

from gputui.text_safety import log_line
from gputui.tui import glyphs

RENDER_BYTES = 64 * 1024
"""Bytes of one line rendered at most: a 10 MB JSON line should not stall a repaint."""


def render_log_line(raw: str, console: Console, scroll_x: int, width: int, style: Style, more: Style) -> Strip:
    """`raw` (a line as read, at most RENDER_BYTES of it) as the `width` cells seen from column `scroll_x`,
    in `style`; `more`: the style of the marker drawn where the line goes on to the right."""
    text = AnsiDecoder().decode_line(log_line(raw, colour=True).expandtabs(8))
    text.no_wrap = True
    text.end = ""
    strip = Strip(list(text.render(console)), text.cell_len)
    if text.cell_len > scroll_x + width and width > 1:
        strip = Strip.join([strip.crop(scroll_x, scroll_x + width - 1), Strip([Segment(glyphs.now().more, more)])])
    else:
        strip = strip.crop_extend(scroll_x, scroll_x + width, None)
    return strip.apply_style(style)
