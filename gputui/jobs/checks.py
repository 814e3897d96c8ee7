"""Small checks and words shared by the job-file loaders (the [job] table's and each kind's): what a value is
called in an error, how a key is written, where a TOML error is."""

from __future__ import annotations

import math
import re
from pathlib import Path

NAME_RE = re.compile(r"[A-Za-z0-9._-]+")
BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")
TOML_POS_RE = re.compile(r"^(?P<reason>.*?)\s*\(at (?P<where>line \d+, column \d+|end of document)\)$", re.S)


def toml_position(message: str) -> str:
    """'Invalid value (at line 3, column 9)' -> 'at line 3, column 9: Invalid value'."""
    m = TOML_POS_RE.match(message)
    if not m:
        return f": {message}"
    return f"at {m['where']}: {m['reason']}"


def type_name(value: object) -> str:
    if isinstance(value, dict):
        return "table"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def got(value: object) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"got {text} ({type_name(value)})"


def toml_key(name: str) -> str:
    if BARE_KEY_RE.fullmatch(name):
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    return (is_int(value) or isinstance(value, float)) and math.isfinite(value)  # type: ignore[arg-type]


def resolve_path(value: str | Path, base: Path) -> Path:
    p = Path(value).expanduser()
    return (p if p.is_absolute() else base / p).resolve()


def placeholder_list(known: list[str]) -> str:
    return ", ".join(f"{{{k}}}" for k in known)
