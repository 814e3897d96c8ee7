"""The one reader of files that grow while we read them: a worker's log, its hook events, the run's alerts,
the attempts journal (and the rule the app's log index follows too).

A follower keeps a byte offset and reads only what was appended since, at most `max_read` bytes at a time,
so a huge file is caught up in bounded steps. It knows the file it read by device and inode: a file
replaced under the same name (a new run's, a rotated log), one found shorter than what was read
(truncated), or one rewritten where the reading stopped (cut and regrown past the offset between two
reads: the byte before the offset changed) is read again from its start, and whatever line was held is
dropped. A missing file is nothing new yet; one seen missing and back is another file (its inode may be
the old one's, reused).

`LineTail` returns whole lines, without their `\\n` (or `\\r\\n`): a last line without its newline is held
until the newline comes, at most `max_line` bytes of it, the rest skipped up to the newline and the line
reported cut. The records files (events, alerts, journal) leave a cut line out, as damage.

`LogTail` reads a worker's log as a terminal shows it. A line can be of any length (a progress bar redrawn
with `\\r` for hours, a gigabyte without a newline): a carriage return followed by more text overwrites the
line, so only what follows the last one is held, and a progress bar's latest state (the loss the [health]
rules read) is what its line says when it ends, never a stale head. Of what remains, at most MAX_LINE bytes
are held, its head; the line is returned with a marker that says how much was cut. Lines come as text,
bytes that are not UTF-8 replaced.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

READ = 1 << 20  # bytes read at most at a time
MAX_LINE = 64 << 10  # bytes of one log line kept
MAX_RECORD = 16 << 20  # bytes of one record line kept: no honest record is near it, a runaway one is cut


@dataclass
class Mark:
    """How far a file was read: which file (device, inode), the offset, and the last byte read."""

    ident: tuple[int, int] | None = None
    offset: int = 0
    last: bytes = b""

    def holds(self, fd: int, st: os.stat_result) -> bool:
        """Whether the file open on `fd` (`st`, its fstat) is still the one read up to this mark: the same
        inode, no shorter, and the byte before the offset unchanged (a file cut and regrown past the mark
        between two looks is noticed unless it happens to have the same byte there)."""
        if (st.st_dev, st.st_ino) != self.ident or st.st_size < self.offset:
            return False
        return not self.last or os.pread(fd, 1, self.offset - 1) == self.last

    def advance(self, data: bytes) -> None:
        self.offset += len(data)
        if data:
            self.last = data[-1:]


class GrowingFile:
    """The bytes appended to one file since the last read. Opened afresh for every read: a follower holds no
    descriptor, and the name is what it follows (a deleted file is no longer read)."""

    def __init__(self, path: str | os.PathLike[str], *, from_end: bool = False, max_read: int = READ) -> None:
        self.path = Path(path)
        self.max_read = max_read
        self.mark = Mark()
        self.restarted = False  # the last read started the file over: what was held of it is void
        if from_end:
            try:
                st = self.path.stat()
                self.mark = Mark((st.st_dev, st.st_ino), st.st_size)
            except OSError:
                pass

    @property
    def offset(self) -> int:
        return self.mark.offset

    def read(self) -> bytes:
        """At most `max_read` new bytes; b"" when there are none, or no file."""
        self.restarted = False
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # gone: whatever appears next is another file, whatever inode it gets
            self.restarted, self.mark = self.mark.ident is not None, Mark()
            return b""
        except OSError:
            return b""
        try:
            st = os.fstat(fd)
            if not self.mark.holds(fd, st):
                self.restarted = self.mark.ident is not None
                self.mark = Mark((st.st_dev, st.st_ino))
            size = min(self.max_read, st.st_size - self.mark.offset)
            data = os.pread(fd, size, self.mark.offset) if size > 0 else b""
        except OSError:
            return b""
        finally:
            os.close(fd)
        self.mark.advance(data)
        return data


class LineTail:
    """Whole lines appended to a growing file. `terminal`: a carriage return overwrites the line, as on a
    terminal (a log); otherwise it is data, but for one ending the line."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        from_end: bool = False,
        max_read: int = READ,
        max_line: int = MAX_RECORD,
        terminal: bool = False,
    ) -> None:
        self.file = GrowingFile(path, from_end=from_end, max_read=max_read)
        self.max_line = max_line
        self.terminal = terminal
        self.cut_lines = 0  # lines longer than max_line that `read` left out
        self._partial = bytearray()  # the head of the line being read, at most max_line bytes
        self._cut = 0  # bytes of that line past its head, skipped
        self._cr = False  # terminal: the line so far ends with \r, what comes next overwrites it, unless \n

    @property
    def path(self) -> Path:
        return self.file.path

    @property
    def offset(self) -> int:
        """Bytes consumed, the held part of a line included."""
        return self.file.offset

    @property
    def held(self) -> int:
        """Bytes held of the line not yet ended (never more than `max_line`)."""
        return len(self._partial)

    def read(self, *, to_end: bool = True, flush: bool = False) -> list[bytes]:
        """New whole lines; a line longer than `max_line` is left out and counted in `cut_lines`. `to_end`:
        read until caught up, else one read of at most `max_read` bytes; `flush`: an unended last line too."""
        lines = []
        for head, cut in self.read_cut(to_end=to_end, flush=flush):
            if cut:
                self.cut_lines += 1
            else:
                lines.append(head)
        return lines

    def read_cut(self, *, to_end: bool = True, flush: bool = False) -> list[tuple[bytes, int]]:
        """New lines as (head, bytes cut past it), a cut one included."""
        lines: list[tuple[bytes, int]] = []
        while True:
            data = self.file.read()
            if self.file.restarted:
                self._end()
            pieces = data.split(b"\n")
            self._hold(pieces[0])
            if len(pieces) > 1:
                lines.append(self._end())
                lines += [self._whole(p) for p in pieces[1:-1]]
                self._hold(pieces[-1])
            if not to_end or len(data) < self.file.max_read:
                break
        if flush and (self._partial or self._cut or self._cr):
            lines.append(self._end())
        return lines

    def _hold(self, piece: bytes) -> None:
        body = piece
        if self.terminal:
            ends_cr = piece.endswith(b"\r")
            body = piece.rstrip(b"\r") if ends_cr else piece
            cr = body.rfind(b"\r")
            if cr >= 0 or (self._cr and body):  # overwritten: only what follows the last \r counts
                self._partial.clear()
                self._cut = 0
                body = body[cr + 1 :]
            self._cr = ends_cr or (self._cr and not body)
        room = self.max_line - len(self._partial)
        if len(body) <= room:
            self._partial += body
        else:
            self._partial += body[:room]
            self._cut += len(body) - room

    def _end(self) -> tuple[bytes, int]:
        """The held line, ended; nothing is held afterwards."""
        head, cut = bytes(self._partial), self._cut
        if not self.terminal and not cut and head.endswith(b"\r"):
            head = head[:-1]
        self._partial, self._cut, self._cr = bytearray(), 0, False
        return head, cut

    def _whole(self, piece: bytes) -> tuple[bytes, int]:
        """A line read at once: its head and how much was cut (terminal: what follows its last \\r)."""
        if self.terminal:
            body = piece.rstrip(b"\r")
            body = body[body.rfind(b"\r") + 1 :]
        else:
            body = piece.removesuffix(b"\r")
        keep = self.max_line
        return (body, 0) if len(body) <= keep else (body[:keep], len(body) - keep)


class LogTail(LineTail):
    """A worker's log, line by line, as its terminal would show it; one bounded read per call."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        from_end: bool = False,
        max_read: int = READ,
        max_line: int = MAX_LINE,
    ) -> None:
        super().__init__(path, from_end=from_end, max_read=max_read, max_line=max_line, terminal=True)

    def read_lines(self, *, flush: bool = False) -> list[str]:
        """New complete lines since the last call; `flush` also returns a final unterminated line."""
        return [_text(head, cut) for head, cut in self.read_cut(to_end=False, flush=flush)]


def _text(head: bytes, cut: int) -> str:
    text = head.decode("utf-8", "replace")
    return f"{text} … [cut: {cut} bytes]" if cut else text
