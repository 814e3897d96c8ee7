"""Themes: a Textual palette each, plus `themes/<name>.tcss` rules scoped by an App class.

All theme stylesheets are loaded at start; switching sets the palette and the `theme-<name>` class,
so a theme can change borders and emphasis as well as colours, at run time. Colours are chosen to
read in a 256-colour tmux as well as in truecolor terminals.
"""

from __future__ import annotations

import sys
from pathlib import Path

from textual.theme import Theme

THEMES: dict[str, Theme] = {
    "dark": Theme(
        name="gputui-dark",
        primary="#5fafff",
        secondary="#87d787",
        accent="#ffaf5f",
        warning="#ffd75f",
        error="#ff5f5f",
        success="#87d787",
        foreground="#d0d0d0",
        background="#1c1c1c",
        surface="#262626",
        panel="#303030",
        dark=True,
    ),
    "light": Theme(
        name="gputui-light",
        primary="#005faf",
        secondary="#008700",
        accent="#af5f00",
        warning="#af8700",
        error="#d70000",
        success="#008700",
        foreground="#1c1c1c",
        background="#eeeeee",
        surface="#e4e4e4",
        panel="#d0d0d0",
        dark=False,
    ),
    "high-contrast": Theme(
        name="gputui-high-contrast",
        primary="#00ffff",
        secondary="#00ff00",
        accent="#ffff00",
        warning="#ffff00",
        error="#ff0000",
        success="#00ff00",
        foreground="#ffffff",
        background="#000000",
        surface="#000000",
        panel="#000000",
        dark=True,
    ),
}


def theme_dirs() -> list[Path]:
    """The checkout's `themes/` (development, editable installs), then the installed copy."""
    return [Path(__file__).resolve().parents[2] / "themes", Path(sys.prefix) / "share" / "gputui" / "themes"]


def theme_stylesheets() -> list[Path]:
    for folder in theme_dirs():
        found = [folder / f"{name}.tcss" for name in THEMES if (folder / f"{name}.tcss").exists()]
        if found:
            return found
    return []
