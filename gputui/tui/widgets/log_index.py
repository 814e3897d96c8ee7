"""Line-start offsets of a growing log file, so a viewer can open a 5 GB log without reading it into memory.

Only offsets are kept (8 bytes per line); lines are read back on demand with ``os.pread`` on a descriptor
that stays open, so a log that is rotated away stays readable until the new file shows up. No Textual
import here: the index is driven from a worker thread and tested on its own.

Thread model: one thread calls :meth:`LineIndex.scan` (the watcher) while another reads lines. Preads and
mutations happen under a short lock; the newline search of a chunk runs outside it.
"""

from __future__ import annotations

import bisect
import os
import threading
from array import array
from itertools import accumulate, islice
from pathlib import Path

from gputui.files.tail import Mark

CHUNK = 1 << 20
"""Bytes read per pread while scanning or searching: big enough to be fast, small enough to hold briefly."""
SCAN_BUDGET = 16 << 20
"""Default bytes indexed per :meth:`LineIndex.scan` call, so one call on a huge file stays short."""
LINE_LIMIT = 1 << 20
"""Longest prefix of a single line :meth:`LineIndex.read_line` returns; a viewer never needs more."""


class LineIndex:
    """Index of line starts in the file at ``path``, which may not exist yet, grow, shrink or be replaced.

    ``line_count`` counts complete (newline-terminated) lines. Bytes after the last newline form the
    *partial* line (``has_partial``), e.g. a progress bar still being drawn; ``total_lines`` counts it
    too, and ``read_line(line_count)`` returns it. ``generation`` changes whenever the index is reset
    (truncation or a new inode), so callers can drop what they derived from old line numbers.
    """

    def __init__(self, path: str | os.PathLike[str], *, chunk_size: int = CHUNK) -> None:
        self.path = Path(path)
        self.chunk_size = chunk_size
        self.generation = 0
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._ident: tuple[int, int] | None = None
        self._offsets = array("Q", [0])  # start of every complete line, plus the start of the next one
        self._scanned = 0  # bytes indexed so far
        self._last = b""  # the last byte indexed: changed, the file was rewritten
        self._size = 0  # file size at the last scan
        self._longest = 0  # longest complete line in bytes, a cheap width hint for horizontal scrolling

    # -- state -------------------------------------------------------------------------------------

    @property
    def line_count(self) -> int:
        """Complete lines known."""
        return len(self._offsets) - 1

    @property
    def has_partial(self) -> bool:
        """Whether bytes follow the last newline (a line still being written)."""
        return self._scanned > self._offsets[-1]

    @property
    def total_lines(self) -> int:
        """Complete lines plus the partial one, if any: what a viewer shows."""
        with self._lock:
            return len(self._offsets) - 1 + (self._scanned > self._offsets[-1])

    @property
    def indexed_bytes(self) -> int:
        """Bytes indexed so far; a change means lines were added or the partial line grew."""
        return self._scanned

    @property
    def behind(self) -> int:
        """Bytes seen at the last scan but not yet indexed; more ``scan()`` calls are due while > 0."""
        return max(0, self._size - self._scanned)

    @property
    def longest_line(self) -> int:
        """Bytes in the longest line seen (partial line included)."""
        return max(self._longest, self._scanned - self._offsets[-1])

    @property
    def exists(self) -> bool:
        """Whether a file has been opened (it may since have been deleted; we keep reading it)."""
        return self._fd is not None

    # -- lifecycle ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Release the descriptor; the index is empty afterwards and a later scan reopens the file."""
        with self._lock:
            self._reset_locked(None, None)

    def __enter__(self) -> LineIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def _reset_locked(self, fd: int | None, ident: tuple[int, int] | None) -> None:
        if self._fd is not None and self._fd != fd:
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._fd = fd
        self._ident = ident
        self._offsets = array("Q", [0])
        self._scanned = 0
        self._last = b""
        self._size = 0
        self._longest = 0
        self.generation += 1

    def _sync_file_locked(self) -> int | None:
        """Open, reopen or reset as the file on disk demands (the rule of every follower: files.tail);
        return the current size, or None if absent."""
        try:
            st = os.stat(self.path)
        except (FileNotFoundError, NotADirectoryError):
            # Deleted (or not created yet): keep what an open descriptor still shows.
            return None if self._fd is None else os.fstat(self._fd).st_size
        ident = (st.st_dev, st.st_ino)
        if self._fd is None or ident != self._ident:
            try:
                fd = os.open(self.path, os.O_RDONLY)
            except (FileNotFoundError, PermissionError, IsADirectoryError):
                return None if self._fd is None else os.fstat(self._fd).st_size
            self._reset_locked(fd, ident)
            return os.fstat(fd).st_size
        st = os.fstat(self._fd)
        if not Mark(ident, self._scanned, self._last).holds(self._fd, st):  # truncated, or cut and regrown
            self._reset_locked(self._fd, ident)
        return st.st_size

    # -- indexing ----------------------------------------------------------------------------------

    def scan(self, max_bytes: int = SCAN_BUDGET) -> int:
        """Index up to ``max_bytes`` new bytes; return the number of complete lines now known.

        Bounded so a watcher can interleave UI updates while a huge file is indexed; call again while
        ``behind`` is non-zero.
        """
        with self._lock:
            size = self._sync_file_locked()
            if size is None:
                return len(self._offsets) - 1
            self._size = size
            generation = self.generation
            end = min(size, self._scanned + max(1, max_bytes))
        while True:
            with self._lock:
                if self.generation != generation or self._fd is None:
                    break
                start = self._scanned
                if start >= end:
                    break
                chunk = os.pread(self._fd, min(self.chunk_size, end - start), start)
                carry = start - self._offsets[-1]
            if not chunk:
                break
            parts = chunk.split(b"\n")
            parts.pop()  # bytes after the last newline: part of the next line
            lengths = [len(p) + 1 for p in parts]
            if lengths:
                lengths[0] += carry
            new = array("Q", islice(accumulate(lengths, initial=start - carry), 1, None))
            with self._lock:
                if self.generation != generation:
                    break
                self._offsets.extend(new)
                self._scanned = start + len(chunk)
                self._last = chunk[-1:]
                if lengths:
                    self._longest = max(self._longest, max(lengths) - 1)
        return len(self._offsets) - 1

    # -- reading -----------------------------------------------------------------------------------

    def _span_locked(self, i: int) -> tuple[int, int] | None:
        offsets = self._offsets
        n = len(offsets) - 1
        if 0 <= i < n:
            return offsets[i], offsets[i + 1]
        if i == n and self._scanned > offsets[-1]:
            return offsets[-1], self._scanned
        return None

    def read_bytes(self, i: int, limit: int = LINE_LIMIT) -> bytes:
        """Raw bytes of line ``i`` (newline included), at most ``limit`` of them; b"" when out of range."""
        with self._lock:
            span = self._span_locked(i)
            if span is None or self._fd is None:
                return b""
            start, stop = span
            return os.pread(self._fd, min(stop - start, limit), start)

    def read_line(self, i: int, limit: int = LINE_LIMIT) -> str:
        """Text of line ``i`` without its line ending; undecodable bytes become U+FFFD."""
        return self.read_bytes(i, limit).decode("utf-8", errors="replace").rstrip("\r\n")

    def line_of_offset(self, offset: int) -> int:
        """Line number holding byte ``offset``."""
        with self._lock:
            return max(0, bisect.bisect_right(self._offsets, offset) - 1)

    # -- searching ---------------------------------------------------------------------------------

    def find(self, text: str, start: int = 0, backwards: bool = False) -> int | None:
        """First line at or after ``start`` (before, when ``backwards``) containing ``text``, wrapping once.

        Case-insensitive for ASCII letters (bytes are compared, so a multi-GB log is searched in 1 MiB
        slices without decoding every line). The partial last line is searched too.
        """
        needle = text.encode("utf-8").lower()
        if not needle or b"\n" in needle:
            return None
        with self._lock:
            total = len(self._offsets) - 1 + (self._scanned > self._offsets[-1])
        if total == 0:
            return None
        start = min(max(start, 0), total - 1)
        ranges = [(0, start + 1), (start + 1, total)] if backwards else [(start, total), (0, start)]
        for lo, hi in ranges:
            if lo < hi:
                hit = self._find_in(needle, lo, hi, backwards)
                if hit is not None:
                    return hit
        return None

    def rank(self, text: str, line: int) -> tuple[int, int]:
        """(k, n): `line` is the k-th of the n lines containing ``text`` (as `find` matches), for a
        search's "match k/N". Reads the whole file in chunks: call it from a thread."""
        needle = text.encode("utf-8").lower()
        if not needle or b"\n" in needle:
            return 0, 0
        generation = self.generation
        k = n = lo = 0
        while True:
            with self._lock:
                offsets = self._offsets
                total = len(offsets) - 1 + (self._scanned > offsets[-1])
                if lo >= total or self.generation != generation or self._fd is None:
                    break
                first, _ = self._bounds(lo, lo + 1)
                j = bisect.bisect_right(offsets, first + self.chunk_size, lo, min(total + 1, len(offsets)))
                a, b = lo, min(total, max(lo + 1, j - 1))
                begin, stop = self._bounds(a, b)
                data = os.pread(self._fd, stop - begin, begin).lower()
                pos = data.find(needle)
                while pos >= 0:
                    hit = bisect.bisect_right(offsets, begin + pos, a, min(b + 1, len(offsets))) - 1
                    n += 1
                    k += hit <= line
                    after = offsets[hit + 1] - begin if hit + 1 < len(offsets) else len(data)
                    pos = data.find(needle, after)
            lo = b
        return k, n

    def _bounds(self, lo: int, hi: int) -> tuple[int, int]:
        """Byte span of lines ``lo`` .. ``hi - 1`` (lock held by the caller)."""
        offsets = self._offsets
        n = len(offsets) - 1
        return offsets[lo], offsets[hi] if hi <= n else self._scanned

    def _find_in(self, needle: bytes, lo: int, hi: int, backwards: bool) -> int | None:
        """Search lines ``lo`` .. ``hi - 1`` in slices of whole lines, never much more than a chunk each."""
        generation = self.generation
        while lo < hi:
            with self._lock:
                if self.generation != generation or self._fd is None:
                    return None
                offsets = self._offsets
                if backwards:
                    # Take whole lines ending at hi, reaching back about one chunk.
                    _, stop = self._bounds(hi - 1, hi)
                    j = bisect.bisect_left(offsets, stop - self.chunk_size, lo, hi)
                    a, b = max(lo, min(hi - 1, j)), hi
                else:
                    first, _ = self._bounds(lo, lo + 1)
                    j = bisect.bisect_right(offsets, first + self.chunk_size, lo, min(hi + 1, len(offsets)))
                    a, b = lo, min(hi, max(lo + 1, j - 1))
                begin, stop = self._bounds(a, b)
                data = os.pread(self._fd, stop - begin, begin)
            data = data.lower()
            pos = data.rfind(needle) if backwards else data.find(needle)
            if pos >= 0:
                with self._lock:
                    if self.generation != generation:
                        return None
                    line = bisect.bisect_right(self._offsets, begin + pos, a, min(b + 1, len(self._offsets))) - 1
                return min(max(line, a), b - 1)
            if backwards:
                hi = a
            else:
                lo = b
        return None
