"""Text from workers made safe to show: the one place that decides what a terminal may be sent.

A worker's output is the only text gputui shows that nobody vetted. Printed raw, an escape sequence in a
failure reason set the terminal's title, cleared the screen mid-draw and hid text wherever the reason was
shown (`gputui run`, `gputui status`, the app, report.md); Rich removes only BEL, BS, VT, FF and CR.
`visible` turns every control character into a sign a person can read; `sgr_only` keeps a log line's
colours (SGR) and drops every other escape sequence. Two rules built on them serve the edges: `one_line`
for a reason, a note, a name or a table cell, `log_line` for a line of a worker's log; `visible` alone is
the last guard where text is already laid out (a table's cells, a multi-line file). Pure (no Rich, no
Textual), so the core and the app share it: applied where worker text enters a reason and again at every
display edge, for old state.
"""

from __future__ import annotations

import re
from functools import lru_cache

# Bidirectional overrides, embeddings, isolates and marks: text that reorders what follows it on screen.
BIDI = (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
UNSAFE = (*range(0x20), *range(0x7F, 0xA0), *BIDI, *range(0xD800, 0xE000))  # C0, DEL, C1, bidi, surrogates


def _sign(code: int) -> str:
    if code < 0x20:
        return chr(0x2400 + code)  # the Control Pictures: ␛ for ESC, ␇ for BEL, ␀ for NUL
    if code == 0x7F:
        return "␡"
    if 0xD800 <= code < 0xE000:
        return "\ufffd"  # a lone surrogate (from JSON) cannot even be encoded to a terminal
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


@lru_cache(maxsize=8)
def _rules(keep: str) -> tuple[re.Pattern[str], dict[int, str]]:
    codes = sorted(c for c in UNSAFE if chr(c) not in keep)
    runs: list[list[int]] = []
    for c in codes:
        if runs and runs[-1][1] == c - 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    ranges = "".join(f"\\u{a:04x}-\\u{b:04x}" for a, b in runs)
    return re.compile(f"[{ranges}]"), {c: _sign(c) for c in codes}


def visible(text: str, keep: str = "") -> str:
    """`text` with every control character (C0, DEL, C1), bidi control and lone surrogate made visible:
    ESC as ␛, C1 as `\\x9b`; unchanged when it holds none. `keep`: characters left as they are (e.g. "\\n"
    for a multi-line file)."""
    if text.isprintable():  # (every character of UNSAFE is not: the common case needs no search)
        return text
    pattern, table = _rules(keep)
    return text.translate(table) if pattern.search(text) else text


_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours (kept), cursor moves, clears, modes (dropped)
    r"|\x1b[\]PX^_][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"  # OSC, DCS, SOS, PM, APC: to BEL, ST or the end
    r"|\x1b[ -/]*[0-~]"  # the rest: ESC c (reset), ESC 7 / 8, ESC # 8, ESC ( B ...
    r"|\x9b[0-?]*[ -/]*[@-~]"  # 8-bit CSI
    r"|[\x90\x98\x9d-\x9f][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"  # 8-bit string sequences
)
_SGR = re.compile(r"\x1b\[[0-9;:]*m")


def without_colours(text: str) -> str:
    """`text` without its SGR colour sequences (torch's, tqdm's): noise in a one-line reason, harmless to
    drop; any other escape sequence stays for `visible` to show."""
    return _SGR.sub("", text) if "\x1b" in text else text


def sgr_only(line: str, *, colour: bool = True, keep: str = "\t") -> str:
    """One log line for a terminal: its SGR colour sequences kept (dropped too unless `colour`), every other
    escape sequence (title, clear, cursor, DCS, APC...) dropped, any other control character made visible
    (`keep` aside)."""
    pattern, _ = _rules(keep)
    if not pattern.search(line):
        return line
    out, pos = [], 0
    for m in _ESCAPES.finditer(line):
        out.append(visible(line[pos : m.start()], keep))
        if colour and _SGR.fullmatch(m.group()):
            out.append(m.group())
        pos = m.end()
    out.append(visible(line[pos:], keep))
    return "".join(out)


def one_line(text: str | None) -> str:
    """A reason, a note, a name or a table cell on one line: whitespace (line breaks too) collapsed to single
    spaces, colours dropped, every other control character made visible (a worker's escape sequence, even
    from state older than the sanitiser, must not reach the terminal). "" for None."""
    if not text:
        return ""
    if text.isprintable() and "  " not in text and text[0] != " " and text[-1] != " ":
        return text  # already one line (every whitespace but a space is not printable), nothing to show
    return visible(" ".join(without_colours(text).split()))


# Line breaks inside a log line show as a space: a line is one line wherever it is shown.
_BREAKS = re.compile(r"[\n\x0b\x0c\x85\u2028\u2029]")


def log_line(line: str, *, colour: bool) -> str:
    """One line of a worker's log as a terminal would leave it: only what follows its last carriage return (a
    progress bar's latest state), line breaks inside it as spaces, its SGR colour sequences kept (dropped too
    unless `colour`), every other escape sequence dropped, any other control character but a tab made
    visible. What `gputui run` prints, what a log pane shows and what the [health] rules read."""
    line = line.rstrip("\r\n")
    if "\r" in line:
        line = line.rsplit("\r", 1)[-1]
    return sgr_only(_BREAKS.sub(" ", line), colour=colour)
