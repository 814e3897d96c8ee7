"""The checks every table of a job file is read with (the [job] table's, the plain tables', each kind's): an
unknown key with its did-you-mean, typed values, paths, placeholders in templates, a command as a string or a
list. Every error names the file, the key path and what was expected."""

from __future__ import annotations

import difflib
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gputui.jobs.spec import JobSpecError
from gputui.jobs.templates import FORMATTER, render_template

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


_MISSING: Any = object()
BRACE_HINT = "write {{ or }} for a literal brace"


class Checks:
    """The checks, bound to one job file: `where` (the path as given, first in every message), `base` (its
    folder: relative paths start there) and `tables` (each table's keys, None where its own reader checks
    them), so a key put in the wrong table is told where it belongs."""

    def __init__(self, where: str, base: Path, tables: Mapping[str, Sequence[str] | None] | None = None) -> None:
        self.where = where
        self.base = base
        self.tables = dict(tables or {})

    def error(self, keypath: str, message: str) -> JobSpecError:
        return JobSpecError(f"{self.where}: {keypath}: {message}")

    # -- tables and keys --------------------------------------------------------------------------

    def owner_of(self, key: str, skip: str = "") -> str | None:
        """The table whose key `key` is (other than `skip`), if any."""
        return next((t for t, keys in self.tables.items() if t != skip and keys and key in keys), None)

    def check_table(self, table: Mapping[str, Any], name: str) -> None:
        """[name]'s keys against the keys it is known by."""
        allowed = self.tables[name]
        assert allowed is not None
        self.check_keys(table, f"[{name}]", allowed, owner_skip=name)

    def check_keys(
        self, table: Mapping[str, Any], keypath: str, allowed: Sequence[str], *, owner_skip: str | None = None
    ) -> None:
        """Raise on the first key not in `allowed` (a typo would be silently ignored): where another table owns
        it, that table (with `owner_skip`, the table being read); else a did-you-mean; else what is allowed."""
        for key in table:
            if key in allowed:
                continue
            owner = None if owner_skip is None else self.owner_of(key, skip=owner_skip)
            close = difflib.get_close_matches(key, allowed, n=1)
            if owner:
                hint = f"'{key}' belongs in [{owner}]"
            elif close:
                hint = f"did you mean '{close[0]}'?"
            else:
                hint = f"expected one of: {', '.join(allowed)}"
            raise self.error(f"{keypath}.{toml_key(key)}", f"unknown key; {hint}")

    # -- typed values -----------------------------------------------------------------------------

    def value(
        self,
        table: Mapping[str, Any],
        tname: str,
        key: str,
        check: str,
        default: Any = _MISSING,
        missing: str = "",
    ) -> Any:
        """table[key] checked as `check`; `default` when absent (or an error saying `missing`)."""
        keypath = f"[{tname}].{key}"
        if key not in table:
            if default is _MISSING:
                raise self.error(keypath, f"missing; expected {missing}")
            return default
        value = table[key]
        if check == "str":
            ok, expected = isinstance(value, str) and value.strip() != "", "a non-empty string"
        elif check == "int>=0":
            ok, expected = is_int(value) and value >= 0, "a non-negative integer"
        elif check == "int>=1":
            ok, expected = is_int(value) and value >= 1, "a positive integer"
        elif check == "num>=0":
            ok, expected = is_number(value) and value >= 0, "a non-negative number"
        elif check == "num>0":
            ok, expected = is_number(value) and value > 0, "a positive number"
        elif check == "bool":
            ok, expected = isinstance(value, bool), "true or false"
        else:  # pragma: no cover - programming error
            raise AssertionError(check)
        if not ok:
            raise self.error(keypath, f"expected {expected}, {got(value)}")
        return float(value) if check.startswith("num") else value

    def path(self, table: Mapping[str, Any], tname: str, key: str) -> Path | None:
        text = self.value(table, tname, key, "str", default=None)
        return None if text is None else resolve_path(text, self.base)

    # -- templates and commands -------------------------------------------------------------------

    def check_template(self, keypath: str, template: str, known: list[str]) -> set[str]:
        """Raise on an unknown placeholder or bad braces; return the placeholder names used."""
        try:
            parsed = list(FORMATTER.parse(template))
        except ValueError as e:
            raise self.error(keypath, f"bad template {template!r}: {e}; {BRACE_HINT}") from None
        used: set[str] = set()
        for _literal, name, spec, _conversion in parsed:
            if name is None:
                continue
            if name == "":
                raise self.error(
                    keypath,
                    f"empty placeholder {{}} in {template!r}; name one of "
                    f"{placeholder_list(known)}, or {BRACE_HINT}",
                )
            if name not in known:
                base = re.split(r"[.\[]", name, maxsplit=1)[0]
                if base in known:
                    raise self.error(
                        keypath, f"placeholder {{{name}}}: only plain names like {{{base}}} are allowed"
                    )
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"did you mean {{{close[0]}}}? Known" if close else "known"
                message = f"unknown placeholder {{{name}}}; {hint}: {placeholder_list(known)}"
                if not name.isidentifier():
                    message += f"; {BRACE_HINT}"
                raise self.error(keypath, message)
            used.add(name)
            if spec:
                used |= self.check_template(keypath, spec, known)
        return used

    def try_render(self, keypath: str, template: str, samples: Mapping[str, object]) -> str:
        try:
            return render_template(template, samples)
        except (ValueError, TypeError, KeyError) as e:
            raise self.error(keypath, f"cannot fill {template!r}: {e}") from None

    def command(
        self, table: Mapping[str, Any], keypath: str, known: list[str]
    ) -> tuple[tuple[str, ...], list[str]]:
        """table["command"]: a string (shlex-split) or a list of strings, each token one argument with its
        placeholders checked. Returns the argv template and the key path of each token."""
        expected = "a command string or a list of strings"
        if "command" not in table:
            raise self.error(keypath, f"missing; expected {expected}")
        value = table["command"]
        if isinstance(value, str):
            try:
                tokens = shlex.split(value)
            except ValueError as e:
                raise self.error(keypath, f"cannot split the command string: {e}") from None
            keypaths = [keypath] * len(tokens)
        elif isinstance(value, list):
            for i, token in enumerate(value):
                if not isinstance(token, str):
                    raise self.error(f"{keypath}[{i}]", f"expected a string, {got(token)}")
            tokens = list(value)
            keypaths = [f"{keypath}[{i}]" for i in range(len(tokens))]
        else:
            raise self.error(keypath, f"expected {expected}, {got(value)}")
        if not tokens or not tokens[0].strip():
            raise self.error(keypath, f"expected a non-empty command, {got(value)}")
        for token, kp in zip(tokens, keypaths, strict=True):
            self.check_template(kp, token, known)
        return tuple(tokens), keypaths
