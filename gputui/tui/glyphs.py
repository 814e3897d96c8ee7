"""Every non-ASCII character the app draws, chosen in one place: Unicode, or (`--ascii`, `GPUTUI_ASCII=1`) an
ASCII stand-in for terminals that cannot show it.

Widgets read `glyphs.now()` when they draw, never a copy taken at import, so the choice made at start-up
(`use_ascii`) reaches every line. What Textual itself draws is switched here too: in ASCII mode each border
style is drawn with the `ascii` style's characters, scroll bar ends are blank (the thumb is its colour), the
tabs' underline is `-`, the footer names keys in words ('enter'), and where Rich or Textual cut text short
it ends in `~`.

Text that is not the app's (a worker's log lines, a process's command line) is shown as it is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

from rich.cells import cell_len

ENV = "GPUTUI_ASCII"


@dataclass(frozen=True)
class Glyphs:
    sep: str  # between facts on a line: 'CPU 12% · mem ...'
    ellipsis: str  # text cut short
    dash: str  # a value the driver does not give
    ours: str  # a process of this gputui's own
    warning: str  # ghost memory, a stale run
    star: str  # a promoted trial
    done: str  # a step a pipeline step waited for, done
    block: str  # a progress bar's filled cell
    shade: str  # a progress bar's empty cell
    bar: str  # a meter's cell (filled and empty are told apart by colour)
    sparks: str  # eight levels of a sparkline, lowest first
    branch: str  # a child process under its parent
    to_come: str  # a row of the job table standing for tasks to come
    divider: str  # between the table's view and the selected task on the task bar
    parent: str  # a trial's parent
    more: str  # a log line going on to the right
    degree: str  # temperature


UNICODE = Glyphs(
    sep=" · ",
    ellipsis="…",
    dash="–",
    ours="●",
    warning="⚠",
    star="★",
    done="✓",
    block="█",
    shade="░",
    bar="━",
    sparks="▁▂▃▄▅▆▇█",
    branch="└ ",
    to_come="┄ ",
    divider="│",
    parent="←",
    more="›",
    degree="°",
)

ASCII = Glyphs(
    sep=" | ",
    ellipsis="~",
    dash="-",
    ours="*",
    warning="!",
    star="*",
    done="+",
    block="#",
    shade=".",
    bar="-",
    sparks="_.,-=+*#",
    branch="`-",
    to_come=": ",
    divider="|",
    parent="<-",
    more=">",
    degree="",
)

assert all(str(getattr(ASCII, f.name)).isascii() for f in fields(Glyphs))

_now = UNICODE
_PLAIN = str.maketrans(
    {
        **{u: a for u, a in zip(UNICODE.sparks, ASCII.sparks, strict=True)},
        **{
            getattr(UNICODE, f.name).strip(): getattr(ASCII, f.name).strip() or None
            for f in fields(Glyphs)
            if len(getattr(UNICODE, f.name).strip()) == 1
        },
        "·": "-",  # a middle dot inside a word ('GPU·h')
    }
)


def now() -> Glyphs:
    """The glyphs in use."""
    return _now


def plain(text: str) -> str:
    """`text` written with the app's own glyphs, in the glyphs in use (ASCII: each one's stand-in)."""
    return text.translate(_PLAIN) if _now is ASCII else text


def is_ascii() -> bool:
    return _now is ASCII


def wanted(flag: bool = False) -> bool:
    """ASCII when asked on the command line, or by `GPUTUI_ASCII=1` in the environment."""
    return flag or os.environ.get(ENV, "").strip().lower() in ("1", "true", "yes", "on")


def use_ascii(on: bool) -> None:
    """Choose the glyphs for the whole process (before the app draws), Textual's own included."""
    global _now
    _now = ASCII if on else UNICODE
    _textual_ascii(on)


_SAVED: dict[str, object] = {}


def _textual_ascii(on: bool) -> None:
    """Textual's borders, scroll bars and underline bar drawn with ASCII characters (or as shipped)."""
    from textual import _border, keys
    from textual.renderables.bar import Bar
    from textual.scrollbar import ScrollBarRender

    if "chars" not in _SAVED:
        _SAVED.update(
            chars=dict(_border.BORDER_CHARS),
            locations=dict(_border.BORDER_LOCATIONS),
            bars=(list(ScrollBarRender.VERTICAL_BARS), list(ScrollBarRender.HORIZONTAL_BARS)),
            bar=(Bar.HALF_BAR_LEFT, Bar.BAR, Bar.HALF_BAR_RIGHT),
            keys=dict(keys.KEY_DISPLAY_ALIASES),
        )
    chars, locations = _SAVED["chars"], _SAVED["locations"]
    assert isinstance(chars, dict) and isinstance(locations, dict)
    for kind in chars:
        blank = kind in ("", "none", "hidden", "blank")
        _border.BORDER_CHARS[kind] = chars["ascii"] if on and not blank else chars[kind]
        _border.BORDER_LOCATIONS[kind] = locations["ascii"] if on and not blank else locations[kind]
    _border.get_box.cache_clear()
    vertical, horizontal = _SAVED["bars"]  # type: ignore[misc]
    ScrollBarRender.VERTICAL_BARS = [" "] * len(vertical) if on else list(vertical)
    ScrollBarRender.HORIZONTAL_BARS = [" "] * len(horizontal) if on else list(horizontal)
    Bar.HALF_BAR_LEFT, Bar.BAR, Bar.HALF_BAR_RIGHT = ("-", "-", "-") if on else _SAVED["bar"]  # type: ignore[misc]
    shown_keys = _SAVED["keys"]
    assert isinstance(shown_keys, dict)
    for key, shown in shown_keys.items():  # the footer's names of keys: 'enter', not an arrow
        keys.KEY_DISPLAY_ALIASES[key] = (shown if shown.isascii() else key) if on else shown
    keys.format_key.cache_clear()
    if on and "truncate" not in _SAVED:
        _ascii_ellipses()


def _ascii_ellipses() -> None:
    """Rich's `Text.truncate` and Textual's `Content.truncate` end a cut with a literal '…': in ASCII mode,
    with the stand-in (wrapped once; each call asks which glyphs are in use)."""
    from rich.text import Text
    from textual.content import Content

    text_truncate, content_truncate = Text.truncate, Content.truncate
    _SAVED["truncate"] = (text_truncate, content_truncate)

    def truncate_text(self: Text, max_width: int, **kw) -> None:
        cut = cell_len(self.plain) > max_width
        text_truncate(self, max_width, **kw)
        if cut and _now is ASCII and self.plain.endswith(UNICODE.ellipsis):
            self.plain = self.plain[:-1] + ASCII.ellipsis

    def truncate_content(self: Content, max_width: int, **kw) -> Content:
        done = content_truncate(self, max_width, **kw)
        if _now is ASCII and done is not self and done.plain.endswith(UNICODE.ellipsis) and kw.get("ellipsis"):
            return Content(done.plain[:-1] + ASCII.ellipsis, done.spans, max_width, strip_control_codes=False)
        return done

    Text.truncate = truncate_text  # type: ignore[method-assign]
    Content.truncate = truncate_content  # type: ignore[method-assign]
