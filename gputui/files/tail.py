"""Follow a growing log file by offset: only new bytes are read, whole lines are returned.

A worker's line can be of any length (a progress bar redrawn with `\\r` for hours, a gigabyte without a
newline), and the scheduler follows every running attempt's log. A carriage return followed by more text
overwrites the line, as on a terminal: only what follows the last one is held, so a progress bar's latest
state (the loss the [health] rules read) is what its line says when it ends, never a stale head. Of what
remains, at most MAX_LINE bytes are held, its head; the rest is skipped up to the next newline, and the
line is returned with a marker that says how much was cut. Lines come without their `\\r` and `\\n`.
Bytes that are not UTF-8 are replaced."""

from __future__ import annotations

from pathlib import Path

MAX_LINE = 64 << 10  # bytes of one line kept


class LogTail:
    def __init__(
        self, path: str | Path, *, from_end: bool = False, max_read: int = 1 << 20, max_line: int = MAX_LINE
    ):
        self.path = Path(path)
        self.offset = 0
        self._partial = bytearray()  # the head of the line being read, at most max_line bytes, no \r in it
        self._cut = 0  # bytes of that line past its head, skipped
        self._cr = False  # the line read so far ends with \r: what comes next overwrites it, unless \n
        self._max_read = max_read
        self._max_line = max_line
        if from_end:
            try:
                self.offset = self.path.stat().st_size
            except OSError:
                pass

    @property
    def held(self) -> int:
        """Bytes held of the line not yet ended (never more than `max_line`)."""
        return len(self._partial)

    def read_lines(self, *, flush: bool = False) -> list[str]:
        """New complete lines since the last call; `flush` also returns a final unterminated line."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(self._max_read)
        except OSError:
            data = b""
        self.offset += len(data)
        pieces = data.split(b"\n")
        self._hold(pieces[0])
        lines = []
        if len(pieces) > 1:
            lines.append(self._end_line())
            lines += [_line(p, self._max_line) for p in pieces[1:-1]]
            self._hold(pieces[-1])
        if flush and (self._partial or self._cut or self._cr):
            lines.append(self._end_line())
        return lines

    def _hold(self, piece: bytes) -> None:
        ends_cr = piece.endswith(b"\r")
        body = piece.rstrip(b"\r") if ends_cr else piece
        cr = body.rfind(b"\r")
        if cr >= 0 or (self._cr and body):  # overwritten: only what follows the last \r counts
            self._partial.clear()
            self._cut = 0
            body = body[cr + 1 :]
        self._cr = ends_cr or (self._cr and not body)
        room = self._max_line - len(self._partial)
        if len(body) <= room:
            self._partial += body
        else:
            self._partial += body[:room]
            self._cut += len(body) - room

    def _end_line(self) -> str:
        text = self._partial.decode("utf-8", "replace")
        if self._cut:
            text = f"{text} … [cut: {self._cut} bytes]"
        self._partial, self._cut, self._cr = bytearray(), 0, False
        return text


def _line(piece: bytes, keep: int) -> str:
    """A whole line read at once: what follows its last \\r (a trailing one ends the line), its head kept."""
    body = piece.rstrip(b"\r")
    body = body[body.rfind(b"\r") + 1 :]
    if len(body) <= keep:
        return body.decode("utf-8", "replace")
    return f"{body[:keep].decode('utf-8', 'replace')} … [cut: {len(body) - keep} bytes]"
