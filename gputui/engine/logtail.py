"""Follow a growing log file by offset: only new bytes are read, whole lines are returned.

A worker's line can be of any length (a progress bar redrawn with `\\r` for hours, a gigabyte without a
newline), and the scheduler follows every running attempt's log: at most MAX_LINE bytes of one line are
held, its head; the rest is skipped up to the next newline, and the line is returned with a marker that
says how much was cut. Bytes that are not UTF-8 are replaced."""

from __future__ import annotations

from pathlib import Path

MAX_LINE = 64 << 10  # bytes of one line kept


class LogTail:
    def __init__(
        self, path: str | Path, *, from_end: bool = False, max_read: int = 1 << 20, max_line: int = MAX_LINE
    ):
        self.path = Path(path)
        self.offset = 0
        self._partial = bytearray()  # the head of the line being read, at most max_line bytes
        self._cut = 0  # bytes of that line past its head, skipped
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
            cap = self._max_line
            lines += [_text(p) if len(p) <= cap else _cut(p, cap) for p in pieces[1:-1]]
            self._hold(pieces[-1])
        if flush and (self._partial or self._cut):
            lines.append(self._end_line())
        return lines

    def _hold(self, piece: bytes) -> None:
        room = self._max_line - len(self._partial)
        if len(piece) <= room:
            self._partial += piece
        else:
            self._partial += piece[:room]
            self._cut += len(piece) - room

    def _end_line(self) -> str:
        text = self._partial.decode("utf-8", "replace")
        text = f"{text} … [cut: {self._cut} bytes]" if self._cut else text.rstrip("\r")
        self._partial, self._cut = bytearray(), 0
        return text


def _text(line: bytes) -> str:
    return line.decode("utf-8", "replace").rstrip("\r")


def _cut(line: bytes, keep: int) -> str:
    return f"{line[:keep].decode('utf-8', 'replace')} … [cut: {len(line) - keep} bytes]"
